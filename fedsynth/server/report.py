"""The final report of a run: metric curves per round, ε per site per round, the latest
sample grid and the federated vs baselines comparison, as markdown next to its figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedsynth.config import FedsynthConfig  # noqa: E402
from fedsynth.evaluation.comparison import comparison_markdown  # noqa: E402
from fedsynth.evaluation.metrics import NORMALISATION  # noqa: E402
from fedsynth.evaluation.outputs import (  # noqa: E402
    BANDS_PNG,
    REPORT_MD,
    SUMMARY_JSON,
    summary_markdown,
)
from fedsynth.models import model_class  # noqa: E402
from fedsynth.server.rounds import VALIDATION  # noqa: E402
from fedsynth.server.run_dir import RunDirectory  # noqa: E402
from fedsynth.server.tensorboard import BOARD_DIR, NOTICE  # noqa: E402

BASELINES_FILE = "baselines.json"
EVALUATION_DIR = "evaluation"  # written by `fedsynth evaluate RUN` (fedsynth.server.evaluation)


def _series(rows: list[dict[str, Any]], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """site -> (rounds, values) of a per-site metric."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for site, values in row["sites"].items():
            if key in values:
                xs, ys = out.setdefault(site, ([], []))
                xs.append(row["round"])
                ys.append(values[key])
    return out


def _plot(
    path: Path, title: str, ylabel: str, lines: dict[str, tuple[list[int], list[float]]]
) -> Path | None:
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, (xs, ys) in sorted(lines.items()):
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def federated_result(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The last round's metrics: the server's pooled evaluation, else the sites' mean."""
    last = rows[-1]
    result = dict(last["server"])
    if not result:
        sites = [s for s in last["sites"].values() if "evaluate/psnr_brain" in s]
        for key in ("psnr_brain", "ssim_brain", "mae_brain"):
            vals = [s[f"evaluate/{key}"] for s in sites]
            if vals:
                result[key] = sum(vals) / len(vals)
    eps = [e for e in site_epsilons(rows).values() if math.isfinite(e)]
    if eps:
        result["epsilon"] = max(eps)
    return result


def site_epsilons(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each site's ε after the last training round it reported (∞: it trained without
    reporting one, DP off). Not the last round's row alone: a site that failed or was not
    sampled in the last round has still spent what it reported before. A site that never
    trained (a `node-<id>` killed before its first reply) has no entry: see
    `failed_training`."""
    spent: dict[str, float] = {}
    for row in rows:
        for site, values in row["sites"].items():
            if "train/epsilon" in values:
                spent[site] = values["train/epsilon"]
            elif values.get("train_status", "").startswith("accepted"):
                spent.setdefault(site, math.inf)
    return spent


def failed_training(rows: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(round, site, status) of every training reply that was not accepted."""
    return [
        (r["round"], site, v.get("train_status", "no training reply"))
        for r in rows
        for site, v in r["sites"].items()
        if not v.get("train_status", "").startswith("accepted")
    ]


def chosen_round(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round whose global model scored best on the validation subjects (in-brain PSNR),
    or None when no round was validated. GAN results oscillate round to round: this is the
    checkpoint to use, chosen without looking at the test subjects."""
    key = f"{VALIDATION}psnr_brain"
    scored = [r for r in rows if key in r["server"]]
    return max(scored, key=lambda r: r["server"][key]) if scored else None


def _evaluation_section(run: RunDirectory) -> list[str]:
    """The last checkpoint's full evaluation (`fedsynth evaluate RUN`), when it has been run:
    the same tables as the evaluation's own report, linked to its files."""
    summary = run.path / EVALUATION_DIR / SUMMARY_JSON
    if not summary.is_file():
        return [
            "## Evaluation",
            "",
            f"Not run yet: `fedsynth evaluate {run.path}` adds downstream segmentation, "
            "lesion fidelity and frequency error of the last checkpoint here.",
            "",
        ]
    link = f"{EVALUATION_DIR}/{REPORT_MD}"
    return [
        "## Evaluation",
        "",
        f"Last checkpoint, held-out test subjects ([full report]({link})).",
        "",
        *summary_markdown(json.loads(summary.read_text())),
        f"![k-space bands]({EVALUATION_DIR}/{BANDS_PNG})",
        "",
    ]


def write_report(run: RunDirectory, cfg: FedsynthConfig) -> Path:
    rows = run.metrics()
    lines = [f"# fedsynth run `{run.path.name}`", ""]
    p, m, f = cfg.privacy, cfg.model, cfg.federation
    served = (
        f"{m.source} → {m.target}"
        if model_class(m.kind).needs_every_modality
        else f"any-to-any over {'/'.join(m.modalities)} (server scores: the mean over the "
        "directions sites hold out)"
    )
    lines += [
        f"- model: {m.kind} {served}, {m.image_size} px; strategy {f.strategy}, "
        f"shared: {f.share}{' (norm layers local)' if f.keep_norm_local else ''}",
        "- privacy: "
        + (
            f"DP-SGD σ={p.noise_multiplier}, C={p.max_grad_norm}, δ={p.delta}, unit={p.unit}"
            + (f", budget ε≤{p.epsilon_budget}" if p.epsilon_budget else "")
            if p.enabled
            else "off"
        ),
        f"- rounds: {len(rows)} × {f.local_steps} local steps; images: {NORMALISATION}",
        f"- live view: `fedsynth view {run.path}` (TensorBoard, events in `{BOARD_DIR}/`)",
        "",
    ]
    if not rows:
        lines.append("No round completed.")
    else:
        server = {
            "server": (
                [r["round"] for r in rows if r["server"]],
                [r["server"]["psnr_brain"] for r in rows if r["server"]],
            )
        }
        curves = {**(server if server["server"][0] else {}), **_series(rows, "evaluate/psnr_brain")}
        figures = {
            "PSNR in brain per round": _plot(
                run.figures / "psnr.png", "In-brain PSNR", "dB", curves
            ),
            "SSIM in brain per round": _plot(
                run.figures / "ssim.png",
                "In-brain SSIM",
                "SSIM",
                _series(rows, "evaluate/ssim_brain"),
            ),
            "ε per site per round": _plot(
                run.figures / "epsilon.png", f"ε (δ={p.delta})", "ε", _series(rows, "train/epsilon")
            ),
        }
        for title, path in figures.items():
            if path is not None:
                lines += [f"## {title}", "", f"![{title}]({path.relative_to(run.path)})", ""]
        samples = sorted(run.samples.glob("round-*.png"))
        if samples:
            lines += [
                "## Samples (last round)",
                "",
                f"**{NOTICE}.** Rows: real source, synthetic target, real target.",
                "",
                f"![samples]({samples[-1].relative_to(run.path)})",
                "",
            ]
        results = {"federated": federated_result(rows)}
        best = chosen_round(rows)
        if best is not None:
            name = f"federated, round {best['round']} (chosen on validation)"
            results[name] = {k: v for k, v in best["server"].items() if "/" not in k}
            lines += [
                f"The last round is round {rows[-1]['round']}; round {best['round']} scored best "
                f"on the validation subjects (checkpoint "
                f"`{run.checkpoint_path(best['round']).relative_to(run.path)}`).",
                "",
            ]
        baselines = run.path / BASELINES_FILE
        if baselines.is_file():
            results |= json.loads(baselines.read_text())
        lines += ["## Comparison", "", comparison_markdown(results)]
        lines += _evaluation_section(run)
        statuses = [f"- round {r}, {site}: {status}" for r, site, status in failed_training(rows)]
        if statuses:
            lines += ["## Sites that did not contribute", "", *statuses, ""]
    path = run.path / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
