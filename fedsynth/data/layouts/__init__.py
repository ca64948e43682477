"""Dataset layouts: find every subject's volumes (and its site) in IXI, BraTS, BIDS-like or
manifest-CSV folders, and write volumes in those same layouts (the phantom uses the writers,
so the readers are tested on real files).

One module per layout, each a `Layout` subclass registered with `@register_layout`
(`registry.py`). A layout only finds files; opening them is `preprocess`'s job, judged by
`fedsynth.data.validation`.
"""

# Registration order is detection order: an explicit manifest.csv wins over file names.
from fedsynth.data.layouts import manifest  # isort: skip  # noqa: F401
from fedsynth.data.layouts import ixi, brats, bids  # isort: skip  # noqa: F401
from fedsynth.data.layouts.base import Dataset, FileEntry, Layout, SubjectRecord
from fedsynth.data.layouts.loader import HELD_OUT_KEY, SITES_FILE, load_dataset, write_subject
from fedsynth.data.layouts.manifest import MANIFEST_NAME
from fedsynth.data.layouts.modalities import LABELS_KEY, MASK_KEY, MODALITIES, normalise_modality
from fedsynth.data.layouts.registry import LAYOUTS, detect_layout, get_layout, register_layout
from fedsynth.data.validation import DatasetError

__all__ = [
    "HELD_OUT_KEY",
    "LABELS_KEY",
    "LAYOUTS",
    "MANIFEST_NAME",
    "MASK_KEY",
    "MODALITIES",
    "SITES_FILE",
    "Dataset",
    "DatasetError",
    "FileEntry",
    "Layout",
    "SubjectRecord",
    "detect_layout",
    "get_layout",
    "load_dataset",
    "normalise_modality",
    "register_layout",
    "write_subject",
]
