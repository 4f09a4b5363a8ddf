"""The eager (or torch.compile'd) patched PyTorch denoiser as a Polygraphy runner, so it is
compared with engines by the same Comparator as any other backend."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from ..config import BiGainConfig
from ..export.spec import DenoiserSpec
from ..models.casting import cast_temporarily
from ..patch import apply_bigain, remove_bigain
from .precision import strict_fp32


class TorchRunner(BaseRunner):
    """Runs ``denoiser`` patched with ``config``; patch applied on activate, removed on deactivate.

    Args:
        compile: wrap in ``torch.compile(fullgraph=True)`` (the patched model has no graph breaks).
        device / precision: where and in which dtype the model runs; I/O stays float32 numpy.
    """

    def __init__(self, denoiser, config: BiGainConfig, spec: DenoiserSpec, *, compile: bool = False,
                 device: str = "cpu", precision: str = "fp32", name: str | None = None):
        super().__init__(name=name or f"torch-{'compile' if compile else 'eager'}", prefix="torch-runner")
        self.denoiser, self.config, self.spec = denoiser, config, spec
        self.compile, self.device, self.dtype = compile, torch.device(device), DenoiserSpec(1, (1, 1, 1), precision).dtype
        self._model = None

    def activate_impl(self):
        self._cast = cast_temporarily(self.denoiser, self.device, self.dtype)  # exact weights back after
        self._cast.__enter__()
        self.denoiser.eval()
        apply_bigain(self.denoiser, self.config)
        network = self.denoiser.network_module()  # takes the spec's inputs (labels or embeddings)
        self._model = torch.compile(network, fullgraph=True) if self.compile else network

    def get_input_metadata_impl(self):
        meta = TensorMetadata()
        for spec in self.spec.inputs:
            meta.add(spec.name, spec.numpy_dtype, spec.shape)
        return meta

    @torch.no_grad()
    def infer_impl(self, feed_dict):
        args = [torch.as_tensor(np.asarray(feed_dict[s.name])).to(self.device) for s in self.spec.inputs]
        start = time.perf_counter()
        # An fp32 reference is true fp32 (no TF32), like the fp32 engines it is compared with.
        with strict_fp32() if self.dtype == torch.float32 else contextlib.nullcontext():
            eps = self._model(*args).float().cpu().numpy()
        self.inference_time = time.perf_counter() - start  # Polygraphy's BaseRunner reads it
        return OrderedDict(eps=eps)

    def deactivate_impl(self):
        remove_bigain(self.denoiser)
        self._cast.__exit__(None, None, None)
        self._model = None
