"""An engine runner whose session reads and writes fixed device buffers, as a CUDA graph needs.

A CUDA session with ``enable_cuda_graph`` captures a graph at its first run and replays it on the
same addresses at every later run, so each call must write its inputs into those buffers
(``OrtValue.update_inplace``) instead of handing ONNX Runtime new arrays, as Polygraphy's
``OnnxrtRunner`` (the base class here) does.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
from polygraphy.backend.onnxrt import OnnxrtRunner

from ..errors import EngineError
from .ort_binding import NUMPY_OF, bind_buffers, bound_outputs, run_bound


class BoundOrtRunner(OnnxrtRunner):
    """Polygraphy's ONNX Runtime runner with the session's inputs and outputs in fixed buffers on
    ``device``: each call copies its feed into the input buffers, runs, and returns host copies of
    the outputs. Needed for a session with ``enable_cuda_graph``; the engine's inputs must have
    static shapes (engines are built for one batch and sample shape)."""

    def __init__(self, sess, device: str, name: str | None = None):
        super().__init__(sess, name=name)
        self.device = device

    def activate_impl(self):
        super().activate_impl()
        # fixed addresses need fixed sizes: ORT would allocate a dynamic output anew at each run
        for kind, nodes in (("input", self.sess.get_inputs()), ("output", self.sess.get_outputs())):
            for node in nodes:
                if not all(isinstance(d, int) for d in node.shape) or node.type not in NUMPY_OF:
                    raise EngineError(f"{self.name}: {kind} {node.name!r} is {node.type} of shape {node.shape}; a "
                                      "bound session needs static shapes and numeric types")
        self._dtypes = {node.name: np.dtype(NUMPY_OF[node.type]) for node in self.sess.get_inputs()}
        zeros = {node.name: np.zeros(node.shape, self._dtypes[node.name]) for node in self.sess.get_inputs()}
        self._binding, self._inputs = bind_buffers(self.sess, zeros, self.device)

    def infer_impl(self, feed_dict):
        missing = [name for name in self._inputs if name not in feed_dict]
        extra = [name for name in feed_dict if name not in self._inputs]
        if missing or extra:
            raise EngineError(f"{self.name}: feed has {sorted(feed_dict)}; this engine takes {sorted(self._inputs)}")
        for name, buffer in self._inputs.items():
            value = np.asarray(feed_dict[name])
            want = (tuple(buffer.shape()), self._dtypes[name])
            if (value.shape, value.dtype) != want:
                raise EngineError(f"{self.name}: input {name!r} is {value.dtype} of shape {list(value.shape)}; "
                                  f"this engine's buffer holds {want[1]} of shape {list(want[0])}")
            buffer.update_inplace(np.ascontiguousarray(value))
        start = time.time()
        try:
            run_bound(self.sess, self._binding)
        except Exception as exc:  # e.g. a CUDA graph that cannot be captured (a node on the CPU)
            raise EngineError(f"{self.name}: ONNX Runtime could not run the bound session: "
                              f"{str(exc).strip().splitlines()[0][:300]}") from exc
        self.inference_time = time.time() - start
        names = [node.name for node in self.sess.get_outputs()]
        return OrderedDict(zip(names, bound_outputs(self._binding)))

    def deactivate_impl(self):
        del self._binding, self._inputs
        super().deactivate_impl()
