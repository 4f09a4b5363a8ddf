"""ONNX export in every mode: custom nodes, attributes, local functions, ONNX Runtime vs eager;
each function body vs the PyTorch reference on its own."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from bigain_export import BiGainConfig, apply_bigain, remove_bigain
from bigain_export.errors import ExportError
from bigain_export.export.onnx_export import export_onnx
from bigain_export.export.onnx_ops import DOMAIN, single_node_model
from bigain_export.export.spec import DenoiserSpec
from bigain_export.models.registry import tiny_random_denoiser
from bigain_export.ops import reference as ref

MODES = {
    "bigain-merge": (BiGainConfig.preset("bigain-merge", ratio=0.5), {"GatedMerge", "TokenUnmerge"}),
    "bigain-merge-released": (BiGainConfig.preset("bigain-merge", ratio=0.7, anchor="released"), {"GatedMerge", "TokenUnmerge"}),
    "bigain-kv": (BiGainConfig.preset("bigain-kv"), {"KVPool"}),
    "bigain-both": (BiGainConfig.preset("bigain-both", ratio=0.5), {"GatedMerge", "TokenUnmerge", "KVPool"}),
    "tome": (BiGainConfig.preset("tome", anchor="fixed", ratio=0.5), {"GatedMerge", "TokenUnmerge"}),
    "bigain-merge-local": (BiGainConfig.preset("bigain-merge", ratio=0.5, match_radius=1), {"GatedMerge", "TokenUnmerge"}),
    "todo": (BiGainConfig.preset("todo"), {"KVPool"}),
    "none": (BiGainConfig.preset("none"), set()),
}
PATCHED_BLOCKS = {"dit": 10, "unet": 3}  # paper DiT blocks 1-5, 7-11; tiny UNet's level-0 blocks


@pytest.fixture(scope="module")
def denoisers():
    return {kind: tiny_random_denoiser(kind) for kind in ("dit", "unet")}


def eager(denoiser, config, feed):
    apply_bigain(denoiser, config)
    try:
        with torch.no_grad():
            return denoiser(*(torch.as_tensor(feed[k]) for k in ("sample", "timestep", "class_labels"))).numpy()
    finally:
        remove_bigain(denoiser)


# Every mode is exported; the default merge, both operators and no compression on both models,
# the other modes on one each (their nodes are the same on either; ~13 s an export on 2 cores)
EXPORT_CASES = [(mode, kind) for mode in ("bigain-merge", "bigain-both", "none") for kind in ("dit", "unet")] + [
    ("bigain-merge-released", "dit"), ("bigain-kv", "unet"), ("tome", "unet"), ("bigain-merge-local", "unet"),
    ("todo", "dit")]
assert {mode for mode, _ in EXPORT_CASES} == set(MODES)


@pytest.mark.parametrize("mode, kind", EXPORT_CASES)
def test_export_every_mode_runs_in_onnx_runtime_like_eager(denoisers, kind, mode, tmp_path):
    config, expected_ops = MODES[mode]
    denoiser = denoisers[kind]
    result = export_onnx(denoiser, config, tmp_path / "m.onnx", batch=2)
    model = onnx.load(result.path)
    onnx.checker.check_model(model, full_check=True)

    custom = [n for n in model.graph.node if n.domain == DOMAIN]
    assert {n.op_type for n in custom} == expected_ops
    for op in expected_ops:
        assert result.custom_nodes[op] == PATCHED_BLOCKS[kind]
    assert {f.name for f in model.functions if f.domain == DOMAIN} == expected_ops
    for node in custom:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_namespace"] == b"bigain.ai" and attrs["plugin_version"] == b"1"
        if node.op_type == "GatedMerge":
            assert attrs["anchor"] == {"window": 0, "released": 1, "fixed": 2}[config.anchor]
            assert attrs["r"] == config.merged_count(attrs["grid_h"] * attrs["grid_w"], attrs["grid_h"], attrs["grid_w"])
            # written only when nonzero: default exports stay byte-identical to earlier ones
            assert attrs.get("match_radius", "absent") == (config.match_radius or "absent")
        if node.op_type == "KVPool":
            assert attrs["s"] == config.downsample
    # timestep is a graph input: one model for every step
    assert [i.name for i in model.graph.input] == ["sample", "timestep", "class_labels"]

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for seed in (0, 1):
        feed = {k: v.numpy() for k, v in DenoiserSpec(2, denoiser.sample_shape).sample_inputs(seed=seed).items()}
        got = session.run(None, feed)[0]
        want = eager(denoiser, config, feed)
        # mean error: merging's discrete choices may flip on float-rounding ties (see backends/compare.py)
        assert np.abs(got - want).mean() < 1e-4, (mode, seed)


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_plan_reuse_exports_one_gated_merge_per_resolution_and_runs_like_eager(denoisers, kind, tmp_path):
    """Plan reuse in an engine (session 13: 1.18x over the plain ORT CUDA engine at 1024 px): the
    first patched block of a resolution holds the GatedMerge, the others merge with its slot map
    (TokenMerge), every block unmerges; ONNX Runtime computes what eager plan reuse computes."""
    config = BiGainConfig.preset("bigain-merge", ratio=0.5, plan_reuse=True)
    denoiser = denoisers[kind]
    result = export_onnx(denoiser, config, tmp_path / "m.onnx", batch=2)
    model = onnx.load(result.path)
    onnx.checker.check_model(model, full_check=True)
    patched = PATCHED_BLOCKS[kind]  # one token count per model here: one plan per call
    assert result.custom_nodes == {"GatedMerge": 1, "TokenMerge": patched - 1, "TokenUnmerge": patched}
    ops = [n.op_type for n in model.graph.node if n.domain == DOMAIN]
    assert ops.index("GatedMerge") < ops.index("TokenMerge")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in DenoiserSpec(2, denoiser.sample_shape).sample_inputs(seed=3).items()}
    got = session.run(None, feed)[0]
    assert np.abs(got - eager(denoiser, config, feed)).mean() < 1e-4
    per_block = eager(denoiser, BiGainConfig.preset("bigain-merge", ratio=0.5), feed)
    assert np.abs(got - per_block).mean() > 1e-4, "plan reuse changed nothing: the test cannot tell them apart"


def test_random_tome_anchor_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(ExportError, match=r"anchor='random' .*allowed for export: window \| released \| fixed"):
        export_onnx(tiny_random_denoiser("dit"), BiGainConfig.preset("tome"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_inlined_copy_has_no_functions_and_same_output(tmp_path):
    denoiser = tiny_random_denoiser("dit")
    result = export_onnx(denoiser, BiGainConfig.preset("bigain-both"), tmp_path / "m.onnx", inline_copy=True)
    inlined = onnx.load(result.inlined_path)
    assert not inlined.functions and not [n for n in inlined.graph.node if n.domain == DOMAIN]
    feed = {k: v.numpy() for k, v in DenoiserSpec(2, denoiser.sample_shape).sample_inputs(seed=4).items()}
    a = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    b = ort.InferenceSession(str(result.inlined_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- function bodies on their own
def single_op_session(op_type, inputs, outputs, **attrs):
    model = single_node_model(op_type, {n: (t, s) for n, t, s in inputs}, {n: (t, s) for n, t, s in outputs}, **attrs)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("h,w", [(4, 4), (5, 7), (8, 6), (9, 9)])
@pytest.mark.parametrize("anchor", ["window", "released", "fixed"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75])
def test_gated_merge_and_unmerge_bodies_match_reference(h, w, anchor, ratio):
    b, c, n = 2, 5, h * w
    r = BiGainConfig(ratio=ratio).merged_count(n, h, w)
    g = torch.Generator().manual_seed(h * 100 + w)
    x, metric = torch.randn(b, n, c, generator=g), torch.randn(b, n, c, generator=g)
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    merge = single_op_session("GatedMerge", [("x", f32, [b, n, c]), ("metric", f32, [b, n, c])],
                              [("merged", f32, [b, n - r, c]), ("slot", i64, [b, n])],
                              grid_h=h, grid_w=w, r=r, anchor={"window": 0, "released": 1, "fixed": 2}[anchor])
    merged, slot = merge.run(None, {"x": x.numpy(), "metric": metric.numpy()})
    want_slot = ref.token_merge_plan(metric, h, w, r, anchor)
    np.testing.assert_array_equal(slot, want_slot.numpy())
    np.testing.assert_allclose(merged, ref.merge(x, want_slot, n - r).numpy(), rtol=1e-6, atol=1e-6)
    unmerge = single_op_session("TokenUnmerge", [("y", f32, [b, n - r, c]), ("slot", i64, [b, n])], [("out", f32, [b, n, c])])
    out = unmerge.run(None, {"y": merged, "slot": slot})[0]
    np.testing.assert_allclose(out, ref.unmerge(torch.from_numpy(merged), want_slot).numpy())


@pytest.mark.parametrize("h,w", [(5, 7), (4, 4), (8, 6), (12, 10)])
@pytest.mark.parametrize("radius", [1, 2])
def test_local_match_body_matches_reference(h, w, radius):
    """``match_radius`` in the GatedMerge body (the If's local branch) against the reference's
    candidate gather, on random rows and on exact ties, with gated and fixed anchors."""
    b, c, n = 2, 5, h * w
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    g = torch.Generator().manual_seed(h * 10 + w + radius)
    x = torch.randn(b, n, c, generator=g)
    atoms = torch.tensor([[2.0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0], [1.0, 1, 1, 1, 0]])
    ties = atoms[torch.randint(3, (b, n), generator=g)]
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    for anchor in ("window", "fixed"):
        merge = single_op_session("GatedMerge", [("x", f32, [b, n, c]), ("metric", f32, [b, n, c])],
                                  [("merged", f32, [b, n - r, c]), ("slot", i64, [b, n])],
                                  grid_h=h, grid_w=w, r=r, anchor={"window": 0, "fixed": 2}[anchor], match_radius=radius)
        for metric in (torch.randn(b, n, c, generator=g), ties):
            merged, slot = merge.run(None, {"x": x.numpy(), "metric": metric.numpy()})
            want_slot = ref.token_merge_plan(metric, h, w, r, anchor, match_radius=radius)
            np.testing.assert_array_equal(slot, want_slot.numpy())
            np.testing.assert_allclose(merged, ref.merge(x, want_slot, n - r).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h,w,s", [(8, 8, 2), (6, 9, 3), (8, 4, 4)])
def test_kv_pool_body_matches_reference(h, w, s):
    b, c = 2, 3
    g = torch.Generator().manual_seed(h * w * s)
    x = torch.randn(b, h * w, c, generator=g)
    alpha = torch.tensor([0.8, 1.2]).reshape(2, 1, 1)
    f32 = TensorProto.FLOAT
    session = single_op_session("KVPool", [("x", f32, [b, h * w, c]), ("alpha", f32, [b, 1, 1])],
                                [("out", f32, [b, (h // s) * (w // s), c])], grid_h=h, grid_w=w, s=s)
    out = session.run(None, {"x": x.numpy(), "alpha": alpha.numpy()})[0]
    np.testing.assert_allclose(out, ref.kv_downsample(x, alpha, h, w, s).numpy(), rtol=1e-6, atol=1e-6)


def test_layers_below_min_tokens_export_uncompressed(denoisers, tmp_path, caplog):
    """``min_tokens`` above every patched layer's token count: no bigain.ai node is exported, the
    engine computes the uncompressed model, and the log says why."""
    denoiser = denoisers["dit"]
    config = BiGainConfig.preset("bigain-both", ratio=0.5, min_tokens=10**6)
    with caplog.at_level("WARNING", logger="bigain_export.export.onnx_export"):
        result = export_onnx(denoiser, config, tmp_path / "m.onnx", batch=2)
    assert "min_tokens=1000000 exceeds every patched layer's token count" in caplog.text
    model = onnx.load(result.path)
    assert not [n for n in model.graph.node if n.domain == DOMAIN] and not model.functions
    feed = {k: v.numpy() for k, v in DenoiserSpec(2, denoiser.sample_shape).sample_inputs(seed=0).items()}
    got = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(got, eager(denoiser, BiGainConfig.preset("none"), feed), rtol=1e-4, atol=1e-5)
