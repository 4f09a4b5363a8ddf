"""Run a module at another device or dtype for a while, then give it back its own tensors.

``module.to(fp16)`` followed by ``module.to(fp32)`` is not a no-op: the weights come back rounded
to fp16 (and a build's drift would then be measured against that rounded "eager" model). Here the
original tensors are put back, bit for bit and at their own addresses.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def cast_temporarily(module: torch.nn.Module, device: str | torch.device, dtype: torch.dtype) -> Iterator[torch.nn.Module]:
    """``module.to(device, dtype)`` within the block; its exact original tensors after it."""
    params = [(m, name, p.data) for m in module.modules() for name, p in m._parameters.items() if p is not None]
    buffers = [(m, name, b) for m in module.modules() for name, b in m._buffers.items() if b is not None]
    module.to(device, dtype)
    try:
        yield module
    finally:
        for owner, name, data in params:
            owner._parameters[name].data = data
        for owner, name, buffer in buffers:
            owner._buffers[name] = buffer
