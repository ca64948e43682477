"""A site's log of the rounds it trained, which makes training a round idempotent.

When the server dies after a site trained a round but before that round's checkpoint was
written, the resumed run sends the same round again: the same global weights under the same
configuration. Training it again would spend privacy budget twice for one round and push the
site's step counter (and learning-rate schedule) past the run's end; instead the site
answers with the reply it already computed — re-sending a released update costs no privacy.

`rounds.jsonl` in the state directory (`SiteStateDir.rounds`) holds one line per trained
round: the digest of what was asked (run + received tensors), the step counter after it, and
the metrics replied. The line is appended after the model, optimizer and accountant are
saved, so a crash before it makes the site train the round again (at worst counting ε once
more, never less).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def instruction_digest(run: str, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a train instruction: the run it belongs to (its run directory, the same
    after a resume) and its tensors (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(run.encode())
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of tensors alone: lets a test match a site's input to a server checkpoint."""
    return instruction_digest("", arrays)
