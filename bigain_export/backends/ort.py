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


def make_session(onnx_path: Path, backend: str, precision: str = "fp32"):
    """An ONNX Runtime session on ``backend``; fp32 CUDA sessions run without TF32 (``precision.py``)."""
    import onnxruntime as ort

    if backend not in PROVIDERS:
        raise EngineError(f"backend={backend!r} is not an ONNX Runtime backend; allowed: {', '.join(PROVIDERS)}")
    if backend == "ort-cuda" and not cuda_available():
        raise EngineError("backend 'ort-cuda' needs onnxruntime-gpu and a CUDA device (pip install 'bigain-export[gpu]')")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = list(PROVIDERS[backend])
    if backend == "ort-cuda" and precision == "fp32":
        providers[0] = (providers[0], dict(ORT_CUDA_STRICT_FP32))
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
    except Exception as exc:
        raise EngineError(f"{onnx_path}: ONNX Runtime cannot load it: {str(exc).strip().splitlines()[0][:300]}") from exc


def make_ort_runner(onnx_path: Path, backend: str, name: str | None = None, precision: str = "fp32"):
    """A Polygraphy OnnxrtRunner over our session (so our provider choice and errors apply)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    return OnnxrtRunner(lambda: make_session(onnx_path, backend, precision), name=name or backend)
