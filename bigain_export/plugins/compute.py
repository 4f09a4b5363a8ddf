"""The plugins' arithmetic: one call into :mod:`bigain_export.ops.reference` per operator.

Each function takes the input tensors, writes the result into the preallocated output tensors
(TensorRT owns those buffers) and returns nothing. They are plain torch, device-agnostic, and are
tested on CPU against :mod:`bigain_export.ops.library`; the TensorRT plugin's ``enqueue`` only
wraps device pointers as tensors and calls them on TensorRT's stream.

Sorting is done by ``torch.argsort`` inside :func:`~bigain_export.ops.reference.merge_plan`, so
the plugin has no TopK and no K <= 3840 limit (a 1024 px SD latent level sorts 12288 sources).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..ops import reference
from .specs import anchor_name


def gated_merge(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], attrs: Mapping[str, int]) -> None:
    """``x, metric [B, N, C]`` -> ``merged [B, N - r, C]`` (x's dtype), ``slot [B, N]`` (int64)."""
    x, metric = inputs
    merged, slot = outputs
    plan = reference.token_merge_plan(metric, attrs["grid_h"], attrs["grid_w"], attrs["r"], anchor_name(attrs))
    slot.copy_(plan)
    merged.copy_(reference.merge(x, plan, x.shape[1] - attrs["r"]))


def token_unmerge(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], attrs: Mapping[str, int]) -> None:
    """``y [B, N - r, C]``, ``slot [B, N]`` -> ``out [B, N, C]``."""
    y, slot = inputs
    outputs[0].copy_(reference.unmerge(y, slot.long()))


def kv_pool(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], attrs: Mapping[str, int]) -> None:
    """``x [B, N, C]``, ``alpha [B|1, 1, 1]`` float32 -> ``out [B, N / s^2, C]``."""
    x, alpha = inputs
    outputs[0].copy_(reference.kv_downsample(x, alpha, attrs["grid_h"], attrs["grid_w"], attrs["s"]))


COMPUTE = {"GatedMerge": gated_merge, "TokenUnmerge": token_unmerge, "KVPool": kv_pool}
