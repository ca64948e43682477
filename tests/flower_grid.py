"""In-process Flower Grids for tests: no Ray, no network, real Messages.

`FakeGrid` answers each instruction with `client(node_id, message)`; `ClientAppGrid` runs a
real ClientApp per node (with its own Context and node config) and, like Flower's runtime,
turns an exception in the ClientApp into an error reply.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


def set_task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the ServerApp runtime sets before `Message(content, dst_node_id, type)` works."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)  # the SuperLink's node id
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


class FakeGrid(Grid):
    """Each node answers with `client(node_id, message)` (a RecordDict)."""

    def __init__(self, node_ids: list[int], client: Callable[[int, Message], RecordDict]):
        self.node_ids = node_ids
        self.client = client

    def get_node_ids(self) -> Iterable[int]:
        return self.node_ids

    def answer(self, msg: Message) -> Message:
        return Message(self.client(msg.metadata.dst_node_id, msg), reply_to=msg)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return [self.answer(msg) for msg in messages]

    # The strategy only samples nodes and sends/receives; the rest of the Grid API is unused.
    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Run:
        raise NotImplementedError

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError


class ClientAppGrid(FakeGrid):
    """Node i runs `client_app` with node config `node_configs[i]` and the run's config
    `run_config` (as Flower gives every node of a run the same one); `replies` keeps every
    reply as sent (before the strategy touches it), and `tamper(node, instruction, reply)`
    may replace one."""

    def __init__(
        self,
        client_app: ClientApp,
        node_configs: list[dict],
        tamper: Callable[[int, Message, Message], Message] | None = None,
        *,
        run_config: Mapping[str, Any],
    ) -> None:
        super().__init__(
            list(range(100, 100 + len(node_configs))), client=lambda n, m: RecordDict()
        )
        self.app = client_app
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config=cfg,
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for node, cfg in zip(self.node_ids, node_configs, strict=True)
        }
        self.tamper = tamper
        self._run = Run.create_empty(run_id=1)  # the legacy stack (SecAgg+) reads run_id
        self.replies: list[tuple[int, Message]] = []
        self.instructions: list[Message] = []

    @property
    def run(self) -> Run:
        return self._run

    def answer(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        self.instructions.append(msg)
        try:
            # A copy, as if it crossed the network: SecAgg+'s mod edits the records it gets,
            # which the workflow shares between the messages of one stage.
            reply = self.app(copy.deepcopy(msg), self.contexts[node])
        except Exception as err:  # noqa: BLE001 — what Flower's runtime does too
            reply = Message(Error(code=1, reason=f"{type(err).__name__}: {err}"), reply_to=msg)
        if self.tamper is not None:
            reply = self.tamper(node, msg, reply)
        self.replies.append((node, reply))
        return reply
