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

    Parameters
    ----------
    fraction_train : float (default: 1.0)
        Fraction of connected nodes sampled for training (at least `min_train_nodes`).
    fraction_evaluate : float (default: 1.0)
        Fraction of connected nodes sampled for evaluation (at least `min_evaluate_nodes`).
    min_train_nodes : int (default: 2)
        Minimum number of nodes sampled for training.
    min_evaluate_nodes : int (default: 2)
        Minimum number of nodes sampled for evaluation.
    min_available_nodes : int (default: 2)
        Nodes that must be connected before a round starts.
    weighted_by_key : str (default: "num-examples")
        MetricRecord key weighting the average of arrays and metrics.
    arrayrecord_key : str (default: "arrays")
        Name of the ArrayRecord in the messages sent to sites.
    configrecord_key : str (default: "config")
        Name of the ConfigRecord in the messages sent to sites.
    train_metrics_aggr_fn : callable | None (default: None)
        (list[RecordDict], str) -> MetricRecord for train metrics; None: weighted mean.
    evaluate_metrics_aggr_fn : callable | None (default: None)
        (list[RecordDict], str) -> MetricRecord for evaluate metrics; None: weighted mean.
    norm_factor : float (default: 10.0)
        Update-norm outlier factor (see `fedsynth.strategies.validation`).
    norm_floor : float (default: 1e-3)
        Floor on the median update norm used by the outlier test.
    """
