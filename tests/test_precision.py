"""fp32 means fp32: TF32 is off in fp32 references and fp32 ONNX Runtime CUDA sessions."""

from __future__ import annotations

import pytest
import torch

from bigain_export.backends import ort as ort_backend
from bigain_export.backends.precision import ORT_CUDA_STRICT_FP32, strict_fp32


@pytest.mark.parametrize("before", [True, False])
def test_strict_fp32_turns_tf32_off_and_restores_the_flags(before):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = before
    try:
        with pytest.raises(KeyError):
            with strict_fp32():
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                raise KeyError("restored on errors too")
        assert torch.backends.cuda.matmul.allow_tf32 is before and torch.backends.cudnn.allow_tf32 is before
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # torch defaults


@pytest.mark.parametrize("backend, precision, expected", [
    ("ort-cuda", "fp32", [("CUDAExecutionProvider", ORT_CUDA_STRICT_FP32), "CPUExecutionProvider"]),
    ("ort-cuda", "fp16", [("CUDAExecutionProvider", {"prefer_nhwc": "1"}), "CPUExecutionProvider"]),
    ("ort-cuda", "bf16", [("CUDAExecutionProvider", {"prefer_nhwc": "1"}), "CPUExecutionProvider"]),
    ("ort-cpu", "fp32", ["CPUExecutionProvider"]),
    ("ort-cpu", "fp16", ["CPUExecutionProvider"]),
])
def test_ort_cuda_sessions_get_tf32_off_in_fp32_and_nhwc_convolutions_in_half(monkeypatch, tmp_path, backend, precision, expected):
    ort = pytest.importorskip("onnxruntime")
    seen = {}
    monkeypatch.setattr(ort_backend, "cuda_available", lambda: True)
    monkeypatch.setattr(ort, "InferenceSession", lambda path, sess_options, providers: seen.setdefault("p", providers))
    ort_backend.make_session(tmp_path / "m.onnx", backend, precision)
    assert seen["p"] == expected
