"""Built-in scenarios: named starting configurations that `fedsynth simulate` runs.

Each is a set of flat config keys over the FedsynthConfig defaults; user overrides
(`--set KEY=VALUE`) apply on top. Phantom scenarios make their own data when none is given.
"""

from __future__ import annotations

from fedsynth.config import FedsynthConfig

# A recipe that learns T1 → T2 on the 64-px phantom within a few hundred CPU steps (measured
# in benchmarks/quality.py, which trains every method with it): one downsampling, a high
# constant-then-linear learning rate, a lighter cycle weight and no identity loss (identity
# pulls an inverted contrast to the input).
SMALL_MODEL: dict[str, object] = {
    "model.base-channels": 8,
    "model.res-blocks": 2,
    "model.downsamplings": 1,
    "model.disc-channels": 8,
    "model.disc-layers": 3,
    "model.lambda-cycle": 5.0,
    "model.lambda-identity": 0.0,
    "train.lr": 2e-3,
}
# The unified model's setting, as benchmarked in benchmarks/unified.py: SMALL_MODEL (lr 2e-3)
# for 15 rounds × 40 steps = 600 steps (`federation.total_steps`; a baseline of the same
# budget trains `FedsynthConfig.federated_train`). Chosen on a public phantom (seed 7, not the
# benchmark's), validation subjects, mean in-brain PSNR over the 12 directions (README
# "Unified model"): 15.46 ± 0.21 dB over six seeds; lr 5e-4 learned less (14.32 with seed 0)
# and λ_rec = 5 collapsed.
UNIFIED_RECIPE: dict[str, object] = {
    **SMALL_MODEL,
    "model.kind": "unified",
    "data.modalities": "T1,T2,PD,FLAIR",
    "privacy.enabled": False,
    "federation.num-rounds": 15,
    "federation.local-steps": 40,
}

# The any-to-any foundation model (`fedsynth/pretrained/phantom-unified`, `fedsynth pretrain
# --scenario phantom-foundation`): the unified model at 128 px, wide and deep enough for
# detail (two downsamplings, six residual blocks; ~1.2 s per step on two cores; architecture
# from benchmarks/generators.py), trained on PAIRED public data (a public multi-contrast
# cohort has every contrast of a subject: the supervised term lifted the mean validation PSNR
# by 1.7 dB in benchmarks/structure.py, where the MIND structure term did not help and is
# left at 0), a generator EMA, and a long schedule trained once in the background on the
# public phantom (data seed 1000: disjoint from every benchmark's), in bf16 autocast where the
# CPU has it natively (1.6x faster on an AVX512-BF16 machine, benchmarks/generators.py; it
# was trained so; an AVX2-only CPU emulates bf16 ~100x slower, so "auto" falls back to fp32).
# Runs fine-tune it.
FOUNDATION_RECIPE: dict[str, object] = {
    "model.kind": "unified",
    "data.modalities": "T1,T2,PD,FLAIR",
    "data.preprocess.image-size": 128,
    "data.seed": 1000,
    "data.pairing": "paired",
    "model.base-channels": 16,
    "model.res-blocks": 6,
    "model.downsamplings": 2,
    "model.disc-channels": 16,
    "model.disc-layers": 3,
    "model.lambda-identity": 0.0,
    "model.lambda-structure": 0.0,
    "model.lambda-paired": 10.0,
    "privacy.enabled": False,
    "train.steps": 5000,
    "train.batch-size": 8,
    "train.lr": 1e-3,
    "train.lr-schedule": "linear",
    "train.decay-start": 0.5,
    "train.ema-decay": 0.999,
    "train.precision": "auto",
}

# DP-SGD that learns (issue 12): from a public warm start (`train.init-checkpoint`), train and
# share only norm affines + biases, patient-level units, automatic clipping, a larger expected
# batch and a generator EMA. Chosen on PUBLIC data only (README "Private fine-tuning").
PRIVATE_FINETUNE: dict[str, object] = {
    "model.trainable": "norm-bias",
    "privacy.enabled": True,
    "privacy.unit": "subject",
    "privacy.clipping": "automatic",
    "train.batch-size": 16,
    "train.lr": 2e-3,
    "train.lr-schedule": "constant",
    "train.ema-decay": 0.9,
}

# The foundation model's architecture and objective: what a run that starts from it builds
# (its paired term only where a run has pairs: `data.pairing=paired`).
FOUNDATION_MODEL: dict[str, object] = {
    k: v
    for k, v in FOUNDATION_RECIPE.items()
    if k.startswith("model.") and k != "model.lambda-paired"
} | {k: FOUNDATION_RECIPE[k] for k in ("data.modalities", "data.preprocess.image-size")}

# What `fedsynth demo` and `flwr run .` run (scenario "phantom-finetune"): the packaged
# foundation model, federated patient-level DP fine-tuning with PRIVATE_FINETUNE at 128 px,
# sized to finish in minutes on a 2-core CPU (a DP step of this model at 128 px takes ~5 s on
# one core). The demo's hospitals scan T1 and T2 (`data.site-modalities`; other sites train on
# every contrast they hold). σ = 2.82 is what `fedsynth.privacy.calibrate` gives for ε ≤ 8 at
# the demo's hospitals (12 training subjects each, q = 8/12, 2 × 10 steps); the budget holds
# every site to ε ≤ 8 whatever its data (a smaller site stops early rather than overspend).
DEMO_EPSILON = 8.0
FINETUNE_RECIPE: dict[str, object] = {
    **FOUNDATION_MODEL,
    **PRIVATE_FINETUNE,
    "train.init-checkpoint": "phantom-unified",
    "data.site-modalities": "hospA=T1+T2,hospB=T1+T2,hospC=T1+T2",
    "federation.num-rounds": 2,
    "federation.local-steps": 10,
    "train.batch-size": 8,
    "privacy.noise-multiplier": 2.82,
    "privacy.epsilon-budget": DEMO_EPSILON,
}

# The smallest model that trains at all, on 32-px slices: for tests and quick benchmarks, where
# a round's fixed costs matter and its quality does not.
TINY_MODEL: dict[str, object] = {
    "data.preprocess.image-size": 32,
    "model.base-channels": 4,
    "model.res-blocks": 1,
    "model.disc-channels": 4,
    "model.disc-layers": 2,
}

SCENARIOS: dict[str, dict[str, object]] = {
    # CycleGAN T1 → T2 over the three phantom hospitals, DP on.
    "phantom-3site": {
        **SMALL_MODEL,
        "data.modalities": "T1,T2",
        "privacy.enabled": True,
        "privacy.unit": "slice",
        "privacy.noise-multiplier": 1.0,
        "federation.num-rounds": 5,
        "federation.local-steps": 40,
    },
    # The demo's recipe: private fine-tuning of the foundation model (FINETUNE_RECIPE).
    "phantom-finetune": FINETUNE_RECIPE,
    # One unified generator, any-to-any over the four phantom contrasts, without DP: from
    # scratch DP-SGD cannot learn it (docs/architecture.md §4). The benchmarked setting
    # (benchmarks/unified.py).
    "phantom-unified": UNIFIED_RECIPE,
    # How the packaged foundation model was trained (public data only; `fedsynth pretrain`).
    "phantom-foundation": FOUNDATION_RECIPE,
    # One unified generator over hospitals that acquired different contrasts: PD <-> FLAIR and
    # PD <-> T2 exist at no single site, so only the federation can learn them.
    "phantom-hetero": {
        **UNIFIED_RECIPE,
        "data.site-modalities": "hospA=T1+T2+FLAIR,hospB=T1+PD,hospC=T2+FLAIR",
    },
    # IXI: Guys, HH and IOP are the natural three-site federation (bring your own IXI copy).
    "ixi-by-hospital": {
        **SMALL_MODEL,
        "data.layout": "ixi",
        "data.modalities": "T1,T2",
        "federation.min-nodes": 3,
    },
    # BraTS T1 → FLAIR, split IID into three simulated sites (BraTS names no hospital).
    "brats": {
        **SMALL_MODEL,
        "data.layout": "brats",
        "data.modalities": "T1,FLAIR",
        "model.target": "FLAIR",
        "data.partition": "iid",
        "data.num-partitions": 3,
    },
}
PHANTOM_SCENARIOS = ("phantom-3site", "phantom-finetune", "phantom-unified", "phantom-hetero")
FLWR_APP_SCENARIO = "phantom-finetune"
"""What `flwr run .` runs: pyproject.toml's [tool.flwr.app.config] is `flwr_app_config()`."""
FLWR_APP_PATHS = {"data.root": "", "federation.run-dir": "runs/flwr"}


def scenario_flat(name: str) -> dict[str, object]:
    """The scenario's flat keys (over the FedsynthConfig defaults)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return dict(SCENARIOS[name])


def scenario_config(name: str, overrides: dict[str, object] | None = None) -> FedsynthConfig:
    """The scenario's config with `overrides` (flat keys) on top."""
    return FedsynthConfig.from_flat(scenario_flat(name) | (overrides or {}))


def flwr_app_config() -> dict[str, object]:
    """pyproject.toml's `[tool.flwr.app.config]`: every flat key of the `FLWR_APP_SCENARIO`
    config (Flower refuses `--run-config` keys the app does not list), its paths at
    `FLWR_APP_PATHS`. tests/test_flwr_app.py holds pyproject to it."""
    return scenario_config(FLWR_APP_SCENARIO).to_flat() | FLWR_APP_PATHS
