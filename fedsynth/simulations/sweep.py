"""`fedsynth privacy sweep`: what a privacy budget costs in image quality, and what it buys
against membership inference — one simulated federation per setting, each audited.

A setting is a noise multiplier σ (0 = no DP) or an ε target (σ calibrated so that every
site stays within (ε, δ) at the end of the run). Each finished setting is cached under
OUT/runs/KEY, KEY being the digest of its resolved config (without output paths): running
the sweep again, or another sweep sharing a setting, reuses it instead of retraining.
Outputs: sweep.csv, sweep.md and utility_vs_epsilon.png in OUT.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedsynth.atomic import atomic_save_figure, atomic_write_bytes  # noqa: E402
from fedsynth.audit.accounting import check_run  # noqa: E402
from fedsynth.audit.run import audit_run  # noqa: E402
from fedsynth.config import FedsynthConfig  # noqa: E402
from fedsynth.data.pipeline import prepare_sites  # noqa: E402
from fedsynth.data.slices import SiteData  # noqa: E402
from fedsynth.models import build_model  # noqa: E402
from fedsynth.privacy.calibrate import calibrate_sigma  # noqa: E402
from fedsynth.privacy.sampling import UnitIndex, sample_rate  # noqa: E402
from fedsynth.server.report import failed_training, federated_result, site_epsilons  # noqa: E402
from fedsynth.server.run_dir import RunDirectory  # noqa: E402

log = logging.getLogger(__name__)
RESULT_FILE = "result.json"
# Keys that say where outputs go, not what is trained: left out of a setting's cache key.
OUTPUT_KEYS = (
    "federation.run-dir",
    "federation.state-dir",
    "federation.resume-from",
    "data.cache-dir",
)
ATTACKS = (
    "generator-threshold",
    "generator-calibrated",
    "discriminator-threshold",
    "discriminator-calibrated",
)


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: a noise multiplier (0 = DP off) or an ε target."""

    noise: float | None = None
    epsilon: float | None = None

    def __post_init__(self) -> None:
        if (self.noise is None) == (self.epsilon is None):
            raise ValueError("a sweep setting is a noise multiplier or an ε target, not both")
        if self.noise is not None and self.noise < 0:
            raise ValueError(f"noise multiplier {self.noise}: expected >= 0 (0 = no DP)")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"ε target {self.epsilon}: expected > 0")

    @property
    def label(self) -> str:
        if self.epsilon is not None:
            return f"ε≤{self.epsilon:g}"
        return "non-DP" if self.noise == 0 else f"σ={self.noise:g}"


def setting_key(cfg: FedsynthConfig) -> str:
    """Digest of everything that decides a setting's result (output paths excluded)."""
    flat = {k: v for k, v in cfg.to_flat().items() if k not in OUTPUT_KEYS}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:12]


def max_sample_rate(cfg: FedsynthConfig, sites: list[SiteData]) -> float:
    """The largest Poisson rate any site trains at (the smallest site spends ε fastest), over
    the contrasts each site holds."""
    modalities = build_model(cfg.model).training_modalities
    units = min(
        UnitIndex({m: s.train[m] for m in modalities if m in s.train}, cfg.privacy.unit).num_units
        for s in sites
    )
    return sample_rate(cfg.privacy, cfg.train.batch_size, units)


def resolve(
    base: FedsynthConfig,
    setting: Setting,
    sites: list[SiteData],
    private: FedsynthConfig | None = None,
) -> FedsynthConfig:
    """The run config of a setting.

    Args:
        base: the run's config.
        setting: σ (0: DP off) or an ε target.
        sites: the run's sites (the largest sample rate decides a calibrated σ).
        private: the config of the DP settings (default `base`), e.g. a larger batch.

    Returns:
        `base` without DP for σ = 0; else `private` with DP on at σ (given, or calibrated to
        the ε target at the run's steps and the largest site sample rate).
    """
    if setting.noise == 0:
        return base.evolve(privacy={"enabled": False})
    cfg = (private or base).evolve(privacy={"enabled": True})
    sigma = setting.noise
    if sigma is None:
        p = cfg.privacy
        sigma = calibrate_sigma(
            setting.epsilon, p.delta, max_sample_rate(cfg, sites), cfg.federation.total_steps,
            p.accountant,
        )
    return cfg.evolve(privacy={"noise_multiplier": sigma})


def _row(setting: Setting, cfg: FedsynthConfig, run_dir: Path, audit: dict) -> dict[str, Any]:
    """The table row of a finished setting (also what result.json caches)."""
    metrics = RunDirectory(run_dir).metrics()
    result = federated_result(metrics)
    p = cfg.privacy
    row: dict[str, Any] = {
        "setting": setting.label,
        "sigma": p.noise_multiplier if p.enabled else 0.0,
        "max_grad_norm": p.max_grad_norm if p.enabled else math.nan,
        "unit": p.unit if p.enabled else "-",
        "delta": p.delta,
        "batch_size": cfg.train.batch_size,
        "steps": cfg.federation.total_steps,
        "psnr_brain": result["psnr_brain"],
        "ssim_brain": result["ssim_brain"],
        "mae_brain": result["mae_brain"],
    }
    for site, epsilon in sorted(site_epsilons(metrics).items()):
        row[f"epsilon_{site}"] = epsilon
    # a site whose training failed (a worker killed, a reply refused) did not take part in
    # that round: the row is not the setting it claims to be
    row["failed_training"] = len(failed_training(metrics))
    row["epsilon_max"] = max(v for k, v in row.items() if k.startswith("epsilon_"))
    row["audit_site"] = audit["site"]
    for name in ATTACKS:
        figures = audit["attacks"][name]
        row[f"auc_{name}"] = figures["auc"]
        row[f"tpr_at_0.01_fpr_{name}"] = figures["tpr_at_0.01_fpr"]
    if p.enabled:
        row["accounting_ok"] = all(c.ok for c in check_run(run_dir))
    return row


def run_sweep(
    base: FedsynthConfig,
    settings: list[Setting],
    out: Path,
    private: FedsynthConfig | None = None,
    audit_site: str | None = None,
    bootstrap: int = 1000,
    cpus_per_site: float = 1.0,
    audit_slices_per_subject: int | None = None,
) -> list[dict[str, Any]]:
    """Run (or reuse) every setting, audit it, write the table and the figure."""
    from fedsynth.simulations.simulate import simulate

    out = Path(out)
    sites, _ = prepare_sites(base.data, progress=False)
    # One calibration recipe for every setting: the non-private run's (trained once per site).
    # As long as a site of the run trains (the audit's own default): `train.steps` is the
    # baselines' budget, not the federation's.
    reference = dataclasses.replace(
        base.evolve(privacy={"enabled": False}), train=base.federated_train
    )
    rows = []
    for i, setting in enumerate(settings, 1):
        cfg = resolve(base, setting, sites, private)
        key = setting_key(cfg)
        cached = out / "runs" / key / RESULT_FILE
        run_dir = cached.parent / "run"
        done = json.loads(cached.read_text()) if cached.is_file() else None
        # a row is reused only if its audit scored the slices asked for now
        if done is not None and done.get("audit_slices_per_subject") == audit_slices_per_subject:
            log.info("[%d/%d] %s: reusing %s", i, len(settings), setting.label, cached.parent)
            rows.append(done | {"reused": True, "run_dir": str(run_dir)})
            continue
        dp_text = f"σ={cfg.privacy.noise_multiplier:g}" if cfg.privacy.enabled else "DP off"
        log.info("[%d/%d] %s (%s) → %s", i, len(settings), setting.label, dp_text, cached.parent)
        cfg = cfg.evolve(federation={"run_dir": run_dir})
        if RunDirectory(run_dir).status()["status"] != "complete":  # else only the audit failed
            simulate(cfg, cpus_per_site=cpus_per_site)
        audit = audit_run(
            run_dir,
            audit_site,
            reference=reference,
            reference_dir=out / "references",
            bootstrap=bootstrap,
            slices_per_subject=audit_slices_per_subject,
        )
        row = _row(setting, cfg, run_dir, audit) | {"key": key, "run_dir": str(run_dir)}
        row["audit_slices_per_subject"] = audit_slices_per_subject
        atomic_write_bytes(cached, json.dumps(row, indent=2).encode())
        rows.append(row | {"reused": False})
    write_table(rows, out)
    plot_sweep(rows, out / "utility_vs_epsilon.png")
    return rows


TABLE = ("setting", "sigma", "max_grad_norm", "unit", "delta", "batch_size", "steps")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "∞" if math.isinf(value) else ("-" if math.isnan(value) else f"{value:.4g}")
    return str(value)


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    """sweep.csv (every column) and sweep.md (the columns a reader compares)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "sweep.csv", buffer.getvalue().encode())
    eps = sorted({k for r in rows for k in r if k.startswith("epsilon_") and k != "epsilon_max"})
    shown = [
        *TABLE,
        *eps,
        "psnr_brain",
        "ssim_brain",
        "mae_brain",
        *(f"auc_{a}" for a in ATTACKS),
        "accounting_ok",
        "failed_training",
        "reused",
    ]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in shown) + " |" for r in rows]
    delta = rows[0]["delta"] if rows else ""
    note = (
        f"\nε per site at δ={delta}, after the last round it reported (∞: no DP); "
        "failed_training: site-rounds whose training failed or was refused. "
        "PSNR/SSIM/MAE: in-brain, server evaluation of "
        "the final global generators on every site's held-out paired subjects. AUCs: "
        f"membership inference at site {rows[0]['audit_site'] if rows else '-'} (0.5 = chance; "
        "see audit.md in each run for TPR at low FPR and intervals).\n"
    )
    atomic_write_bytes(out / "sweep.md", ("\n".join(lines) + "\n" + note).encode())


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> Path:
    """Left: in-brain PSNR vs ε (the non-DP run as a dashed line); right: attack AUCs vs ε."""
    private = sorted(
        (r for r in rows if math.isfinite(r["epsilon_max"])), key=lambda r: r["epsilon_max"]
    )
    public = [r for r in rows if not math.isfinite(r["epsilon_max"])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["epsilon_max"] for r in private]
    left.plot(xs, [r["psnr_brain"] for r in private], "o-", label="DP-SGD")
    for ax, keys in ((left, ("psnr_brain",)), (right, [f"auc_{a}" for a in ATTACKS])):
        for r in public:
            for k in keys:
                ax.axhline(r[k], ls="--", lw=0.8, color="grey")
    for a in ATTACKS:
        right.plot(xs, [r[f"auc_{a}"] for r in private], "o-", label=a)
    right.axhline(0.5, color="k", lw=0.8, label="chance")
    left.set_ylabel("in-brain PSNR (dB)")
    right.set_ylabel("membership-inference AUC")
    for ax in (left, right):
        ax.set_xlabel(f"ε per site (max, δ={rows[0]['delta'] if rows else ''})")
        if xs:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left.set_title("utility vs ε (dashed: no DP)", fontsize=10)
    right.set_title("attack AUC vs ε (dashed: no DP)", fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path)
