"""What a hospital takes home from a trained checkpoint: a MONAI bundle (`monai_bundle`),
BIDS derivatives with provenance (`bids`), both described by one provenance record
(`provenance`: digests, model card, ε per site, δ, privacy unit)."""
