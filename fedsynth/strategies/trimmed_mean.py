"""Coordinate-wise trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", arXiv:1803.01498), after update validation.

Per coordinate, the `int(beta * n)` largest and smallest values of the n validated replies are
dropped and the rest averaged. Like the median it bounds the influence of a site whose update
is wrong but well-formed and of ordinary norm — exactly what passes validation — at the cost of
ignoring `num-examples`: the arrays are not weighted (Flower still weights the metrics). With
few sites `beta` must be at least 1/n to trim anything: 3 hospitals and the default 0.2 trim
nothing, and the rule is then the unweighted mean.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedTrimmedAvg

from fedsynth.strategies.validated import ValidatedAggregation


class ValidatedFedTrimmedAvg(ValidatedAggregation, FedTrimmedAvg):
    """Coordinate-wise trimmed mean of the validated replies (Flower's FedTrimmedAvg).

    Args:
        fraction_train (float): fraction of connected nodes sampled for training (at least
            `min_train_nodes`). Defaults to 1.0.
        fraction_evaluate (float): fraction of connected nodes sampled for evaluation (at
            least `min_evaluate_nodes`). Defaults to 1.0.
        min_train_nodes (int): minimum number of nodes sampled for training. Defaults to 2.
        min_evaluate_nodes (int): minimum number of nodes sampled for evaluation.
            Defaults to 2.
        min_available_nodes (int): nodes that must be connected before a round starts.
            Defaults to 2.
        weighted_by_key (str): MetricRecord key weighting the average of metrics (arrays are
            not weighted). Defaults to "num-examples".
        arrayrecord_key (str): name of the ArrayRecord in the messages sent to sites.
            Defaults to "arrays".
        configrecord_key (str): name of the ConfigRecord in the messages sent to sites.
            Defaults to "config".
        train_metrics_aggr_fn (Callable | None): (list[RecordDict], str) -> MetricRecord for
            train metrics; None: weighted mean. Defaults to None.
        evaluate_metrics_aggr_fn (Callable | None): (list[RecordDict], str) -> MetricRecord
            for evaluate metrics; None: weighted mean. Defaults to None.
        beta (float): fraction cut at each end per coordinate, in [0, 0.5); `int(beta * n)`
            values go. Defaults to 0.2.
        norm_factor (float): update-norm outlier factor (see
            `fedsynth.strategies.validation`). Defaults to 10.0.
        norm_floor (float): floor on the median update norm used by the outlier test.
            Defaults to 1e-3.

    Raises:
        ValueError: `beta` outside [0, 0.5) (Flower's check), `norm_factor` <= 1 or
            `norm_floor` < 0.
    """
