"""ONNX Runtime engines: provider choice and a Polygraphy runner over a session."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import EngineError
from .precision import ORT_CUDA_STRICT_FP32

log = logging.getLogger(__name__)

PROVIDERS = {"ort-cpu": ["CPUExecutionProvider"], "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def cuda_available() -> bool:
    """True when onnxruntime-gpu can run on a visible CUDA device."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ort.preload_dlls()  # CUDA/cuDNN libraries of the pip-installed nvidia packages or torch
    except Exception:  # older onnxruntime, or libraries found another way
        pass
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return True


def best_backend() -> str:
    return "ort-cuda" if cuda_available() else "ort-cpu"


# CUDA provider options of fp16/bf16 sessions: NHWC convolutions skip cuDNN's NCHW<->NHWC
# transposes. SD2 UNet at 1024 px, fp16, onnxscript fusions, H200: 39.2 -> 33.9 ms plain and
# 39.5 -> 34.4 ms with BiGain merging (docs/benchmarks.md, session 13). Not timed in fp32, where
# the strict-fp32 options apply alone. enable_cuda_graph saved ~2 ms more; it needs every call on
# fixed IO-bound buffers, so it is the opt-in cuda_graph of make_ort_runner (ort_bound_runner.py).
ORT_CUDA_HALF = {"prefer_nhwc": "1"}


def cuda_provider_options(precision: str) -> dict[str, str]:
    """The CUDAExecutionProvider options of an engine session at ``precision``."""
    return dict(ORT_CUDA_STRICT_FP32) if precision == "fp32" else dict(ORT_CUDA_HALF)


def make_session(onnx_path: Path, backend: str, precision: str = "fp32", cuda_graph: bool = False):
    """An ONNX Runtime session on ``backend``: fp32 CUDA sessions run without TF32
    (``precision.py``), fp16/bf16 ones with NHWC convolutions (``ORT_CUDA_HALF``); with
    ``cuda_graph``, a CUDA session that captures its first run as a CUDA graph and replays it
    (it must then run on bound buffers: :func:`make_ort_runner`)."""
    import onnxruntime as ort

    if backend not in PROVIDERS:
        raise EngineError(f"backend={backend!r} is not an ONNX Runtime backend; allowed: {', '.join(PROVIDERS)}")
    if backend == "ort-cuda" and not cuda_available():
        raise EngineError("backend 'ort-cuda' needs onnxruntime-gpu and a CUDA device (pip install 'bigain-export[gpu]')")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = list(PROVIDERS[backend])
    if backend == "ort-cuda":
        provider_options = cuda_provider_options(precision)
        if cuda_graph:
            provider_options["enable_cuda_graph"] = "1"
        providers[0] = (providers[0], provider_options)
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
    except Exception as exc:
        raise EngineError(f"{onnx_path}: ONNX Runtime cannot load it: {str(exc).strip().splitlines()[0][:300]}") from exc


def check_cuda_graph(backend: str, cuda_graph: bool) -> None:
    """Refuse ``cuda_graph`` in one line where it cannot run: a value other than a bool, or an
    engine on a backend other than ``ort-cuda``. Called before any session (or model) loads."""
    if not isinstance(cuda_graph, bool):
        raise EngineError(f"cuda_graph={cuda_graph!r} is not allowed; allowed: True or False")
    if cuda_graph and backend != "ort-cuda":
        raise EngineError(f"cuda_graph=True needs an 'ort-cuda' engine; this one runs on {backend!r}")


def make_ort_runner(onnx_path: Path, backend: str, name: str | None = None, precision: str = "fp32",
                    cuda_graph: bool = False):
    """A Polygraphy OnnxrtRunner over our session (so our provider choice and errors apply). With
    ``cuda_graph`` (``ort-cuda`` only), the session replays one captured CUDA graph a call, on
    inputs and outputs bound to fixed device buffers (``BoundOrtRunner``): in session 13 that took
    the plain SD2 UNet engine from 1.21-1.32x to 1.15-1.25x of compiled PyTorch (fp16, NHWC, 1024 px;
    docs/benchmarks.md), measured by bench_ort.py, not through this runner."""
    check_cuda_graph(backend, cuda_graph)
    if cuda_graph:
        from .ort_bound_runner import BoundOrtRunner

        return BoundOrtRunner(lambda: make_session(onnx_path, backend, precision, cuda_graph=True), device="cuda",
                              name=name or f"{backend}+cuda-graph")
    from polygraphy.backend.onnxrt import OnnxrtRunner

    return OnnxrtRunner(lambda: make_session(onnx_path, backend, precision), name=name or backend)
