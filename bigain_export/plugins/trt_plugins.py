"""TensorRT IPluginV3 plugins ``bigain.ai::{GatedMerge,TokenMerge,TokenUnmerge,KVPool}`` version "1", in Python.

One plugin class and one creator class serve the three operators: the operator's name selects
its :class:`~.specs.OpSpec` (fields, type rules, shape formulas) and its
:data:`~.compute.COMPUTE` function. The classes subclass the bindings of whichever TensorRT module
is in use (``tensorrt`` or ``tensorrt_rtx``, both have the same plugin API), so they are created
on first use by :func:`plugin_classes`.

TensorRT's ONNX parser looks a custom node up by ``(op_type, plugin_version, plugin_namespace)``;
with these creators registered it adds one PLUGIN_V3 layer per ``bigain.ai`` node instead of
importing the node's function body.

``enqueue`` wraps TensorRT's device pointers as torch tensors and runs
:mod:`bigain_export.ops.reference` on TensorRT's stream (:func:`.device.run`). A Python plugin
needs the Python interpreter and torch at run time: the plan is not self-contained.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import numpy as np

from .specs import (
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    SPECS,
    check_input_shapes,
    output_shapes,
    output_types,
    parse_fields,
    supports_type,
)

log = logging.getLogger(__name__)

_REGISTERED: dict[str, list[Any]] = {}  # trt module name -> creators (kept alive: TensorRT holds raw pointers)


class DimExpr:
    """A TensorRT ``IDimensionExpr`` with Python arithmetic, for :func:`.specs.output_shapes`."""

    def __init__(self, expr, builder, ops):
        self.expr, self.builder, self.ops = expr, builder, ops

    def _lift(self, other) -> "DimExpr":
        return other if isinstance(other, DimExpr) else DimExpr(self.builder.constant(int(other)), self.builder, self.ops)

    def _op(self, name: str, left, right) -> "DimExpr":
        left, right = self._lift(left), self._lift(right)
        return DimExpr(self.builder.operation(getattr(self.ops, name), left.expr, right.expr), self.builder, self.ops)

    def __add__(self, other):
        return self._op("SUM", self, other)

    def __sub__(self, other):
        return self._op("SUB", self, other)

    def __rsub__(self, other):
        return self._op("SUB", other, self)

    def __mul__(self, other):
        return self._op("PROD", self, other)

    def __floordiv__(self, other):
        return self._op("FLOOR_DIV", self, other)


@lru_cache(maxsize=None)
def plugin_classes(trt) -> tuple[type, type]:
    """``(BigainPlugin, BigainPluginCreator)`` subclassing the bindings of module ``trt``."""

    class BigainPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        """One ``bigain.ai`` operator; ``attrs`` are its validated int fields."""

        def __init__(self, op: str, attrs: dict[str, int]):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.op, self.attrs = op, dict(attrs)
            self.plugin_name = op
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            self.num_outputs = len(SPECS[op].outputs)

        # ------------------------------------------------------------------ core
        def get_capability_interface(self, capability_type):
            return self  # this object implements the core, build and runtime interfaces

        def clone(self):
            return BigainPlugin(self.op, self.attrs)

        def destroy(self):
            pass

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection(
                [trt.PluginField(name, np.array([self.attrs[name]], dtype=np.int32), trt.PluginFieldType.INT32)
                 for name in SPECS[self.op].all_fields]
            )

        # ------------------------------------------------------------------ build
        def get_output_data_types(self, input_types):
            return [getattr(trt.DataType, name) for name in output_types(self.op, [t.name for t in input_types])]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            ops = trt.DimensionOperation
            wrapped = [[DimExpr(inputs[i][k], expr_builder, ops) for k in range(len(inputs[i]))] for i in range(len(inputs))]
            shapes = output_shapes(self.op, self.attrs, wrapped)
            as_expr = lambda d: d.expr if isinstance(d, DimExpr) else expr_builder.constant(int(d))  # noqa: E731
            return [trt.DimsExprs([as_expr(d) for d in shape]) for shape in shapes]

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            return supports_type(self.op, pos, desc.type.name, in_out[0].desc.type.name)

        def configure_plugin(self, inp, out):
            check_input_shapes(self.op, self.attrs, [tuple(d.desc.dims) for d in inp])

        def get_workspace_size(self, inp, out):
            return 0  # torch allocates temporaries from its own pool, on TensorRT's stream

        def get_valid_tactics(self):
            return []  # one implementation: nothing to time

        # ------------------------------------------------------------------ runtime
        def on_shape_change(self, inp, out):
            check_input_shapes(self.op, self.attrs, [tuple(d.dims) for d in inp])

        def set_tactic(self, tactic):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            # NOT RUN in this project: no machine here can execute a TensorRT engine (see docs/tensorrt.md).
            from .device import run

            run(
                self.op, self.attrs,
                [(ptr, tuple(d.dims), d.type.name) for ptr, d in zip(inputs, input_desc)],
                [(ptr, tuple(d.dims), d.type.name) for ptr, d in zip(outputs, output_desc)],
                stream,
            )

    class BigainPluginCreator(trt.IPluginCreatorV3One):
        """Creates the plugin of operator ``op`` from the ONNX node's int attributes."""

        def __init__(self, op: str):
            trt.IPluginCreatorV3One.__init__(self)
            self.op = op
            self.name = op
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField(name, np.array([], dtype=np.int32), trt.PluginFieldType.INT32)
                 for name in SPECS[op].all_fields]
            )

        def create_plugin(self, name, field_collection, phase):
            attrs = parse_fields(self.op, [(field.name, field.data) for field in field_collection])
            return BigainPlugin(self.op, attrs)

    return BigainPlugin, BigainPluginCreator


def register_plugins(trt=None) -> list[str]:
    """Register the three creators under namespace ``bigain.ai`` (idempotent).

    Args:
        trt: the TensorRT module (``tensorrt`` or ``tensorrt_rtx``); found by
            :func:`bigain_export.backends.trt.import_tensorrt` when omitted.
    Returns:
        the operator names now registered by this process.
    """
    if trt is None:
        from ..backends.trt import import_tensorrt

        trt, _ = import_tensorrt()
    if trt.__name__ in _REGISTERED:
        return list(SPECS)
    _, creator_class = plugin_classes(trt)
    registry = trt.get_plugin_registry()
    # all_creators, not get_creator: a failed get_creator logs a TensorRT error
    present = {(c.name, c.plugin_version, c.plugin_namespace) for c in registry.all_creators}
    creators = []
    for op in SPECS:
        if (op, PLUGIN_VERSION, PLUGIN_NAMESPACE) in present:
            log.debug("%s::%s already registered", PLUGIN_NAMESPACE, op)
            continue
        creator = creator_class(op)
        if not registry.register_creator(creator, PLUGIN_NAMESPACE):
            from ..errors import EngineError

            raise EngineError(f"TensorRT refused to register plugin {PLUGIN_NAMESPACE}::{op} version {PLUGIN_VERSION}")
        creators.append(creator)
    _REGISTERED[trt.__name__] = creators
    log.info("registered TensorRT plugins %s under namespace %s", ", ".join(SPECS), PLUGIN_NAMESPACE)
    return list(SPECS)
