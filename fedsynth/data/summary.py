"""A per-site summary of what will be trained and tested on, as a rich table."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from fedsynth.data.slices import SiteData


def site_table(sites: Sequence[SiteData], title: str = "Sites") -> Table:
    """Subjects and slices per modality for training (unpaired) and testing (paired)."""
    table = Table(title=title)
    table.add_column("site")
    for col in ("train subjects", "train slices", "test subjects", "test pairs"):
        table.add_column(col, justify="right")
    for site in sites:
        mods = sorted(site.train)
        subjects = " / ".join(f"{m}:{len(site.train[m].unique_subjects())}" for m in mods)
        slices = " / ".join(f"{m}:{len(site.train[m])}" for m in mods)
        first = next(iter(site.test.values()), None)
        test_subjects = len(first.unique_subjects()) if first is not None else 0
        table.add_row(site.site, subjects, slices, str(test_subjects), str(len(first or [])))
    return table
