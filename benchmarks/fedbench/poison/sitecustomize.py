"""A hospital that runs modified code, for benchmarks/fleet.py only.

On a SuperNode's PYTHONPATH this module is imported at the start of every Python process the
node starts, its ClientApp processes included. It wraps fedsynth's `Site` as it is imported so
that the rounds named in FEDSYNTH_POISON ("7:scale,14:nan") reply with a poisoned update:
`scale`, the global weights plus 100 times the site's own update; `nan`, every floating tensor
NaN. Each poisoned reply is logged as a JSON line to FEDSYNTH_POISON_LOG. The product is not
touched: the server has to refuse what this site sends.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys

TARGET = "fedsynth.client.site"
SCALE = 100.0


def _plan(text: str) -> dict[int, str]:
    """FEDSYNTH_POISON as {round: kind}: "7:scale,14:nan" -> {7: "scale", 14: "nan"}."""
    return {int(r): kind for r, kind in (item.split(":") for item in text.split(",") if item)}


PLAN = _plan(os.environ.get("FEDSYNTH_POISON", ""))


def _poison(site_class: type) -> None:
    import numpy as np

    train_round, shared_arrays = site_class.train_round, site_class.shared_arrays

    def remembering_train_round(self, arrays, server_round, *args, **kwargs):
        self._poison_input = (dict(arrays), int(server_round))
        return train_round(self, arrays, server_round, *args, **kwargs)

    def poisoned_shared_arrays(self):
        own = shared_arrays(self)
        received, server_round = getattr(self, "_poison_input", (None, None))
        kind = PLAN.get(server_round)
        if kind is None:
            return own
        if kind == "scale":
            out = {
                k: (received[k] + SCALE * (v - received[k])).astype(v.dtype) for k, v in own.items()
            }
        elif kind == "nan":
            out = {
                k: np.full_like(v, np.nan) if np.issubdtype(v.dtype, np.floating) else v
                for k, v in own.items()
            }
        else:
            raise ValueError(f"FEDSYNTH_POISON: unknown kind {kind!r} (scale or nan)")
        with open(os.environ["FEDSYNTH_POISON_LOG"], "a") as log:
            log.write(json.dumps({"round": server_round, "kind": kind, "pid": os.getpid()}) + "\n")
        return out

    site_class.train_round = remembering_train_round
    site_class.shared_arrays = poisoned_shared_arrays


class _PoisonOnImport(importlib.abc.MetaPathFinder):
    """Finds `fedsynth.client.site` as the other finders would, then wraps its `Site`."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_poison(module):
            exec_module(module)
            _poison(module.Site)

        spec.loader.exec_module = exec_and_poison
        return spec


if PLAN:
    sys.meta_path.insert(0, _PoisonOnImport())
