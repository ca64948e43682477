"""The held-out scores a site sends, named once for the site that computes them and the
server that checks them.

An evaluate reply carries a site's scores of the global model it was sent
(`fedsynth.client.site.Site.evaluate`). With `federation.evaluate-in-train` a train reply also
carries the site's scores of the global model that instruction brought, taken before training
on it, each key prefixed `RECEIVED`: round r's train replies score round r-1's global model
(the initial one in round 1), and the last round's model is scored by an evaluate message.

Flower-free: the site and the server's validation both import it.
"""

from __future__ import annotations

from collections.abc import Mapping

SCORES = ("psnr_brain", "ssim_brain", "mae_brain", "psnr_whole", "ssim_whole", "mae_whole")
RECEIVED = "received-"
RECEIVED_KEYS = frozenset(RECEIVED + k for k in ("num-examples", *SCORES))
"""Exactly the evaluation metrics of a train reply: the scores and how many test subjects
they pool (the weight of an average across sites; the site's id is in the reply already)."""


def received(evaluation: Mapping[str, float]) -> dict[str, float]:
    """An evaluate reply's metrics as a train reply carries them."""
    return {RECEIVED + k: v for k, v in evaluation.items() if RECEIVED + k in RECEIVED_KEYS}
