"""Audit outputs: `audit.json` (figures with 95% bootstrap intervals and sample sizes),
`audit.md` (the same as a table, with how to read it) and `roc.png` (log-log ROC curves, so
the low-FPR region that matters for privacy is visible)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedsynth.atomic import atomic_save_figure, atomic_write_bytes  # noqa: E402
from fedsynth.audit.roc import FPR_POINTS, AttackResult  # noqa: E402

COLUMNS = ("auc", "balanced_accuracy", *(f"tpr_at_{t:g}_fpr" for t in FPR_POINTS))


def plot_roc(results: list[AttackResult], path: Path, title: str) -> Path:
    """ROC curves of every attack on log axes, with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    floor = 1.0 / max(max(len(r.nonmembers) for r in results), 1)
    for r in results:
        fpr, tpr = r.roc
        ax.plot(
            fpr.clip(min=floor / 2),
            tpr.clip(min=floor / 2),
            label=f"{r.name} (AUC {r.figures['auc']:.3f})",
        )
    ax.plot([floor / 2, 1], [floor / 2, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def markdown_table(results: list[AttackResult]) -> str:
    """One row per attack: each figure with its 95% interval."""
    head = "| attack | members | non-members | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in results:
        cells = [
            f"{r.figures[c]:.3f}" + (f" [{r.ci[c][0]:.3f}, {r.ci[c][1]:.3f}]" if c in r.ci else "")
            for c in COLUMNS
        ]
        lines.append(
            f"| {r.name} | {len(r.members)} | {len(r.nonmembers)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def write_audit(
    out: Path, results: list[AttackResult], context: dict[str, Any], title: str
) -> dict[str, Any]:
    """Write audit.json, audit.md and roc.png into `out`; returns the JSON document."""
    out = Path(out)
    doc = {**context, "attacks": {r.name: r.summary() for r in results}}
    atomic_write_bytes(out / "audit.json", json.dumps(doc, indent=2).encode())
    plot_roc(results, out / "roc.png", title)
    lines = [
        f"# {title}",
        "",
        *(f"- {k}: {v}" for k, v in context.items()),
        "",
        markdown_table(results),
        "",
        "Scores are higher for slices the attack believes were trained on. AUC 0.5 and "
        "balanced accuracy 0.5 are chance; TPR at a fixed FPR is the share of members "
        "identified while wrongly flagging at most that share of non-members (the smallest "
        "non-zero FPR is 1 / non-members). Intervals: 95% percentile bootstrap, members and "
        "non-members resampled separately; slices of one subject are correlated, so they are "
        "optimistic.",
        "",
        "![ROC](roc.png)",
        "",
    ]
    atomic_write_bytes(out / "audit.md", "\n".join(lines).encode())
    return doc
