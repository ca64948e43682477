"""Bytes on the wire per site and round: a real train instruction and the real ClientApp's
reply to it, serialised the way a SuperNode uploads a message in a deployment (flwr 1.41):
one `PushMessagesRequest` (metadata + object tree) plus one `PushObjectRequest` per object of
the deflated message (Message, RecordDict, ArrayRecord, MetricRecord, each Array's JSON head
and its ArrayChunks), protobuf bytes (HTTP/gRPC framing excluded) — versus the raw shared
parameters (Σ numel × itemsize of the shared state-dict entries, from the model).

The instruction is built as the project's strategies build it (the shared arrays packed by
`fedsynth.transport` and the ConfigRecord with `server-round`), the reply by calling the
product's ClientApp on it in this process with a simulation node config (partition 0).
"""

from __future__ import annotations

import uuid

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsynth.client.app import _reply
from fedsynth.client.app import app as client_app
from fedsynth.config import FedsynthConfig
from fedsynth.instruction import SERVER_ROUND, round_config
from fedsynth.models import build_model
from fedsynth.simulations.scenarios import scenario_config
from fedsynth.transport import pack, unpack


def upload_bytes(msg: Message, node_id: int = 7_300_000_000_000_000_001) -> int:
    """Protobuf bytes a SuperNode sends to upload `msg` (flwr 1.41 deployment path:
    `fleet_http_connection.send` + `push_objects`), framing excluded."""
    from flwr.app.message import remove_content_from_message
    from flwr.common.serde import message_to_proto
    from flwr.proto.fleet_pb2 import PushMessagesRequest
    from flwr.proto.message_pb2 import PushObjectRequest
    from flwr.proto.node_pb2 import Node
    from flwr.supercore.inflatable.inflatable_object import (
        get_all_nested_objects,
        get_object_tree,
    )

    head = message_to_proto(remove_content_from_message(msg))
    head.metadata.message_id = msg.object_id  # as the SuperNode sets it before sending
    node = Node(node_id=node_id)
    run_id, session = 4_100_000_000_000_000_003, str(uuid.uuid4())
    request = PushMessagesRequest(
        node=node,
        messages_list=[head],
        message_object_trees=[get_object_tree(msg)],
        clientapp_runtime_list=[1.0],
    )
    objects = sum(
        PushObjectRequest(
            node=node,
            run_id=run_id,
            object_id=oid,
            object_content=obj.deflate(),
            session_id=session,
        ).ByteSize()
        for oid, obj in get_all_nested_objects(msg).items()
    )
    return request.ByteSize() + objects


def single_proto_bytes(msg: Message) -> int:
    """The whole Message as one protobuf (`flwr.common.serde.message_to_proto`)."""
    from flwr.common.serde import message_to_proto

    return message_to_proto(msg).ByteSize()


def shared_state(cfg: FedsynthConfig) -> tuple[list[str], dict[str, np.ndarray], int]:
    """(shared keys, their initial tensors, Σ numel × itemsize) of `cfg`'s model."""
    model = build_model(cfg.model, seed=cfg.train.seed)
    keys = model.shared_keys(cfg.federation.shared_groups, cfg.federation.keep_norm_local)
    state = model.state_dict()
    raw = sum(state[k].numel() * state[k].element_size() for k in keys)
    return keys, {k: state[k].numpy() for k in keys}, raw


def exchange(cfg: FedsynthConfig, sites: int) -> tuple[Message, Message]:
    """A round-1 train instruction to partition 0 and the ClientApp's reply, in process
    (`cfg` the run config both apps read; the instruction carries the round only)."""
    # What Flower's runtime sets in a ServerApp's process before Messages can be made.
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
    _, arrays, _ = shared_state(cfg)
    content = RecordDict(
        {
            **pack(arrays),
            "config": ConfigRecord({SERVER_ROUND: 1, **round_config(0)}),
        }
    )
    instruction = Message(content, dst_node_id=2, message_type="train")
    node = {"partition-id": 0, "num-partitions": sites}
    context = Context(
        run_id=1, node_id=2, node_config=node, state=RecordDict(), run_config=cfg.to_flat()
    )
    reply = client_app(instruction, context)
    if reply.has_error():
        raise RuntimeError(f"the ClientApp failed: {reply.error.reason}")
    return instruction, reply


def byte_figures(cfg: FedsynthConfig, sites: int) -> dict[str, float]:
    """Tiny-model instruction and reply (from `exchange`), and the phantom-3site model's
    reply, built by the ClientApp's own `_reply` around perturbed shared tensors."""
    keys, _, raw = shared_state(cfg)
    ins, rep = exchange(cfg, sites)
    replied = unpack(rep.content)
    if list(replied) != keys:
        raise RuntimeError("the reply's arrays are not the model's shared tensors")
    params = sum(a.size for a in replied.values())
    up, down = upload_bytes(rep), upload_bytes(ins)
    out = {
        "tiny_shared_tensors": len(keys),
        "tiny_shared_parameters": params,
        "tiny_shared_raw_bytes": raw,
        "tiny_reply_bytes_per_client_round": up,
        "tiny_reply_over_raw_ratio": up / raw,
        "tiny_reply_overhead_bytes_per_tensor": (up - raw) / len(keys),
        "tiny_reply_single_proto_over_raw_ratio": single_proto_bytes(rep) / raw,
        "tiny_instruction_bytes_per_client_round": down,
        "tiny_instruction_over_raw_ratio": down / raw,
    }
    big = scenario_config("phantom-3site")
    big_keys, big_arrays, big_raw = shared_state(big)
    # Perturbed like trained weights: freshly initialised norm layers are all-ones/zeros,
    # and identical chunks would be sent once (objects are content-addressed).
    rng = np.random.default_rng(0)
    trained = {k: (v + rng.normal(0, 1e-3, v.shape)).astype(v.dtype) for k, v in big_arrays.items()}

    class Shared:
        def shared_arrays(self) -> dict[str, np.ndarray]:
            return trained

    big_up = upload_bytes(_reply(ins, Shared(), dict(rep.content["metrics"])))
    return out | {
        "phantom3site_shared_tensors": len(big_keys),
        "phantom3site_shared_raw_bytes": big_raw,
        "phantom3site_reply_bytes_per_client_round": big_up,
        "phantom3site_reply_over_raw_ratio": big_up / big_raw,
        "phantom3site_reply_overhead_bytes_per_tensor": (big_up - big_raw) / len(big_keys),
    }
