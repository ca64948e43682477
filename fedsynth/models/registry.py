"""Model kinds by name, in the style of Opacus's accountant registry: a new kind is one module
with a `SynthesisModel` subclass and one `@register_model("name")` line. Everything the engine,
translation and the audits need to know about a kind is a class attribute of the model.

This module imports nothing of the package (classes are kept as plain module types), so
`ModelConfig` can check a kind against it; the built-in kinds register when `fedsynth.models`
is imported, which happens before any `fedsynth.models.*` module is used."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=type[nn.Module])
MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: `model.kind=name` builds this class."""

    def register(cls: M) -> M:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model kind {name!r} is already registered ({MODELS[name]})")
        MODELS[name] = cls
        return cls

    return register


def model_class(kind: str) -> type[nn.Module]:
    try:
        return MODELS[kind]
    except KeyError:
        raise ValueError(
            f"unknown model kind {kind!r}; expected one of {', '.join(sorted(MODELS))}"
        ) from None


def known_kinds() -> tuple[str, ...]:
    """Registered kinds; the built-in ones register when `fedsynth.models` is imported."""
    return tuple(MODELS)
