"""The flat form of a typed config: `section.field-name` keys with scalar values.

Flower's run config and `ConfigRecord`s carry only flat scalars, and so do `config.json` and
checkpoint headers; typed configs are frozen dataclasses. `flatten` and `build` convert
between the two (tuples comma-joined, None as "", paths as strings), for a whole
`FedsynthConfig` or one section of it (`prefix` "model.", "data.preprocess.", …).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Scalar = bool | int | float | str


def _key(prefix: str, name: str) -> str:
    return f"{prefix}{name.replace('_', '-')}"


def flatten(obj: Any, prefix: str) -> dict[str, Scalar]:
    """The dataclass `obj` as flat keys under `prefix` (nested sections joined by dots)."""
    out: dict[str, Scalar] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = _key(prefix, f.name)
        if dataclasses.is_dataclass(value):
            out |= flatten(value, f"{key}.")
        elif isinstance(value, tuple):
            out[key] = ",".join(str(v) for v in value)
        elif value is None:
            out[key] = ""
        elif isinstance(value, Path):
            out[key] = str(value)
        else:
            out[key] = value
    return out


def build(
    cls: type, flat: dict[str, Any], prefix: str, given: Mapping[str, Any] | None = None
) -> Any:
    """`cls` from the flat keys under `prefix` (consumed from `flat`); `given` fields are
    taken as they are."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = dict(given or {})
    for f in dataclasses.fields(cls):
        key = _key(prefix, f.name)
        kind = hints[f.name]
        if f.name in kwargs:
            continue
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = build(kind, flat, f"{key}.")
        elif key in flat:
            kwargs[f.name] = _parse(flat.pop(key), kind, key)
    if not prefix and flat:
        raise ValueError(f"unknown config key {', '.join(repr(k) for k in sorted(flat))}")
    return cls(**kwargs)


def _parse(value: Any, kind: Any, key: str) -> Any:
    """A flat scalar as the field's type (`int | None`, `tuple[str, ...]`, `Path`, …)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value in ("", None):
            return None
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    try:
        if typing.get_origin(kind) is tuple:
            items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
            return tuple(
                _parse(v.strip() if isinstance(v, str) else v, args[0], key) for v in items
            )
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        if kind is Path:
            return Path(value)
        return str(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"config {key}={value!r}: expected {getattr(kind, '__name__', kind)}"
        ) from err
