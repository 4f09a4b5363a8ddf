"""The TensorRT path.

* Plugin specs and arithmetic, plain Python and CPU torch (run everywhere).
* With TensorRT or TensorRT-RTX installed (marker ``trt``): exported tiny models parse and build
  into plans on CPU without plugins (function bodies) and with our plugins (PLUGIN_V3 layers, in
  a child process that has the TensorRT-RTX library symlink on LD_LIBRARY_PATH), and the plugin
  layers' output shapes and types are TensorRT's answer to our formulas.

No engine is executed: TensorRT-RTX needs an RTX-class GPU to deserialize a plan.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from bigain_export.backends.trt import tensorrt_available
from bigain_export.errors import EngineError
from bigain_export.export.onnx_ops import single_node_model
from bigain_export.ops import library
from bigain_export.ops.library import ANCHOR_CODES, DOMAIN
from bigain_export.plugins import compute, specs
from bigain_export.plugins.trt_plugins import DimExpr

_NO_TRT = "tensorrt / tensorrt_rtx is not importable (pip install tensorrt-rtx-cu13)"
if not tensorrt_available():
    print(f"tests/test_trt.py: TensorRT tests skipped: {_NO_TRT}", file=sys.stderr)
requires_trt = pytest.mark.skipif(not tensorrt_available(), reason=_NO_TRT)


# =========================================================================== plugin specs (no TensorRT)
def _fields(**values):
    """What the binding hands the creator: (name, 1-element INT32 array) pairs."""
    return [(name, np.array([value], dtype=np.int32)) for name, value in values.items()]


def test_fields_parse_from_int32_arrays_and_ignore_unknown_names():
    attrs = specs.parse_fields("GatedMerge", _fields(grid_h=8, grid_w=6, r=20, anchor=1, extra=7))
    assert attrs == {"grid_h": 8, "grid_w": 6, "r": 20, "anchor": 1, "match_radius": 0}  # optional: default
    assert specs.parse_fields("GatedMerge", _fields(grid_h=8, grid_w=6, r=20, anchor=1, match_radius=2))["match_radius"] == 2
    assert specs.anchor_name(attrs) == "released"
    assert specs.parse_fields("KVPool", [("grid_h", 4), ("grid_w", 8), ("s", np.array([2], np.int32))]) == {"grid_h": 4, "grid_w": 8, "s": 2}
    assert specs.parse_fields("TokenUnmerge", []) == {}


@pytest.mark.parametrize(
    "op, fields, message",
    [
        ("GatedMerge", dict(grid_h=8, grid_w=8, r=4), "missing field(s) anchor"),
        ("GatedMerge", dict(grid_h=8, grid_w=8, r=4, anchor=ANCHOR_CODES["random"]), "anchor=3; allowed: 0 (window), 1 (released), 2 (fixed)"),
        ("GatedMerge", dict(grid_h=4, grid_w=4, r=13, anchor=0), "r=13; allowed: 0..12"),
        ("GatedMerge", dict(grid_h=4, grid_w=4, r=1, anchor=0, match_radius=8), "match_radius=8; allowed: 0..7"),
        ("KVPool", dict(grid_h=6, grid_w=8, s=4), "s=4 does not divide the 6x8 grid"),
        ("KVPool", dict(grid_h=0, grid_w=8, s=1), "grid_h=0; allowed: >= 1"),
        ("Nope", {}, "unknown plugin"),
    ],
)
def test_bad_fields_raise_one_line_errors(op, fields, message):
    with pytest.raises(EngineError) as err:
        specs.parse_fields(op, _fields(**fields))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"bigain.ai::{op} plugin:")


def test_field_with_several_values_is_refused():
    with pytest.raises(EngineError, match="field r has 2 values"):
        specs.parse_fields("GatedMerge", [("grid_h", 4), ("grid_w", 4), ("r", np.array([1, 2], np.int32)), ("anchor", 0)])


def test_output_shapes_on_ints():
    assert specs.output_shapes("GatedMerge", dict(grid_h=8, grid_w=8, r=20, anchor=0), [(2, 64, 32), (2, 64, 32)]) == [(2, 44, 32), (2, 64)]
    assert specs.output_shapes("TokenUnmerge", {}, [(2, 44, 32), (2, 64)]) == [(2, 64, 32)]
    assert specs.output_shapes("KVPool", dict(grid_h=6, grid_w=8, s=2), [(3, 48, 16), (1, 1, 1)]) == [(3, 12, 16)]


class _IntExprBuilder:
    """Stands in for TensorRT's IExprBuilder: expressions are plain ints."""

    OPS = SimpleNamespace(SUM="SUM", SUB="SUB", PROD="PROD", FLOOR_DIV="FLOOR_DIV")
    FUNCS = {"SUM": int.__add__, "SUB": int.__sub__, "PROD": int.__mul__, "FLOOR_DIV": int.__floordiv__}

    def __init__(self):
        self.calls = []

    def constant(self, value):
        return int(value)

    def operation(self, op, a, b):
        self.calls.append(op)
        return self.FUNCS[op](a, b)


def test_output_shapes_through_dimension_expressions():
    """The plugin feeds the same formulas with DimExpr: each arithmetic maps to the right operation."""
    builder = _IntExprBuilder()
    wrap = lambda shape: [DimExpr(d, builder, builder.OPS) for d in shape]  # noqa: E731
    merged, slot = specs.output_shapes("GatedMerge", dict(grid_h=8, grid_w=8, r=20, anchor=0), [wrap((2, 64, 32)), wrap((2, 64, 32))])
    assert [d.expr for d in merged] == [2, 44, 32] and [d.expr for d in slot] == [2, 64]
    assert builder.calls == ["SUB"]
    d = DimExpr(10, builder, builder.OPS)
    assert [(d + 3).expr, (d * 3).expr, (d // 3).expr, (30 - d).expr] == [13, 30, 3, 20]


def test_type_rules():
    assert specs.output_types("GatedMerge", ["HALF", "HALF"]) == ["HALF", "INT64"]
    assert specs.output_types("TokenUnmerge", ["BF16", "INT64"]) == ["BF16"]
    assert specs.output_types("KVPool", ["FLOAT", "FLOAT"]) == ["FLOAT"]
    ok = lambda op, pos, t, t0="HALF": specs.supports_type(op, pos, t, t0)  # noqa: E731
    assert ok("GatedMerge", 0, "HALF") and ok("GatedMerge", 0, "BF16", "BF16") and not ok("GatedMerge", 0, "INT32")
    assert ok("GatedMerge", 1, "HALF") and not ok("GatedMerge", 1, "FLOAT")  # metric follows x
    assert ok("GatedMerge", 3, "INT64") and not ok("GatedMerge", 3, "INT32")  # slot is int64, as in the ONNX graph
    assert ok("TokenUnmerge", 1, "INT64") and ok("TokenUnmerge", 2, "HALF") and not ok("TokenUnmerge", 2, "FLOAT")
    assert ok("KVPool", 1, "FLOAT") and not ok("KVPool", 1, "HALF")  # alpha is always float32


def test_input_shape_checks():
    attrs = dict(grid_h=8, grid_w=8, r=20, anchor=0)
    specs.check_input_shapes("GatedMerge", attrs, [(2, 64, 32), (2, 64, 32)])
    specs.check_input_shapes("GatedMerge", attrs, [(-1, 64, 32), (-1, 64, 32)])  # unknown batch
    with pytest.raises(EngineError, match="x has 60 tokens; grid_h\\*grid_w = 64"):
        specs.check_input_shapes("GatedMerge", attrs, [(2, 60, 32), (2, 60, 32)])
    with pytest.raises(EngineError, match="input ranks"):
        specs.check_input_shapes("TokenUnmerge", {}, [(2, 44, 32), (2, 64, 1)])
    with pytest.raises(EngineError, match="alpha shape"):
        specs.check_input_shapes("KVPool", dict(grid_h=8, grid_w=8, s=2), [(2, 64, 32), (2, 4, 1)])


# =========================================================================== plugin arithmetic (CPU torch)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("anchor", ["window", "released", "fixed"])
@pytest.mark.parametrize("radius", [0, 1])
def test_compute_writes_what_the_eager_operators_return(dtype, anchor, radius):
    """The plugins' enqueue path computes exactly the eager operators, into TensorRT-owned buffers."""
    g = torch.Generator().manual_seed(7)
    b, h, w, c, r = 2, 6, 8, 16, 21
    x = torch.randn(b, h * w, c, generator=g).to(dtype)
    metric = torch.randn(b, h * w, c, generator=g).to(dtype)
    merged, slot = torch.empty(b, h * w - r, c, dtype=dtype), torch.empty(b, h * w, dtype=torch.int64)
    local = dict(match_radius=radius) if radius else {}  # absent: the default, as in older ONNX files
    compute.gated_merge([x, metric], [merged, slot], specs.parse_fields("GatedMerge", _fields(
        grid_h=h, grid_w=w, r=r, anchor=ANCHOR_CODES[anchor], **local)))
    want_merged, want_slot, _ = library.gated_merge(x, metric, h, w, r, anchor, radius)
    assert torch.equal(slot, want_slot) and torch.equal(merged, want_merged)
    if radius:
        assert not torch.equal(slot, library.gated_merge(x, metric, h, w, r, anchor)[1])

    out = torch.empty(b, h * w, c, dtype=dtype)
    compute.token_unmerge([merged * 2, slot], [out], {})
    assert torch.equal(out, library.token_unmerge(merged * 2, slot))

    alpha = torch.tensor([0.8, 1.2], dtype=torch.float32).reshape(2, 1, 1)
    pooled = torch.empty(b, (h // 2) * (w // 2), c, dtype=dtype)
    compute.kv_pool([x, alpha], [pooled], dict(grid_h=h, grid_w=w, s=2))
    assert torch.equal(pooled, library.kv_pool(x, alpha, h, w, 2))


# =========================================================================== TensorRT(-RTX) on CPU
F32, F16, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64
# name -> (model, expected [(shape, type)] of the plugin layer's outputs)
SINGLE = {
    "gated_merge_fp32": (
        lambda: single_node_model("GatedMerge", {"x": (F32, [2, 64, 8]), "metric": (F32, [2, 64, 8])},
                                   {"merged": (F32, [2, 44, 8]), "slot": (I64, [2, 64])}, grid_h=8, grid_w=8, r=20, anchor=0),
        [([2, 44, 8], "FLOAT"), ([2, 64], "INT64")],
    ),
    "gated_merge_fp16": (
        lambda: single_node_model("GatedMerge", {"x": (F16, [1, 48, 4]), "metric": (F16, [1, 48, 4])},
                                   {"merged": (F16, [1, 38, 4]), "slot": (I64, [1, 48])}, grid_h=6, grid_w=8, r=10, anchor=2),
        [([1, 38, 4], "HALF"), ([1, 48], "INT64")],
    ),
    "gated_merge_local": (  # the optional match_radius attribute reaches the plugin creator
        lambda: single_node_model("GatedMerge", {"x": (F32, [2, 64, 8]), "metric": (F32, [2, 64, 8])},
                                   {"merged": (F32, [2, 44, 8]), "slot": (I64, [2, 64])}, grid_h=8, grid_w=8, r=20, anchor=0,
                                   match_radius=1),
        [([2, 44, 8], "FLOAT"), ([2, 64], "INT64")],
    ),
    # a 1024 px SD latent level: 128x128 tokens, 12288 sources (TensorRT's TopK stops at K = 3840)
    "gated_merge_128x128": (
        lambda: single_node_model("GatedMerge", {"x": (F32, [1, 16384, 4]), "metric": (F32, [1, 16384, 4])},
                                   {"merged": (F32, [1, 8192, 4]), "slot": (I64, [1, 16384])}, grid_h=128, grid_w=128, r=8192, anchor=0),
        [([1, 8192, 4], "FLOAT"), ([1, 16384], "INT64")],
    ),
    "token_unmerge_fp16": (
        lambda: single_node_model("TokenUnmerge", {"y": (F16, [2, 44, 8]), "slot": (I64, [2, 64])}, {"out": (F16, [2, 64, 8])}),
        [([2, 64, 8], "HALF")],
    ),
    "kv_pool_fp32": (
        lambda: single_node_model("KVPool", {"x": (F32, [2, 48, 8]), "alpha": (F32, [2, 1, 1])},
                                   {"out": (F32, [2, 12, 8])}, grid_h=6, grid_w=8, s=2),
        [([2, 12, 8], "FLOAT")],
    ),
}

# Run in a child process: parse each model (with or without our plugins) and describe its layers.
_INSPECT = r"""
import json, sys
from pathlib import Path
from bigain_export.backends.trt import import_tensorrt, layer_type_counts, make_logger, parse_onnx
from bigain_export.plugins import register_plugins
trt, _ = import_tensorrt()
if sys.argv[1] == "plugins":
    register_plugins(trt)
out = {}
for path in sys.argv[2:]:
    builder, network, parser = parse_onnx(trt, make_logger(trt), Path(path))
    plugins = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.PLUGIN_V3:
            plugins.append([[list(layer.get_output(k).shape), layer.get_output(k).dtype.name] for k in range(layer.num_outputs)])
    out[path] = {"types": layer_type_counts(network), "plugins": plugins}
print(json.dumps(out))
"""


def _inspect(paths, plugins: bool) -> dict:
    from bigain_export.backends.trt import plugin_env

    done = subprocess.run(
        [sys.executable, "-c", _INSPECT, "plugins" if plugins else "none", *map(str, paths)],
        env=plugin_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    paths = {}
    for name, (make, _) in SINGLE.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(make(), paths[name])
    return paths


@pytest.mark.trt
@requires_trt
def test_plugin_layers_answer_our_shapes_and_types(single_models):
    """TensorRT asks the plugins for output shapes and types: one PLUGIN_V3 layer per node, as declared."""
    described = _inspect(single_models.values(), plugins=True)
    for name, path in single_models.items():
        got = described[str(path)]
        assert got["types"].get("PLUGIN_V3") == 1, (name, got["types"])
        assert [tuple(out) for out in got["plugins"][0]] == [(list(s), t) for s, t in SINGLE[name][1]], name


@pytest.mark.trt
@requires_trt
@pytest.mark.parametrize("name", ["token_unmerge_fp16", "kv_pool_fp32"])
def test_function_bodies_build_without_plugins(single_models, name, tmp_path):
    """No plugin registered: the parser imports the node's standard-op function body."""
    from bigain_export.backends.trt import build_plan

    report = build_plan(single_models[name], tmp_path / "model.plan", use_plugins=False)
    assert report.plugin_layers == 0 and not report.use_plugins
    assert (tmp_path / "model.plan").stat().st_size == report.plan_bytes > 0


@pytest.mark.trt
@requires_trt
def test_plugin_sorts_past_the_topk_limit(single_models, tmp_path):
    """128x128 tokens: the plugin builds; the function body cannot (TopK K <= 3840 in TensorRT).

    If the body stops failing here, the GatedMerge body no longer sorts with TopK: update
    docs/tensorrt.md.
    """
    from bigain_export.backends.trt import build_plan

    report = build_plan(single_models["gated_merge_128x128"], tmp_path / "plugin.plan")
    assert report.plugin_layers == 1 and report.plan_bytes > 0
    with pytest.raises(EngineError, match=r"K exceeds the maximum value allowed \(3840\)|Unsupported reduction type"):
        build_plan(single_models["gated_merge_128x128"], tmp_path / "body.plan", use_plugins=False)


# --------------------------------------------------------------------------- exported tiny models
_EXPORTED: dict[str, tuple[Path, dict[str, int]]] = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``kind -> (onnx path, custom node counts)``: tiny random denoisers with bigain-both, exported once."""
    from bigain_export.config import BiGainConfig
    from bigain_export.export.onnx_export import export_onnx
    from bigain_export.models.registry import tiny_random_denoiser

    folder = tmp_path_factory.mktemp("exported")

    def get(kind: str):
        if kind not in _EXPORTED:
            result = export_onnx(tiny_random_denoiser(kind), BiGainConfig.preset("bigain-both"), folder / f"{kind}.onnx", batch=2)
            assert sum(result.custom_nodes.values()) > 0 and set(result.custom_nodes) == {"GatedMerge", "TokenUnmerge", "KVPool"}
            _EXPORTED[kind] = (result.path, result.custom_nodes)
        return _EXPORTED[kind]

    return get


@pytest.mark.trt
@requires_trt
@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_exported_model_without_plugins_needs_a_scatter_reduction(exported, kind, tmp_path):
    """(a) No plugins: the parser imports the function bodies. The merge bodies sum with
    ScatterElements(reduction="add") (fast in ONNX Runtime); TensorRT-RTX has no importer for it
    (full TensorRT maps it to its ScatterElements library plugin), so the build is refused with a
    one-line error naming the file. KV pooling alone builds from its body."""
    from bigain_export.backends.trt import build_plan
    from bigain_export.config import BiGainConfig
    from bigain_export.export.onnx_export import export_onnx
    from bigain_export.models.registry import tiny_random_denoiser

    path, _ = exported(kind)
    with pytest.raises(EngineError, match=r"Unsupported reduction type") as info:
        build_plan(path, tmp_path / "model.plan", use_plugins=False)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    kv_only = export_onnx(tiny_random_denoiser(kind), BiGainConfig.preset("bigain-kv"), tmp_path / "kv.onnx", batch=2)
    report = build_plan(kv_only.path, tmp_path / "kv.plan", use_plugins=False)
    assert report.plugin_layers == 0
    assert (tmp_path / "kv.plan").stat().st_size == report.plan_bytes > 0


@pytest.mark.trt
@requires_trt
@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_exported_model_builds_with_plugins(exported, kind, tmp_path):
    """(b) Plugins registered: one PLUGIN_V3 layer per bigain.ai node, and the plan builds.

    In this pytest process the TensorRT-RTX library symlink is not on LD_LIBRARY_PATH, so
    build_plan runs the build in a child process that has it (what users of the CLI get too).
    """
    from bigain_export.backends.trt import build_plan, plugin_layers_safe

    path, counts = exported(kind)
    report = build_plan(path, tmp_path / "model.plan")
    assert report.use_plugins and report.subprocess == (not plugin_layers_safe())
    assert report.plugin_layers == sum(counts.values()), (report.layer_types, counts)
    assert (tmp_path / "model.plan").stat().st_size == report.plan_bytes > 0


# --------------------------------------------------------------------------- errors, environment, runner
@pytest.mark.trt
@requires_trt
def test_unparseable_model_is_a_one_line_error_naming_the_file(tmp_path):
    from bigain_export.backends.trt import build_plan

    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="nowhere.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F32, [2])], [helper.make_tensor_value_info("y", F32, [2])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("nowhere.example", 1)]), path)
    with pytest.raises(EngineError) as err:
        build_plan(path, tmp_path / "bad.plan", use_plugins=False)
    assert str(err.value).startswith(f"{path}: TensorRT cannot parse it: ") and "\n" not in str(err.value)
    assert not (tmp_path / "bad.plan").exists()
    with pytest.raises(EngineError, match="no such ONNX file"):
        build_plan(tmp_path / "missing.onnx", tmp_path / "x.plan")


@pytest.mark.trt
@requires_trt
def test_plugin_env_points_the_loader_at_an_unversioned_library(tmp_path):
    from bigain_export.backends.trt import RTX_LIBRARY, import_tensorrt, plugin_env, rtx_library_dir

    _, is_rtx = import_tensorrt()
    if not is_rtx:
        assert plugin_env({"A": "1"}) == {"A": "1"}
        return
    folder = rtx_library_dir(tmp_path / "cache")
    link = folder / RTX_LIBRARY
    assert link.is_symlink() and link.resolve().name == f"{RTX_LIBRARY}.1" and link.resolve().is_file()
    assert rtx_library_dir(tmp_path / "cache") == folder  # idempotent
    env = plugin_env({"LD_LIBRARY_PATH": "/opt/x"}, cache_dir=tmp_path / "cache")
    assert env["LD_LIBRARY_PATH"] == f"{folder}:/opt/x"
    probe = "from bigain_export.backends.trt import plugin_layers_safe; print(plugin_layers_safe())"
    done = subprocess.run([sys.executable, "-c", probe], env=plugin_env(cache_dir=tmp_path / "cache"), capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr[-1000:]


@pytest.mark.trt
@requires_trt
def test_runner_is_a_polygraphy_trt_runner_on_our_tensorrt(single_models, tmp_path):
    """Only constructed: activating it deserializes the plan, which needs a supported GPU."""
    from bigain_export.backends.trt import build_plan, import_tensorrt, make_trt_runner

    plan = tmp_path / "kv.plan"
    build_plan(single_models["kv_pool_fp32"], plan, use_plugins=False)
    runner = make_trt_runner(plan, name="trt-test")
    # imported after make_trt_runner: Polygraphy picks tensorrt or tensorrt_rtx at import time
    from polygraphy.backend.trt import TrtRunner
    from polygraphy.backend.trt import runner as polygraphy_runner
    assert isinstance(runner, TrtRunner) and runner.name == "trt-test" and not runner.is_active
    trt, _ = import_tensorrt()
    assert polygraphy_runner.trt.__name__ == trt.__name__
    with pytest.raises(EngineError, match="no such TensorRT plan"):
        make_trt_runner(tmp_path / "missing.plan")


# --------------------------------------------------------------------------- enqueue's device path, without TensorRT
_TRT_NAMES = {torch.float32: "FLOAT", torch.float16: "HALF", torch.bfloat16: "BF16", torch.int64: "INT64"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_device_run_on_raw_pointers_and_a_foreign_stream(dtype):
    """What ``enqueue`` does, minus TensorRT: raw device pointers, type names and a side stream."""
    from bigain_export.plugins.device import run

    buf = lambda t: (t.data_ptr(), tuple(t.shape), _TRT_NAMES[t.dtype])  # noqa: E731
    g = torch.Generator(device="cuda").manual_seed(3)
    b, h, w, c, r = 2, 16, 16, 64, 150
    x = torch.randn(b, h * w, c, generator=g, device="cuda").to(dtype)
    metric = torch.randn(b, h * w, c, generator=g, device="cuda").to(dtype)
    alpha = torch.tensor([0.8, 1.1], device="cuda").reshape(2, 1, 1)
    merged = torch.full((b, h * w - r, c), float("nan"), dtype=dtype, device="cuda")
    slot = torch.full((b, h * w), -1, dtype=torch.int64, device="cuda")
    out = torch.full((b, h * w, c), float("nan"), dtype=dtype, device="cuda")
    pooled = torch.full((b, (h // 2) * (w // 2), c), float("nan"), dtype=dtype, device="cuda")
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()  # TensorRT's stream stands in: not torch's current stream
    run("GatedMerge", dict(grid_h=h, grid_w=w, r=r, anchor=0), [buf(x), buf(metric)], [buf(merged), buf(slot)], stream.cuda_stream)
    run("TokenUnmerge", {}, [buf(merged), buf(slot)], [buf(out)], stream.cuda_stream)
    run("KVPool", dict(grid_h=h, grid_w=w, s=2), [buf(x), buf(alpha)], [buf(pooled)], stream.cuda_stream)
    stream.synchronize()
    want_merged, want_slot, _ = library.gated_merge(x, metric, h, w, r, "window")
    assert torch.equal(slot, want_slot)
    # scatter_add on CUDA sums in no fixed order: float32 means may differ in the last bit (seen)
    torch.testing.assert_close(merged, want_merged, rtol=1e-6, atol=1e-6)
    assert torch.equal(out, library.token_unmerge(merged, slot))
    assert torch.equal(pooled, library.kv_pool(x, alpha, h, w, 2))


@requires_trt
@pytest.mark.trt
def test_build_engine_with_trt_backend_keeps_plan_and_says_drift_was_not_measured(tmp_path):
    """On a machine that cannot run the plan (no GPU, or TensorRT-RTX on Hopper), the engine
    directory is still complete and its manifest says why drift is missing."""
    from bigain_export import BiGainConfig
    from bigain_export.engine.build import build_engine, load_engine
    from bigain_export.models.registry import tiny_random_denoiser

    engine, report = build_engine(tiny_random_denoiser("dit"), BiGainConfig.preset("bigain-kv"), tmp_path / "trt", backend="trt",
                                  allow_unmeasured=True)
    if report is not None:  # a GPU TensorRT can run: then drift was measured like any engine
        assert engine.manifest.drift["passed"] in (True, False)
        return
    assert engine.manifest.drift["measured"] is False and engine.manifest.drift["reason"]
    assert ".building-" not in engine.manifest.drift["reason"]  # names the engine, not the deleted staging folder
    if not torch.cuda.is_available():
        assert "Hopper" not in engine.manifest.drift["reason"] and "no CUDA device" in engine.manifest.drift["reason"]
    loaded = load_engine(tmp_path / "trt")
    assert set(loaded.manifest.files) == {"config.json", "model.onnx", "model.plan"}
    assert (tmp_path / "trt" / "model.plan").stat().st_size > 0
