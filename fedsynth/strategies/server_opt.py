"""FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization") with update validation.

The weighted mean of the validated replies defines a pseudo-gradient
delta = mean - w_global, which Flower's FedAdam feeds to a server-side Adam step
(first moment beta_1, second moment beta_2, step eta, adaptivity tau). Validation matters
more here than for FedAvg: Adam's second moment remembers a poisoned round for many rounds.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam

from fedsynth.strategies.validated import ValidatedAggregation


class ValidatedFedAdam(ValidatedAggregation, FedAdam):
    """Flower's FedAdam server optimiser applied to the mean of the validated replies.

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
        eta (float): server learning rate. Defaults to 0.1.
        eta_l (float): client learning rate (recorded by Flower, not used by the server step).
            Defaults to 0.1.
        beta_1 (float): decay of the first moment of the pseudo-gradient. Defaults to 0.9.
        beta_2 (float): decay of the second moment of the pseudo-gradient. Defaults to 0.99.
        tau (float): adaptivity: added to sqrt(second moment) in the denominator. Defaults to 1e-3.
        norm_factor (float): update-norm outlier factor (see `fedsynth.strategies.validation`).
            Defaults to 10.0.
        norm_floor (float): floor on the median update norm used by the outlier test.
            Defaults to 1e-3.
    """
