"""What the three ``bigain.ai`` plugins declare, in plain Python (no TensorRT import).

TensorRT asks a plugin four questions at build time: which attributes it was created with
(a ``PluginFieldCollection``; ONNX int attributes arrive as 1-element INT32 fields), what its
output shapes are (as expressions of the input shapes), which data types each input/output
takes, and whether the static input shapes fit its attributes. The answers live here as pure
functions of ints and type names, so they are unit-tested without TensorRT; the plugin classes in
:mod:`.trt_plugins` only translate TensorRT objects to and from them.

Operators (see :mod:`bigain_export.export.onnx_ops`):

* ``GatedMerge(x [B,N,C], metric [B,N,C]) -> (merged [B,N-r,C], slot [B,N] int64)``,
  fields ``grid_h, grid_w, r, anchor`` (0 window, 1 released, 2 fixed) and the optional
  ``match_radius`` (default 0: every anchor; the exporter writes it only when nonzero);
* ``TokenMerge(x [B,N,C], slot [B,N] int64) -> merged [B,num_out,C]``, fields ``num_out, num_dst``;
* ``TokenUnmerge(y [B,N-r,C], slot [B,N] int64) -> out [B,N,C]``;
* ``KVPool(x [B,N,C], alpha [B|1,1,1] float32) -> out [B,(grid_h/s)*(grid_w/s),C]``,
  fields ``grid_h, grid_w, s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..config import MAX_MATCH_RADIUS
from ..errors import EngineError
from ..ops.library import ANCHOR_CODES, DOMAIN

PLUGIN_NAMESPACE = DOMAIN  # "bigain.ai": the nodes' plugin_namespace attribute
PLUGIN_VERSION = "1"
FLOAT_TYPES = ("FLOAT", "HALF", "BF16")
ANCHOR_NAMES = {code: name for name, code in ANCHOR_CODES.items() if name != "random"}

# Type rule of one input/output position: "T" = the float type of input 0 (x or y),
# "INT64" / "FLOAT" = exactly that TensorRT type.
SAME_AS_INPUT0 = "T"


@dataclass(frozen=True)
class OpSpec:
    """The static description of one plugin: names, fields and per-position type rules."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fields: tuple[str, ...]
    types: tuple[str, ...]  # one rule per position, inputs then outputs
    optional: tuple[tuple[str, int], ...] = ()  # (field, default): attributes added after version 1

    @property
    def all_fields(self) -> tuple[str, ...]:
        return self.fields + tuple(name for name, _ in self.optional)

    @property
    def num_positions(self) -> int:
        return len(self.inputs) + len(self.outputs)


SPECS: dict[str, OpSpec] = {
    "GatedMerge": OpSpec(
        "GatedMerge", ("x", "metric"), ("merged", "slot"), ("grid_h", "grid_w", "r", "anchor"),
        (SAME_AS_INPUT0, SAME_AS_INPUT0, SAME_AS_INPUT0, "INT64"), optional=(("match_radius", 0),),
    ),
    "TokenMerge": OpSpec(
        "TokenMerge", ("x", "slot"), ("merged",), ("num_out", "num_dst"), (SAME_AS_INPUT0, "INT64", SAME_AS_INPUT0),
    ),
    "TokenUnmerge": OpSpec(
        "TokenUnmerge", ("y", "slot"), ("out",), (), (SAME_AS_INPUT0, "INT64", SAME_AS_INPUT0),
    ),
    "KVPool": OpSpec(
        "KVPool", ("x", "alpha"), ("out",), ("grid_h", "grid_w", "s"), (SAME_AS_INPUT0, "FLOAT", SAME_AS_INPUT0),
    ),
}


def _fail(op: str, message: str) -> None:
    raise EngineError(f"{PLUGIN_NAMESPACE}::{op} plugin: {message}")


def parse_fields(op: str, fields: Iterable[tuple[str, Any]]) -> dict[str, int]:
    """Validated attributes of ``op`` from ``(name, data)`` pairs of a PluginFieldCollection.

    ``data`` is whatever the binding gives (a numpy array of one INT32, or a Python int).
    Unknown names are ignored (the parser may pass extra node attributes); missing or
    out-of-range ones raise :class:`EngineError` naming the field and what is allowed.
    """
    spec = SPECS.get(op)
    if spec is None:
        _fail(op, f"unknown plugin; known: {', '.join(SPECS)}")
    values: dict[str, int] = dict(spec.optional)
    for name, data in fields:
        if name in spec.all_fields:
            values[name] = _one_int(op, name, data)
    missing = [name for name in spec.fields if name not in values]
    if missing:
        _fail(op, f"missing field(s) {', '.join(missing)}; required: {', '.join(spec.fields)}")
    _check_ranges(op, values)
    return values


def _one_int(op: str, name: str, data: Any) -> int:
    try:
        flat = list(data.reshape(-1)) if hasattr(data, "reshape") else [data]
    except Exception:  # noqa: BLE001  binding objects without reshape
        flat = list(data)
    if len(flat) != 1:
        _fail(op, f"field {name} has {len(flat)} values; allowed: exactly one int")
    return int(flat[0])


def _check_ranges(op: str, values: Mapping[str, int]) -> None:
    for name in ("grid_h", "grid_w", "s", "num_out"):
        if name in values and values[name] < 1:
            _fail(op, f"{name}={values[name]}; allowed: >= 1")
    if "anchor" in values and values["anchor"] not in ANCHOR_NAMES:
        _fail(op, f"anchor={values['anchor']}; allowed: " + ", ".join(f"{c} ({n})" for c, n in sorted(ANCHOR_NAMES.items())))
    if op == "GatedMerge":
        if not 0 <= values["match_radius"] <= MAX_MATCH_RADIUS:
            _fail(op, f"match_radius={values['match_radius']}; allowed: 0..{MAX_MATCH_RADIUS}")
        n = values["grid_h"] * values["grid_w"]
        num_src = n - (values["grid_h"] // 2) * (values["grid_w"] // 2)
        if not 0 <= values["r"] <= num_src:
            _fail(op, f"r={values['r']}; allowed: 0..{num_src} (the sources of a {values['grid_h']}x{values['grid_w']} grid)")
    if op == "TokenMerge" and not 0 <= values["num_dst"] <= values["num_out"]:
        _fail(op, f"num_dst={values['num_dst']}; allowed: 0..num_out={values['num_out']}")
    if op == "KVPool" and (values["grid_h"] % values["s"] or values["grid_w"] % values["s"]):
        _fail(op, f"s={values['s']} does not divide the {values['grid_h']}x{values['grid_w']} grid")


def output_shapes(op: str, attrs: Mapping[str, int], inputs: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Output shapes from input shapes ``[[B, N, C], ...]``.

    Dimensions may be ints or any objects with ``-`` (the plugin passes TensorRT dimension
    expressions wrapped by :class:`.trt_plugins.DimExpr`), so one formula serves both.
    """
    if op == "GatedMerge":
        b, n, c = inputs[0]
        return [(b, n - attrs["r"], c), (b, n)]
    if op == "TokenMerge":
        b, _, c = inputs[0]
        return [(b, attrs["num_out"], c)]
    if op == "TokenUnmerge":
        (b, _, c), (_, n) = inputs[0], inputs[1]
        return [(b, n, c)]
    if op == "KVPool":
        b, _, c = inputs[0]
        s = attrs["s"]
        return [(b, (attrs["grid_h"] // s) * (attrs["grid_w"] // s), c)]
    _fail(op, f"unknown plugin; known: {', '.join(SPECS)}")
    raise AssertionError  # unreachable


def check_input_shapes(op: str, attrs: Mapping[str, int], inputs: Sequence[Sequence[int]]) -> None:
    """Raise :class:`EngineError` when known (non-negative) input dims contradict the attributes.

    ``-1`` marks a dimension not known at build time; it is not checked.
    """
    known = lambda d: d >= 0  # noqa: E731
    ranks = [len(shape) for shape in inputs]
    expected = {"GatedMerge": [3, 3], "TokenMerge": [3, 2], "TokenUnmerge": [3, 2], "KVPool": [3, 3]}[op]
    if ranks != expected:
        _fail(op, f"input ranks {ranks}; expected {expected}")
    if op in ("GatedMerge", "KVPool"):
        n = inputs[0][1]
        if known(n) and n != attrs["grid_h"] * attrs["grid_w"]:
            _fail(op, f"x has {n} tokens; grid_h*grid_w = {attrs['grid_h'] * attrs['grid_w']}")
    if op == "GatedMerge" and inputs[0] != inputs[1] and all(known(d) for d in (*inputs[0], *inputs[1])):
        _fail(op, f"x {list(inputs[0])} and metric {list(inputs[1])} differ in shape")
    if op == "TokenMerge":
        (b, n, _), (sb, sn) = inputs
        if known(n) and n < attrs["num_out"]:
            _fail(op, f"x has {n} tokens, fewer than num_out={attrs['num_out']}")
        if all(known(d) for d in (b, n, sb, sn)) and (b, n) != (sb, sn):
            _fail(op, f"x [{b}, {n}, ...] and slot [{sb}, {sn}] differ in batch or tokens")
    if op == "TokenUnmerge" and known(inputs[0][0]) and known(inputs[1][0]) and inputs[0][0] != inputs[1][0]:
        _fail(op, f"y batch {inputs[0][0]} != slot batch {inputs[1][0]}")
    if op == "KVPool":
        alpha = inputs[1]
        if known(alpha[1]) and known(alpha[2]) and (alpha[1], alpha[2]) != (1, 1):
            _fail(op, f"alpha shape {list(alpha)}; allowed: [B or 1, 1, 1]")


def supports_type(op: str, pos: int, type_name: str, input0_type: str) -> bool:
    """Whether position ``pos`` (inputs, then outputs) may have TensorRT type ``type_name``.

    ``input0_type`` is the type already chosen for position 0 (TensorRT asks in order).
    """
    rule = SPECS[op].types[pos]
    if rule == SAME_AS_INPUT0:
        return type_name in FLOAT_TYPES and (pos == 0 or type_name == input0_type)
    return type_name == rule


def output_types(op: str, input_types: Sequence[str]) -> list[str]:
    """Output type names from input type names (``"T"`` resolves to input 0's type)."""
    spec = SPECS[op]
    rules = spec.types[len(spec.inputs):]
    return [input_types[0] if rule == SAME_AS_INPUT0 else rule for rule in rules]


def anchor_name(attrs: Mapping[str, int]) -> str:
    """The reference implementation's anchor mode for the ``anchor`` code."""
    return ANCHOR_NAMES[attrs["anchor"]]
