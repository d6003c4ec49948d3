"""Rows of a model call's inputs: the same conditioning with some rows appended, for the batched
perturbed pass (PAG / SEG run their perturbed cond rows in the CFG call itself).

A model call's conditioning is a tensor, a list of tensors or a dict of them (A1111:
``{"c_crossattn": [c], "c_concat": [c]}``, SDXL ``{"crossattn", "vector", "c_concat"}``; Forge /
ComfyUI: ``{"c_crossattn": c, "y": y, "transformer_options": {...}}``), every tensor with the call's
rows first. Values that are not batched tensors (options, flags) pass through unchanged.
"""
from __future__ import annotations

from typing import List, Optional

import torch


class NotBatchable(ValueError):
    """A value of the conditioning cannot be extended row by row (ControlNet outputs, odd shapes)."""


def appended(value, rows: List[int], batch: int):
    """`value` with rows `rows` (of a call of `batch` rows) appended after its own rows.

    Tensors whose first dimension is `batch` get `value[rows]` appended; scalars and tensors of
    leading size 1 (one value for every row: ldm_patched's ``transformer_options["sigmas"]``) are
    kept; lists, tuples and dicts are walked; anything else is kept as it is. A tensor of another
    leading size raises NotBatchable, naming its shape (it would no longer line up with the rows).
    """
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == batch:
            return torch.cat([value, value[rows]])
        if value.dim() == 0 or value.shape[0] == 1:
            return value
        raise NotBatchable(f"a conditioning tensor of shape {tuple(value.shape)} in a call of {batch} rows")
    if isinstance(value, (list, tuple)):
        return type(value)(appended(v, rows, batch) for v in value)
    if isinstance(value, dict):
        return {k: appended(v, rows, batch) for k, v in value.items()}
    return value


def try_appended(value, rows: List[int], batch: int) -> Optional[object]:
    """appended(), or None when the conditioning cannot be extended."""
    try:
        return appended(value, rows, batch)
    except NotBatchable:
        return None


def concatenated(values: list):
    """The rows of several conditionings of the same form, one after another (tensors concatenated,
    lists, tuples and dicts walked, anything else taken from the first)."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if isinstance(first, (list, tuple)):
        return type(first)(concatenated([v[i] for v in values]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: concatenated([v[k] for v in values]) for k in first}
    return first
