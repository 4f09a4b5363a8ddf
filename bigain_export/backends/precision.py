"""True fp32 on NVIDIA GPUs: TF32 off, so eager PyTorch and engines compute the same thing.

Ampere and later GPUs can run fp32 matmuls and convolutions in TF32 (10-bit mantissa). PyTorch
enables it for cuDNN convolutions by default and ONNX Runtime's CUDA provider for everything
(``use_tf32``), so an "fp32" comparison between them measures two roundings, not the engine:
on the built-in DiT that was ~1.4e-4 mean abs drift, above the 1e-4 fp32 tolerance. fp32
references and fp32 engines therefore run with TF32 off.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

# ONNX Runtime CUDA provider options of fp32 sessions (see module docstring).
ORT_CUDA_STRICT_FP32 = {"use_tf32": "0"}


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Within the block, PyTorch runs fp32 matmuls and convolutions without TF32 (restored after)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
