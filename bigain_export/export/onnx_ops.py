"""BiGain's custom ONNX operators: how PyTorch emits them, and their standard-op function bodies.

Three operators of domain ``bigain.ai`` (opset version 1):

* ``GatedMerge(x [B,N,C], metric [B,N,C]) -> (merged [B,N-r,C], slot [B,N] int64)``,
  attributes ``grid_h``, ``grid_w``, ``r``, ``anchor`` (0 window, 1 released, 2 fixed) and
  ``match_radius`` (optional, default 0: every anchor; written only when nonzero, so a model
  exported without it is byte-for-byte what it was before the attribute existed);
* ``TokenMerge(x [B,N,C], slot [B,N]) -> merged [B,num_out,C]``, attributes ``num_out``,
  ``num_dst`` (the merge alone, with a slot map of an earlier GatedMerge: plan reuse);
* ``TokenUnmerge(y [B,N-r,C], slot [B,N]) -> [B,N,C]``;
* ``KVPool(x [B,N,C], alpha [B|1,1,1]) -> [B,N/s^2,C]``, attributes ``grid_h``, ``grid_w``, ``s``.

Each node also carries ``plugin_namespace`` / ``plugin_version``, which TensorRT's ONNX parser uses
to find a plugin of the same name; each op is ALSO a model-local ``FunctionProto`` whose body
uses standard ONNX ops only (the same algorithm as :mod:`bigain_export.ops.reference`, step by
step), so ONNX Runtime or any other runtime runs the exported model as it is.
"""

from __future__ import annotations

import itertools

import onnx
import torch
from onnx import AttributeProto, TensorProto, helper

from ..errors import ExportError
from ..ops.library import ANCHOR_CODES, DOMAIN

OPSET_VERSION = 1
PLUGIN_VERSION = "1"
STANDARD_OPSET = 18  # ScatterElements(reduction="add"), ReduceSum/Max with axes as inputs
_PLUGIN_ATTRS = dict(plugin_namespace=DOMAIN, plugin_version=PLUGIN_VERSION)
EXPORTABLE_ANCHORS = ("window", "released", "fixed")


# --------------------------------------------------------------------------- emitters (PyTorch)
def emit_gated_merge(x, metric, grid_h: int, grid_w: int, r: int, anchor: str, match_radius: int = 0):
    assert anchor in EXPORTABLE_ANCHORS, anchor  # export_onnx refuses the others up front
    b, n, c = x.shape
    local = dict(match_radius=match_radius) if match_radius else {}
    merged, slot = torch.onnx.ops.symbolic_multi_out(
        f"{DOMAIN}::GatedMerge",
        (x, metric),
        dict(grid_h=grid_h, grid_w=grid_w, r=r, anchor=ANCHOR_CODES[anchor], **local, **_PLUGIN_ATTRS),
        dtypes=(x.dtype, torch.int64),
        shapes=((b, n - r, c), (b, n)),
        version=OPSET_VERSION,
    )
    return merged, slot


def emit_token_merge(x, slot, num_out: int, num_dst: int):
    b, _, c = x.shape
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::TokenMerge", (x, slot), dict(num_out=num_out, num_dst=num_dst, **_PLUGIN_ATTRS),
        dtype=x.dtype, shape=(b, num_out, c), version=OPSET_VERSION,
    )


def emit_token_unmerge(y, slot):
    b, n = slot.shape
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::TokenUnmerge", (y, slot), dict(_PLUGIN_ATTRS),
        dtype=y.dtype, shape=(b, n, y.shape[-1]), version=OPSET_VERSION,
    )


def emit_kv_pool(x, alpha, grid_h: int, grid_w: int, s: int):
    b, _, c = x.shape
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.full((1, 1, 1), float(alpha), dtype=torch.float32, device=x.device)
    alpha = alpha.reshape(-1, 1, 1).to(torch.float32)
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::KVPool", (x, alpha), dict(grid_h=grid_h, grid_w=grid_w, s=s, **_PLUGIN_ATTRS),
        dtype=x.dtype, shape=(b, (grid_h // s) * (grid_w // s), c), version=OPSET_VERSION,
    )


# --------------------------------------------------------------------------- function bodies
class _Body:
    """Accumulates the nodes of a function body with generated value names."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self._ids = itertools.count()

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        names = [f"{self.name}_{op_type}_{next(self._ids)}" for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def ints(self, *values: int) -> str:
        return self.op("Constant", value=helper.make_tensor("v", TensorProto.INT64, [len(values)], list(values)))

    def scalar_float(self, value: float) -> str:
        return self.op("Constant", value=helper.make_tensor("v", TensorProto.FLOAT, [], [value]))

    def attr_int(self, attr: str) -> str:
        """A 1-element int64 tensor holding the node's attribute ``attr``."""
        scalar = f"{self.name}_attr_{attr}"
        node = helper.make_node("Constant", [], [scalar])
        node.attribute.append(AttributeProto(name="value_int", ref_attr_name=attr, type=AttributeProto.INT))
        self.nodes.append(node)
        return self.op("Unsqueeze", scalar, self.ints(0))

    def filled(self, shape: str, value: float | int) -> str:
        """A tensor of ``shape`` (int64 1-D) filled with ``value`` (float32 or int64)."""
        kind = TensorProto.FLOAT if isinstance(value, float) else TensorProto.INT64
        return self.op("ConstantOfShape", shape, value=helper.make_tensor("v", kind, [1], [value]))

    def range(self, stop: str) -> str:
        """0..stop-1 (int64) for a 1-element ``stop``."""
        scalar = lambda t: self.op("Squeeze", t)  # noqa: E731  Range takes 0-d inputs
        return self.op("Range", scalar(self.ints(0)), scalar(stop), scalar(self.ints(1)))

    def arange(self, stop: str, like: str) -> str:
        """0..stop-1 (int64), broadcast to the shape of ``like``."""
        return self.op("Expand", self.range(stop), self.op("Shape", like))

    def concat(self, *parts: str) -> str:
        return self.op("Concat", *parts, axis=0)

    def gather_rows(self, tensor: str, index: str, rows: str) -> str:
        """``tensor [B, rows, C]`` gathered per sample at ``index [B, K]`` -> ``[B, K, C]``.

        One Gather on the batch-flattened rows (``index + b * rows``): no ``[B, K, C]`` int64
        index tensor as GatherElements needs (84 MB per SD2 1024 px layer)."""
        batch, channels = self.dim(tensor, 0), self.dim(tensor, 2)
        offsets = self.op("Mul", self.op("Unsqueeze", self.range(batch), self.ints(-1)), rows)
        flat_index = self.op("Reshape", self.op("Add", index, offsets), self.ints(-1))
        flat = self.op("Reshape", tensor, self.concat(self.ints(-1), channels))
        picked = self.op("Gather", flat, flat_index, axis=0)
        return self.op("Reshape", picked, self.concat(batch, self.op("Shape", index, start=1, end=2), channels))

    def branch(self, condition: str, then_fn, else_fn, elem_types: int | tuple[int, ...]):
        """``If(condition)``: the output(s) of ``then_fn()`` or ``else_fn()``, each a builder of
        this body's nodes run into its own subgraph; only the taken branch runs. One elem type:
        one output name; a tuple of them: a list of output names (the builders return tuples)."""
        types = elem_types if isinstance(elem_types, tuple) else (elem_types,)
        graphs = []
        for side, build in (("then", then_fn), ("else", else_fn)):
            outer, self.nodes = self.nodes, []
            results = build()
            results = tuple(results) if isinstance(results, (tuple, list)) else (results,)
            outs = [f"{self.name}_{side}_{next(self._ids)}" for _ in results]
            for result, out in zip(results, outs):
                self.nodes.append(helper.make_node("Identity", [result], [out]))
            graphs.append(helper.make_graph(self.nodes, outs[0], [], [
                helper.make_tensor_value_info(out, t, None) for out, t in zip(outs, types)]))
            self.nodes = outer
        return self.op("If", condition, outputs=len(types), then_branch=graphs[0], else_branch=graphs[1])

    def dim(self, tensor: str, axis: int) -> str:
        return self.op("Shape", tensor, start=axis, end=axis + 1)

    def function(self, inputs: list[str], outputs: list[str], attributes: list[str],
                 defaults: dict[str, int] | None = None) -> onnx.FunctionProto:
        """The body as a function; ``defaults``: optional int attributes and their values."""
        return helper.make_function(
            DOMAIN, self.name, inputs, outputs, self.nodes,
            opset_imports=[helper.make_opsetid("", STANDARD_OPSET)],
            attributes=attributes + list(_PLUGIN_ATTRS),
            attribute_protos=[helper.make_attribute(k, v) for k, v in (defaults or {}).items()],
        )


def _laplacian_score(f: _Body, metric: str, grid_h: str, grid_w: str) -> str:
    """[B, N, C] -> [B, H, W] float: sum_c |4-neighbour Laplacian| with zero padding.

    One single-channel 3-D convolution over [B, 1, H, W, C] with the kernel [[0,1,0],[1,-4,1],
    [0,1,0]] x 1: per channel like a depthwise 2-D convolution, but with no ``group=C``
    attribute (a function body cannot read C into an attribute) and no layout transpose. On ONNX
    Runtime 1.32's CPU EP it ran 2-3x faster than the zero-padded shifted slices it replaced
    (two Concats, four Slices, a Sum; docs/benchmarks.md, session 12); its sums differ from the
    reference's in order only."""
    m32 = f.op("Cast", metric, to=TensorProto.FLOAT)
    volume = f.op("Reshape", m32, f.concat(f.ints(0, 1), grid_h, grid_w, f.ints(-1)))
    kernel = f.op("Constant", value=helper.make_tensor(
        "v", TensorProto.FLOAT, [1, 1, 3, 3, 1], [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0]))
    lap = f.op("Conv", volume, kernel, kernel_shape=[3, 3, 1], pads=[1, 1, 0, 1, 1, 0])
    return f.op("ReduceSum", f.op("Abs", lap), f.ints(1, 4), keepdims=0)


def _unit_rows(f: _Body, metric: str) -> str:
    """``metric`` rows divided by their float32 L2 norm, rounded to ``metric``'s dtype (as
    ``reference.unit_rows``). The norm is Sqrt(ReduceSum(x * x)), not ReduceL2: ORT's CUDA
    ReduceL2 is a cuDNN NORM2 reduction, and the whole GatedMerge ran 0.06 ms faster a call this
    way (H200, session 14; same speed on the CPU EP). ``scripts/body_forms.py`` keeps ReduceL2."""
    m32 = f.op("Cast", metric, to=TensorProto.FLOAT)
    norm = f.op("Sqrt", f.op("ReduceSum", f.op("Mul", m32, m32), f.ints(-1), keepdims=1))
    return f.op("CastLike", f.op("Div", m32, norm), metric)


def _best_anchor(f: _Body, similarity: str) -> tuple[str, str]:
    """``similarity [B, Ns, Nd]`` -> (best similarity, its first maximal anchor index) per source.

    The maximum is read at the ArgMax: one pass over the float32 similarity fewer than a
    ReduceMax (session 10's ORT CUDA profile: a cuDNN max-reduction of ~1 ms per SD2 1024 px
    layer). ``scripts/body_forms.py`` holds the other exact forms (``MATCH_FORMS``): on ORT
    CUDA this one was the fastest (0.10 ms at SD2 1024 px, session 13)."""
    best_dst = f.op("ArgMax", similarity, axis=-1, keepdims=0)
    at = f.op("Unsqueeze", best_dst, f.ints(-1))
    return f.op("Squeeze", f.op("GatherElements", similarity, at, axis=-1), f.ints(-1)), best_dst


def _match_candidates(f: _Body, src_idx: str, grid_w: str, half_h: str, half_w: str, radius: str) -> str:
    """``[B, Ns, (2R+1)^2]`` windows each source may merge into, as
    ``reference.match_candidates``: the windows within ``radius`` of the source's own (an odd
    grid's last row or column joins the window before it), clamped at the edges, rows first."""
    one, two = f.ints(1), f.ints(2)
    steps = f.op("Range", f.op("Squeeze", f.op("Neg", radius)), f.op("Squeeze", f.op("Add", radius, one)),
                 f.op("Squeeze", one))  # -R..R
    last_row, last_col = f.op("Sub", half_h, one), f.op("Sub", half_w, one)
    own_row = f.op("Min", f.op("Div", f.op("Div", src_idx, grid_w), two), last_row)
    own_col = f.op("Min", f.op("Div", f.op("Mod", src_idx, grid_w), two), last_col)
    near = lambda own, last: f.op("Clip", f.op("Add", f.op("Unsqueeze", own, f.ints(-1)), steps),  # noqa: E731
                                  f.op("Squeeze", f.ints(0)), f.op("Squeeze", last))  # [B, Ns, 2R+1]
    rows = f.op("Mul", f.op("Unsqueeze", near(own_row, last_row), f.ints(-1)), half_w)  # [B, Ns, 2R+1, 1]
    cols = f.op("Unsqueeze", near(own_col, last_col), f.ints(-2))  # [B, Ns, 1, 2R+1]
    return f.op("Reshape", f.op("Add", rows, cols), f.ints(0, 0, -1))


def _local_match_per_source(f: _Body, unit: str, src_idx: str, dst_unit: str, grid_w: str, half_h: str,
                            half_w: str, radius: str) -> tuple[str, str]:
    """``match_radius > 0``: each source's (best similarity, best window) among the anchors of its
    candidate windows (:func:`_match_candidates`), one [K, C] x [C] product per source. Any grid."""
    src_unit = f.gather_rows(unit, src_idx, f.dim(unit, 1))
    windows = _match_candidates(f, src_idx, grid_w, half_h, half_w, radius)  # [B, Ns, K]
    flat = f.op("Reshape", windows, f.concat(f.ints(0), f.ints(-1)))
    near = f.op("Reshape", f.gather_rows(dst_unit, flat, f.dim(dst_unit, 1)),
                f.concat(f.ints(0), f.dim(windows, 1), f.dim(windows, 2), f.ints(-1)))  # [B, Ns, K, C]
    sims = f.op("Squeeze", f.op("MatMul", near, f.op("Unsqueeze", src_unit, f.ints(-1))), f.ints(-1))
    best_sim, best_k = _best_anchor(f, sims)
    best_window = f.op("GatherElements", windows, f.op("Unsqueeze", best_k, f.ints(-1)), axis=-1)
    return best_sim, f.op("Squeeze", best_window, f.ints(-1))


def _local_match_per_window(f: _Body, unit: str, src_idx: str, dst_unit: str, grid_w: str, half_h: str,
                            half_w: str, radius: str) -> tuple[str, str]:
    """The same on an even grid, one batched MatMul per 2x2 window: its 4 tokens against the
    anchors of its (2R+1)^2 candidate windows. It gathers [B, Nd*K, C] anchor rows where the
    per-source form gathers [B, Ns*K, C] (3x more; 0.32 ms of its 1.35 ms at SD2 1024 px on ORT
    CUDA, session 16), and reads no [B, Ns, C] source rows: it scores every token (Nd*K*4 dot
    products) and keeps the sources' rows of the scores. Same candidates in the same order,
    float32 dot products. The whole body at R=1 on ORT CUDA (H200, session 17): 1.20 ms of GPU
    time at 1024 px (per source 1.34, global match 1.22), 0.72 at 768 px (0.81, 0.66)."""
    two = f.ints(2)
    batch, channels = f.dim(unit, 0), f.dim(unit, 2)
    top_left = f.op("Reshape", f.op("Add", f.op("Unsqueeze", f.op("Mul", f.op("Mul", f.range(half_h), two), grid_w),
                                                      f.ints(-1)), f.op("Mul", f.range(half_w), two)), f.ints(1, -1))
    table = f.op("Squeeze", _match_candidates(f, top_left, grid_w, half_h, half_w, radius), f.ints(0))  # [Nd, K]
    num_windows, k = f.dim(table, 0), f.dim(table, 1)
    near = f.op("Reshape", f.op("Gather", dst_unit, f.op("Reshape", table, f.ints(-1)), axis=1),
                f.concat(batch, num_windows, k, channels))  # [B, Nd, K, C]
    by_window = f.op("Transpose", f.op("Reshape", unit, f.concat(batch, half_h, two, half_w, two, channels)),
                     perm=[0, 1, 3, 5, 2, 4])  # [B, Hh, Wh, C, 2, 2]
    sims = f.op("MatMul", near, f.op("Reshape", by_window, f.concat(batch, num_windows, channels, f.ints(4))))
    in_token_order = f.op("Transpose", f.op("Reshape", sims, f.concat(batch, half_h, half_w, k, two, two)),
                          perm=[0, 1, 4, 2, 5, 3])  # [B, Hh, 2, Wh, 2, K]
    per_token = f.op("Reshape", in_token_order, f.concat(batch, f.ints(-1), k))
    best_sim, best_k = _best_anchor(f, f.gather_rows(per_token, src_idx, f.dim(per_token, 1)))
    own = f.op("Add", f.op("Mul", f.op("Div", f.op("Div", src_idx, grid_w), two), half_w),
               f.op("Div", f.op("Mod", src_idx, grid_w), two))
    best_window = f.op("Gather", f.op("Reshape", table, f.ints(-1)), f.op("Add", f.op("Mul", own, k), best_k), axis=0)
    return best_sim, best_window


def _segment_mean(f: _Body, x: str, slot: str, num_out: str, out: str) -> None:
    """``out [B, num_out, C]`` = mean of the rows of ``x`` sharing a slot (float32 sums).

    ScatterElements needs its index expanded to [B, N, C]. ScatterND(reduction="add") on the
    batch-flattened rows would need only [B*N, 1] and ran 10-20x faster on ONNX Runtime 1.32's
    CPU EP, but it is wrong there: with 2 threads, 78 of 200 runs with duplicate indices lost
    updates (a data race, onnxruntime issues 18048 and 23396; docs/development.md, pitfalls)."""
    shape = f.concat(f.op("Shape", slot), f.dim(x, 2))
    index = f.op("Expand", f.op("Unsqueeze", slot, f.ints(-1)), shape)
    rows = f.concat(f.dim(x, 0), num_out)
    total = f.op("ScatterElements", f.filled(f.concat(rows, f.dim(x, 2)), 0.0), index,
                 f.op("Cast", x, to=TensorProto.FLOAT), axis=1, reduction="add")
    ones = f.filled(f.op("Shape", slot), 1.0)
    count = f.op("ScatterElements", f.filled(rows, 0.0), slot, ones, axis=1, reduction="add")
    mean = f.op("Div", total, f.op("Unsqueeze", count, f.ints(-1)))
    f.nodes.append(helper.make_node("CastLike", [mean, x], [out]))


def gated_merge_function() -> onnx.FunctionProto:
    """The canonical slot map of :func:`bigain_export.ops.reference.merge_plan`, sort-free except
    for one TopK over the kept sources (the smaller side at the paper's ratios)."""
    f = _Body("GatedMerge")
    grid_h, grid_w, r, anchor = (f.attr_int(a) for a in ("grid_h", "grid_w", "r", "anchor"))
    two, zero, one = f.ints(2), f.ints(0), f.ints(1)
    half_h, half_w = f.op("Div", grid_h, two), f.op("Div", grid_w, two)
    crop_h, crop_w = f.op("Mul", half_h, two), f.op("Mul", half_w, two)
    num_tokens = f.op("Mul", grid_h, grid_w)
    num_dst = f.op("Mul", half_h, half_w)
    num_src = f.op("Sub", num_tokens, num_dst)
    kept = f.op("Sub", num_src, r)
    batch = f.dim("x", 0)

    # 1. anchors: argmin of the Laplacian score per 2x2 window (or the released/fixed variants);
    # ToMe's fixed anchors (offset 0) skip the score in an If: computed and discarded, it cost
    # the ToMe baseline ~8% of a DiT engine on ONNX Runtime's CPU EP
    def gated_offsets() -> str:
        score = _laplacian_score(f, "metric", grid_h, grid_w)
        cropped = f.op("Slice", score, f.ints(0, 0), f.concat(crop_h, crop_w), f.ints(1, 2))
        as_windows = f.op("Reshape", cropped, f.concat(f.ints(0), half_h, two, half_w, two))
        window_major = f.op("Transpose", as_windows, perm=[0, 1, 3, 2, 4])
        quad = f.concat(f.ints(0), half_h, half_w, f.ints(4))
        offset_window = f.op("ArgMin", f.op("Reshape", window_major, quad), axis=-1, keepdims=0)
        offset_released = f.op("ArgMin", f.op("Reshape", cropped, quad), axis=-1, keepdims=0)
        return f.op("Where", f.op("Equal", anchor, zero), offset_window, offset_released)

    def fixed_offsets() -> str:
        return f.filled(f.concat(batch, half_h, half_w), 0)

    offset = f.branch(f.op("Squeeze", f.op("Equal", anchor, two)), fixed_offsets, gated_offsets, TensorProto.INT64)
    # window (i, j) with offset o: anchor token (2i + o // 2) * W + 2j + o % 2, in window order
    rows = f.op("Add", f.op("Unsqueeze", f.op("Mul", f.range(half_h), two), f.ints(-1)), f.op("Div", offset, two))
    cols = f.op("Add", f.op("Mul", f.range(half_w), two), f.op("Mod", offset, two))
    dst_idx = f.op("Reshape", f.op("Add", f.op("Mul", rows, grid_w), cols), f.concat(batch, num_dst))

    # 2. sources in token order: prefix sums place sources first, anchors after them
    is_anchor = f.op("ScatterElements", f.filled(f.concat(batch, num_tokens), 0), dst_idx,
                     f.filled(f.op("Shape", dst_idx), 1), axis=1)
    axis1 = f.ints(1)
    src_pos = f.op("CumSum", f.op("Sub", one, is_anchor), axis1, exclusive=1)
    anchor_pos = f.op("Add", f.op("CumSum", is_anchor, axis1, exclusive=1), num_src)
    position = f.op("Where", f.op("Cast", is_anchor, to=TensorProto.BOOL), anchor_pos, src_pos)
    order = f.op("ScatterElements", f.filled(f.concat(batch, num_tokens), 0), position,
                 f.arange(num_tokens, position), axis=1)
    src_idx = f.op("Slice", order, zero, num_src, axis1)

    # 3. matching: float32 cosine similarity of each source with every anchor, or (match_radius
    # > 0) with the anchors of the windows around its own (first max wins)
    unit = f.op("Cast", _unit_rows(f, "metric"), to=TensorProto.FLOAT)
    dst_unit = f.gather_rows(unit, dst_idx, num_tokens)  # the sources' rows are read in each branch

    def global_match() -> tuple[str, str]:
        src_unit = f.gather_rows(unit, src_idx, num_tokens)
        return _best_anchor(f, f.op("MatMul", src_unit, f.op("Transpose", dst_unit, perm=[0, 2, 1])))

    def local_match() -> tuple[str, str]:
        args = (f, unit, src_idx, dst_unit, grid_w, half_h, half_w, match_radius)
        even = f.op("Squeeze", f.op("Equal", f.op("Add", f.op("Mod", grid_h, two), f.op("Mod", grid_w, two)), zero))
        return f.branch(even, lambda: _local_match_per_window(*args), lambda: _local_match_per_source(*args),
                        (TensorProto.FLOAT, TensorProto.INT64))

    match_radius = f.attr_int("match_radius")
    best_sim, best_dst = f.branch(f.op("Squeeze", f.op("Equal", match_radius, zero)), global_match, local_match,
                                  (TensorProto.FLOAT, TensorProto.INT64))

    # 4. the r most similar sources merge (ties: lower index first) = the `kept` least similar
    # stay (ties: higher index first): TopK(smallest) over the reversed sources.
    last = f.op("Sub", num_src, one)
    reverse = f.op("Range", f.op("Squeeze", last), f.op("Squeeze", f.ints(-1)), f.op("Squeeze", f.ints(-1)))
    flipped = f.op("Gather", best_sim, reverse, axis=1)
    stay_flipped = f.op("TopK", flipped, kept, outputs=2, largest=0, sorted=1)[1]
    stay = f.op("Sub", last, stay_flipped)
    keeps = f.op("ScatterElements", f.filled(f.op("Shape", best_sim), 0), stay,
                 f.filled(f.op("Shape", stay), 1), axis=1)

    # 5. slot map: kept sources 0..kept-1 in token order, anchors kept..kept+Nd-1 in window order
    kept_pos = f.op("CumSum", keeps, axis1, exclusive=1)
    src_slot = f.op("Where", f.op("Cast", keeps, to=TensorProto.BOOL), kept_pos, f.op("Add", best_dst, kept))
    dst_slot = f.op("Add", f.arange(num_dst, dst_idx), kept)
    slot = f.op("ScatterElements", f.filled(f.concat(batch, num_tokens), 0), src_idx, src_slot, axis=1)
    f.nodes.append(helper.make_node("ScatterElements", [slot, dst_idx, dst_slot], ["slot"], axis=1))

    # 6. merge: the segment mean (as TokenMerge)
    _segment_mean(f, "x", "slot", f.op("Sub", num_tokens, r), "merged")
    return f.function(["x", "metric"], ["merged", "slot"], ["grid_h", "grid_w", "r", "anchor"],
                      defaults=dict(match_radius=0))


def token_merge_function() -> onnx.FunctionProto:
    f = _Body("TokenMerge")
    _segment_mean(f, "x", "slot", f.attr_int("num_out"), "merged")
    return f.function(["x", "slot"], ["merged"], ["num_out", "num_dst"])


def token_unmerge_function() -> onnx.FunctionProto:
    f = _Body("TokenUnmerge")
    f.nodes.append(helper.make_node("Identity", [f.gather_rows("y", "slot", f.dim("y", 1))], ["out"]))
    return f.function(["y", "slot"], ["out"], [])


def kv_pool_function() -> onnx.FunctionProto:
    f = _Body("KVPool")
    grid_h, grid_w, s = (f.attr_int(a) for a in ("grid_h", "grid_w", "s"))
    out_h, out_w = f.op("Div", grid_h, s), f.op("Div", grid_w, s)
    grid = f.op("Reshape", "x", f.concat(f.ints(0), out_h, s, out_w, s, f.ints(-1)))
    centre = f.op("Div", s, f.ints(2))  # nearest-exact: index i * s + s // 2
    nearest = f.op("Gather", f.op("Gather", grid, f.op("Squeeze", centre), axis=2), f.op("Squeeze", centre), axis=3)
    mean = f.op("CastLike", f.op("ReduceMean", f.op("Cast", grid, to=TensorProto.FLOAT), f.ints(2, 4), keepdims=0), "x")
    tokens = f.concat(f.ints(0), f.op("Mul", out_h, out_w), f.ints(-1))
    nearest, mean = f.op("Reshape", nearest, tokens), f.op("Reshape", mean, tokens)
    blended = f.op("Add", mean, f.op("Mul", f.op("CastLike", "alpha", "x"), f.op("Sub", nearest, mean)))
    f.nodes.append(helper.make_node("Identity", [blended], ["out"]))
    return f.function(["x", "alpha"], ["out"], ["grid_h", "grid_w", "s"])


FUNCTIONS = {
    "GatedMerge": gated_merge_function,
    "TokenMerge": token_merge_function,
    "TokenUnmerge": token_unmerge_function,
    "KVPool": kv_pool_function,
}


def single_node_model(op: str, inputs: dict, outputs: dict, **attrs) -> onnx.ModelProto:
    """A graph of one ``bigain.ai`` node with its local function, as the exporter writes it (for
    tests and per-op benchmarks). ``inputs`` / ``outputs``: name -> (TensorProto type, shape)."""
    node = helper.make_node(op, list(inputs), list(outputs), domain=DOMAIN, **dict(_PLUGIN_ATTRS), **attrs)
    graph = helper.make_graph(
        [node], f"single_{op}",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", STANDARD_OPSET), helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    model.ir_version = 10  # as torch.onnx.export writes (onnxruntime 1.31 reads at most 13)
    attach_functions(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the local function of every ``bigain.ai`` op the graph uses (in place; returned)."""
    used = {node.op_type for node in model.graph.node if node.domain == DOMAIN}
    unknown = used - set(FUNCTIONS)
    if unknown:
        raise ExportError(f"graph has unknown {DOMAIN} ops {sorted(unknown)}; known: {sorted(FUNCTIONS)}")
    present = {(fn.domain, fn.name) for fn in model.functions}
    for name in sorted(used):
        if (DOMAIN, name) not in present:
            model.functions.append(FUNCTIONS[name]())
    if used and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
    return model
