"""The benchmark scripts' own logic on the CPU (their timings need the GPU machine): the
interleaved rounds of bench_unet.py, its argument errors, and one group timed end to end with a
tiny UNet and a host clock in place of CUDA events."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import bench_unet  # noqa: E402

from tiny import tiny_unet, unet_inputs  # noqa: E402


def test_round_orders_rotate_so_that_every_method_takes_every_place():
    orders = bench_unet.round_orders(["plain", "a", "b"], 4)
    assert orders == [["plain", "a", "b"], ["a", "b", "plain"], ["b", "plain", "a"], ["plain", "a", "b"]]


def test_paired_speedups_divide_timings_of_the_same_round():
    times = {"plain": [10.0, 20.0], "a": [5.0, 20.0]}
    assert bench_unet.paired_speedups(times) == {"a": [2.0, 1.0]}
    assert bench_unet.paired_speedups({"a": [1.0]}) == {}  # no plain: no ratio


def test_timing_groups_put_plain_first_and_eager_only_methods_in_eager():
    groups = bench_unet.timing_groups(["bigain-kv s=2", "plain", "tomesd r=0.7"], ["compile", "cudagraphs"],
                                      ["tomesd r=0.7"])
    assert groups == [("compile", ["plain", "bigain-kv s=2"]), ("cudagraphs", ["plain", "bigain-kv s=2"]),
                      ("eager", ["tomesd r=0.7"])]
    assert bench_unet.timing_groups(["plain", "tomesd r=0.7"], ["eager"], ["tomesd r=0.7"]) == [
        ("eager", ["plain", "tomesd r=0.7"])]


@pytest.mark.parametrize("argv, message", [(["--rounds", "0"], "--rounds 0: must be at least 1"),
                                           (["--iters", "0"], "need iters >= 1 and warmup >= 0"),
                                           (["--loop-calls", "-1"], "--loop-calls -1: must be 0 (iters / 5)"),
                                           (["--eager-only", "tomesd r=0.9"], "'tomesd r=0.9' is not a method"),
                                           (["--kernel-setting", "SPLIT_RULE=rows"], "SPLIT_RULE takes one of fill, waves"),
                                           (["--kernel-setting", "RES_BLOCK_M=big"], "RES_BLOCK_M takes an integer >= 0"),
                                           (["--kernel-setting", "RES_BLOCK_M=-64"], "RES_BLOCK_M takes an integer >= 0"),
                                           (["--kernel-setting", "BLOCK=4"], "'BLOCK=4': expected NAME=VALUE"),
                                           (["--variant", "MERGE_PATH=scatter"], "MERGE_PATH takes one of atomic, groups"),
                                           (["--variant", "RADIX_BITS=16"], "RADIX_BITS takes one of 8, 11"),
                                           (["--variant", "PLAN_FUSION=yes"], "PLAN_FUSION takes True or False"),
                                           (["--variant", "UNMERGE_REALIZE=True", "--variant", "PLAN_FUSION=yes"],
                                            "PLAN_FUSION takes True or False"),
                                           (["--variant", "UNMERGE_REALIZE=True", "--variant", "UNMERGE_REALIZE=True"],
                                            "--variant 'UNMERGE_REALIZE=True' is given twice")])
def test_bad_arguments_fail_in_one_line_before_any_work(argv, message):
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_unet.py"), *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and message in done.stderr


def test_kernel_settings_set_the_launch_constants(monkeypatch):
    from bigain_export.kernels import launch

    for name in ("SPLIT_RULE", "RES_BLOCK_M", "SIM_RESIDENT"):
        monkeypatch.setattr(launch, name, getattr(launch, name))  # restored after the test
    got = bench_unet.apply_kernel_settings(["SPLIT_RULE=fill", "RES_BLOCK_M=256", "SIM_RESIDENT=False"])
    assert got == {"SPLIT_RULE": "fill", "RES_BLOCK_M": 256, "SIM_RESIDENT": False}
    assert (launch.SPLIT_RULE, launch.RES_BLOCK_M, launch.SIM_RESIDENT) == ("fill", 256, False)


def test_bench_ort_refuses_cuda_provider_options_on_the_cpu_before_any_work():
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_ort.py"), "--device", "cpu", "--ort-variants", "default",
                           "cuda-graph"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--ort-variants default cuda-graph: CUDA provider options" in done.stderr


@pytest.mark.parametrize("argv, message", [
    (["--body-forms", "lap=bogus"], "--body-forms: lap form 'bogus' in 'lap=bogus' is not known; allowed: conv3d, slices"),
    (["--methods", "none", "--body-forms", "match=topk1"], "--body-forms match=topk1: GatedMerge bodies, but --methods none"),
])
def test_bench_ort_refuses_bad_body_forms_before_any_work(argv, message):
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_ort.py"), "--device", "cpu", *argv],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_bench_ort_times_a_dit_engine_with_plan_reuse_on_the_cpu(tmp_path):
    """``--model dit-xl2 --tiny``: the DiT path of bench_ort.py exports the patched transformer
    (plan reuse: one GatedMerge, then TokenMerge), runs it in ORT and records its agreement with
    the eager model, beside the uncompressed engine, in a complete raw file."""
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_ort.py"), "--tiny", "--model", "dit-xl2", "--device", "cpu",
                           "--methods", "none", "bigain-merge-0.7-reuse", "--ort-optimize", "none", "--modes", "eager",
                           "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    raw = json.loads((tmp_path / "out" / "bench_ort.json").read_text())
    assert raw["complete"] and raw["meta"]["architecture"] == "tiny DiT-XL/2"
    rows = {row["method"]: row for row in raw["rows"]}
    assert rows["none"]["custom_nodes"] == {}
    assert rows["bigain-merge-0.7-reuse"]["custom_nodes"] == {"GatedMerge": 1, "TokenMerge": 1, "TokenUnmerge": 2}
    assert all(row["ort_vs_eager_max_abs"] < 1e-2 and row["ort_ms"] > 0 for row in rows.values())
    assert list((tmp_path / "work").iterdir()) == []  # the exported files are removed


def _host_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1000 / iters


def test_a_group_is_timed_in_interleaved_rounds_on_copies_of_the_model(monkeypatch):
    monkeypatch.setattr(bench_unet, "cuda_median_ms", _host_ms)
    loop_calls = []
    monkeypatch.setattr(bench_unet, "cuda_loop_ms",
                        lambda fn, warmup, iters, calls: (loop_calls.append(calls), _host_ms(fn, warmup, iters))[1])
    timers = []
    monkeypatch.setattr(bench_unet, "attention_savings", lambda *a, **k: (timers.append(a[5:]), 0.0)[1])
    model = tiny_unet()
    sample, t, context = unet_inputs()
    bench = SimpleNamespace(model=model, call=lambda m: m(sample, t, context).sample)
    patched = []
    real_patch = bench_unet.patch
    monkeypatch.setattr(bench_unet, "patch", lambda m, method: (patched.append((m, method)), real_patch(m, method)))
    args = SimpleNamespace(rounds=3, warmup=0, iters=1, loop_calls=50)
    names = ["plain", "bigain-merge r=0.7"]
    rows = bench_unet.time_group(bench, 16, "eager", names, args, {n: 0 for n in names}, {})
    by_name = {row["method"]: row for row in rows}
    assert [row["method"] for row in rows] == names
    assert by_name["plain"]["rounds"] == by_name["bigain-merge r=0.7"]["rounds"] == 2  # first timing = warm-up
    merged = by_name["bigain-merge r=0.7"]
    assert merged["speedup_min"] <= merged["speedup"] <= merged["speedup_max"] and merged["error"] is None
    assert "ceiling" in merged and "loop_ceiling" in merged and merged["loop_ms"] > 0
    assert merged["loop_speedup_min"] <= merged["loop_speedup"] <= merged["loop_speedup_max"]
    assert timers == [(), (bench_unet.graph_ms,)]  # the loop's ceiling: attention kernels alone
    assert loop_calls == [50] * 6  # --loop-calls reaches every loop timing (2 methods x 3 timings)
    assert "loop share" in bench_unet.markdown_table(rows)
    # each method was patched onto its own copy; the benchmark's own model never was
    assert [method for _, method in patched] == [None, bench_unet.METHODS["bigain-merge r=0.7"]]
    assert all(m is not model for m, _ in patched) and patched[0][0] is not patched[1][0]
    from bigain_export.patch.apply import patch_info

    assert patch_info(model) is None


def test_a_second_compile_of_plain_is_timed_as_a_control(monkeypatch):
    """plain-copy: its own copy of the uncompressed model, with a speedup over plain and no share."""
    monkeypatch.setattr(bench_unet, "cuda_median_ms", _host_ms)
    monkeypatch.setattr(bench_unet, "cuda_loop_ms", lambda fn, warmup, iters, calls: _host_ms(fn, warmup, iters))
    monkeypatch.setattr(bench_unet, "attention_savings", lambda *a, **k: 1 / 0)  # a control has no ceiling
    sample, t, context = unet_inputs()
    bench = SimpleNamespace(model=tiny_unet(), call=lambda m: m(sample, t, context).sample)
    rows = bench_unet.time_group(bench, 16, "eager", ["plain", "plain-copy"],
                                 SimpleNamespace(rounds=2, warmup=0, iters=1, loop_calls=0), {"plain": 0, "plain-copy": 0}, {})
    copy = rows[1]
    assert copy["method"] == "plain-copy" and copy["error"] is None and copy["loop_speedup"] > 0
    assert copy.get("loop_gain_share") is None and copy.get("loop_ceiling") is None


def test_plain_copy_compiles_in_a_fresh_inductor_cache(monkeypatch, tmp_path):
    """The control's kernels are generated (and autotuned) anew, not reloaded from plain's cache."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "shared"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the fresh cache's directory goes
    cache_dirs = []
    monkeypatch.setattr(bench_unet, "_timings", lambda bench, model, args: (
        cache_dirs.append(os.environ["TORCHINDUCTOR_CACHE_DIR"]), (1.0, 1.0))[1])
    sample, t, context = unet_inputs()
    bench = SimpleNamespace(model=tiny_unet(), call=lambda m: m(sample, t, context).sample)
    bench_unet.time_group(bench, 16, "eager", ["plain", "plain-copy"],
                          SimpleNamespace(rounds=1, warmup=0, iters=1, loop_calls=0), {"plain": 0, "plain-copy": 0}, {})
    plain_dir, copy_dir = cache_dirs
    assert plain_dir == str(tmp_path / "shared") and copy_dir != plain_dir
    assert Path(copy_dir).parent == tmp_path and Path(copy_dir).is_dir()  # kept: its kernels stay loadable
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == plain_dir  # restored after the copy


def test_a_copy_behind_its_own_frame_is_compiled_again():
    """Dynamo reuses one copy's graph for a second copy of the same model; OwnFrame gets it its own."""
    from torch._dynamo.utils import counters

    model, x = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()), torch.randn(2, 8)
    torch._dynamo.reset()
    graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731
    start = graphs()
    torch.compile(copy.deepcopy(model), backend="eager")(x)
    torch.compile(copy.deepcopy(model), backend="eager")(x)
    assert graphs() - start == 1  # the second copy ran the first one's graph
    for tag in ("plain-copy", "plain-copy 2"):  # each wrapper a class of its own
        own = bench_unet.OwnFrame.around(copy.deepcopy(model), tag)
        assert torch.equal(torch.compile(own, backend="eager")(x), model(x))
    assert graphs() - start == 3


def test_plain_copy_and_variants_alone_are_compiled_behind_their_own_frames(monkeypatch):
    """A variant whose setting acts only in Inductor (PERSISTENT_GATHER_NORMS: no Dynamo guard)
    reused the default method's graph on the GPU machine (set up in 3.6 s, session 33)."""
    compiled = {}
    monkeypatch.setattr(bench_unet, "_timings", lambda bench, model, args: (1.0, 1.0))
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: compiled.setdefault(len(compiled), model))
    monkeypatch.setattr(bench_unet, "attention_savings", lambda *a, **k: 0.0)
    bench = SimpleNamespace(model=tiny_unet(), call=None)
    names = ["plain", "plain-copy", "bigain-merge r=0.7", "bigain-merge r=0.7 @PERSISTENT_GATHER_NORMS=True"]
    rows = bench_unet.time_group(bench, 16, "compile", names, SimpleNamespace(rounds=1, warmup=0, iters=1, loop_calls=0),
                                 {name: 0 for name in names}, {})
    assert [isinstance(compiled[i], bench_unet.OwnFrame) for i in range(4)] == [False, True, False, True]
    assert [row["compiled_alone"] for row in rows] == [False, True, False, True]  # share_over_processes reads it


def test_a_group_whose_every_method_failed_is_rows_with_errors(monkeypatch):
    monkeypatch.setattr(bench_unet, "_timings", lambda *a: 1 / 0)
    sample, t, context = unet_inputs()
    bench = SimpleNamespace(model=tiny_unet(), call=lambda m: m(sample, t, context).sample)
    names = ["plain", "bigain-merge r=0.7"]
    rows = bench_unet.time_group(bench, 16, "eager", names, SimpleNamespace(rounds=3, warmup=0, iters=1, loop_calls=0),
                                 {n: 0 for n in names}, {})
    assert [row["method"] for row in rows] == names
    assert all(row["error"].startswith("ZeroDivisionError") and math.isnan(row["ms"]) for row in rows)


def test_a_variant_is_timed_in_the_same_rounds_under_its_launch_settings(monkeypatch):
    """--variant: each BiGain method is timed again as a labelled variant, in the same group and
    rounds as plain, with the launch constant set while it runs (and only then)."""
    from bigain_export.kernels import launch

    seen = []

    def timed(fn, warmup, iters, calls=0):
        seen.append(launch.MERGE_PATH)
        return _host_ms(fn, warmup, iters)

    monkeypatch.setattr(bench_unet, "cuda_median_ms", timed)
    monkeypatch.setattr(bench_unet, "cuda_loop_ms", timed)
    monkeypatch.setattr(bench_unet, "attention_savings", lambda *a, **k: 0.0)
    sample, t, context = unet_inputs()
    bench = SimpleNamespace(model=tiny_unet(), call=lambda m: m(sample, t, context).sample)
    names = bench_unet.with_variants(["plain", "tomesd r=0.5", "bigain-merge r=0.7"], [["MERGE_PATH=atomic"]])
    assert names == ["plain", "tomesd r=0.5", "bigain-merge r=0.7", "bigain-merge r=0.7 @MERGE_PATH=atomic"]
    # --variant repeated: one labelled copy of each BiGain method per variant, pairs joined by commas
    assert bench_unet.with_variants(["plain", "bigain-merge r=0.7"],
                                    [["UNMERGE_IN_GRAPH=False"], ["UNMERGE_REALIZE=True", "MERGE_PATH=atomic"]]) == [
        "plain", "bigain-merge r=0.7", "bigain-merge r=0.7 @UNMERGE_IN_GRAPH=False",
        "bigain-merge r=0.7 @UNMERGE_REALIZE=True,MERGE_PATH=atomic"]
    names = [names[0], names[2], names[3]]
    rows = bench_unet.time_group(bench, 16, "eager", names, SimpleNamespace(rounds=2, warmup=0, iters=1, loop_calls=0),
                                 {n: 0 for n in names}, {})
    # 3 labels x (call, loop) x (first timing + 1 round): the variant's 4 timings under "atomic"
    assert seen.count("atomic") == 4 and seen.count("groups") == 8 and launch.MERGE_PATH == "groups"
    variant = {row["method"]: row for row in rows}["bigain-merge r=0.7 @MERGE_PATH=atomic"]
    assert variant["speedup"] > 0 and variant["error"] is None
    assert bench_unet.variant_of(variant["method"]) == {"MERGE_PATH": "atomic"}


def test_the_persistent_norm_variant_has_inductors_rule_in_place_only_while_it_runs():
    """--variant PERSISTENT_GATHER_NORMS=True: the flag is set only while the variant compiles and
    runs (after patching), so bench_unet puts the Inductor rule in place itself, and takes it away."""
    from torch._inductor.virtualized import V

    from bigain_export.kernels import inductor_choices, launch

    own = V.choices
    with bench_unet.launch_settings(**bench_unet.variant_of("bigain-merge r=0.7 @PERSISTENT_GATHER_NORMS=True")):
        assert launch.PERSISTENT_GATHER_NORMS and isinstance(V.choices, inductor_choices.GatheredRowChoices)
    assert V.choices is own and not launch.PERSISTENT_GATHER_NORMS
    with bench_unet.launch_settings():
        assert V.choices is own


def test_bench_kernels_launch_settings_are_restored_even_when_a_variant_fails():
    import bench_kernels
    from bigain_export.kernels import launch

    before = (launch.SIM_RESIDENT, launch.RES_BLOCK_N)
    with pytest.raises(RuntimeError, match="no shared memory"):
        with bench_kernels.launch_settings(SIM_RESIDENT=False, RES_BLOCK_N=16):
            assert (launch.SIM_RESIDENT, launch.RES_BLOCK_N) == (False, 16)
            raise RuntimeError("no shared memory")
    assert (launch.SIM_RESIDENT, launch.RES_BLOCK_N) == before
    # a tile shape that fails is a NaN row, not a crash
    assert math.isnan(bench_kernels.tile_ms(lambda fn: fn(), lambda: 1 / 0, (1, 2)))


def test_bench_kernels_writes_both_tables(tmp_path):
    import json

    import bench_kernels

    rows = [dict(shape="sd2-1024", what="plan", ms=0.25)]
    bench_kernels.write(tmp_path, {"card": "test"}, rows)
    assert json.loads((tmp_path / "bench_kernels.json").read_text()) == dict(meta={"card": "test"}, rows=rows)
    assert "| sd2-1024 | plan | 0.2500 |" in (tmp_path / "bench_kernels.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench_kernels.json", "bench_kernels.md"]


# --------------------------------------------------------------------------- ORT per-op and profile scripts
@pytest.mark.parametrize("side", [8, 9])
def test_bench_ort_ops_cases_agree_with_the_reference_in_fp16(side):
    """The fp16 one-node models bench_ort_ops.py times on the GPU machine: their ORT CPU outputs
    pass the script's own checks (slot map equal to the reference, values within fp16 rounding)."""
    import onnxruntime as ort

    import bench_ort_ops

    seen = []
    for op, model, feeds, check in bench_ort_ops.cases(2, side, 16, 0.7, seed=side):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        ms, outputs = bench_ort_ops.time_session(session, feeds, "cpu", warmup=0, iters=1)
        agreement = check(outputs)
        assert ms > 0 and agreement.get("slot_equal", True), (op, agreement)
        assert agreement["max_abs"] <= 4e-3, (op, agreement)
        seen.append(op)
    local = ["GatedMerge[match_radius=1]", "GatedMerge[match_radius=1,local=per-source]"]
    assert seen == ["GatedMerge", *local, "TokenMerge", "TokenUnmerge", "KVPool"][: 6 if side % 2 == 0 else 5]


def test_the_local_match_forms_build_different_bodies_with_the_same_slot_map():
    """match_radius > 0 on an even grid: the per-window body (shipped) and the per-source one
    (body_forms ``local=per-source``) give the reference's slot map on ORT's CPU EP and differ
    as graphs (the per-window branch has no [B, Ns, K] GatherElements)."""
    import onnxruntime as ort

    import bench_ort_ops
    from bigain_export.export import onnx_ops

    shipped = onnx_ops._local_match_per_window
    bodies = {}
    for op, model, feeds, check in bench_ort_ops.cases(2, 12, 16, 0.7, seed=3):
        if "match_radius" not in op:
            continue
        assert onnx_ops._local_match_per_window is shipped  # the swap is undone after each build
        agreement = check(ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds))
        assert agreement["slot_equal"] and agreement["max_abs"] <= 4e-3, (op, agreement)
        bodies[op] = next(fn for fn in model.functions if fn.name == "GatedMerge").SerializeToString()
    assert len(bodies) == 2 and len(set(bodies.values())) == 2


def test_bench_ort_ops_match_variants_take_the_first_of_tied_maxima_on_ort_cpu():
    """The best-anchor formulations timed on the GPU machine agree with torch's first-maximum
    rule on rows whose maximum is tied; a variant that picked the last tied index would fail."""
    import onnxruntime as ort

    import bench_ort_ops
    import body_forms

    seen = []
    for name, model, feeds, check in bench_ort_ops.match_cases(2, 8, seed=3):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        ms, outputs = bench_ort_ops.time_session(session, feeds, "cpu", warmup=0, iters=1)
        assert check(outputs) == dict(slot_equal=True, max_abs=0.0), name
        last_of_ties = outputs[1].copy()
        sim = feeds["similarity"]
        is_max = sim == sim.max(-1, keepdims=True)
        tied = is_max.sum(-1) > 1
        last_of_ties[tied] = (sim.shape[-1] - 1 - np.argmax(is_max[..., ::-1], -1))[tied]
        assert tied.any() and not check([outputs[0], last_of_ties])["slot_equal"]
        seen.append(name)
    assert seen == [f"match:{v}" for v in body_forms.MATCH_FORMS]


@pytest.mark.parametrize("side", [5, 8])
def test_bench_ort_ops_laplacian_variants_agree_with_the_reference_on_ort_cpu(side):
    """Both Laplacian formulations timed on the GPU machine (the shipped conv3d body and the
    slices it replaced) give the reference's scores up to float summation order; the check sees
    a score that is off."""
    import onnxruntime as ort

    import bench_ort_ops
    import body_forms

    seen = []
    for name, model, feeds, check in bench_ort_ops.laplacian_cases(2, side, 6, seed=side):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        ms, outputs = bench_ort_ops.time_session(session, feeds, "cpu", warmup=0, iters=1)
        assert check(outputs)["max_rel"] < 1e-5, name
        wrong = outputs[0].copy()
        wrong[0, 0, 0] += 0.01 * np.abs(wrong).max()
        assert check([wrong])["max_rel"] > 1e-3
        seen.append(name)
    assert seen == [f"lap:{v}" for v in body_forms.LAPLACIAN_FORMS]


def _op_types(nodes) -> list:
    """Op types of ``nodes`` and of the subgraphs they hold (an If's branches)."""
    types = []
    for node in nodes:
        types.append(node.op_type)
        for attr in node.attribute:
            if attr.HasField("g"):
                types += _op_types(attr.g.node)
    return types


@pytest.mark.parametrize("side", [8, 9])
def test_gatedmerge_bodies_with_other_step_forms_give_the_reference_slot_map(side):
    """Every whole GatedMerge body a GPU session can time instead of the shipped one
    (body_forms.GATED_FORM_SPECS, and all forms at once) gives the reference's slot map on ORT's
    CPU EP; the swap is undone after each build, and the bodies really differ."""
    import onnxruntime as ort

    import bench_ort_ops
    import body_forms
    from bigain_export.export import onnx_ops

    shipped = (onnx_ops._laplacian_score, onnx_ops._best_anchor, onnx_ops._unit_rows)
    specs = ("default",) + body_forms.GATED_FORM_SPECS + ("lap=slices,unit=reducel2",)
    ops_seen = {}
    for op, model, feeds, check in bench_ort_ops.cases(2, side, 16, 0.7, seed=side, gated_specs=specs):
        if not op.startswith("GatedMerge") or "match_radius" in op:  # (the shipped body, other attribute)
            continue
        assert (onnx_ops._laplacian_score, onnx_ops._best_anchor, onnx_ops._unit_rows) == shipped
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        agreement = check(session.run(None, feeds))
        assert agreement["slot_equal"] and agreement["max_abs"] <= 4e-3, (op, agreement)
        body = next(fn for fn in model.functions if fn.name == "GatedMerge")
        ops_seen[op] = sorted(_op_types(body.node))
    assert list(ops_seen) == ["GatedMerge"] + [f"GatedMerge[{s}]" for s in specs[1:]]
    assert len({tuple(v) for v in ops_seen.values()}) == len(specs), "a form did not change the body"
    assert "TopK" in ops_seen["GatedMerge[match=topk1]"] and ops_seen["GatedMerge"].count("TopK") == 1


def test_tied_windows_counts_exact_ties_at_the_window_minimum():
    """The count bench_ort_ops reports beside a slot map that differs from the reference: zero on
    random fp16 tokens, the non-corner windows of constant ones, and a window with two equal tokens."""
    import bench_ort_ops

    g = torch.Generator().manual_seed(0)
    metric = torch.randn(2, 64, 8, generator=g).half()
    assert bench_ort_ops.tied_windows(metric, 8) == 0
    # constant tokens: zero padding leaves each corner window one token of score 0, every other
    # window two or four of them
    assert bench_ort_ops.tied_windows(torch.ones(2, 64, 8).half(), 8) == 2 * (16 - 4)
    # zeroing rows 1-3, columns 1-4 leaves tokens (2, 2) and (2, 3) with all-zero neighbourhoods:
    # both score 0, the minimum of their window (1, 1); no other window gets two equal minima
    tied = metric.clone().reshape(2, 8, 8, 8)
    tied[0, 1:4, 1:5] = 0
    assert bench_ort_ops.tied_windows(tied.reshape(2, 64, 8), 8) == 1


def test_body_forms_refuse_unknown_steps_and_forms_and_restore_after_an_error():
    import body_forms
    from bigain_export.export import onnx_ops

    assert body_forms.parse_body_forms("default") == {}
    assert body_forms.parse_body_forms("lap=slices,match=topk1") == {"lap": "slices", "match": "topk1"}
    with pytest.raises(ValueError, match=r"body step 'lapp' .* allowed: lap, match, unit"):
        body_forms.parse_body_forms("lapp=slices")
    with pytest.raises(ValueError, match=r"match form 'top1' .* allowed: argmax\+gather, reducemax\+argmax, topk1"):
        body_forms.parse_body_forms("match=top1")
    shipped = onnx_ops._laplacian_score
    with pytest.raises(RuntimeError):
        with body_forms.body_forms("lap=slices"):
            assert onnx_ops._laplacian_score is body_forms.LAPLACIAN_FORMS["slices"]
            raise RuntimeError
    assert onnx_ops._laplacian_score is shipped


def test_bench_ort_ops_check_fails_on_a_wrong_slot_map():
    """The agreement check can fail: a GatedMerge output with two slots swapped is reported unequal."""
    import bench_ort_ops

    op, model, feeds, check = next(bench_ort_ops.cases(2, 8, 16, 0.7))
    import onnxruntime as ort

    merged, slot = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    slot = slot.copy()
    slot[0, [0, 1]] = slot[0, [1, 0]] if slot[0, 0] != slot[0, 1] else (slot[0, 0] + 1, slot[0, 1])
    assert check([merged, slot])["slot_equal"] is False


def test_profile_ort_labels_inlined_nodes_by_the_call_they_came_from():
    """profile_ort.inline_labelled: every node of an inlined bigain.ai body is named after its call
    node, the model's own nodes keep their names, and the graph still checks."""
    import collections

    import onnx
    from onnx import TensorProto, helper

    import profile_ort
    from bigain_export.export.onnx_ops import single_node_model

    f16, i64 = TensorProto.FLOAT16, TensorProto.INT64
    model = single_node_model("GatedMerge", {"x": (f16, [2, 64, 8]), "metric": (f16, [2, 64, 8])},
                              {"merged": (f16, [2, 44, 8]), "slot": (i64, [2, 64])}, grid_h=8, grid_w=8, r=20, anchor=0)
    model.graph.node[0].name = "merge_call"
    # the model's own node after the call
    model.graph.node.append(helper.make_node("Identity", ["merged"], ["merged_copy"], name="own_identity"))
    model.graph.output.append(helper.make_tensor_value_info("merged_copy", f16, [2, 44, 8]))
    labelled = profile_ort.inline_labelled(model)
    onnx.checker.check_model(labelled)
    origins = collections.Counter(profile_ort.origin(node.name) for node in labelled.graph.node)
    assert not labelled.functions and origins[""] == 1 and origins["GatedMerge"] == len(labelled.graph.node) - 1
    assert labelled.graph.node[-1].name == "own_identity"
    assert {node.name.split("/")[0] for node in labelled.graph.node[:-1]} == {"GatedMerge:merge_call"}


@pytest.mark.slow
def test_paired_engines_times_engines_in_rounds_and_refuses_a_tampered_one(tmp_path):
    import json
    import shutil

    from bigain_export import BiGainConfig
    from bigain_export.engine.build import build_engine
    from bigain_export.models.registry import tiny_random_denoiser

    engine = tmp_path / "engine"
    build_engine(tiny_random_denoiser("dit"), BiGainConfig.preset("bigain-merge"), engine, backend="ort-cpu", batch=2,
                 drift_feeds_count=1)
    copy = tmp_path / "copy"
    shutil.copytree(engine, copy)
    script = [sys.executable, str(SCRIPTS / "paired_engines.py")]
    done = subprocess.run([*script, str(engine), str(copy), "--rounds", "3", "--calls", "2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "r" / "paired_engines.json").read_text())["rows"]
    assert [len(row["round_ms"]) for row in rows] == [3, 3] and rows[0]["speedup"] == 1.0
    assert rows[1]["config"].startswith("bigain-merge") and rows[1]["speedup_range"][0] <= rows[1]["speedup"]
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    done = subprocess.run([*script, str(engine), str(copy), "--rounds", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "round 1" not in done.stdout
    assert done.stderr.startswith("paired_engines.py: error: ") and "Traceback" not in done.stderr, done.stderr


def test_profile_diff_pairs_inductor_kernels_numbered_differently_in_two_graphs():
    """profile_unet.diff_markdown groups kernels by family: plain's ``..._silu_62`` and the merged
    model's ``..._silu_64`` are one row with their difference, not an addition and a removal."""
    import profile_unet

    plain = {"triton_poi_fused_convolution_silu_62": {"calls": 20, "us": 420.0},
             "sdpa_kernel": {"calls": 32, "us": 2940.0}}
    merged = {"triton_poi_fused_convolution_silu_64": {"calls": 20, "us": 421.5},
              "sdpa_kernel": {"calls": 32, "us": 873.0}, "merge_kernel_7": {"calls": 5, "us": 50.0}}
    summary = {name: {"ms": 1.0, "loop_ms": loop, "graph_ms": 1.0, "gpu_ms": 1.0, "kernels": 1.0}
               for name, loop in (("plain", 1.5), ("merged", 1.25))}
    text = profile_unet.diff_markdown(768, "cudagraphs", {"plain": plain, "merged": merged}, summary)
    assert "idle in a loop (loop - kernel time) 0.250 ms (plain 0.500)\n" in text  # no host time recorded
    summary["plain"]["host_ms"], summary["merged"]["host_ms"] = 0.8, 0.95
    with_host = profile_unet.diff_markdown(768, "cudagraphs", {"plain": plain, "merged": merged}, summary)
    assert "idle in a loop (loop - kernel time) 0.250 ms (plain 0.500); host time to issue a call 0.950 ms " \
           "(plain 0.800)" in with_host
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `sdpa_kernel` | 32 | 873.0 | 32 | 2940.0 | -2067.0")
    assert "| `triton_poi_fused_convolution_silu` | 20 | 421.5 | 20 | 420.0 | +1.5 |" in rows
    # only Inductor's names lose their number: a kernel of ours keeps its name
    assert "| `merge_kernel_7` | 5 | 50.0 | 0 | 0.0 | +50.0 |" in rows
    assert len(rows) == 3
    # and by kind: the convolution's drift apart from what merging changed
    assert "| attention (SDPA) | 873.0 | 2940.0 | -2067.0 |" in text
    assert "| convolutions, group norms, SiLU | 421.5 | 420.0 | +1.5 |" in text


@pytest.mark.parametrize("name, kind", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7", "attention (SDPA)"),
    ("grouped_merge_kernel", "BiGain kernels"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolutions, group norms, SiLU"),
    ("triton_per_fused_add_convolution_div_native_group_norm_silu_43", "convolutions, group norms, SiLU"),
    ("nvjet_sm90_tst_64x256_64x5_1x2_h_bz_TNN", "GEMMs"),
    ("triton_red_fused__unsafe_view_add_div_expand_gather_native_layer_norm_unsqueeze_view_16",
     "other Inductor kernels (norms, adds, GELU)"),
    ("Memset (Device)", "memsets and copies"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", "other"),
])
def test_profile_kernels_are_sorted_into_kinds(name, kind):
    import profile_unet

    assert profile_unet.kernel_kind(name) == kind


def test_host_issue_time_is_the_host_time_of_calls_issued_back_to_back(monkeypatch):
    """profile_unet.host_issue_ms: per call, the host's time to issue the calls (a 2 ms host call
    gives at least 2 ms), between two waits for the GPU."""
    import profile_unet

    waits, calls = [], []
    monkeypatch.setattr(profile_unet.torch.cuda, "synchronize", lambda: waits.append(len(calls)))
    ms = profile_unet.host_issue_ms(lambda: (calls.append(1), time.sleep(0.002)), 4)
    assert ms >= 2.0 and len(calls) == 4 and waits == [0, 4]


def test_a_profile_is_written_as_a_gzipped_chrome_trace(tmp_path):
    import gzip

    import profile_unet
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.ones(8, 8).matmul(torch.ones(8, 8))
    profile_unet.write_trace(prof, tmp_path / "trace_plain.json.gz")
    events = json.loads(gzip.decompress((tmp_path / "trace_plain.json.gz").read_bytes()))["traceEvents"]
    assert any("mm" in str(event.get("name", "")) for event in events)
    assert [p.name for p in tmp_path.iterdir()] == ["trace_plain.json.gz"]  # the raw JSON is gone


def test_profile_unet_refuses_a_negative_loop_length_in_one_line():
    result = subprocess.run([sys.executable, str(SCRIPTS / "profile_unet.py"), "--loop-calls", "-1", "--trace"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("--loop-calls -1: must be 0 (iters / 5) or a number of calls")


@pytest.mark.parametrize("label, says", [
    ("plainx", "unknown method 'plainx'"),
    ("bigain-merge r=0.7 @MERGE_PATH=nope", "MERGE_PATH takes one of atomic, groups"),
])
def test_profile_unet_refuses_a_bad_method_in_one_line_before_any_model(label, says):
    result = subprocess.run([sys.executable, str(SCRIPTS / "profile_unet.py"), "--methods", "plain", label],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert says in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("script", ["bench_unet.py", "profile_unet.py"])
def test_gpu_benchmarks_refuse_a_machine_without_cuda_in_one_line(script, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU visible, whatever the machine has
    done = subprocess.run([sys.executable, str(SCRIPTS / script), "--res", "64", "--methods", "plain", "plain-copy",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("error: needs a CUDA GPU and none is visible "
                                                        "(torch.cuda.is_available() is False)")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def _bench_file(folder: Path, rows: list[dict], model: str = "sd2", **meta) -> Path:
    folder.mkdir(parents=True)
    path = folder / "bench_unet.json"
    path.write_text(json.dumps({"meta": {"card": "card", "model": model, "batch": 2, **meta}, "rows": rows}))
    return path


def test_share_over_processes_takes_the_median_of_one_configuration_per_process(tmp_path, capsys):
    import share_over_processes as sop

    method = "bigain-merge r=0.7 radius=1 plan-reuse"
    row = dict(res=768, mode="cudagraphs", method=method, error=None, loop_speedup=1.17, loop_ceiling=1.19)
    for i, share in enumerate([0.85, 0.95, 0.88]):
        _bench_file(tmp_path / f"s{i}", [dict(row, method="plain", loop_gain_share=None),
                                         dict(row, loop_gain_share=share),
                                         dict(row, method=method + " @PLAN_FUSION=False", loop_gain_share=0.1),
                                         dict(row, res=1024, loop_gain_share=0.2)]
                    + ([dict(row, method="plain-copy", loop_speedup=0.994, loop_ceiling=None)] if i == 2 else []),
                    **({"loop_calls": 50, "code": "0123456789ab", "inductor_cache": "empty"} if i == 2 else {}))
    _bench_file(tmp_path / "failed", [dict(row, error="OOM", loop_gain_share=0.0)])
    _bench_file(tmp_path / "dit", [dict(row, loop_gain_share=0.3)], model="dit-xl2")  # another model: not counted
    plot = tmp_path / "share.png"
    assert sop.main([str(tmp_path), "--res", "768", "--method", method, "--target", "0.9", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "over 3 processes: 0.88 [0.85-0.95]; 1 of 3 at or above 0.9" in out
    # each process's loop length: recorded, or iters / 5 (30 / 5) for files from before session 25;
    # the code it timed and its Inductor cache where recorded (since session 30), '-' before
    assert out.count("| card | - | - | 2 | 6 |") == 2 and out.count("| card | 0123456789ab | empty | 2 | 50 |") == 1
    # and the floor where the process timed a second compile of plain (s2 did), '-' where not
    assert out.count("| 0.88 | 0.994 |") == 1 and out.count("| 0.85 | - |") == 1
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # a variant counts only when asked, as its own row
    rows = sop.gather(sop.process_files([tmp_path]), "sd2", 768, method, "cudagraphs", variants=True)
    assert sorted(r["loop_gain_share"] for r in rows) == [0.1, 0.1, 0.1, 0.85, 0.88, 0.95]
    # nothing recorded: a failing exit, not a median of nothing
    assert sop.main([str(tmp_path), "--res", "512", "--method", method]) == 1
    # a truncated file stops the count with its name, not a traceback or a silently smaller median
    (tmp_path / "s1" / "bench_unet.json").write_text('{"rows": [')
    with pytest.raises(SystemExit, match="s1/bench_unet.json: not readable as JSON"):
        sop.main([str(tmp_path), "--res", "768", "--method", method])


def test_share_over_processes_gives_the_median_of_each_inductor_cache_kind(tmp_path, capsys):
    import share_over_processes as sop

    method = "bigain-merge r=0.7 radius=1 plan-reuse"
    row = dict(res=768, mode="cudagraphs", method=method, error=None, loop_speedup=1.17, loop_ceiling=1.19)
    files = [_bench_file(tmp_path / f"s{i}", [dict(row, loop_gain_share=share)],
                         **({"inductor_cache": "empty"} if i == 0 else {}))
             for i, share in enumerate([0.95, 0.93, 0.86, 0.87, 0.80])]
    # s0 says it in its meta; s1-s3 come from the table; s4 is in neither
    table = tmp_path / "caches.json"
    table.write_text(json.dumps({"processes": {str(files[1]): "empty", str(files[2]): "warm", str(files[3]): "warm"}}))
    plot = tmp_path / "share.png"
    argv = [str(tmp_path), "--res", "768", "--method", method, "--target", "0.9", "--cache-table", str(table)]
    assert sop.main(argv + ["--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "over 5 processes: 0.87 [0.8-0.95]; 2 of 5 at or above 0.9" in out
    assert "- compiled in an empty Inductor cache: median 0.94 over 2 [0.93-0.95]; 2 at or above 0.9" in out
    assert "- reloaded from a warm Inductor cache: median 0.865 over 2 [0.86-0.87]; 0 at or above 0.9" in out
    assert "- cache not recorded: median 0.8 over 1 [0.8-0.8]; 0 at or above 0.9" in out
    assert out.count("| empty |") == 2 and out.count("| warm |") == 2 and plot.read_bytes()[:4] == b"\x89PNG"
    # no kind known anywhere: no split
    assert sop.main([str(tmp_path / "s4"), "--res", "768", "--method", method]) == 0
    assert "Inductor cache:" not in capsys.readouterr().out
    # a table that contradicts a process's own meta, or names a kind that does not exist, stops the count
    table.write_text(json.dumps({"processes": {str(files[0]): "warm"}}))
    with pytest.raises(SystemExit, match=r"s0/bench_unet.json: its meta says inductor_cache 'empty', the cache table 'warm'"):
        sop.main(argv)
    # a meta that could not tell ("unknown": a torch without the helper) is as one that does not say
    files[4].unlink()
    files[4].parent.rmdir()
    _bench_file(tmp_path / "s4", [dict(row, loop_gain_share=0.80)], inductor_cache="unknown")
    table.write_text(json.dumps({"processes": {str(files[4]): "warm"}}))
    assert sop.main(argv) == 0
    assert "- reloaded from a warm Inductor cache: median 0.8 over 1 [0.8-0.8]" in capsys.readouterr().out
    table.write_text(json.dumps({"processes": {}}))  # s1-s3 and s4 ("unknown") unrecorded alike
    assert sop.main(argv) == 0
    assert "- cache not recorded: median 0.865 over 4 [0.8-0.93]; 1 at or above 0.9" in capsys.readouterr().out
    table.write_text(json.dumps({"processes": {str(files[1]): "cold"}}))
    with pytest.raises(SystemExit, match=r"caches.json: .*s1/bench_unet.json: 'cold' is not a cache kind; allowed: empty, warm"):
        sop.main(argv)
    table.write_text(json.dumps([str(files[1])]))
    with pytest.raises(SystemExit, match=r"caches.json: needs a 'processes' object"):
        sop.main(argv)


def test_share_over_processes_keeps_rows_timed_under_other_launch_settings_apart(tmp_path, capsys):
    """A process run with --kernel-setting timed another configuration than its rows' names say:
    it counts for --setting with those settings, with the variant rows timed under them, not for
    the default; settings equal to today's defaults (MERGE_PATH=groups) are the default."""
    import share_over_processes as sop

    method = "bigain-merge r=0.7 radius=1 plan-reuse"
    row = dict(res=768, mode="cudagraphs", method=method, error=None, loop_speedup=1.17, loop_ceiling=1.19)
    ruled_variant = dict(row, method=method + " @PERSISTENT_GATHER_NORMS=True", compiled_alone=True)
    _bench_file(tmp_path / "default", [dict(row, loop_gain_share=0.85), dict(ruled_variant, loop_gain_share=0.95)])
    # a compiled variant of a setting Dynamo does not guard, from before variants compiled alone
    # (session 33's first run): it timed the default's graph, and counts for neither
    reused = dict(ruled_variant, compiled_alone=False, loop_gain_share=0.5)
    _bench_file(tmp_path / "reused", [reused], kernel_settings={"MERGE_PATH": "groups"})
    _bench_file(tmp_path / "groups", [dict(row, loop_gain_share=0.87)], kernel_settings={"MERGE_PATH": "groups"})
    _bench_file(tmp_path / "ruled", [dict(row, loop_gain_share=0.97),  # and a constant since removed: never counted
                                     dict(row, method=method + " @GONE_CONSTANT=1", loop_gain_share=0.1)],
                kernel_settings={"PERSISTENT_GATHER_NORMS": True})
    assert sop.main([str(tmp_path), "--res", "768", "--method", method]) == 0
    assert "over 2 processes: 0.86 [0.85-0.87]" in capsys.readouterr().out
    assert sop.main([str(tmp_path), "--res", "768", "--method", method, "--setting", "PERSISTENT_GATHER_NORMS=True"]) == 0
    out = capsys.readouterr().out
    assert "over 2 processes: 0.96 [0.95-0.97]" in out and "ruled/bench_unet.json" in out
    assert sop.main([str(tmp_path / "reused"), "--res", "768", "--method", method, "--variants"]) == 1
    assert "no process recorded this configuration" in capsys.readouterr().out
    for argv, says in ((["--setting", "PLAN_FUSION=True"], "PLAN_FUSION=True: these are today's defaults"),
                       (["--setting", "PERSISTENT_GATHER_NORMS=yes"], "PERSISTENT_GATHER_NORMS takes True or False"),
                       (["--setting", "PERSISTENT_GATHER_NORMS=True", "--variants"], "give one")):
        with pytest.raises(SystemExit):
            sop.main([str(tmp_path), "--res", "768", "--method", method, *argv])
        assert says in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [(["--target", "90"], "--target 90.0: must be in (0, 1]"),
                                        (["--plot", "share.svg"], "--plot share.svg: must end in .png")])
def test_share_over_processes_refuses_bad_flags_in_one_line(tmp_path, argv, says):
    cmd = [sys.executable, str(SCRIPTS / "share_over_processes.py"), str(tmp_path), "--res", "768", "--method", "m",
           *argv]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2 and says in result.stderr


def _kernel_trace(path: Path, launches: list[tuple[str, tuple, float]], calls: int = 2) -> Path:
    """A Chrome trace as profile_unet.py --trace writes it: ``launches`` once per call, in order."""
    import gzip

    events, ts = [{"cat": "cpu_op", "name": "## Call CompiledFxGraph x ##", "ts": 0, "dur": 1}], 0.0
    for _ in range(calls):
        for name, grid, us in launches:
            events.append({"cat": "kernel", "name": name, "ts": ts, "dur": us, "args": {"grid": list(grid)}})
            ts += us + 1
    with gzip.open(path, "wt") as handle:
        json.dump({"traceEvents": events}, handle)
    return path


def test_kernel_choices_lists_the_sites_two_compiles_launch_with_other_grids(tmp_path, capsys):
    import kernel_choices

    plain = [("triton_per_fused_group_norm_3", (720, 1, 1), 29.0), ("sm90_conv", (15, 8, 1), 60.0),
             ("triton_poi_fused_silu_4", (10, 1, 1), 2.0), ("triton_per_fused_group_norm_5", (360, 1, 1), 8.0)]
    # the patched graph: its kernels numbered differently, one more kernel, and one site (the
    # first group norm) given XBLOCK 1 where plain's compile chose 32, and the silu's tie gone
    merged = [("triton_per_fused_group_norm_4", (23040, 1, 1), 45.0), ("bigain_merge_kernel", (9, 1, 1), 7.0),
              ("sm90_conv", (30, 4, 1), 61.0), ("triton_poi_fused_silu_6", (10, 1, 1), 2.0),
              ("triton_per_fused_group_norm_7", (360, 1, 1), 8.5)]
    a = _kernel_trace(tmp_path / "trace_plain.json.gz", plain)
    b = _kernel_trace(tmp_path / "trace_bigain-merge_r_0.7.json.gz", merged)
    result = kernel_choices.compare(kernel_choices.read_sites(a), kernel_choices.read_sites(b), calls=2)
    assert result["paired"] == 3 and result["unpaired"] == ["bigain_merge_kernel"]
    assert [(d["site_a"], d["site_b"]) for d in result["differing"]] == [
        ("triton_per_fused_group_norm_3", "triton_per_fused_group_norm_4")]
    assert result["differing"][0]["us_a"] == 29.0 and result["delta_us"] == 16.0  # per call, not per trace
    # the kernel time's difference split: the picks (+16), sites launched alike (+0.5: the second
    # group norm), and the rest (the merge kernel +7, the cuBLAS/cuDNN kernel not compared +1)
    assert (result["total_us_a"], result["total_us_b"]) == (99.0, 123.5)
    assert result["same_grid_us"] == 0.5 and result["unpaired_us"] == 8.0
    # cuBLAS/cuDNN picks are compared only when asked
    everything = kernel_choices.compare(kernel_choices.read_sites(a), kernel_choices.read_sites(b), 2, triton_only=False)
    assert [d["site_a"] for d in everything["differing"]] == ["triton_per_fused_group_norm_3", "sm90_conv"]
    out_md = tmp_path / "choices.md"
    kernel_choices.main([str(a), str(b), "--calls", "2", "--out", str(out_md)])
    text = capsys.readouterr().out
    assert text == out_md.read_text()
    assert text.startswith("1 of 3 paired kernel sites launch with different grids; at those sites "
                           "bigain-merge_r_0.7 takes +16.0 us a call against plain")
    assert "| 720x1x1 | 23040x1x1 | 29.0 | 45.0 | +16.0 |" in text
    assert ("GPU kernel time a call: plain 99.0 us, bigain-merge_r_0.7 123.5 us (+24.5): +16.0 at sites launched "
            "with other grids, +0.5 at sites launched alike, +8.0 in kernels not paired or not compared") in text


def test_kernel_choices_tells_one_method_s_two_processes_apart_by_folder(tmp_path, capsys):
    import kernel_choices

    launches = [("triton_per_fused_group_norm_3", (720, 1, 1), 29.0)]
    (tmp_path / "prof-new").mkdir(), (tmp_path / "prof-reuse").mkdir()
    a = _kernel_trace(tmp_path / "prof-new" / "trace_plain.json.gz", launches)
    b = _kernel_trace(tmp_path / "prof-reuse" / "trace_plain.json.gz", [(n, g, us + 1) for n, g, us in launches])
    kernel_choices.main([str(a), str(b), "--calls", "2"])
    text = capsys.readouterr().out
    assert text.startswith("0 of 1 paired kernel sites launch with different grids; at those sites "
                           "prof-reuse/plain takes +0.0 us a call against prof-new/plain")
    assert "prof-new/plain 29.0 us, prof-reuse/plain 30.0 us (+1.0)" in text
    assert "| site" not in text  # no empty table when no site differs


def test_kernel_choices_refuses_what_is_not_a_kernel_trace_in_one_line(tmp_path):
    (tmp_path / "cut.json.gz").write_bytes(b"\x1f\x8b\x08")
    (tmp_path / "cpu.json").write_text(json.dumps({"traceEvents": [{"cat": "cpu_op", "name": "x", "ts": 0}]}))
    for name, says in (("cut.json.gz", "not a readable Chrome trace"), ("cpu.json", "no GPU kernels in this trace")):
        cmd = [sys.executable, str(SCRIPTS / "kernel_choices.py"), str(tmp_path / name), str(tmp_path / name)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"{tmp_path / name}: {says}")


def test_the_code_digest_changes_with_any_package_file_or_the_script(tmp_path):
    import bench_unet

    (tmp_path / "bigain_export" / "kernels").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    files = {"bigain_export/__init__.py": "", "bigain_export/kernels/launch.py": "UNMERGE_REALIZE = False\n",
             "scripts/bench_unet.py": "print(1)\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "bigain_export" / "notes.txt").write_text("not code")
    first = bench_unet.code_digest(tmp_path)
    assert len(first) == 12 and first == bench_unet.code_digest(tmp_path)
    (tmp_path / "bigain_export" / "notes.txt").write_text("changed, but not Python")
    assert bench_unet.code_digest(tmp_path) == first
    for name, text in files.items():
        (tmp_path / name).write_text(text + "# edited\n")
        assert bench_unet.code_digest(tmp_path) != first, name
        (tmp_path / name).write_text(text)
    (tmp_path / "bigain_export/kernels/launch.py").rename(tmp_path / "bigain_export/kernels/launch2.py")
    assert bench_unet.code_digest(tmp_path) != first  # the same bytes under another name
    # the digest of this checkout is what the meta records
    assert len(bench_unet.code_digest()) == 12


def test_the_inductor_cache_is_empty_until_something_is_written_to_it(tmp_path, monkeypatch):
    import bench_unet

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "absent"))
    assert bench_unet.inductor_cache_state() == "empty"
    (tmp_path / "absent").mkdir(exist_ok=True)  # Inductor's cache_dir() makes it
    assert bench_unet.inductor_cache_state() == "empty"
    (tmp_path / "absent" / "fxgraph").mkdir()
    assert bench_unet.inductor_cache_state() == "warm"


def test_the_meta_records_inductor_settings_as_compiled_not_as_asked():
    # TORCHINDUCTOR_DETERMINISTIC=1 is undone by Dynamo when it restores use_deterministic_algorithms
    # after tracing (torch 2.11-2.13): the meta must say what compiled, and docs/development.md's
    # pitfall holds while this does; the reduction filter survives
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import bench_unet; "
            "before = bench_unet.inductor_settings(); torch.compile(lambda x: (x * 2).sum(0))(torch.ones(8, 8)); "
            "print(before, bench_unet.inductor_settings())")
    env = dict(os.environ, TORCHINDUCTOR_DETERMINISTIC="1", TORCHINDUCTOR_FORCE_FILTER_REDUCTION_CONFIGS="1")
    done = subprocess.run([sys.executable, "-c", code, str(SCRIPTS)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == (
        "{'deterministic': True, 'filter_reduction_configs': True} "
        "{'deterministic': False, 'filter_reduction_configs': True}")
