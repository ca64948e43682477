"""The one local training engine, shared by centralized, local-only and federated runs.

`train_local` runs N steps on one site's slices; each step updates the generator group,
then the discriminator group (each on its own batch). With DP each update is a DP-SGD
release on its own Poisson batch (so G and D are two private players, docs/architecture.md §4);
without DP, batches are fixed-size uniform draws and the gradient is that of the mean loss. Both
paths differentiate the same per-sample loss (`fedsynth.privacy.per_sample`), so baselines
and private runs differ only by clipping, noise and sampling.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from fedsynth.data.pairs import MISSING, PartnerIndex
from fedsynth.data.slices import SiteData, SliceSet
from fedsynth.models.base import PLAYERS, Batch, Partners, SynthesisModel
from fedsynth.models.config import ModelConfig
from fedsynth.privacy.accountant import PrivacyAccountant
from fedsynth.privacy.budget import PrivacyBudget
from fedsynth.privacy.config import PrivacyConfig
from fedsynth.privacy.dp_sgd import private_gradient
from fedsynth.privacy.per_sample import batch_gradients
from fedsynth.privacy.sampling import UnitIndex, sample_rate
from fedsynth.privacy.secret import dp_seed
from fedsynth.training.augment import augment
from fedsynth.training.config import TrainConfig
from fedsynth.training.device import (
    BF16_WITH_DP,
    precision_context,
    resolve_device,
    resolve_precision,
)
from fedsynth.training.ema import start_ema, update_ema
from fedsynth.training.state import LocalState

log = logging.getLogger(__name__)
FEW_SUBJECTS = 20
"""Below this many subjects a site is warned that patient-level DP will cost much ε."""

SHAREABLE_METRICS = (
    "steps",
    "global_step",
    "lr",
    "epsilon",
    "delta",
    "sample_rate",
    "noise_multiplier",
    "budget_exhausted",
)
"""Metrics that reveal nothing about the site's images beyond the DP guarantee. The others
(losses, gradient norms, clip fractions, realised Poisson batch sizes) are computed from
private data without noise: fine for local logs, not for sending off-site under DP."""


def training_sets(model: SynthesisModel, data: SiteData) -> dict[str, SliceSet]:
    """The site's training slices this model learns from, checked against the model config."""
    cfg = model.config
    sets = {m: data.train[m] for m in model.training_modalities if m in data.train}
    missing = [m for m in model.training_modalities if len(sets.get(m, ())) == 0]
    if model.needs_every_modality and missing:
        raise ValueError(
            f"site {data.site!r} has no training slices of {missing} "
            f"(a {cfg.kind} model needs every one of {model.training_modalities})"
        )
    if cfg.lambda_paired > 0 and not data.paired:
        raise ValueError(
            f"site {data.site!r}: model.lambda-paired={cfg.lambda_paired} needs paired training "
            "slices (data.pairing=paired)"
        )
    present = [m for m, s in sets.items() if len(s)]
    if len(present) < 2:
        raise ValueError(
            f"site {data.site!r} has training slices of {present or 'none'} of "
            f"{list(cfg.modalities)}: a site needs at least two contrasts to train"
        )
    for modality, s in sets.items():
        if s.images.shape[1:] != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"site {data.site!r}: {modality} slices are {s.images.shape[1:]}, "
                f"the model expects {cfg.image_size}x{cfg.image_size}"
            )
    return sets


def _accountant_for(state: LocalState | None, privacy: PrivacyConfig) -> PrivacyAccountant | None:
    """A copy of the state's accountant (a new one for a new private run), checked against the
    config: mixing private and non-private steps, mechanisms or units voids the guarantee."""
    if state is None:
        return PrivacyAccountant(privacy.accountant, privacy.unit) if privacy.enabled else None
    saved = state.accountant
    if (saved is not None) != privacy.enabled:
        raise ValueError(
            f"privacy enabled={privacy.enabled} but the saved state was trained "
            f"{'with' if saved is not None else 'without'} DP; start a new state to switch"
        )
    if saved is None:
        return None
    for name, ours in (("mechanism", privacy.accountant), ("unit", privacy.unit)):
        if getattr(saved, name) != ours:
            raise ValueError(f"saved accountant {name} {getattr(saved, name)!r} != config {ours!r}")
    return PrivacyAccountant.from_state_dict(saved.state_dict())


def _images(
    sets: Mapping[str, SliceSet], rows: Mapping[str, np.ndarray], device: torch.device
) -> dict[str, torch.Tensor]:
    """Selected rows of each modality as (n, 1, H, W) float32 tensors."""
    return {
        m: torch.from_numpy(np.asarray(sets[m].images[r], dtype=np.float32)).unsqueeze(1).to(device)
        for m, r in rows.items()
    }


def _lesion_weights(
    sets: Mapping[str, SliceSet], rows: Mapping[str, np.ndarray], cfg: ModelConfig
) -> dict[str, np.ndarray] | None:
    """(n, 1, H, W) paired-L1 weights of the sampled rows: 1 + lambda_lesion on pixels whose
    label is a lesion label, 1 elsewhere; None when the model does not weight lesions."""
    if cfg.lambda_lesion <= 0:
        return None
    out = {}
    for m, r in rows.items():
        labels = sets[m].labels
        if labels is None:
            raise ValueError(
                f"model.lambda-lesion={cfg.lambda_lesion} needs label maps, and the {m} "
                "training slices have none (a dataset with _dseg / seg files)"
            )
        lesion = np.isin(np.asarray(labels[r]), cfg.lesion_labels)
        out[m] = (1.0 + cfg.lambda_lesion * lesion.astype(np.float32))[:, None]
    return out


def _partners(
    sets: Mapping[str, SliceSet],
    rows: Mapping[str, np.ndarray],
    cfg: ModelConfig,
    device: torch.device,
    index: PartnerIndex,
) -> Partners:
    """Paired data: each sampled row's slice in every one of the model's modalities (the same
    subject and position, found by `index`), zeros and unavailable where its subject has none
    (a modality the site lacks, or a single-contrast subject); with `lambda_lesion`, the
    sampled rows' lesion weights (n, 1, H, W)."""
    weights = _lesion_weights(sets, rows, cfg)
    images, available = {}, {}
    for m, r in rows.items():
        planes = np.zeros((len(r), cfg.num_modalities, *sets[m].images.shape[1:]), np.float32)
        found = np.zeros((len(r), cfg.num_modalities), bool)
        for j, t in enumerate(cfg.modalities):
            if t not in sets:
                continue
            partner = index.rows(m, t, r)
            found[:, j] = partner != MISSING
            planes[found[:, j], j] = sets[t].images[partner[found[:, j]]]
        images[m] = torch.from_numpy(planes).to(device)
        available[m] = torch.from_numpy(found).to(device)
    if weights is None:
        return Partners(images, available)
    moved = {m: torch.from_numpy(w).to(device) for m, w in weights.items()}
    return Partners(images, available, moved)


def _augmented(
    images: dict[str, torch.Tensor],
    partners: Partners | None,
    views: int,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], Partners | None]:
    """`augment` the sampled images, their partners and lesion weights under one geometry
    per view (weights shifted in from outside the slice, -1, are 1 again)."""
    if partners is None:
        return augment(images, views, generator), None
    weights = partners.weights
    channels = {
        m: [x, partners.images[m], *([weights[m]] if weights is not None else [])]
        for m, x in images.items()
    }
    joint = augment({m: torch.cat(c, dim=1) for m, c in channels.items()}, views, generator)
    k = next(iter(partners.images.values())).shape[1]
    moved = None
    if weights is not None:
        moved = {m: x[:, 1 + k :].clamp(min=1.0) for m, x in joint.items()}
    available = {m: a.repeat_interleave(views, dim=0) for m, a in partners.available.items()}
    return (
        {m: x[:, :1] for m, x in joint.items()},
        Partners({m: x[:, 1 : 1 + k] for m, x in joint.items()}, available, moved),
    )


@dataclass(frozen=True)
class Proximal:
    """FedProx (Li et al. 2020): add mu/2 * ||w - anchor||^2 over the anchored (shared)
    parameters. Its gradient mu * (w - anchor) touches no data, so under DP it is added after
    clipping and noise: post-processing, no privacy cost."""

    mu: float
    anchor: Mapping[str, torch.Tensor]


def _apply(
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, torch.nn.Parameter],
    grads: Mapping[str, torch.Tensor],
    lr: float,
    proximal: Proximal | None = None,
) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
    for name, p in params.items():
        p.grad = grads[name].to(p.dtype)
        if proximal is not None and name in proximal.anchor:
            p.grad += proximal.mu * (p.detach() - proximal.anchor[name])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class Release:
    """How one DP-SGD release is made: Poisson rate q over `num_units` units, noise σ, clip C
    (flat or automatic). The noised sum is divided by the *expected* batch q·N (never the
    realised one)."""

    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    num_units: int
    automatic: bool = False
    secure_mode: bool = False

    @property
    def expected_batch(self) -> float:
        return self.sample_rate * self.num_units


@dataclass
class _Session:
    """One call of `train_local`: everything the steps share, and the running sums."""

    model: SynthesisModel
    sets: dict[str, SliceSet]
    partners: PartnerIndex | None  # paired data and a paired term: where partners are
    index: UnitIndex
    train_cfg: TrainConfig
    generator: torch.Generator
    optimizers: dict[str, torch.optim.Optimizer]
    accountant: PrivacyAccountant | None
    release: Release | None
    proximal: Proximal | None
    precision: str  # as resolved for this device: "fp32" or "bf16"
    ema: dict[str, torch.Tensor] | None = None
    sums: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0  # the rate of the last step taken (what the metrics report)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLAYERS, 0))


def _setup(
    model: SynthesisModel,
    data: SiteData,
    train_cfg: TrainConfig,
    privacy_cfg: PrivacyConfig,
    state: LocalState | None,
    proximal: Proximal | None,
    secret_seed: int | None,
) -> tuple[_Session, LocalState]:
    """Restore (or start) the state and build what the steps share."""
    if train_cfg.precision == "bf16" and privacy_cfg.enabled:
        raise ValueError(BF16_WITH_DP)
    accountant = _accountant_for(state, privacy_cfg)
    device = resolve_device(train_cfg.device)
    precision = resolve_precision(train_cfg.precision, device, privacy_cfg.enabled)
    model.to(device)
    if proximal is not None:
        proximal = Proximal(proximal.mu, {k: v.to(device) for k, v in proximal.anchor.items()})
    first_call = state is None
    if state is None:
        seed = dp_seed(privacy_cfg, secret_seed) if accountant is not None else train_cfg.seed
        state = LocalState.fresh(seed, accountant)
    sets = training_sets(model, data)
    index = UnitIndex(sets, privacy_cfg.unit if privacy_cfg.enabled else "slice")
    generator = torch.Generator()
    generator.set_state(state.rng_state)
    optimizers = {
        p: torch.optim.Adam(
            model.group_parameters(p).values(), lr=train_cfg.lr, betas=train_cfg.betas
        )
        for p in PLAYERS
    }
    for player, saved in state.optimizers.items():
        # load_state_dict keeps the saved tensors and Adam updates them in place: copy, so
        # the caller's state stays a valid point to resume from.
        optimizers[player].load_state_dict(copy.deepcopy(saved))
    release = None
    if accountant is not None:
        q = sample_rate(privacy_cfg, train_cfg.batch_size, index.num_units)
        release = Release(
            privacy_cfg.noise_multiplier,
            q,
            privacy_cfg.max_grad_norm,
            index.num_units,
            privacy_cfg.clipping == "automatic",
            privacy_cfg.secure_mode,
        )
        if first_call and index.unit == "subject" and index.num_units < FEW_SUBJECTS:
            log.warning(
                "site %s: %d subjects for patient-level DP; q = %.2f per release spends ε "
                "fast (privacy.unit=slice gives the weaker slice-level guarantee)",
                data.site, index.num_units, q,
            )
    ema = None
    if train_cfg.ema_decay > 0:
        ema = (
            {k: v.to(device, copy=True) for k, v in state.ema.items()}
            if state.ema
            else start_ema(model)
        )
    dp_stats = ("clip_fraction", "grad_norm") if release is not None else ()
    sums = {f"{p}/{t}": 0.0 for p in PLAYERS for t in model.loss_terms(p) + dp_stats}
    session = _Session(
        model,
        sets,
        PartnerIndex(sets) if data.paired and model.pairs else None,
        index,
        train_cfg,
        generator,
        optimizers,
        accountant,
        release,
        proximal,
        precision,
        ema,
        sums,
        lr=train_cfg.learning_rate(max(state.step - 1, 0)),
    )
    return session, state


def _plan(
    session: _Session, privacy_cfg: PrivacyConfig, steps: int, site: str
) -> tuple[int, str | None]:
    """How many of `steps` fit the privacy budget, and why training stops early (if it does)."""
    if session.release is None or privacy_cfg.epsilon_budget is None:
        return steps, None
    rel = (session.release.noise_multiplier, session.release.sample_rate)
    budget = PrivacyBudget(privacy_cfg.epsilon_budget, privacy_cfg.delta)
    plan = budget.plan(session.accountant, dict.fromkeys(PLAYERS, rel), steps)
    if plan.message:
        log.warning("site %s: %s", site, plan.message)
    return plan.steps, plan.message


def _update(session: _Session, player: str, lr: float) -> None:
    """One update of `player`: a plain minibatch gradient, or one DP-SGD release (Poisson
    batch, clip, noise, accountant step) when private."""
    s, rel = session, session.release
    device = next(s.model.parameters()).device
    views = s.train_cfg.augmentations
    if rel is None:
        rows = s.index.uniform(s.train_cfg.batch_size, s.generator)
    else:
        rows = s.index.poisson(rel.sample_rate, s.generator)
    images = _images(s.sets, rows, device)
    partners = None
    if s.partners is not None:
        partners = _partners(s.sets, rows, s.model.config, device, s.partners)
    images, partners = _augmented(images, partners, views, s.generator)
    # A kind that never sees pairs keeps the two-argument `make_batch` of the model contract.
    if partners is None:
        batch = s.model.make_batch(images, s.generator)
    else:
        batch = s.model.make_batch(images, s.generator, partners)
    with precision_context(s.precision, device):
        grads, terms, norms = _gradients(s, player, batch)
    if rel is not None:
        s.accountant.step(player, rel.noise_multiplier, rel.sample_rate)
        s.sums[f"{player}/clip_fraction"] += float((norms > rel.max_grad_norm).sum())
        s.sums[f"{player}/grad_norm"] += float(norms.sum())
    _apply(s.optimizers[player], s.model.group_parameters(player), grads, lr, s.proximal)
    s.counts[player] += len(terms.get("loss", ()))
    for name, values in terms.items():
        s.sums[f"{player}/{name}"] += float(values.float().sum())


def _gradients(
    s: _Session, player: str, batch: Batch
) -> tuple[dict, dict, torch.Tensor | None]:
    """The player's update direction on `batch`: (gradients, per-sample terms, per-sample
    gradient norms or None without DP)."""
    rel = s.release
    if rel is None:
        grads, terms = batch_gradients(s.model, player, batch)
        return grads, terms, None
    return private_gradient(
        s.model,
        player,
        batch,
        max_grad_norm=rel.max_grad_norm,
        noise_multiplier=rel.noise_multiplier,
        expected_batch_size=rel.expected_batch,
        generator=s.generator,
        automatic=rel.automatic,
        multiplicity=s.train_cfg.augmentations,
        secure_mode=rel.secure_mode,
    )


def _finish(
    session: _Session,
    privacy_cfg: PrivacyConfig,
    step: int,
    todo: int,
    elapsed: float,
    stop_reason: str | None,
    site: str,
) -> tuple[dict[str, float], LocalState]:
    """The call's metrics (same keys every call) and the state to resume from."""
    s = session
    metrics: dict[str, float] = {}
    for key, total in s.sums.items():
        n = s.counts[key.split("/")[0]]
        metrics[key] = total / n if n else math.nan
    metrics.update({f"{p}/samples": float(s.counts[p]) for p in PLAYERS})
    metrics.update(
        steps=float(todo),
        global_step=float(step),
        lr=s.lr,
        seconds_per_step=elapsed / todo if todo else 0.0,
        budget_exhausted=float(stop_reason is not None),
    )
    if s.release is not None:
        epsilon = s.accountant.epsilon(privacy_cfg.delta)
        metrics.update(
            sample_rate=s.release.sample_rate,
            noise_multiplier=s.release.noise_multiplier,
            epsilon=epsilon,
            delta=privacy_cfg.delta,
        )
        log.debug("site %s: %s", site, s.accountant.describe(privacy_cfg.delta, epsilon))
    new_state = LocalState(
        step=step,
        rng_state=s.generator.get_state(),
        optimizers={p: opt.state_dict() for p, opt in s.optimizers.items()},
        accountant=s.accountant,
        stop_reason=stop_reason,
        ema=s.ema,
    )
    return metrics, new_state


def train_local(
    model: SynthesisModel,
    data: SiteData,
    train_cfg: TrainConfig,
    privacy_cfg: PrivacyConfig,
    state: LocalState | None = None,
    steps: int | None = None,
    proximal: Proximal | None = None,
    secret_seed: int | None = None,
) -> tuple[dict[str, float], LocalState]:
    """Train `model` in place for `steps` steps (default: the rest of the run) on `data`.

    Returns (metrics, new state); `state` itself is not modified. Resuming from a saved state
    continues exactly where an uninterrupted run would be. A new state's random streams
    (sampling, target labels, DP noise) are seeded with `train_cfg.seed` without DP; with DP
    by `fedsynth.privacy.secret.dp_seed` (the site's `secret_seed`, never a config value
    unless `privacy.noise-seed` opts in). With a privacy budget, training stops before the
    first step that would exceed it: metrics["budget_exhausted"] is 1 and
    new_state.stop_reason says why. Metric keys are the same on every call; only
    SHAREABLE_METRICS may leave a private site.
    """
    session, state = _setup(model, data, train_cfg, privacy_cfg, state, proximal, secret_seed)
    remaining = train_cfg.steps - state.step
    steps = remaining if steps is None else steps
    if not 0 <= steps <= remaining:
        raise ValueError(
            f"steps={steps} must be in [0, {remaining}]: the run has TrainConfig.steps="
            f"{train_cfg.steps} and {state.step} are done"
        )
    todo, stop_reason = _plan(session, privacy_cfg, steps, data.site)
    step = state.step
    start = time.perf_counter()
    for _ in range(todo):
        session.lr = train_cfg.learning_rate(step)
        for player in PLAYERS:
            _update(session, player, session.lr)
        if session.ema is not None:
            update_ema(session.ema, model, train_cfg.ema_decay)
        step += 1
    elapsed = time.perf_counter() - start
    return _finish(session, privacy_cfg, step, todo, elapsed, stop_reason, data.site)
