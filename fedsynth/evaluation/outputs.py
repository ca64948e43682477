"""The files of an evaluation: per-subject CSV, JSON summary, markdown report and the k-space
band figure. Input: row name -> direction name -> Evaluation (`suite.evaluate_rows`)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedsynth.atomic import atomic_write_bytes  # noqa: E402
from fedsynth.evaluation.frequency import BANDS  # noqa: E402
from fedsynth.evaluation.metrics import NORMALISATION  # noqa: E402
from fedsynth.evaluation.suite import REAL_TARGET, Evaluation  # noqa: E402

Results = Mapping[str, Mapping[str, Evaluation]]
SUBJECTS_CSV, SUMMARY_JSON, REPORT_MD, BANDS_PNG = (
    "subjects.csv", "summary.json", "evaluation.md", "kspace_bands.png"
)  # fmt: skip
TABLES = (
    ("Pixel metrics", ("psnr_brain", "ssim_brain", "mae_brain", "psnr_whole", "ssim_whole")),
    ("Frequency error", ("hfen", *(f"kspace_{b}_band_rel_error" for b, _, _ in BANDS))),
    ("Downstream segmentation (Dice)", ("dice_csf", "dice_gm", "dice_wm", "dice_tissue_mean",
                                        "dice_lesion", "dice_tissue_gap")),
    ("Lesion fidelity", ("lesion_mae", "lesion_contrast_error", "dice_lesion_vs_real",
                         "false_lesion_ml")),
)  # fmt: skip


def with_gaps(results: Results) -> dict[str, dict[str, dict[str, float]]]:
    """Summaries plus `dice_tissue_gap` = real-target mean tissue Dice − the row's."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    real = results.get(REAL_TARGET, {})
    for row, directions in results.items():
        for name, ev in directions.items():
            summary = dict(ev.summary)
            ceiling = real.get(name)
            if ceiling is not None and "dice_tissue_mean" in summary:
                summary["dice_tissue_gap"] = (
                    ceiling.summary["dice_tissue_mean"] - summary["dice_tissue_mean"]
                )
            out.setdefault(row, {})[name] = summary
    return out


def _cell(value: float | None, sd: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.3f}" + (f" ± {sd:.3f}" if sd else "")


def summary_markdown(summaries: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """The evaluation's tables as markdown lines (also embedded in a run's report.md)."""
    lines = []
    for title, keys in TABLES:
        present = [k for k in keys if any(k in s for d in summaries.values() for s in d.values())]
        if not present:
            continue
        lines += [f"## {title}", "", "| row | direction | " + " | ".join(present) + " |"]
        lines.append("|---|---|" + "---|" * len(present))
        for row, directions in summaries.items():
            for name, s in directions.items():
                cells = [_cell(s.get(k), s.get(f"{k}_sd")) for k in present]
                lines.append(f"| {row} | {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def band_figure(summaries: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path) -> Path:
    """Grouped bars: relative k-space error in the low / mid / high band, per row and direction
    (the real-target row is 0 by definition and left out)."""
    bars = [
        (f"{row}\n{name}", [s.get(f"kspace_{b}_band_rel_error", np.nan) for b, _, _ in BANDS])
        for row, directions in summaries.items()
        if row != REAL_TARGET
        for name, s in directions.items()
    ]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(bars) + 1), 3.6))
    width = 0.8 / len(BANDS)
    x = np.arange(len(bars))
    for i, (band, _, _) in enumerate(BANDS):
        ax.bar(x + (i - 1) * width, [v[i] for _, v in bars], width, label=band)
    ax.set_xticks(x, [label for label, _ in bars], fontsize=7)
    ax.set_ylabel("‖ΔF‖ / ‖F_real‖ in band")
    ax.set_title("Relative k-space error per radial band")
    ax.legend(title="band", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_evaluation(results: Results, out: Path, title: str = "Evaluation") -> Path:
    """Write subjects.csv, summary.json, kspace_bands.png and evaluation.md under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = with_gaps(results)
    keys = sorted({k for d in results.values() for ev in d.values() for r in ev.subjects.values()
                   for k in r})  # fmt: skip
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row", "direction", "subject", *keys])
    for row, directions in results.items():
        for name, ev in directions.items():
            for subject, values in ev.subjects.items():
                writer.writerow([row, name, subject, *(values.get(k, "") for k in keys)])
    atomic_write_bytes(out / SUBJECTS_CSV, buf.getvalue().encode())
    atomic_write_bytes(out / SUMMARY_JSON, json.dumps(summaries, indent=2).encode())
    figure = band_figure(summaries, out / BANDS_PNG)
    lines = [f"# {title}", "", f"Images: {NORMALISATION}. Mean ± sd over test subjects.", ""]
    lines += summary_markdown(summaries)
    lines += ["## k-space error per band", "", f"![k-space bands]({figure.name})", ""]
    atomic_write_bytes(out / REPORT_MD, "\n".join(lines).encode())
    return out / REPORT_MD
