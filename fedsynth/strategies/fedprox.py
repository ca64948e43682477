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
    proximal_mu : float (default: 0.0)
        Weight mu of the client-side proximal term; 0.0 is FedAvg (Flower logs a warning).
    norm_factor : float (default: 10.0)
        Update-norm outlier factor (see `fedsynth.strategies.validation`).
    norm_floor : float (default: 1e-3)
        Floor on the median update norm used by the outlier test.
    """
