"""A site's log of the rounds it trained, which makes training a round idempotent.

When the server dies after a site trained a round but before that round's checkpoint was
written, the resumed run sends the same round again (the same absolute round of the same run,
fedsynth.instruction). Training it again would spend privacy budget twice for one round and
push the site's step counter (and learning-rate schedule) past the run's end; instead the site
answers with the reply it already computed — re-sending a released update costs no privacy.

`rounds.jsonl` in the state directory (`SiteStateDir.rounds`) holds one line per trained
round: the run (its directory, the same after a resume) and absolute round it answered, a
digest of the tensors it started from (provenance: which global model a round trained on),
the step counter after it, and the metrics replied. The line is appended after the model,
optimizer and accountant are saved, so a crash before it makes the site train the round again
(at worst counting ε once more, never less).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of tensors (names, dtypes, shapes, bytes): matches a site's input to a server
    checkpoint."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def already_trained(log: list[Mapping], run: str, server_round: int) -> Mapping | None:
    """The log line of `run`'s round `server_round` if it is the last one trained, else None."""
    if log and log[-1].get("run") == run and log[-1].get("round") == server_round:
        return log[-1]
    return None
