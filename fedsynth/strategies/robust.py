"""Robust aggregation: coordinate-wise median and trimmed mean (Yin et al. 2018), validated.

Both bound the influence of a site whose update is wrong but well-formed and of ordinary norm —
exactly what passes validation — at the cost of ignoring `num-examples` (neither rule is
weighted; Flower still weights the metrics). The trimmed mean drops `int(beta * n)` values at
each end per coordinate, so with few sites `beta` must be at least 1/n to trim anything
(3 hospitals and the default 0.2 trim nothing: it is then the unweighted mean).
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg

from fedsynth.strategies.validated import ValidatedAggregation


class ValidatedFedMedian(ValidatedAggregation, FedMedian):
    """Coordinate-wise median of the validated replies (Flower's FedMedian).

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
        MetricRecord key weighting the average of metrics (arrays are not weighted).
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


class ValidatedFedTrimmedAvg(ValidatedAggregation, FedTrimmedAvg):
    """Coordinate-wise trimmed mean of the validated replies (Flower's FedTrimmedAvg).

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
        MetricRecord key weighting the average of metrics (arrays are not weighted).
    arrayrecord_key : str (default: "arrays")
        Name of the ArrayRecord in the messages sent to sites.
    configrecord_key : str (default: "config")
        Name of the ConfigRecord in the messages sent to sites.
    train_metrics_aggr_fn : callable | None (default: None)
        (list[RecordDict], str) -> MetricRecord for train metrics; None: weighted mean.
    evaluate_metrics_aggr_fn : callable | None (default: None)
        (list[RecordDict], str) -> MetricRecord for evaluate metrics; None: weighted mean.
    beta : float (default: 0.2)
        Fraction cut at each end per coordinate, in [0, 0.5); `int(beta * n)` values go.
    norm_factor : float (default: 10.0)
        Update-norm outlier factor (see `fedsynth.strategies.validation`).
    norm_floor : float (default: 1e-3)
        Floor on the median update norm used by the outlier test.
    """
