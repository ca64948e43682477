"""The Flower ClientApp: one per hospital, the same code in simulation and deployment.

Which site a node is comes from its node config, what it trains from the run config —
`context.run_config`, the same flat keys the ServerApp reads, parsed once per process
(`fedsynth.client.node`). An instruction carries only per-message values: the round and a
strategy's own (FedProx's μ; `fedsynth.instruction`). With `federation.secure-aggregation`
the instructions come in Flower's legacy format and go to the SecAgg+ adapter
`fedsynth.client.secure` (same `Site`, same state). Shared tensors travel packed both ways
(`fedsynth.transport`).
"""

from __future__ import annotations

import logging
import os
import time

# Before torch loads OpenMP (Flower starts a fresh process per message in a deployment): idle
# threads sleep instead of spinning, else a step is 10-40x slower on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from flwr.app import Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from fedsynth.client.node import open_site  # noqa: E402
from fedsynth.client.site import Site  # noqa: E402
from fedsynth.instruction import absolute_round, proximal_mu  # noqa: E402
from fedsynth.transport import pack, unpack  # noqa: E402

log = logging.getLogger(__name__)
app = ClientApp()


def _is_secure(msg: Message) -> bool:
    """SecAgg+ rounds arrive in the legacy message format (no "config" record)."""
    return "config" not in msg.content.config_records


def _reply(msg: Message, site: Site | None, metrics: dict[str, float]) -> Message:
    records = {"metrics": MetricRecord(metrics)}
    if site is not None:
        records |= pack(site.shared_arrays())
    return Message(content=RecordDict(records), reply_to=msg)


def _timed(reply: Message, msg: Message, site: Site, started: float) -> Message:
    """Note the call in the site's own profiling log (`SiteStateDir.timings`), then reply."""
    site.identity.state.append_timing(
        {
            "phase": msg.metadata.message_type,
            "round": absolute_round(msg.content["config"]),
            "pid": os.getpid(),
            "start": started,
            "end": time.time(),
            "engine_seconds": site.engine_seconds,
        }
    )
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally from the global shared weights; reply with those tensors only."""
    if _is_secure(msg):
        from fedsynth.client.secure import secure_app

        return secure_app(msg, context)
    started = time.time()
    config = msg.content["config"]
    site = open_site(context.run_config, context.node_config)
    # μ comes from the strategy that uses it (Flower's FedProx adds "proximal-mu"), never
    # from the run config: any other strategy trains without a proximal term.
    metrics = site.train_round(unpack(msg.content), absolute_round(config), proximal_mu(config))
    return _timed(_reply(msg, site, metrics), msg, site, started)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the global generators on this site's paired held-out subjects."""
    if _is_secure(msg):
        from fedsynth.client.secure import secure_app

        return secure_app(msg, context)
    started = time.time()
    absolute_round(msg.content["config"])  # refuses an instruction that carries settings
    site = open_site(context.run_config, context.node_config)
    site.receive(unpack(msg.content))
    return _timed(_reply(msg, None, site.evaluate()), msg, site, started)
