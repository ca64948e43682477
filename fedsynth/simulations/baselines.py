"""Centralized (all sites pooled) and local-only (each site alone) baselines, trained with
the same engine and step budget as a federated site, evaluated on the same paired test sets.

Centralized is what federation approximates without moving data; local-only is what a
hospital gets without federating. Federation is worth it when it beats local-only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsynth.config import FedsynthConfig
from fedsynth.data.slices import SiteData, pool_sites
from fedsynth.evaluation.evaluate import evaluate_translation, save_sample_grid
from fedsynth.evaluation.metrics import SynthesisMetrics
from fedsynth.models import SynthesisModel
from fedsynth.models.checkpoint import save_checkpoint
from fedsynth.training import LocalState, train_local
from fedsynth.training.ema import load_ema
from fedsynth.training.resume import ResumePoint

log = logging.getLogger(__name__)
MODES = ("source-as-is", "public-only", "centralized", "local")


def train_site(
    cfg: FedsynthConfig,
    site: SiteData,
    label: str,
    progress: bool = False,
    chunk: int = 10,
    resume: ResumePoint | None = None,
    until: int | None = None,
    start: SynthesisModel | None = None,
) -> tuple[SynthesisModel, dict[str, float]]:
    """Train a model for the whole run (`cfg.train.steps`) on one site's data, from random
    weights, `train.init-checkpoint` or the given `start` model (trained in place); with
    `train.ema-decay` the result is the average.

    `progress` draws a progress bar on the terminal (the CLI asks for it); otherwise the
    start and end of training are logged. With `resume` (training without DP), the run starts
    from the resume point's step when it has one and saves it every `chunk` steps; `until`
    stops at that step of the run's schedule (a long run in several sittings)."""
    model = cfg.initial_model() if start is None else start
    state: LocalState | None = resume.load(model) if resume is not None else None
    end = cfg.train.steps if until is None else min(until, cfg.train.steps)
    metrics: dict[str, float] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    log.info("training %s: %d steps", label, cfg.train.steps)
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"training {label}", total=end)
        bar.update(task, completed=0 if state is None else state.step)
        while state is None or state.step < end:
            done = 0 if state is None else state.step
            steps = min(chunk, end - done)
            metrics, state = train_local(model, site, cfg.train, cfg.privacy, state, steps)
            bar.update(task, completed=state.step)
            if resume is not None:
                resume.save(model, state)
            if metrics.get("budget_exhausted"):
                log.warning("%s: %s", label, state.stop_reason)
                break
    log.info("trained %s", label)
    if state is not None and state.ema is not None:
        load_ema(model, state.ema)
    return model, metrics


def _summary(metrics: SynthesisMetrics, extra: dict[str, float] | None = None) -> dict[str, float]:
    return metrics.aggregate() | (extra or {})


def run_baselines(
    cfg: FedsynthConfig,
    sites: list[SiteData],
    out: Path,
    modes: tuple[str, ...] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Train and evaluate each baseline; write checkpoints, sample grids and baselines.json.

    Every method is scored on the union of all sites' paired test subjects (local-only: each
    site's model on its own test subjects), source → target of `cfg.model`. "public-only" is
    the warm start (`train.init-checkpoint`) untouched: what the sites get without training.
    """
    if modes is None:  # every baseline that applies
        warm = cfg.train.init_checkpoint is not None
        modes = tuple(m for m in MODES if warm or m != "public-only")
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown baseline mode(s) {sorted(unknown)}: expected {MODES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src, tgt = cfg.model.source, cfg.model.target
    results: dict[str, dict[str, float]] = {}
    if "source-as-is" in modes:
        floor = SynthesisMetrics()
        for site in sites:
            evaluate_translation(None, site.test, src, tgt, floor)
        results["source-as-is"] = _summary(floor)
    if "public-only" in modes:
        if cfg.train.init_checkpoint is None:
            raise ValueError("the public-only baseline needs train.init-checkpoint")
        start = cfg.initial_model()
        public = SynthesisMetrics()
        for site in sites:
            evaluate_translation(start, site.test, src, tgt, public)
        results["public-only"] = _summary(public)
    if "centralized" in modes:
        pooled = pool_sites(sites)
        model, train_metrics = train_site(cfg, pooled, "centralized", progress)
        results["centralized"] = _summary(
            evaluate_translation(model, pooled.test, src, tgt), _privacy(train_metrics)
        )
        _save(cfg, model, out / "centralized", pooled, results["centralized"])
    if "local" in modes:
        pooled_metrics = SynthesisMetrics()
        for site in sites:
            model, train_metrics = train_site(cfg, site, f"local {site.site}", progress)
            site_metrics = evaluate_translation(model, site.test, src, tgt)
            results[f"local:{site.site}"] = _summary(site_metrics, _privacy(train_metrics))
            evaluate_translation(model, site.test, src, tgt, pooled_metrics)
            _save(cfg, model, out / f"local-{site.site}", site, results[f"local:{site.site}"])
        epsilons = [results[f"local:{s.site}"].get("epsilon", float("nan")) for s in sites]
        results["local"] = _summary(
            pooled_metrics, {"epsilon": max(epsilons)} if cfg.privacy.enabled else {}
        )
    (out / "baselines.json").write_text(json.dumps(results, indent=2))
    return results


def _privacy(train_metrics: dict[str, float]) -> dict[str, float]:
    return {k: train_metrics[k] for k in ("epsilon", "delta") if k in train_metrics}


def _save(
    cfg: FedsynthConfig, model: SynthesisModel, stem: Path, site: SiteData, metrics: dict
) -> None:
    save_checkpoint(
        stem.with_suffix(".safetensors"), model, cfg.data.preprocess, {"metrics": metrics}
    )
    save_sample_grid(
        model,
        site.test,
        cfg.model.source,
        cfg.model.target,
        stem.with_suffix(".png"),
        title=stem.name,
    )
