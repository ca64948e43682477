"""The shared tensors of one message, packed into as few Flower objects as records allow.

Flower serialises every `Array` of an `ArrayRecord` as objects of its own (a JSON head plus
chunks, ~0.9 KB each on the wire), so a message keyed by state-dict name costs 1.4x the raw
parameters for a 46-tensor generator. Packed, a message carries:

- `"arrays"`: an ArrayRecord with one 1-D Array per dtype, keyed by the dtype's name
  (`"float32"`, and e.g. `"int64"` for BatchNorm's step counters): the tensors of that dtype
  raveled and concatenated in index order;
- `"index"`: a ConfigRecord naming them: `names` (state-dict keys), `dtypes` (NumPy names),
  `ndims` (rank of each tensor) and `dims` (all shapes, concatenated). A tensor's offset is the
  sum of the sizes of the tensors of its dtype before it.

Coordinate-wise rules stay coordinate-wise on a concatenation, but Flower's strategies keep
per-tensor state (FedAdam's moments), so the server unpacks replies before aggregating
(`fedsynth.strategies.validated`). Used in both directions by the ClientApp and the strategies;
SecAgg+ rounds use Flower's legacy parameter lists instead (`fedsynth.server.secure`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

ARRAYS = "arrays"
INDEX = "index"


class PackingError(ValueError):
    """A message's packed tensors do not match its index; the reason names what is wrong."""


def pack(arrays: Mapping[str, np.ndarray]) -> dict[str, ArrayRecord | ConfigRecord]:
    """The `"arrays"` and `"index"` records of a message carrying `arrays` (name -> tensor)."""
    values = {k: np.asarray(v) for k, v in arrays.items()}
    groups: dict[str, list[np.ndarray]] = {}
    for value in values.values():
        groups.setdefault(value.dtype.name, []).append(value.ravel())
    index = ConfigRecord(
        {
            "names": list(values),
            "dtypes": [v.dtype.name for v in values.values()],
            "ndims": [v.ndim for v in values.values()],
            "dims": [int(d) for v in values.values() for d in v.shape],
        }
    )
    packed = ArrayRecord({d: Array(np.concatenate(parts)) for d, parts in groups.items()})
    return {ARRAYS: packed, INDEX: index}


def _index(content: RecordDict) -> tuple[list[str], list[str], list[tuple[int, ...]]]:
    """(names, dtypes, shapes) of a message's index, or why it is malformed."""
    if INDEX not in content.config_records or ARRAYS not in content.array_records:
        raise PackingError(f"expected an {ARRAYS!r} ArrayRecord and an {INDEX!r} ConfigRecord")
    index = content.config_records[INDEX]
    try:
        names, dtypes = list(index["names"]), list(index["dtypes"])
        ndims, dims = [int(n) for n in index["ndims"]], [int(d) for d in index["dims"]]
    except (KeyError, TypeError, ValueError) as err:
        raise PackingError(f"index lacks names/dtypes/ndims/dims: {err}") from None
    if not len(names) == len(dtypes) == len(ndims) or len(set(names)) != len(names):
        raise PackingError("index lists differ in length or repeat a name")
    if sum(ndims) != len(dims) or min(ndims + dims, default=0) < 0:
        raise PackingError("index shapes do not add up")
    ends = np.cumsum([0, *ndims])
    shapes = [tuple(dims[a:b]) for a, b in zip(ends[:-1], ends[1:], strict=True)]
    return names, dtypes, shapes


def unpack(content: RecordDict) -> dict[str, np.ndarray]:
    """The tensors of a packed message by name, each checked against its index entry.

    Raises:
        PackingError: no index, a malformed one, a packed Array that does not decode or whose
            decoded dtype is not its key, or one that does not hold exactly the values of its
            tensors (the first tensor that does not fit is named).
    """
    names, dtypes, shapes = _index(content)
    record = content.array_records[ARRAYS]
    if set(record) != set(dtypes):
        raise PackingError(f"packed arrays {sorted(record)} do not match dtypes {set(dtypes)}")
    flat, used = {}, dict.fromkeys(record, 0)
    for key, array in record.items():
        try:
            flat[key] = array.numpy()
        except (TypeError, ValueError) as err:
            raise PackingError(f"packed array {key!r} does not decode: {err}") from None
        if flat[key].dtype.name != key or flat[key].ndim != 1:
            got = flat[key]
            raise PackingError(f"packed array {key!r} holds {got.dtype} of shape {got.shape}")
    out = {}
    for name, dtype, shape in zip(names, dtypes, shapes, strict=True):
        start, size = used[dtype], math.prod(shape)
        if start + size > flat[dtype].size:
            raise PackingError(f"array {name!r} of shape {shape} overruns packed {dtype!r}")
        out[name] = flat[dtype][start : start + size].reshape(shape)
        used[dtype] = start + size
    for dtype, end in used.items():
        if end != flat[dtype].size:
            raise PackingError(f"packed {dtype!r} holds {flat[dtype].size - end} unindexed values")
    return out
