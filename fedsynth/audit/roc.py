"""ROC analysis of a membership-inference attack, in numpy: AUC, balanced accuracy, TPR at a
low false-positive rate, and stratified bootstrap confidence intervals.

Scores are "higher means member". Low-FPR figures matter more than AUC for privacy
(Carlini et al. 2022, "Membership inference attacks from first principles"): an attack that
confidently identifies a few members is a leak even when its AUC is near 0.5. With n
non-members the smallest non-zero FPR is 1/n, so TPR at 0.1% FPR is TPR at FPR = 0 unless
there are more than 1000 non-members; reports state n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPR_POINTS = (0.01, 0.001)


def roc_curve(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every distinct threshold, from (0, 0) to (1, 1); ties move together."""
    scores = np.concatenate([members, nonmembers]).astype(np.float64)
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(labels)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    tpr = np.r_[0.0, tp / max(len(members), 1)]
    fpr = np.r_[0.0, fp / max(len(nonmembers), 1)]
    return fpr, tpr


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(score of a random member > that of a random non-member), ties counting half
    (the Mann-Whitney U statistic, computed from average ranks)."""
    m, n = len(members), len(nonmembers)
    if m == 0 or n == 0:
        raise ValueError(f"AUC needs members and non-members, got {m} and {n}")
    scores = np.concatenate([members, nonmembers])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank within ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR of a threshold whose FPR is at most `target`."""
    return float(tpr[fpr <= target + 1e-12].max())


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Best (TPR + TNR) / 2 over thresholds (threshold chosen on the same data: optimistic for
    the attacker, which is the right side to err on in an audit)."""
    return float(((tpr + 1.0 - fpr) / 2.0).max())


def _figures(members: np.ndarray, nonmembers: np.ndarray) -> dict[str, float]:
    fpr, tpr = roc_curve(members, nonmembers)
    out = {"auc": auc(members, nonmembers), "balanced_accuracy": balanced_accuracy(fpr, tpr)}
    for target in FPR_POINTS:
        out[f"tpr_at_{target:g}_fpr"] = tpr_at_fpr(fpr, tpr, target)
    return out


@dataclass(frozen=True)
class AttackResult:
    """One attack's scores and figures. `ci` holds the (low, high) 95% bootstrap interval of
    each figure; `roc` the curve for plotting."""

    name: str
    members: np.ndarray
    nonmembers: np.ndarray
    figures: dict[str, float]
    ci: dict[str, tuple[float, float]]

    @property
    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        return roc_curve(self.members, self.nonmembers)

    def summary(self) -> dict[str, object]:
        """JSON-ready: figures, intervals and the sample sizes they rest on."""
        return {
            "members": len(self.members),
            "nonmembers": len(self.nonmembers),
            **self.figures,
            "ci95": {k: list(v) for k, v in self.ci.items()},
        }


def evaluate_attack(
    name: str,
    members: np.ndarray,
    nonmembers: np.ndarray,
    bootstrap: int = 1000,
    seed: int = 0,
) -> AttackResult:
    """Figures of an attack and percentile 95% intervals from `bootstrap` resamples, members
    and non-members resampled separately (stratified, so every resample has both)."""
    members = np.asarray(members, dtype=np.float64)
    nonmembers = np.asarray(nonmembers, dtype=np.float64)
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError(f"attack {name!r}: scores must be finite")
    figures = _figures(members, nonmembers)
    rng = np.random.default_rng(seed)
    draws = {k: np.empty(bootstrap) for k in figures}
    for b in range(bootstrap):
        sample = _figures(
            members[rng.integers(0, len(members), len(members))],
            nonmembers[rng.integers(0, len(nonmembers), len(nonmembers))],
        )
        for k, v in sample.items():
            draws[k][b] = v
    ci = (
        {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in draws.items()}
        if bootstrap
        else {}
    )
    return AttackResult(name, members, nonmembers, figures, ci)
