"""The comparison table of methods (federated, centralized, local-only, …): in-brain PSNR,
SSIM and MAE as mean ± sd over test subjects, and ε where the method is private."""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.table import Table

from fedsynth.evaluation.metrics import NORMALISATION

COLUMNS = (
    ("psnr_brain", "PSNR brain (dB)", 2),
    ("ssim_brain", "SSIM brain", 3),
    ("mae_brain", "MAE brain", 4),
)


def _cell(row: Mapping[str, float], key: str, digits: int) -> str:
    if key not in row:
        return "–"
    sd = row.get(f"{key}_sd", 0.0)
    return f"{row[key]:.{digits}f} ± {sd:.{digits}f}"


def _epsilon(row: Mapping[str, float]) -> str:
    """ε of a private method; "–" for one trained without DP (or not trained at all)."""
    eps = row.get("epsilon")
    return "–" if eps is None or math.isnan(eps) else f"{eps:.2f}"


def comparison_rows(results: Mapping[str, Mapping[str, float]]) -> list[list[str]]:
    """[method, PSNR, SSIM, MAE, subjects, ε] per method, as strings."""
    rows = []
    for method, row in results.items():
        cells = [_cell(row, key, d) for key, _, d in COLUMNS]
        rows.append([method, *cells, str(int(row.get("subjects", 0))), _epsilon(row)])
    return rows


HEADER = ["method", *(title for _, title, _ in COLUMNS), "test subjects", "ε"]


def comparison_table(results: Mapping[str, Mapping[str, float]], title: str = "") -> Table:
    table = Table(title=title, caption=f"images: {NORMALISATION}")
    for i, name in enumerate(HEADER):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in comparison_rows(results):
        table.add_row(*row)
    return table


def comparison_markdown(results: Mapping[str, Mapping[str, float]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in comparison_rows(results)]
    return "\n".join(lines) + f"\n\nImages: {NORMALISATION}.\n"
