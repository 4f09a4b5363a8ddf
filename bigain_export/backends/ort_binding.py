"""ONNX Runtime sessions bound to device buffers: inputs and outputs at fixed addresses (IO binding).

Two users: the benchmarks (no host copies inside a timing) and engines run with a CUDA graph
(``ort_bound_runner.py``). A CUDA session with ``enable_cuda_graph`` captures a graph at its first
run and replays it on the same addresses at every later run. A call ends when its outputs are ready
(``synchronize_outputs``). Needs only onnxruntime and numpy (the GPU machine's benchmarks import it).
"""

from __future__ import annotations

import numpy as np

# ONNX Runtime's type names of the tensors a bound session holds, as numpy dtypes
NUMPY_OF = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def _place(device: str) -> tuple[str, int]:
    return ("cuda", 0) if device == "cuda" else ("cpu", 0)


def bind_buffers(session, feeds: dict[str, np.ndarray], device: str):
    """(IO binding, its input OrtValues by name) of ``session``: ``feeds`` copied to ``device``
    ("cuda" or "cpu") once, outputs preallocated there where the graph declares static shapes."""
    import onnxruntime as ort

    place = _place(device)
    binding = session.io_binding()
    inputs = {}
    for name, value in feeds.items():
        inputs[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), *place)
        binding.bind_ortvalue_input(name, inputs[name])
    for out in session.get_outputs():
        if all(isinstance(d, int) for d in out.shape) and out.type in NUMPY_OF:
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), NUMPY_OF[out.type], *place)
            binding.bind_ortvalue_output(out.name, buffer)
        else:  # a dynamic shape: ORT allocates (not at a fixed address)
            binding.bind_output(out.name, place[0])
    return binding, inputs


def bind_on_device(session, feeds: dict[str, np.ndarray], device: str):
    """An IO binding of ``session`` with ``feeds`` on ``device`` (see :func:`bind_buffers`)."""
    return bind_buffers(session, feeds, device)[0]


def run_bound(session, binding) -> None:
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()


def bound_outputs(binding) -> list[np.ndarray]:
    """The outputs of the last run, on the host, as copies: the next run overwrites the buffers,
    and a CPU OrtValue's ``numpy()`` is a view of its buffer."""
    return [np.array(value.numpy(), copy=True) for value in binding.get_outputs()]
