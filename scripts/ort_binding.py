"""ONNX Runtime sessions bound to device buffers for timing (bench_ort, bench_ort_ops, profile_ort).

Inputs and outputs live on the device at fixed addresses (IO binding): no host copies inside a
timing, and a session with ``enable_cuda_graph`` needs fixed addresses from its first run on (that
run captures the graph). A timed call ends when its outputs are ready (``synchronize_outputs``).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

_NUMPY_OF = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def bind_on_device(session, feeds: dict[str, np.ndarray], device: str):
    """An IO binding of ``session`` with ``feeds`` copied to ``device`` ("cuda" or "cpu") once, and
    its outputs preallocated there (where the graph declares static shapes)."""
    import onnxruntime as ort

    place = ("cuda", 0) if device == "cuda" else ("cpu", 0)
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), *place))
    for out in session.get_outputs():
        if all(isinstance(d, int) for d in out.shape) and out.type in _NUMPY_OF:
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), _NUMPY_OF[out.type], *place)
            binding.bind_ortvalue_output(out.name, buffer)
        else:  # a dynamic shape: ORT allocates (not at a fixed address)
            binding.bind_output(out.name, place[0])
    return binding


def run_bound(session, binding) -> None:
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()


def bound_outputs(binding) -> list[np.ndarray]:
    """The outputs of the last run, on the host."""
    return [value.numpy() for value in binding.get_outputs()]


def median_bound_ms(session, binding, warmup: int, iters: int) -> float:
    """Median wall milliseconds of one bound call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run_bound(session, binding)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run_bound(session, binding)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
