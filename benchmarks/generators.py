"""Which generator can afford detail on two cores: architectures compared at EQUAL WALL-CLOCK on
public validation data, and the execution options (channels_last, bf16 autocast,
torch.compile) by step time and the fraction of this machine's fp32 matmul GFLOP/s.

Setting: the foundation model's objective (unified model over T1/T2/PD/FLAIR at 128 px,
paired public data, `FOUNDATION_RECIPE`'s loss weights) on a domain-randomised public phantom
(seed 7, heads and lesions; its held-out subjects are the validation set; no benchmark's test
subjects). Each architecture in `CANDIDATES` trains from scratch for `budget` seconds of
wall-clock time (whole engine steps, under the recipe's schedule, whose decay starts long
after the budget: every candidate trains at the full learning rate), then is scored on the
held-out public subjects: mean in-brain PSNR/SSIM over the 12 directions. A short budget
favours what learns fast; it is the comparison two cores can afford before a long run.

Execution options are timed on one fixed batch of 8 slices (generator then discriminator
gradient and Adam, as `train_step.py` does), median of `reps` after a warm-up, on the
recipe's architecture: fp32 (the engine's path), channels_last memory format, bf16 autocast
(this CPU has avx512_bf16) and torch.compile of the generator (where it compiles). Efficiency
= counted conv/matmul FLOPs per step / step time / fp32 1024² matmul GFLOP/s measured in the
same run.

Figures: `psnr_brain_mean_ARCH`, `ssim_brain_mean_ARCH`, `steps_ARCH`, `seconds_per_step_ARCH`,
`params_ARCH`; `seconds_per_step_OPTION`, `efficiency_vs_matmul_OPTION`; `matmul_gflops`,
`load_average_start` / `_end`, `budget_seconds`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from common import Stopwatch, training_benchmark_args, write_result  # noqa: E402
from train_step import Stepper, matmul_gflops, step_flops  # noqa: E402

from fedsynth.config import FedsynthConfig  # noqa: E402
from fedsynth.data.phantom import PhantomConfig, generate_phantom  # noqa: E402
from fedsynth.data.pipeline import prepare_sites  # noqa: E402
from fedsynth.data.slices import pool_sites  # noqa: E402
from fedsynth.evaluation.suite import evaluate_rows, served_directions  # noqa: E402
from fedsynth.models import build_model  # noqa: E402
from fedsynth.simulations.scenarios import FOUNDATION_RECIPE, TINY_MODEL  # noqa: E402
from fedsynth.training import train_local  # noqa: E402
from fedsynth.training.state import LocalState  # noqa: E402

CANDIDATES = {
    "resnet_b16_r6": {"model.base-channels": 16, "model.res-blocks": 6},
    "resnet_b24_r4": {"model.base-channels": 24, "model.res-blocks": 4},
    "resnet_b8_r6": {"model.base-channels": 8, "model.res-blocks": 6},
    "unet_b16_r4": {"model.generator": "unet", "model.base-channels": 16, "model.res-blocks": 4},
}
FULL = {"subjects": 24, "size": 128, "budget": 150.0, "reps": 5}
QUICK = {"subjects": 6, "size": 32, "budget": 2.0, "reps": 1}


def architecture_row(cfg: FedsynthConfig, data, budget: float) -> tuple[object, dict]:
    """Train for `budget` wall-clock seconds (whole chunks of steps); the model and figures."""
    model = build_model(cfg.model, seed=cfg.train.seed)
    state: LocalState | None = None
    start = time.perf_counter()
    while time.perf_counter() - start < budget and (state is None or state.step < cfg.train.steps):
        _, state = train_local(model, data, cfg.train, cfg.privacy, state, steps=1)
    elapsed = time.perf_counter() - start
    steps = state.step if state else 0
    params = sum(p.numel() for p in model.parameters())
    return model, {"steps": steps, "seconds_per_step": elapsed / max(steps, 1), "params": params}


def option_context(option: str):
    if option == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def option_stepper(cfg: FedsynthConfig, option: str) -> Stepper | None:
    """A Stepper on the recipe's model prepared for `option`; None where it does not run."""
    # the paired term needs partners a fixed batch does not have; its cost is one L1
    model = build_model(dataclasses.replace(cfg.model, lambda_paired=0.0), seed=0)
    if option == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    stepper = Stepper(model, cfg.model.image_size, dp=False)
    if option == "channels_last":
        stepper.batch = {
            name: {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                   for k, v in stream.items()}
            for name, stream in stepper.batch.items()
        }
    if option == "compile":
        try:
            model.G.forward = torch.compile(model.G.forward)
            stepper.step()
        except Exception as err:  # noqa: BLE001 - reported, not hidden
            print(f"torch.compile does not run here: {type(err).__name__}: {err}"[:300])
            return None
    return stepper


def time_option(cfg: FedsynthConfig, option: str, reps: int) -> float | None:
    stepper = option_stepper(cfg, option)
    if stepper is None:
        return None
    with option_context(option):
        stepper.step()  # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            stepper.step()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = training_benchmark_args(__doc__)
    setup = QUICK if args.quick else FULL
    torch.set_num_threads(max(args.threads, 2) if not args.quick else 1)
    figures: dict[str, float] = {"load_average_start": os.getloadavg()[0]}
    timed = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="fedsynth-generators-") as tmp:
        root = Path(tmp)
        with timed("phantom"):
            generate_phantom(
                PhantomConfig(
                    sites=1,
                    subjects_per_site=setup["subjects"],
                    acquisition="randomised",
                    lesions=True,
                    lesion_fraction=0.5,
                    heads=True,
                    seed=7,
                ),
                root / "public",
                progress=False,
            )
        base = (
            FOUNDATION_RECIPE
            | (TINY_MODEL if args.quick else {})
            | {
                "data.root": str(root / "public"),
                "data.cache-dir": str(root / "cache"),
                "data.preprocess.image-size": setup["size"],
                "data.seed": 0,
            }
        )
        cfg = FedsynthConfig.from_flat(base)
        with timed("data"):
            pooled = pool_sites(prepare_sites(cfg.data, progress=False)[0])

        with timed("options"):
            gflops = matmul_gflops()
            figures["matmul_gflops"] = statistics.median(gflops)
            unpaired = dataclasses.replace(cfg.model, lambda_paired=0.0)
            flops = step_flops(build_model(unpaired, seed=0), cfg.model.image_size)
            for option in ("fp32", "channels_last", "bf16", "compile"):
                seconds = time_option(cfg, option, setup["reps"])
                if seconds is None:
                    continue
                figures[f"seconds_per_step_{option}"] = seconds
                figures[f"efficiency_vs_matmul_{option}"] = (
                    flops / seconds / 1e9 / figures["matmul_gflops"]
                )

        models = {}
        for name, overrides in CANDIDATES.items():
            with timed(name):
                run = FedsynthConfig.from_flat(base | ({} if args.quick else overrides))
                models[name], row = architecture_row(run, pooled, setup["budget"])
                figures |= {f"{k}_{name}": v for k, v in row.items()}
        with timed("evaluate"):
            directions = served_directions(next(iter(models.values())), list(pooled.test))
            rows = evaluate_rows(models, pooled.test, directions)
        for name in models:
            for metric in ("psnr_brain", "ssim_brain"):
                values = [e.summary[metric] for e in rows[name].values()]
                figures[f"{metric}_mean_{name}"] = statistics.fmean(values)
    figures["budget_seconds"] = setup["budget"]
    figures["load_average_end"] = os.getloadavg()[0]
    write_result("generators", figures, args.out)


if __name__ == "__main__":
    main()
