"""The layout registry, in the style of Opacus's `accountants/registry.py`: a name → layout
dict and one function that adds to it. A new layout is one `Layout` subclass decorated with
`@register_layout`; `load_dataset`, `write_subject`, `DataConfig` and the phantom then know it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from fedsynth.data.layouts.base import Layout
from fedsynth.data.validation import DatasetError

_LAYOUTS: dict[str, Layout] = {}
# The registered names, live (a layout registered later shows up), in registration order,
# which is also the order `detect_layout` tries them.
LAYOUTS = _LAYOUTS.keys()

L = TypeVar("L", bound=type[Layout])


def register_layout(cls: L) -> L:
    """Class decorator: add a layout under its `name` (which must be new)."""
    if cls.name in _LAYOUTS or cls.name == "auto":
        raise ValueError(f"layout {cls.name!r} is already registered")
    _LAYOUTS[cls.name] = cls()
    return cls


def get_layout(name: str) -> Layout:
    """The registered layout called `name`."""
    if name not in _LAYOUTS:
        raise DatasetError(f"unknown layout {name!r}: expected auto or one of {', '.join(LAYOUTS)}")
    return _LAYOUTS[name]


def detect_layout(root: Path) -> str:
    """The first registered layout that recognises `root`."""
    for name, layout in _LAYOUTS.items():
        if layout.detect(root):
            return name
    raise DatasetError(
        f"{root}: no NIfTI files in a known layout ({', '.join(LAYOUTS)}); "
        "see README 'Your own data'"
    )
