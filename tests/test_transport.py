"""Packed shared tensors (`fedsynth.transport`): the round trip is bitwise, and a reply whose
packed data disagrees with the global model for one tensor is rejected naming that tensor.

Bad replies are written by hand (ArrayRecord + index ConfigRecord), not by `pack`, so the
checks do not rely on the code they test.
"""

from __future__ import annotations

import numpy as np
import pytest
from flower_grid import set_task_identity
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedsynth.strategies import validate_replies
from fedsynth.transport import PackingError, pack, unpack

GLOBAL = {
    "G.a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "G.a.bias": np.array([0.5, -1.0, 2.0, 3.0], np.float32),
}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    set_task_identity(monkeypatch)


def test_pack_then_unpack_is_bitwise_the_dict_in_one_array_per_dtype() -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(3, 2, 2)).astype(np.float32),
        "steps": np.array(7, np.int64),  # a 0-d buffer (BatchNorm's num_batches_tracked)
        "b": np.array([np.nan, -0.0, np.inf, 1e-40], np.float32),  # bits, not just values
        "m": rng.integers(-5, 5, size=(2, 5)).astype(np.int64),
    }
    records = pack(arrays)
    assert len(records["arrays"]) == 2  # float32 and int64: two Arrays for four tensors
    back = unpack(RecordDict(records))
    assert list(back) == list(arrays)
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        assert back[key].tobytes() == value.tobytes(), key


def _content(groups: dict[str, np.ndarray], names, dtypes, shapes) -> RecordDict:
    """A reply's records written out by hand: packed Arrays by dtype and their index."""
    index = {
        "names": list(names),
        "dtypes": list(dtypes),
        "ndims": [len(s) for s in shapes],
        "dims": [d for s in shapes for d in s],
    }
    return RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in groups.items()}),
            "index": ConfigRecord(index),
            "metrics": MetricRecord({"num-examples": 10.0}),
        }
    )


def _good(shift: float) -> RecordDict:
    flat = np.concatenate([GLOBAL["G.a.weight"].ravel(), GLOBAL["G.a.bias"]]) + shift
    names = ["G.a.weight", "G.a.bias"]
    return _content({"float32": flat}, names, ["float32"] * 2, [(2, 3), (4,)])


def _bad(kind: str) -> RecordDict:
    weight = GLOBAL["G.a.weight"].ravel() + 0.2
    names = ["G.a.weight", "G.a.bias"]
    if kind == "shape":  # the bias declared and sent with 5 values
        flat = np.concatenate([weight, np.zeros(5, np.float32)])
        return _content({"float32": flat}, names, ["float32"] * 2, [(2, 3), (5,)])
    if kind == "dtype":  # the bias sent as float64
        groups = {"float32": weight, "float64": np.zeros(4, np.float64)}
        return _content(groups, names, ["float32", "float64"], [(2, 3), (4,)])
    if kind == "nan":
        flat = np.concatenate([weight, np.array([0, np.nan, 0, 0], np.float32)])
        return _content({"float32": flat}, names, ["float32"] * 2, [(2, 3), (4,)])
    if kind == "short":  # the index is right, the packed data lacks the bias's last value
        flat = np.concatenate([weight, np.zeros(3, np.float32)])
        return _content({"float32": flat}, names, ["float32"] * 2, [(2, 3), (4,)])
    if kind == "long":  # the index is right, the packed data has a value too many
        flat = np.concatenate([weight, np.zeros(5, np.float32)])
        return _content({"float32": flat}, names, ["float32"] * 2, [(2, 3), (4,)])
    # "mislabelled": float64 data filed under the float32 key
    flat = np.concatenate([weight, np.zeros(4)]).astype(np.float64)
    return _content({"float32": flat}, names, ["float32"] * 2, [(2, 3), (4,)])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("shape", "array 'G.a.bias' has shape (5,), global is (4,)"),
        ("dtype", "array 'G.a.bias' has dtype float64, global is float32"),
        ("nan", "array 'G.a.bias' holds NaN or inf"),
        ("short", "array 'G.a.bias' of shape (4,) overruns packed 'float32'"),
        ("long", "packed 'float32' holds 1 unindexed values"),
        ("mislabelled", "packed array 'float32' holds float64 of shape (10,)"),
    ],
)
def test_a_reply_wrong_in_one_packed_tensor_is_rejected_naming_it(kind: str, reason: str) -> None:
    def reply(node: int, content: RecordDict) -> Message:
        instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
        return Message(content, reply_to=instruction)

    replies = [reply(11, _good(0.1)), reply(12, _good(0.3)), reply(13, _bad(kind))]
    accepted, rejected = validate_replies(1, replies, GLOBAL)

    assert [(r.node_id, r.reason) for r in rejected] == [(13, reason)]
    # Accepted replies reach Flower's rule one Array per tensor, with the values sent.
    first = {k: a.numpy() for k, a in accepted[0].content["arrays"].items()}
    assert sorted(first) == sorted(GLOBAL)
    np.testing.assert_array_equal(first["G.a.bias"], GLOBAL["G.a.bias"] + np.float32(0.1))


def test_a_message_without_an_index_does_not_unpack() -> None:
    content = RecordDict({"arrays": ArrayRecord({"G.a.bias": Array(GLOBAL["G.a.bias"])})})
    with pytest.raises(PackingError, match="'index' ConfigRecord"):
        unpack(content)
