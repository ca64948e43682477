"""What a fresh process pays in imports before it handles a message, timed in a new
interpreter: a Ray actor (torch, then the ClientApp) and a deployment's per-message
`flwr-clientapp` process (Flower's client runtime, the ClientApp, opacus for training)."""

from __future__ import annotations

import os
import subprocess
import sys


def _import_seconds(modules: list[str]) -> list[float]:
    """Seconds to import each of `modules` in turn, in a fresh interpreter."""
    steps = "; ".join(f"import {m}; t.append(time.perf_counter())" for m in modules)
    code = f"import time; t = [time.perf_counter()]; {steps}; "
    code += "print(*(b - a for a, b in zip(t, t[1:])))"
    env = os.environ | {"FLWR_TELEMETRY_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    return [float(x) for x in out]


def actor_import_figures() -> dict[str, float]:
    torch_s, app_s = _import_seconds(["torch", "fedsynth.client.app"])
    return {"import_torch_seconds": torch_s, "import_clientapp_after_torch_seconds": app_s}


def clientapp_process_figures() -> dict[str, float]:
    flower, app, opacus = _import_seconds(
        ["flwr.supernode.cli.flwr_clientapp", "fedsynth.client.app", "opacus"]
    )
    return {
        "deploy_import_flower_runtime_seconds": flower,
        "deploy_import_clientapp_seconds": app,
        "deploy_import_opacus_seconds": opacus,
    }
