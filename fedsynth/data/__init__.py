"""NIfTI I/O, dataset layouts, preprocessing, slice cache, splits and the embedded phantom."""
