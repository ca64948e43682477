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
    eta : float (default: 0.1)
        Server learning rate.
    eta_l : float (default: 0.1)
        Client learning rate (recorded by Flower, not used by the server step).
    beta_1 : float (default: 0.9)
        Decay of the first moment of the pseudo-gradient.
    beta_2 : float (default: 0.99)
        Decay of the second moment of the pseudo-gradient.
    tau : float (default: 1e-3)
        Adaptivity: added to sqrt(second moment) in the denominator.
    norm_factor : float (default: 10.0)
        Update-norm outlier factor (see `fedsynth.strategies.validation`).
    norm_floor : float (default: 1e-3)
        Floor on the median update norm used by the outlier test.
    """
