"""Per-sample gradients of one player via torch.func, and the plain batch gradient.

Both go through the same `functional_call` of the model's per-sample loss, with the other
player's parameters passed as detached constants (frozen, never differentiated), so the
private and non-private paths differentiate exactly the same function. Per-sample gradients
are `vmap(grad(loss of one sample))` - exact, and the fastest method measured (docs/architecture.md
§8).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from fedsynth.models.base import Batch, Stream, SynthesisModel
from fedsynth.models.layers import per_sample_mode

Grads = dict[str, Tensor]
Terms = dict[str, Tensor]


def split_parameters(model: SynthesisModel, player: str) -> tuple[Grads, Grads]:
    """(player's parameters, all other parameters and buffers), detached for functional_call."""
    own = {k: p.detach() for k, p in model.group_parameters(player).items()}
    frozen = {k: p.detach() for k, p in model.named_parameters() if k not in own}
    frozen.update({k: b.detach() for k, b in model.named_buffers()})
    return own, frozen


def batch_size(batch: Batch) -> int:
    """Number of samples over all streams."""
    return sum(len(next(iter(stream.values()))) for stream in batch.values())


def _stream_loss(
    model: SynthesisModel, player: str, stream: str, params: Grads, frozen: Grads, tensors: Stream
) -> tuple[Tensor, Terms]:
    """Summed loss of one stream (the differentiated value) and its detached per-sample terms."""
    terms = functional_call(model, (params, frozen), (stream, player, tensors))
    return terms["loss"].sum(), {k: v.detach() for k, v in terms.items()}


def _concat_terms(parts: list[Terms]) -> Terms:
    keys = dict.fromkeys(k for part in parts for k in part)
    return {k: torch.cat([p[k].reshape(-1) for p in parts if k in p]) for k in keys}


def batch_gradients(model: SynthesisModel, player: str, batch: Batch) -> tuple[Grads, Terms]:
    """Gradient of the mean per-sample loss over a non-empty batch (the non-private update)."""
    params, frozen = split_parameters(model, player)
    n = batch_size(batch)
    if n == 0:
        raise ValueError("batch_gradients needs a non-empty batch")

    def mean_loss(p: Grads) -> tuple[Tensor, list[Terms]]:
        results = [_stream_loss(model, player, s, p, frozen, t) for s, t in batch.items()]
        return sum(loss for loss, _ in results) / n, [terms for _, terms in results]

    grads, parts = grad(mean_loss, has_aux=True)(params)
    return grads, _concat_terms(parts)


def per_sample_gradients(
    model: SynthesisModel, player: str, batch: Batch, multiplicity: int = 1
) -> tuple[Grads, Terms]:
    """Gradient of every sample's loss w.r.t. the player's (trained) parameters.

    Returns (name -> (n, *param shape), term -> (n,)) with samples in stream order. An empty
    batch gives (0, *shape) gradients, so clipping and noising need no special case. With
    `multiplicity` K, every K consecutive samples are views of one example (augmentation
    multiplicity): their gradients and terms are averaged, so n = samples / K.
    """
    params, frozen = split_parameters(model, player)
    grads: list[Grads] = []
    parts: list[Terms] = []
    for stream, tensors in batch.items():

        def one_sample(p: Grads, sample: Stream, stream: str = stream) -> tuple[Tensor, Terms]:
            single = {k: v.unsqueeze(0) for k, v in sample.items()}
            return _stream_loss(model, player, stream, p, frozen, single)

        with per_sample_mode():
            g, terms = vmap(grad(one_sample, has_aux=True), in_dims=(None, 0))(params, tensors)
        grads.append(g)
        parts.append(terms)
    if not grads:
        return {k: v.new_zeros((0, *v.shape)) for k, v in params.items()}, {}
    merged = {k: torch.cat([g[k] for g in grads]) for k in params}
    return _mean_views(merged, multiplicity), _mean_views(_concat_terms(parts), multiplicity)


def _mean_views(values: dict[str, Tensor], multiplicity: int) -> dict[str, Tensor]:
    """Average each run of `multiplicity` consecutive rows (the views of one example)."""
    if multiplicity == 1:
        return values
    return {
        k: v.reshape(-1, multiplicity, *v.shape[1:]).mean(dim=1) for k, v in values.items()
    }
