"""The plugins' arithmetic: one call of the ``bigain::`` custom ops per operator.

Each function takes the input tensors, writes the result into the preallocated output tensors
(TensorRT owns those buffers) and returns nothing. The custom ops run the Triton kernels on a CUDA
device (the same kernels as eager and compiled PyTorch) and the reference on the CPU, where these
functions are tested; the TensorRT plugin's ``enqueue`` only wraps device pointers as tensors and
calls them on TensorRT's stream.

The plan selects the merged sources by a radix select (no sort), so the plugin has no TopK and
no K <= 3840 limit (a 1024 px SD latent level selects among 12288 sources).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..ops import library
from .specs import anchor_name


def gated_merge(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], attrs: Mapping[str, int]) -> None:
    """``x, metric [B, N, C]`` -> ``merged [B, N - r, C]`` (x's dtype), ``slot [B, N]`` (int64)."""
    x, metric = inputs
    merged, slot = outputs
    grid_h, grid_w, r = attrs["grid_h"], attrs["grid_w"], attrs["r"]
    plan = library.merge_plan(metric, grid_h, grid_w, r, anchor_name(attrs), attrs["match_radius"])
    slot.copy_(plan)
    merged.copy_(library.token_merge(x, plan, grid_h, grid_w, r))


def token_merge(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], attrs: Mapping[str, int]) -> None:
    """``x [B, N, C]``, ``slot [B, N]`` -> ``merged [B, num_out, C]``."""
    x, slot = inputs
    outputs[0].copy_(library.token_merge_op(x, slot.long(), attrs["num_out"], attrs["num_dst"]))


def token_unmerge(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], attrs: Mapping[str, int]) -> None:
    """``y [B, N - r, C]``, ``slot [B, N]`` -> ``out [B, N, C]``."""
    y, slot = inputs
    outputs[0].copy_(library.token_unmerge(y, slot.long()))


def kv_pool(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], attrs: Mapping[str, int]) -> None:
    """``x [B, N, C]``, ``alpha [B|1, 1, 1]`` float32 -> ``out [B, N / s^2, C]``."""
    x, alpha = inputs
    outputs[0].copy_(library.kv_pool(x, alpha, attrs["grid_h"], attrs["grid_w"], attrs["s"]))


COMPUTE = {"GatedMerge": gated_merge, "TokenMerge": token_merge, "TokenUnmerge": token_unmerge, "KVPool": kv_pool}
