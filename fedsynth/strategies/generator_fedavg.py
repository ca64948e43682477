"""Weighted FedAvg over whatever shared tensors the sites send, with update validation.

FedAvg (McMahan et al. 2017) weighted by each site's `num-examples`. Which tensors are shared
is the client's choice: the generators only, keeping every discriminator at its site as
FedMed-GAN (Wang et al. 2023) does, or all networks; with FedBN-style local normalisation
(Li et al. 2021) the norm layers are left out as well. The server averages exactly the keys it
receives, so the global `ArrayRecord` holds the shared keys and nothing else.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from fedsynth.strategies.validated import ValidatedAggregation


class GeneratorFedAvg(ValidatedAggregation, FedAvg):
    """Validated, `num-examples`-weighted FedAvg over the shared (e.g. generator) tensors.

    Args:
        fraction_train (float): fraction of connected nodes sampled for training (at least
            `min_train_nodes`). Defaults to 1.0.
        fraction_evaluate (float): fraction of connected nodes sampled for evaluation (at least
            `min_evaluate_nodes`). Defaults to 1.0.
        min_train_nodes (int): minimum number of nodes sampled for training. Defaults to 2.
        min_evaluate_nodes (int): minimum number of nodes sampled for evaluation. Defaults to 2.
        min_available_nodes (int): nodes that must be connected before a round starts.
            Defaults to 2.
        weighted_by_key (str): metricRecord key weighting the average of arrays and metrics.
            Defaults to "num-examples".
        arrayrecord_key (str): name of the ArrayRecord in the messages sent to sites.
            Defaults to "arrays".
        configrecord_key (str): name of the ConfigRecord in the messages sent to sites.
            Defaults to "config".
        train_metrics_aggr_fn (Callable | None): (list[RecordDict], str) -> MetricRecord for train
            metrics; None: weighted mean. Defaults to None.
        evaluate_metrics_aggr_fn (Callable | None): (list[RecordDict], str) -> MetricRecord for
            evaluate metrics; None: weighted mean. Defaults to None.
        norm_factor (float): update-norm outlier factor (see `fedsynth.strategies.validation`).
            Defaults to 10.0.
        norm_floor (float): floor on the median update norm used by the outlier test.
            Defaults to 1e-3.
    """
