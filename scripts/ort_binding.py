"""ONNX Runtime sessions bound to device buffers, timed (bench_ort, bench_ort_ops, profile_ort,
paired_engines).

The binding itself is the package's (``bigain_export.backends.ort_binding``, which engines run with
a CUDA graph use too): inputs and outputs at fixed device addresses, so there are no host copies
inside a timing, and a session with ``enable_cuda_graph`` captures its graph at the first run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export.backends.ort_binding import bind_on_device, bound_outputs, run_bound  # noqa: E402

__all__ = ["bind_on_device", "bound_outputs", "median_bound_ms", "run_bound"]


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
