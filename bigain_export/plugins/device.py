"""TensorRT device buffers as torch tensors, and running one operator on TensorRT's stream.

A plugin's ``enqueue`` receives raw device pointers, shapes, TensorRT type names and a
``cudaStream_t``. :func:`run` wraps each pointer as a zero-copy CUDA tensor (through a
``__cuda_array_interface__`` object of bytes, viewed as the real dtype, so bfloat16 works too;
the interface has no bfloat16 type string) and calls :data:`.compute.COMPUTE` with torch's
current stream set to TensorRT's stream, so every kernel and temporary is ordered on it.

No TensorRT import here: the function is tested on a CUDA machine with torch-owned buffers.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from .compute import COMPUTE

TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT64": torch.int64,
    "INT32": torch.int32,
}

Buffer = tuple[int, Sequence[int], str]  # (device pointer, shape, TensorRT type name)


class _DeviceBytes:
    """``nbytes`` bytes of device memory at ``ptr``, as torch reads them (no copy, not owned)."""

    def __init__(self, ptr: int, nbytes: int):
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (int(ptr), False), "version": 2}


def as_tensor(ptr: int, shape: Sequence[int], type_name: str, device: torch.device) -> torch.Tensor:
    """A contiguous tensor of ``shape`` viewing TensorRT's buffer at ``ptr`` (not a copy)."""
    dtype = TORCH_DTYPES[type_name]
    shape = tuple(int(d) for d in shape)
    numel = math.prod(shape)
    if numel == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    raw = torch.as_tensor(_DeviceBytes(ptr, numel * dtype.itemsize), device=device)
    return raw.view(dtype).view(shape)


def run(op: str, attrs: Mapping[str, int], inputs: Sequence[Buffer], outputs: Sequence[Buffer], stream: int) -> None:
    """Compute ``op`` from the input buffers into the output buffers, ordered on ``stream``."""
    device = torch.device("cuda", torch.cuda.current_device())
    ins = [as_tensor(ptr, shape, type_name, device) for ptr, shape, type_name in inputs]
    outs = [as_tensor(ptr, shape, type_name, device) for ptr, shape, type_name in outputs]
    with torch.cuda.stream(torch.cuda.ExternalStream(int(stream), device=device)):
        COMPUTE[op](ins, outs, attrs)
