"""Test oracles of SecAgg+ rounds (tests/test_secure.py in process, tests/test_deploy_secure.py
across SuperNodes): how far the secure aggregate may be from the plain weighted FedAvg, and
what a server would read from one site's vector if it were not masked.

Both follow Flower's quantisation (flwr.common.secure_aggregation: `quantize`, `dequantize`,
`factor_combine`) with fedsynth.server.secure's settings: clipping range c = CLIPPING_RANGE,
T = QUANTIZATION_RANGE levels, weights num-examples / M with M = MAX_WEIGHT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedsynth.server.secure import CLIPPING_RANGE, MAX_WEIGHT, QUANTIZATION_RANGE

STEP = 2 * CLIPPING_RANGE / QUANTIZATION_RANGE
"""One quantisation level: 2c/T = 16 / 2**22 ≈ 3.8e-6."""


def weighted_mean(
    counts: Sequence[float], updates: Sequence[Mapping[str, np.ndarray]], key: str
) -> np.ndarray:
    """FedAvg of one tensor in float64: Σ n_i·x_i / Σ n_i."""
    total = sum(n * np.asarray(u[key], np.float64) for n, u in zip(counts, updates, strict=True))
    return total / sum(counts)


def aggregate_bound(
    counts: Sequence[float], updates: Sequence[Mapping[str, np.ndarray]], keys: Sequence[str]
) -> float:
    """The most SecAgg+'s aggregate (as checkpointed) may differ, element by element, from
    the weighted FedAvg of `updates` (the k sites whose masked vectors were summed) with
    weights `counts` (their num-examples).

    Derivation. Site i scales its update x_i by r_i = q_i/T, q_i = round(n_i·T/M), so
    |r_i − n_i/M| ≤ 1/(2T); it sends Q_i = stochastic_round((r_i·x_i + c)·T/(2c)) (nothing is
    clipped while |r_i·x_i| ≤ c, checked below) plus masks, i.e. r_i·x_i + e_i on a grid of
    step s = 2c/T with |e_i| < s. The masks cancel in the sum mod 2**32 (which does not wrap:
    k·T < 2**32); the server dequantises ΣQ_i, subtracts k·c and divides by Σr_i (Σq_i rides
    in the same vector): A = Σr_i·x_i/Σr_i + Σe_i/Σr_i. Against F = Σn_i·x_i/Σn_i,
    Σr_i·x_i/Σr_i − F = Σ(r_i − n_i/M)(x_i − F)/Σr_i, at most 2·X·Σ|r_i − n_i/M|/Σr_i with
    X = max|x_i|. The checkpoint keeps A in float32: ≤ X·2**-23 more. Hence
        |A − F| ≤ (k·s + 2·X·Σ|r_i − n_i/M|) / Σr_i + X·2**-23.
    """
    ratios = [round(n / MAX_WEIGHT * QUANTIZATION_RANGE) / QUANTIZATION_RANGE for n in counts]
    biggest = max(float(np.abs(np.asarray(u[k])).max()) for u in updates for k in keys)
    assert biggest * max(ratios) <= CLIPPING_RANGE, "SecAgg+ would clip: the bound does not hold"
    assert len(updates) * QUANTIZATION_RANGE < 2**32
    weight_error = sum(abs(r - n / MAX_WEIGHT) for r, n in zip(ratios, counts, strict=True))
    return (len(updates) * STEP + 2 * biggest * weight_error) / sum(ratios) + biggest * 2**-23


def read_as_unmasked(vector: Sequence[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """(weight, tensors) a server would read from ONE site's SecAgg+ vector if it carried no
    mask: [q, Q_1, …] → n = q·M/T, x = (Q·s − c)/(q/T). With the masks it reads noise."""
    q = float(np.asarray(vector[0]).reshape(-1)[0])
    ratio = q / QUANTIZATION_RANGE
    with np.errstate(divide="ignore", invalid="ignore"):
        tensors = [(np.asarray(v, np.float64) * STEP - CLIPPING_RANGE) / ratio for v in vector[1:]]
    return ratio * MAX_WEIGHT, tensors
