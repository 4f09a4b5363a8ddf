"""Other exact forms of GatedMerge body steps, to time against the body's own (benchmarks only).

``bench_ort_ops.py`` times each form alone and inside the whole body; ``bench_ort.py
--body-forms`` builds whole engines with them, so a GPU session can time a rewrite without a code
change (the machine goes back 30 s after a call). A form that wins moves into
``bigain_export.export.onnx_ops``, and the body's old form moves here.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from onnx import TensorProto

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bigain_export.export import onnx_ops  # noqa: E402
from bigain_export.export.onnx_ops import _Body  # noqa: E402


def _reducemax_argmax(f: _Body, similarity: str) -> tuple[str, str]:
    """The body until session 10: a ReduceMax and an ArgMax, two passes over the similarity."""
    return (f.op("ReduceMax", similarity, f.ints(-1), keepdims=0),
            f.op("ArgMax", similarity, axis=-1, keepdims=0))


def _topk1(f: _Body, similarity: str) -> tuple[str, str]:
    """TopK(k=1): ONNX specifies the lower index of tied maxima, as the reference's argmax; ORT's
    CUDA TopK did not keep it (session 13), and it was the slowest form there."""
    top, index = f.op("TopK", similarity, f.ints(1), outputs=2, axis=-1, largest=1, sorted=1)
    return f.op("Squeeze", top, f.ints(-1)), f.op("Squeeze", index, f.ints(-1))


# exact forms of one GatedMerge step each, the body's first (onnx_ops): same outputs, other kernels
MATCH_FORMS = {"argmax+gather": onnx_ops._best_anchor, "reducemax+argmax": _reducemax_argmax, "topk1": _topk1}


def _slices_laplacian(f: _Body, metric: str, grid_h: str, grid_w: str) -> str:
    """The GatedMerge body's Laplacian score until session 12: zero border by two Concats, the
    four neighbours by shifted Slices, summed in the reference's order."""
    m32 = f.op("Cast", metric, to=TensorProto.FLOAT)
    grid = f.op("Reshape", m32, f.concat(f.ints(0), grid_h, grid_w, f.ints(-1)))
    batch, channels = f.dim(metric, 0), f.dim(metric, 2)
    zero_row = f.filled(f.concat(batch, f.ints(1), grid_w, channels), 0.0)
    rows = f.op("Concat", zero_row, grid, zero_row, axis=1)
    zero_col = f.filled(f.concat(batch, f.op("Add", grid_h, f.ints(2)), f.ints(1), channels), 0.0)
    padded = f.op("Concat", zero_col, rows, zero_col, axis=2)
    big = 2**62

    def window(h0: int, h1: int, w0: int, w1: int) -> str:
        return f.op("Slice", padded, f.ints(h0, w0), f.ints(h1, w1), f.ints(1, 2))

    neighbours = f.op("Sum", window(0, -2, 1, -1), window(2, big, 1, -1), window(1, -1, 0, -2), window(1, -1, 2, big))
    lap = f.op("Sub", neighbours, f.op("Mul", grid, f.scalar_float(4.0)))
    return f.op("ReduceSum", f.op("Abs", lap), f.ints(3), keepdims=0)


LAPLACIAN_FORMS = {"conv3d": onnx_ops._laplacian_score, "slices": _slices_laplacian}


def _reducel2_unit_rows(f: _Body, metric: str) -> str:
    """The body's norm until session 14: ReduceL2, which ORT's CUDA EP runs as a cuDNN NORM2
    reduction (0.11 ms over [2, 16384, 320]); the body's Sqrt(ReduceSum(x * x)) made the whole
    GatedMerge 1.23 vs 1.29 ms of GPU time at SD2 1024 px (H200)."""
    m32 = f.op("Cast", metric, to=TensorProto.FLOAT)
    return f.op("CastLike", f.op("Div", m32, f.op("ReduceL2", m32, f.ints(-1), keepdims=1)), metric)


UNIT_FORMS = {"sumsq": onnx_ops._unit_rows, "reducel2": _reducel2_unit_rows}
# match_radius > 0 on an even grid: per 2x2 window (the body since session 17) or per source (its
# only form in session 16, still the odd grids' branch)
LOCAL_FORMS = {"per-window": onnx_ops._local_match_per_window, "per-source": onnx_ops._local_match_per_source}
# GatedMerge body steps that have other exact forms: step -> (onnx_ops name, forms; the body's first)
BODY_STEPS = {"lap": ("_laplacian_score", LAPLACIAN_FORMS),
              "match": ("_best_anchor", MATCH_FORMS),
              "unit": ("_unit_rows", UNIT_FORMS),
              "local": ("_local_match_per_window", LOCAL_FORMS)}


def parse_body_forms(spec: str) -> dict:
    """``"default"`` or ``"lap=slices,match=topk1"`` -> {step: form name}; a bad name raises."""
    if spec == "default":
        return {}
    chosen = {}
    for part in spec.split(","):
        step, _, form = part.partition("=")
        if step not in BODY_STEPS:
            raise ValueError(f"body step {step!r} in {spec!r} is not known; allowed: {', '.join(BODY_STEPS)}")
        if form not in BODY_STEPS[step][1]:
            raise ValueError(f"{step} form {form!r} in {spec!r} is not known; allowed: {', '.join(BODY_STEPS[step][1])}")
        chosen[step] = form
    return chosen


@contextlib.contextmanager
def body_forms(spec: str):
    """Build GatedMerge bodies with other exact forms of some steps (benchmarks only): the body
    looks its steps up in onnx_ops when it is built, so swapping the names there is enough."""
    chosen = parse_body_forms(spec)
    saved = {name: getattr(onnx_ops, name) for name, _ in BODY_STEPS.values()}
    try:
        for step, form in chosen.items():
            name, forms = BODY_STEPS[step]
            setattr(onnx_ops, name, forms[form])
        yield chosen
    finally:
        for name, fn in saved.items():
            setattr(onnx_ops, name, fn)


# whole GatedMerge bodies with one step in another exact form (rows "GatedMerge[lap=slices]", ...)
GATED_FORM_SPECS = ("lap=slices", "match=reducemax+argmax", "match=topk1", "unit=reducel2")
