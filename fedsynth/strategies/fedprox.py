"""FedProx (Li et al. 2020) with update validation.

The server side of FedProx is FedAvg: Flower's `FedProx.configure_train` only adds
`"proximal-mu"` to the train ConfigRecord. The proximal term (mu / 2) * ||w - w_global||^2 is
applied by the *client*, in its local loss, over the tensors it shares (the generators when
discriminators stay local), with w_global the weights it received this round. A client that
ignores `proximal-mu` silently turns this strategy into FedAvg.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedProx

from fedsynth.strategies.validated import ValidatedAggregation


class ValidatedFedProx(ValidatedAggregation, FedProx):
    """Flower's FedProx (sends `proximal-mu` to the sites) with validated aggregation.

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
        proximal_mu (float): weight mu of the client-side proximal term; 0.0 is FedAvg (Flower logs
            a warning). Defaults to 0.0.
        norm_factor (float): update-norm outlier factor (see `fedsynth.strategies.validation`).
            Defaults to 10.0.
        norm_floor (float): floor on the median update norm used by the outlier test.
            Defaults to 1e-3.
    """
