"""Who trains on what: partitions of subjects into (simulated) sites, and per site the
unpaired training split and the paired held-out test split.

Unpaired by construction (the default): every training subject contributes exactly one
modality, so no subject gives both the source and the target of a translation. With
`data.pairing=paired` every training subject gives every contrast it has: where it has
several, its slices are partners (same subject, same position) for a supervised term; a
subject with one contrast trains as it would unpaired. A site trains on the contrasts it has
(found from its subjects, at least two); its test subjects (and validation subjects, when
asked for) have every one of them and are never trained on: ground truth for PSNR/SSIM/MAE in
every direction among them. A dataset may name them itself (`Dataset.held_out`: the phantom
does when its training subjects are partly paired or misaligned, since only the held-out
ones are aligned).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedsynth.data.cache import SliceCache
from fedsynth.data.config import DataConfig
from fedsynth.data.layouts import DatasetError
from fedsynth.data.slices import SiteData, SliceSet


def partition_subjects(
    subjects_by_site: dict[str, list[str]],
    scheme: str,
    num_partitions: int | None = None,
    alpha: float = 0.5,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Group subject uids into partitions (the simulated sites).

    by-site: the natural federation, one partition per site.
    iid: all subjects pooled, shuffled and dealt round-robin into `num_partitions`.
    dirichlet: quantity skew; partition shares ~ Dirichlet(alpha), every partition keeps at
        least one subject (smaller alpha, more skew).
    """
    if scheme == "by-site":
        return {site: sorted(uids) for site, uids in sorted(subjects_by_site.items())}
    pool = sorted(u for uids in subjects_by_site.values() for u in uids)
    n = int(num_partitions or 0)
    if n < 1 or n > len(pool):
        raise DatasetError(f"num_partitions={num_partitions}: expected 1..{len(pool)} subjects")
    rng = np.random.default_rng(seed)
    rng.shuffle(pool)
    names = [f"part{i}" for i in range(n)]
    if scheme == "iid":
        return {name: sorted(pool[i::n]) for i, name in enumerate(names)}
    if scheme != "dirichlet":
        raise DatasetError(f"unknown partition scheme {scheme!r}")
    shares = rng.dirichlet(np.full(n, alpha))
    counts = np.ones(n, int) + np.floor(shares * (len(pool) - n)).astype(int)
    counts[np.argmax(shares)] += len(pool) - counts.sum()
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {name: sorted(pool[bounds[i] : bounds[i + 1]]) for i, name in enumerate(names)}


@dataclass(frozen=True)
class SitePlan:
    """Which subject uids train which modality, and which are held out as paired validation
    and test subjects (disjoint). `paired` (data.pairing=paired): a training subject is listed
    under every contrast it has, and its slices there are each other's partners."""

    site: str
    train: dict[str, list[str]]
    test: list[str]
    validation: list[str] = field(default_factory=list)
    paired: bool = False

    @property
    def modalities(self) -> list[str]:
        return list(self.train)


def _evaluation_subjects(
    site: str,
    complete: list[str],
    held_out: Collection[str],
    test_fraction: float,
    validation_fraction: float,
    rng: np.random.Generator,
) -> tuple[list[str], list[str]]:
    """(test, validation) uids: drawn from the subjects with every contrast, or — when the
    dataset holds some out — exactly those, split in the ratio of the two fractions."""
    if held_out:
        incomplete = sorted(set(held_out) - set(complete))
        if incomplete:
            raise DatasetError(
                f"site {site!r}: held-out subject(s) {', '.join(incomplete)} lack a contrast "
                "the site trains on; held-out subjects are the paired ground truth"
            )
        pool = sorted(held_out)
        share = validation_fraction / (test_fraction + validation_fraction)
        n_val = max(1, round(share * len(pool))) if validation_fraction else 0
        n_test = len(pool) - n_val
    else:
        pool = complete
        n_test = max(1, round(test_fraction * len(complete)))
        n_val = max(1, round(validation_fraction * len(complete))) if validation_fraction else 0
    if n_test < 1 or len(pool) < n_test + n_val:
        where = "held out by the dataset" if held_out else "with every contrast"
        raise DatasetError(
            f"site {site!r}: {len(pool)} subject(s) {where}; need {max(n_test, 1)} paired "
            f"test and {n_val} validation subject(s)"
        )
    chosen = rng.choice(pool, size=n_test + n_val, replace=False).tolist()
    return sorted(chosen[:n_test]), sorted(chosen[n_test:])


def plan_site(
    site: str,
    subjects: dict[str, set[str]],
    modalities: Sequence[str],
    test_fraction: float,
    seed: int,
    validation_fraction: float = 0.0,
    held_out: Collection[str] = (),
    paired: bool = False,
) -> SitePlan:
    """Split one site's subjects (uid -> modalities it has) into training and paired
    validation and test subjects, over the contrasts of `modalities` the site has.

    Test and validation subjects have every one of those: `test_fraction` of such subjects
    (at least one) and `validation_fraction` (at least one when > 0) — or, when the dataset
    names `held_out` subjects, exactly those. Every other subject trains: unpaired, on one
    modality it has (keeping the modalities balanced); `paired`, on every one it has.
    """
    usable = {u: set(m) & set(modalities) for u, m in sorted(subjects.items())}
    usable = {u: m for u, m in usable.items() if m}
    held = [m for m in modalities if any(m in ms for ms in usable.values())]
    if len(held) < 2:
        raise DatasetError(
            f"site {site!r} has {'/'.join(held) or 'none'} of {'/'.join(modalities)}: "
            "training needs at least two contrasts at a site"
        )
    complete = [u for u, m in usable.items() if m == set(held)]
    rng = np.random.default_rng(seed)
    held_out = sorted(set(held_out) & set(usable))
    test, validation = _evaluation_subjects(
        site, complete, held_out, test_fraction, validation_fraction, rng
    )
    chosen = set(test) | set(validation) | set(held_out)
    rest = [u for u in usable if u not in chosen]
    if len(rest) < (1 if paired else len(held)):
        raise DatasetError(
            f"site {site!r}: {len(usable)} subjects with {'/'.join(held)}, {len(chosen)} held "
            f"out for testing; too few left to train on every modality"
        )
    train: dict[str, list[str]] = {m: [] for m in held}
    if paired:
        for uid in rest:
            for m in usable[uid]:
                train[m].append(uid)
    else:
        rng.shuffle(rest)
        # Subjects with fewer options first, so single-modality subjects are never starved.
        rest.sort(key=lambda u: len(usable[u]))
        for uid in rest:
            options = [m for m in held if m in usable[uid]]
            modality = min(options, key=lambda m: (len(train[m]), held.index(m)))
            train[modality].append(uid)
    empty = [m for m, uids in train.items() if not uids]
    if empty:
        raise DatasetError(f"site {site!r}: no training subject has {', '.join(empty)}")
    return SitePlan(site, {m: sorted(u) for m, u in train.items()}, test, validation, paired)


def site_data(cache: SliceCache, plan: SitePlan) -> SiteData:
    """Materialise a plan from the cache: each modality's training slices of its subjects (in
    a paired plan a subject's slices of one position are partners across modalities,
    `fedsynth.data.pairs`), and row-aligned paired validation and test slices."""
    train = {m: cache.slice_set(m, uids) for m, uids in plan.train.items()}
    for m, s in train.items():
        if len(s) == 0:
            raise DatasetError(f"site {plan.site!r}: no usable {m} training slices")
    validation = cache.paired(plan.modalities, plan.validation) if plan.validation else {}
    test = cache.paired(plan.modalities, plan.test)
    return SiteData(plan.site, train, test, validation, paired=plan.paired)


def federation_data(cache: SliceCache, cfg: DataConfig) -> list[SiteData]:
    """Every (simulated) site's train/validation/test data from one cache."""
    by_site = {site: sorted(cache.subjects(site)) for site in cache.sites}
    parts = partition_subjects(
        by_site, cfg.partition, cfg.num_partitions, cfg.dirichlet_alpha, cfg.seed
    )
    modalities_of = cache.subjects()
    out = []
    for i, (name, uids) in enumerate(parts.items()):
        plan = plan_site(
            name,
            {u: modalities_of[u] for u in uids},
            cfg.modalities_of(name),
            cfg.test_fraction,
            cfg.seed + i,
            cfg.validation_fraction,
            held_out=cache.held_out & set(uids),
            paired=cfg.pairing == "paired",
        )
        out.append(site_data(cache, plan))
    return out


def paired_training(
    cache: SliceCache, site: SitePlan | SiteData, modalities: Sequence[str]
) -> dict[str, SliceSet]:
    """Row-aligned slices of every modality of a site's *training* subjects.

    For the paired oracle only (an upper bound a phantom allows): the unpaired split uses one
    modality per training subject, but a phantom has them all. The test subjects stay out.
    """
    if isinstance(site, SitePlan):
        uids = sorted({u for group in site.train.values() for u in group})
    else:
        uids = sorted({u for s in site.train.values() for u in s.unique_subjects()})
    return cache.paired(modalities, uids)
