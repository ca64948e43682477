"""GAN-aware federated strategies on `flwr.serverapp.strategy`, usable by a plain ServerApp.

Each site replies with the tensors it shares, by state-dict name (`G_AB.model.1.weight`),
packed into one ArrayRecord plus its index (`fedsynth.transport`; validation unpacks them
before Flower's rule runs), and one MetricRecord with a scalar `num-examples`. *What* is shared
is decided at the site, so the server aggregates exactly the keys that arrive and holds
nothing else:

- generators only, discriminators local — the FedMed-GAN choice (Wang et al. 2023) — or all
  networks: the global ArrayRecord is then the generator (or full) state dict;
- FedBN-style local normalisation (Li et al. 2021): sites leave norm-layer parameters and
  statistics out of the reply and keep their own; the server needs no logic for it, since
  averaging a partial key set is just averaging the keys present. Start the run with
  `initial_arrays` holding the same key set the sites send: validation compares every reply
  with the arrays sent that round.

Every strategy validates each update first (`validation`: names, shapes, dtypes, NaN/inf,
norm outliers; rejected replies are logged and listed on `strategy.rejections`) and then runs
Flower's own rule — one file per idea: `generator_fedavg` (FedAvg, McMahan et al. 2017),
`fedprox` (FedProx, Li et al. 2020), `server_opt` (FedAdam, Reddi et al. 2021), `median` and
`trimmed_mean` (coordinate-wise median and trimmed mean, Yin et al. 2018). A new strategy is
one module plus one line in `STRATEGIES`.
"""

from __future__ import annotations

from typing import Any

from fedsynth.strategies.fedprox import ValidatedFedProx
from fedsynth.strategies.generator_fedavg import GeneratorFedAvg
from fedsynth.strategies.median import ValidatedFedMedian
from fedsynth.strategies.server_opt import ValidatedFedAdam
from fedsynth.strategies.trimmed_mean import ValidatedFedTrimmedAvg
from fedsynth.strategies.validated import ValidatedAggregation
from fedsynth.strategies.validation import Rejection, validate_replies

STRATEGIES: dict[str, type[ValidatedAggregation]] = {
    "fedavg": GeneratorFedAvg,
    "fedprox": ValidatedFedProx,
    "fedadam": ValidatedFedAdam,
    "median": ValidatedFedMedian,
    "trimmed-mean": ValidatedFedTrimmedAvg,
}


def build_strategy(name: str, **kwargs: Any) -> ValidatedAggregation:
    """The strategy registered as `name` in `STRATEGIES`, built with `kwargs`.

    Args:
        name: a key of `STRATEGIES` ("fedavg", "fedprox", "fedadam", "median",
            "trimmed-mean").
        **kwargs: the strategy's keyword arguments (its class docstring lists them).

    Returns:
        The strategy, ready for `strategy.start(...)`.

    Raises:
        ValueError: `name` is not registered, or a knob is out of range.
        TypeError: a knob the strategy does not take (e.g. `proximal_mu` for "fedavg"),
            rather than being silently ignored.
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}"
        ) from None
    return cls(**kwargs)


__all__ = [
    "STRATEGIES",
    "GeneratorFedAvg",
    "Rejection",
    "ValidatedAggregation",
    "ValidatedFedAdam",
    "ValidatedFedMedian",
    "ValidatedFedProx",
    "ValidatedFedTrimmedAvg",
    "build_strategy",
    "validate_replies",
]
