"""What the coordinator's ServerApp process received, written down for a deployment test.

`app` is fedsynth's own ServerApp (`fedsynth.server.app.main`, unchanged) behind a Grid that
saves every reply it hands to the server — each ArrayRecord array, each bytes value of a
ConfigRecord (SecAgg+'s masked vectors, keys and shares), each metric — with the SecAgg+
stage of the instruction it answers, under `<run dir>-received/` (`received_dir`). The
SuperLink relays exactly these messages, so this is everything the server side ever held of
a site. `recording_app` builds a throwaway Flower app directory that runs it: fedsynth's
pyproject.toml with only the `serverapp` component changed, a copy of the package, this file.
Only Flower, numpy and fedsynth are imported: it runs inside the deployed ServerApp.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid, ServerApp

SERVERAPP = 'serverapp = "fedsynth.server.app:app"'


def received_dir(run_dir: Path) -> Path:
    return Path(run_dir).with_name(Path(run_dir).name + "-received")


def recording_app(dest: Path, source: Path) -> Path:
    """`dest` as a Flower app: `source`'s pyproject.toml and fedsynth package (code only: a
    FAB carries no weights anyway), this module as its ServerApp."""
    text = (Path(source) / "pyproject.toml").read_text()
    if SERVERAPP not in text:
        raise ValueError(f"{source}/pyproject.toml: no `{SERVERAPP}` line to replace")
    dest.mkdir(parents=True)
    (dest / "pyproject.toml").write_text(
        text.replace(SERVERAPP, 'serverapp = "secagg_recorder:app"')
    )
    ignore = shutil.ignore_patterns("__pycache__", "*.safetensors", "*.pt")
    shutil.copytree(Path(source) / "fedsynth", dest / "fedsynth", ignore=ignore)
    shutil.copy(Path(__file__), dest / "secagg_recorder.py")
    return dest


def _stage(msg: Message) -> str | None:
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    return None if configs is None else str(configs.get(Key.STAGE))


def _payload(msg: Message) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON-able scalars, every array and bytes value) of one reply's content."""
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    content = msg.content
    for name, record in content.array_records.items():
        for key, array in record.items():
            arrays[f"array_records/{name}/{key}"] = array.numpy()
    for name, record in content.config_records.items():
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            if values and all(isinstance(v, bytes) for v in values):
                for i, v in enumerate(values):
                    arrays[f"config_records/{name}/{key}/{i}"] = np.frombuffer(v, np.uint8)
            else:
                scalars[f"config_records/{name}/{key}"] = value
    for name, record in content.metric_records.items():
        scalars |= {f"metric_records/{name}/{k}": v for k, v in record.items()}
    return scalars, arrays


class RecordingGrid(Grid):
    """`grid`, saving each reply (one .npz per reply, a `meta` entry describing it)."""

    def __init__(self, grid: Grid, out: Path) -> None:
        self.grid, self.out = grid, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def save(self, reply: Message, instructions: dict[str, Message]) -> None:
        meta: dict[str, Any] = {
            "src_node_id": reply.metadata.src_node_id,
            "reply_to": reply.metadata.reply_to_message_id,
            "message_type": reply.metadata.message_type,
            "group_id": reply.metadata.group_id,
            "error": None,
        }
        sent = instructions.get(reply.metadata.reply_to_message_id)
        if sent is not None:  # an error from the SuperLink comes from node 1, not the site
            meta |= {"dst_node_id": sent.metadata.dst_node_id, "stage": _stage(sent)}
        arrays: dict[str, np.ndarray] = {}
        if reply.has_error():
            meta["error"] = {"code": reply.error.code, "reason": reply.error.reason}
        else:
            meta["scalars"], arrays = _payload(reply)
        names = {f"a{i}": name for i, name in enumerate(arrays)}
        meta["arrays"] = names
        path = self.out / f"reply-{self.count:04d}.npz"
        self.count += 1
        tmp = self.out / f"partial-{path.name}"
        np.savez(tmp, meta=np.array(json.dumps(meta)), **{k: arrays[v] for k, v in names.items()})
        os.replace(tmp, path)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        sent = {m.metadata.message_id: m for m in messages}  # ids are set once pushed
        for reply in replies:
            self.save(reply, sent)
        return replies

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.grid.pull_messages(message_ids))
        for reply in replies:
            self.save(reply, {})
        return replies

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run


def load_received(out: Path) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Every saved reply, in the order received: (meta, arrays by name)."""
    rows = []
    for path in sorted(Path(out).glob("reply-*.npz")):
        with np.load(path) as npz:
            meta = json.loads(str(npz["meta"]))
            rows.append((meta, {name: npz[k] for k, name in meta["arrays"].items()}))
    return rows


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from fedsynth.server.app import main as fedsynth_main

    out = received_dir(Path(str(context.run_config["federation.run-dir"])))
    fedsynth_main(RecordingGrid(grid, out), context)
