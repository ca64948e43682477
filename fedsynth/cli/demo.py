"""The main job on embedded data: the packaged foundation model, then federated DP fine-tuning
at three phantom hospitals that differ from the public cohort, scored on their held-out subjects.

1. Three private hospitals (`scanners="long-te"`: T2 echo times outside the public ranges,
   lesions at every subject; T1 and T2). 2. The packaged foundation model (`fedsynth.pretrained`,
   any-to-any over T1/T2/PD/FLAIR at 128 px, trained long on a domain-randomised public phantom;
   its model card holds the command that makes it). 3. Federated DP fine-tuning on Flower's
   simulation engine with the "phantom-finetune" scenario (`FINETUNE_RECIPE`, also what
   `flwr run .` runs): patient-level DP at a σ that keeps every site within ε ≤ DEMO_EPSILON,
   which each site's budget enforces. 4. Source-as-is, the foundation zero-shot (public-only)
   and the DP fine-tune on the private held-out subjects, and ε per site at patient level.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedsynth.config import FedsynthConfig
from fedsynth.data.phantom import PhantomConfig, generate_phantom
from fedsynth.data.pipeline import prepare_sites
from fedsynth.data.slices import SiteData
from fedsynth.evaluation.comparison import comparison_table
from fedsynth.evaluation.evaluate import evaluate_translation
from fedsynth.evaluation.metrics import SynthesisMetrics
from fedsynth.models.card import read_model_card
from fedsynth.models.checkpoint import load_checkpoint
from fedsynth.pretrained import FOUNDATION
from fedsynth.server.report import federated_result
from fedsynth.server.run_dir import RunDirectory
from fedsynth.server.tensorboard import NOTICE
from fedsynth.simulations.baselines import run_baselines
from fedsynth.simulations.scenarios import DEMO_EPSILON, scenario_config
from fedsynth.simulations.simulate import simulate

console = Console()

DEMO_SUBJECTS = 16
ZERO_SHOT = "foundation, zero-shot (public only)"
FINE_TUNED = "foundation + federated DP fine-tune"


def private_hospitals(out: Path, seed: int) -> Path:
    """Three phantom hospitals unlike the public cohort (made once, then reused)."""
    if (out / "dataset.json").exists():
        console.print(f"[dim]private hospitals: reusing {out}[/]")
        return out
    cfg = PhantomConfig(
        sites=3,
        subjects_per_site=DEMO_SUBJECTS,
        modalities=("T1", "T2"),
        seed=seed,
        scanners="long-te",
        lesions=True,
    )
    generate_phantom(cfg, out)
    return out


def epsilon_table(run_rows: list[dict], unit: str, delta: float) -> Table:
    """The last round's ε of every site, naming δ and the privacy unit."""
    table = Table(title=f"ε per site at δ={delta:g}, privacy unit: {unit}")
    for name in ("site", "ε", "steps"):
        table.add_column(name, justify="left" if name == "site" else "right")
    for site, values in sorted(run_rows[-1]["sites"].items()):
        eps, steps = values.get("train/epsilon", float("nan")), values.get("train/global_step", 0)
        table.add_row(site, f"{eps:.2f}", f"{steps:.0f}")
    return table


def final_result(cfg: FedsynthConfig, sites: list[SiteData], run: RunDirectory) -> dict:
    """The last round's global model scored like the baselines (source → target of
    `cfg.model` on every site's held-out subjects; the server's own evaluation averages every
    direction the unified model serves), with the largest ε any site spent (a DP run)."""
    model = load_checkpoint(run.checkpoint_path(run.last_round())).model
    metrics = SynthesisMetrics()
    for site in sites:
        evaluate_translation(model, site.test, cfg.model.source, cfg.model.target, metrics)
    spent = federated_result(run.metrics()).get("epsilon")  # none without DP
    return metrics.aggregate() | ({} if spent is None else {"epsilon": spent})


def demo_config(out: Path, data_dir: Path, seed: int = 0) -> FedsynthConfig:
    """The demo's federated step: the "phantom-finetune" scenario on the private hospitals."""
    return scenario_config(
        "phantom-finetune",
        {
            "data.root": str(data_dir),
            "data.cache-dir": str(out / "cache"),
            "data.seed": seed,
            "train.seed": seed,
            "federation.run-dir": str(out / "run"),
        },
    )


def run_demo(out: Path, seed: int = 0) -> int:
    """Run the demo into `out`; returns a process exit code."""
    out = Path(out)
    start = time.perf_counter()
    console.rule("1. Three private hospitals (protocols outside the public ranges, lesions)")
    data_dir = private_hospitals(out / "private", seed)
    console.rule("2. Foundation model (public phantom only, ε = 0)")
    card = read_model_card(FOUNDATION)
    validation = card["public_validation"]
    console.print(
        f"{FOUNDATION} — {card['data']['training_subjects']} public subjects, "
        f"{card['training']['steps']} steps; public validation PSNR "
        f"{validation['mean']['psnr_brain']:.2f} dB over {len(validation['directions'])} "
        f"directions. Reproduce: {card['training']['command']}"
    )
    console.rule(f"3. Federated DP fine-tuning, patient-level, ε ≤ {DEMO_EPSILON:g} per site")
    cfg = demo_config(out, data_dir, seed)
    console.print(f"watch it live in a browser: fedsynth view {cfg.federation.run_path}")
    sites, _ = prepare_sites(cfg.data)
    run = simulate(cfg)
    console.rule("4. Results on the private hospitals' held-out subjects")
    baselines = run_baselines(cfg, sites, run.path / "baselines", ("source-as-is", "public-only"))
    results = {
        "source-as-is": baselines["source-as-is"],
        ZERO_SHOT: baselines["public-only"],
        FINE_TUNED: final_result(cfg, sites, run),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    p = cfg.privacy
    title = f"T1 → T2, private held-out subjects (ε: unit={p.unit}, δ={p.delta:g})"
    console.print(comparison_table(results, title=title))
    console.print(epsilon_table(run.metrics(), p.unit, p.delta))
    gain = results[FINE_TUNED]["psnr_brain"] - results[ZERO_SHOT]["psnr_brain"]
    console.print(
        f"DP fine-tune vs zero-shot: {gain:+.2f} dB in-brain PSNR (σ={p.noise_multiplier:g}, "
        f"{p.clipping} clipping, unit={p.unit}) · report: {run.path / 'report.md'}"
    )
    console.print(f"samples: {run.samples} — {NOTICE}")
    console.print(f"[green]demo finished[/] in {time.perf_counter() - start:.0f} s")
    return 0
