"""Partners of a training slice: the slices of the same subject at the same position in the
other contrasts (`data.pairing=paired`).

A site may hold every contrast of some subjects and one of others; its training sets are then
of different sizes and not row-aligned. A partner is found by (subject, position), so a set
of fully paired subjects, a partly paired site and pooled sites are all one case; a row
without a partner in a contrast gets -1 there.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedsynth.data.slices import SliceSet

MISSING = -1


def _keys(s: SliceSet) -> list[tuple[str, int]]:
    return list(zip(s.subjects.tolist(), np.asarray(s.positions).tolist(), strict=True))


class PartnerIndex:
    """For every training modality m and row r: the row of the same (subject, position) in
    each other training modality, or `MISSING`.

    Args:
        sets: modality -> training slices (subjects and positions identify a slice).
    """

    def __init__(self, sets: Mapping[str, SliceSet]) -> None:
        keys = {m: _keys(s) for m, s in sets.items()}
        where = {m: {key: row for row, key in enumerate(k)} for m, k in keys.items()}
        self._rows = {
            (m, t): np.array([where[t].get(key, MISSING) for key in keys[m]], dtype=np.int64)
            for m in sets
            for t in sets
        }

    def rows(self, source: str, target: str, rows: np.ndarray) -> np.ndarray:
        """The rows in `target` of `source`'s `rows` (`MISSING` where the subject has no
        `target` slice at that position)."""
        return self._rows[(source, target)][np.asarray(rows, dtype=np.int64)]
