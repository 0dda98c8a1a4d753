"""Rows joining and leaving a KV cache between steps (continuous batching).

transformers' caches grow along the sequence but know nothing of rows that come and go.
A row that leaves is dropped with ``batch_select_indices`` (dynamic layers) or an index
select of the preallocated tensors (static layers). Rows that join were prefilled into a cache
of their own; the two caches are concatenated along the batch with their slots aligned on the
right, the shorter one padded on the left (as text-generation-inference's
``CausalLMBatch.concatenate`` does). Pad slots are masked out by the attention mask.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, StaticCache


def select_rows(cache: Cache, index: torch.Tensor, mark_static: bool = False) -> None:
    """Keep only the rows ``index`` (in that order)."""
    if not isinstance(cache, StaticCache):
        cache.batch_select_indices(index)
        return
    layer: Any
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))
        layer.values = layer.values.index_select(0, index.to(layer.values.device))
        layer.batch_size = layer.keys.shape[0]
        if mark_static:  # as StaticLayer does: fixed addresses let CUDA graphs skip copies
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)


def _pad_left(states: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - states.shape[-2]
    if missing == 0:
        return states
    pad = states.new_zeros((*states.shape[:-2], missing, states.shape[-1]))
    return torch.cat([pad, states], dim=-2)


def concat_rows(first: Cache, first_slots: int, second: Cache, second_slots: int) -> int:
    """Append the rows of ``second`` to ``first`` (in place); both are dynamic caches whose
    slots end at ``first_slots`` / ``second_slots``. Returns the slot count after the merge:
    slot ``s`` of ``first`` becomes ``s + result - first_slots``, likewise for ``second``."""
    if isinstance(first, StaticCache) or isinstance(second, StaticCache):
        raise ValueError("rows cannot join a static cache; it is sized for one batch")
    slots = max(first_slots, second_slots)
    layer: Any
    for layer, other in zip(first.layers, second.layers, strict=True):
        if not (layer.is_initialized and other.is_initialized):
            raise ValueError("both caches must be filled before their rows are merged")
        length = max(layer.keys.shape[-2], other.keys.shape[-2])
        layer.keys = torch.cat([_pad_left(layer.keys, length), _pad_left(other.keys, length)])
        layer.values = torch.cat([_pad_left(layer.values, length), _pad_left(other.values, length)])
        if hasattr(layer, "cumulative_length"):  # sliding-window layers count slots seen
            layer.cumulative_length = slots
    return slots


def merge_masks(
    first: torch.Tensor, first_slots: int, second: torch.Tensor, second_slots: int, spare: int
) -> torch.Tensor:
    """The attention masks of :func:`concat_rows`'s rows: ``[rows, slots + spare]``, each
    row's used slots right-aligned at the merged slot count."""
    slots = max(first_slots, second_slots)
    rows = first.shape[0] + second.shape[0]
    mask = first.new_zeros((rows, slots + spare))
    mask[: first.shape[0], slots - first_slots : slots] = first[:, :first_slots]
    mask[first.shape[0] :, slots - second_slots : slots] = second[:, :second_slots]
    return mask
