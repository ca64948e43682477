"""Training-step cost: non-DP vs DP-SGD step time, peak memory, and achieved GFLOP/s.

A *step* is what `train_local` does per step: a generator update then a discriminator update,
each = gradient of the player (`batch_gradients`, or `private_gradient` = per-sample
gradients via vmap(grad) + clipping + noise) followed by the engine's Adam update. It is
timed by calling those gradient functions directly on one fixed batch of 8 slices (CycleGAN:
4 source + 4 target; unified: 8 mixed), so the DP and non-DP steps do the same work except
for the DP mechanics (a Poisson batch would add its own size noise). `train_local` itself is
timed too, at the smallest size only, as a cross-check that the engine adds nothing else.

These machines are shared: DP and non-DP repetitions are interleaved and medians taken, and
ratios are formed inside one run. CPU-time ratios (process user+system time, insensitive to
being descheduled) are reported beside the wall-clock ones.

Peak memory: the RSS high-water mark (`getrusage(RUSAGE_SELF).ru_maxrss`) of a fresh
subprocess per configuration that builds the model, then runs warm-up + timed steps of one
kind only (tracemalloc would not see torch's allocations). `rss_before_steps_mb` is the RSS
of that process just before its first step (interpreter + torch + model), so the step's own
memory is the difference.

GFLOP/s: FLOPs of one non-DP step counted with `torch.utils.flop_counter.FlopCounterMode`
(convolutions and matmuls, forward + backward; elementwise ops such as norms, padding and
activations are not counted) divided by the measured non-DP step time, compared with an fp32
1024x1024 matmul measured in the same run, interleaved with the step timings.

Threads: torch uses 2 OpenMP threads. OMP_WAIT_POLICY defaults to PASSIVE here (set it to
ACTIVE to override): with libgomp's default spin-waiting, a 2-thread step on a 2-core machine
where another process holds a core was measured 15-40x slower (e.g. 9.5-19 s instead of
0.6 s for the 64 px non-DP step), which no median can repair.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import copy  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import parser, write_result  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from fedsynth.data.slices import SiteData, SliceSet  # noqa: E402
from fedsynth.models import PLAYERS, ModelConfig, SynthesisModel, build_model  # noqa: E402
from fedsynth.privacy.config import PrivacyConfig  # noqa: E402
from fedsynth.privacy.dp_sgd import private_gradient  # noqa: E402
from fedsynth.privacy.per_sample import batch_gradients  # noqa: E402
from fedsynth.training.config import TrainConfig  # noqa: E402
from fedsynth.training.engine import _apply, train_local  # noqa: E402

THREADS = 2
BATCH = 8
MAX_GRAD_NORM, NOISE = 1.0, 1.0
KINDS = {"cyclegan": "", "unified": "unified_"}  # model kind -> figure-name prefix


def model_config(kind: str, size: int, quick: bool) -> ModelConfig:
    """ModelConfig() defaults (the default model) at `size`; --quick: a tiny model."""
    tiny = dict(base_channels=8, res_blocks=1, disc_channels=8, disc_layers=2) if quick else {}
    return ModelConfig(kind=kind, image_size=size, **tiny)


def images(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed batch of BATCH slices in [-1, 1], half source and half target modality."""
    x = torch.rand(BATCH, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return {"T1": x[: BATCH // 2], "T2": x[BATCH // 2 :]}


class Stepper:
    """One model + Adam optimizers per player; `step()` is one engine step on a fixed batch."""

    def __init__(self, model: SynthesisModel, size: int, dp: bool) -> None:
        self.model, self.dp = model, dp
        self.generator = torch.Generator().manual_seed(0)
        self.batch = model.make_batch(images(size), self.generator)
        self.params = {p: model.group_parameters(p) for p in PLAYERS}
        self.optimizers = {
            p: torch.optim.Adam(self.params[p].values(), lr=2e-4, betas=(0.5, 0.999))
            for p in PLAYERS
        }

    def gradients(self, player: str) -> dict[str, torch.Tensor]:
        if not self.dp:
            return batch_gradients(self.model, player, self.batch)[0]
        return private_gradient(
            self.model,
            player,
            self.batch,
            max_grad_norm=MAX_GRAD_NORM,
            noise_multiplier=NOISE,
            expected_batch_size=float(BATCH),
            generator=self.generator,
        )[0]

    def step(self) -> None:
        for player in PLAYERS:
            _apply(self.optimizers[player], self.params[player], self.gradients(player), 2e-4)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_gflops(reps: int = 5, n: int = 1024) -> list[float]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return [2 * n**3 / timed(lambda: a @ b)[0] / 1e9 for _ in range(reps)]


def step_flops(model: SynthesisModel, size: int) -> float:
    """FLOPs (conv/matmul, forward + backward) of one non-DP step, counted on a copy."""
    stepper = Stepper(copy.deepcopy(model), size, dp=False)
    with FlopCounterMode(display=False) as counter:
        for player in PLAYERS:
            stepper.gradients(player)
    return float(counter.get_total_flops())


def site_data(size: int, slices: int = 64) -> SiteData:
    rng = np.random.default_rng(0)

    def slice_set(modality: str) -> SliceSet:
        return SliceSet(
            modality,
            rng.uniform(-1, 1, (slices, size, size)).astype(np.float32),
            np.ones((slices, size, size), dtype=bool),
            np.array([f"{modality}-{i}" for i in range(slices)]),
            np.arange(slices),
        )

    return SiteData("bench", {m: slice_set(m) for m in ("T1", "T2")})


def engine_ratio(config: ModelConfig, reps: int, steps: int) -> tuple[float, float, float]:
    """train_local seconds/step without and with DP (slice-level Poisson sampling at q =
    BATCH / slices, i.e. expected batch BATCH), interleaved; medians and their ratio."""
    data = site_data(config.image_size)
    train = TrainConfig(steps=steps, batch_size=BATCH, lr_schedule="constant")
    privacy = {
        False: PrivacyConfig(enabled=False),
        True: PrivacyConfig(noise_multiplier=NOISE, max_grad_norm=MAX_GRAD_NORM, unit="slice"),
    }
    models = {dp: build_model(config) for dp in (False, True)}
    for dp in (False, True):  # warm-up
        train_local(models[dp], data, train, privacy[dp], steps=1)
    times: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(reps):
        for dp in (False, True) if rep % 2 == 0 else (True, False):
            metrics, _ = train_local(models[dp], data, train, privacy[dp])
            times[dp].append(metrics["seconds_per_step"])
    nondp, dp = statistics.median(times[False]), statistics.median(times[True])
    return nondp, dp, dp / nondp


def rss_mb() -> float:
    """Current resident set size of this process."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(kind: str, size: int, dp: bool, quick: bool, steps: int) -> None:
    """Run in a fresh process: build, step, print the RSS before stepping and the peak."""
    torch.set_num_threads(THREADS)
    stepper = Stepper(build_model(model_config(kind, size, quick)), size, dp)
    before = rss_mb()
    for _ in range(steps):
        stepper.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"rss_before_steps_mb": before, "peak_rss_mb": peak}))


def peak_memory(kind: str, size: int, dp: bool, quick: bool, steps: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind, str(size), str(int(dp)), str(steps)]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--child", nargs=4, metavar=("KIND", "SIZE", "DP", "STEPS"), help="internal")
    args = p.parse_args()
    if args.child:
        kind, size, dp, steps = args.child
        child(kind, int(size), bool(int(dp)), args.quick, int(steps))
        return

    torch.set_num_threads(THREADS)
    sizes = (32,) if args.quick else (64, 128)
    reps = 2 if args.quick else 7
    figures: dict[str, float] = {
        "batch_size": BATCH,
        "omp_wait_policy_passive": float(os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"),
        "load_avg_1min_start": load_average(),
    }
    matmul: list[float] = matmul_gflops()

    # Peak memory first, each configuration alone in a fresh process (--quick: CycleGAN only).
    for kind, prefix in list(KINDS.items())[: 1 if args.quick else None]:
        for size in sizes:
            for dp in (False, True):
                mem = peak_memory(kind, size, dp, args.quick, steps=2 if args.quick else 3)
                mode = "dp" if dp else "nondp"
                figures[f"{prefix}peak_rss_mb_{mode}_{size}px"] = mem["peak_rss_mb"]
                figures[f"{prefix}rss_before_steps_mb_{mode}_{size}px"] = mem["rss_before_steps_mb"]

    for kind, prefix in KINDS.items():
        for size in sizes:
            model = build_model(model_config(kind, size, args.quick))
            flops = step_flops(model, size)
            steppers = {dp: Stepper(copy.deepcopy(model), size, dp) for dp in (False, True)}
            for s in steppers.values():  # warm-up (oneDNN primitive creation, allocator)
                s.step()
            wall: dict[bool, list[float]] = {False: [], True: []}
            cpu: dict[bool, list[float]] = {False: [], True: []}
            for rep in range(reps):
                matmul += matmul_gflops(reps=1)
                for dp in (False, True) if rep % 2 == 0 else (True, False):
                    w, c = timed(steppers[dp].step)
                    wall[dp].append(w)
                    cpu[dp].append(c)
            nondp, dp = statistics.median(wall[False]), statistics.median(wall[True])
            figures[f"{prefix}nondp_step_s_{size}px"] = nondp
            figures[f"{prefix}dp_step_s_{size}px"] = dp
            figures[f"{prefix}dp_over_nondp_step_ratio_{size}px"] = dp / nondp
            figures[f"{prefix}dp_over_nondp_cpu_time_ratio_{size}px"] = statistics.median(
                cpu[True]
            ) / statistics.median(cpu[False])
            figures[f"{prefix}step_gflop_{size}px"] = flops / 1e9
            figures[f"{prefix}step_gflops_{size}px"] = flops / nondp / 1e9
            print(f"{kind} {size}px done: non-DP {nondp:.3f}s, DP {dp:.3f}s", flush=True)

    matmul_median = statistics.median(matmul)
    figures["matmul_gflops"] = matmul_median
    for prefix in KINDS.values():
        for size in sizes:
            figures[f"{prefix}efficiency_vs_matmul_{size}px"] = (
                figures[f"{prefix}step_gflops_{size}px"] / matmul_median
            )

    # Cross-check through the engine itself (Poisson batches under DP), smallest size only.
    size = sizes[0]
    config = model_config("cyclegan", size, args.quick)
    reps, steps = (2, 2) if args.quick else (5, 4)
    nondp, dp, ratio = engine_ratio(config, reps=reps, steps=steps)
    figures[f"engine_nondp_step_s_{size}px"] = nondp
    figures[f"engine_dp_step_s_{size}px"] = dp
    figures[f"engine_dp_over_nondp_step_ratio_{size}px"] = ratio
    figures["load_avg_1min_end"] = load_average()
    write_result("train_step", figures, args.out)


if __name__ == "__main__":
    main()
