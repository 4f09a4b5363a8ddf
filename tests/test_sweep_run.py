"""run_sweep on a micro DiT with a few images: every field, resume, changed settings, two processes."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bigain_export.errors import ConfigError
from bigain_export.models import Denoiser
from bigain_export.models import architectures as arch
from bigain_export.sweep import run as sweep_run
from bigain_export.sweep.grid import expand, parse_entry
from bigain_export.sweep.latency import LatencySettings
from bigain_export.sweep.pareto import Budget
from bigain_export.sweep.run import SweepSettings, run_sweep
from bigain_export.validate.run import ValidationSettings
from bigain_export.validate.sampling import SamplingConfig
from bigain_export.validate.schedule import ClassifierSchedule
from validate_toys import PixelFeatures


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models run fastest on one thread (two threads on a shared 2-core machine: 40x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def micro_dit(seed: int = 0) -> Denoiser:
    """3 blocks on 8x8 tokens (BiGain patches blocks 1 and 2)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = arch.build_dit({**arch.TINY_DIT_CONFIG, "num_layers": 3, "patch_size": 4})
    return Denoiser(model, num_classes=10, sample_shape=(1, 32, 32), scheduler_config=arch.SCHEDULER_CONFIG,
                    name=f"micro-dit-{seed}").eval().requires_grad_(False)


def data(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, torch.tensor([0, 3, 9, 1, 5, 7][:n])


def settings(fid_seeds=(0, 1), chunk=500, **changes) -> SweepSettings:
    validation = ValidationSettings(
        num_classes=10, scheduler_config=arch.SCHEDULER_CONFIG, schedule=ClassifierSchedule.uniform(2),
        sampling=SamplingConfig(num_steps=3, guidance_scale=2.0, null_label=10), drift_inputs=3, batch_size=8,
    )
    validation = dataclasses.replace(validation, **changes)
    return SweepSettings(validation, fid_seeds=fid_seeds, latency=LatencySettings(batch=8, warmup=1, repeats=2),
                         classify_chunk=chunk)


GRID = ["none", "m=bigain-merge:ratio=0.5", "kv=bigain-kv"]


def sweep(out, grid=GRID, denoiser=None, seeds=(0,), modes=("eager",), images=None, s=None, **kwargs):
    imgs, labels = data() if images is None else images
    points, skipped = expand([parse_entry(e) for e in grid], modes, seeds)
    return run_sweep(denoiser or micro_dit(), points, imgs, labels, s or settings(), out, model_spec="micro",
                     feature_fn=PixelFeatures(), progress=False, skipped=skipped, **kwargs)


class Counter:
    """Counts classify/sample calls made by run_sweep (a part measured = one call)."""

    def __init__(self, monkeypatch):
        self.classified: list[int] = []
        self.sampled: list[int] = []
        real_classify, real_sample = sweep_run.classify_sharded, sweep_run.sample_sharded

        def classify(*args, **kwargs):
            self.classified.append(1)
            return real_classify(*args, **kwargs)

        def sample(*args, **kwargs):
            self.sampled.append(kwargs["config"].seed)
            return real_sample(*args, **kwargs)

        monkeypatch.setattr(sweep_run, "classify_sharded", classify)
        monkeypatch.setattr(sweep_run, "sample_sharded", sample)


def _numbers(report):
    """What must agree between runs: everything but timings and latency."""
    keep = ("accuracy", "accuracy_ci95", "predictions", "fid_per_seed", "drift", "flops_per_call")
    return {p["name"]: {k: p[k] for k in keep} for p in report["points"]}


def test_every_point_has_every_field(tmp_path):
    report = sweep(tmp_path, budget=Budget.parse(100.0, "100%"))
    assert [p["name"] for p in report["points"]] == ["none", "m", "kv"]
    for p in report["points"]:
        assert 0 <= p["accuracy"] <= 1 and p["num_images"] == 4 and p["eps_calls"] == 4 * 10 * 2
        lo, hi = p["accuracy_ci95"]
        assert lo <= p["accuracy"] <= hi
        assert p["fid"] > 0 and p["fid_std"] >= 0 and set(p["fid_per_seed"]) == {"0", "1"}
        assert p["fid"] == pytest.approx(sum(p["fid_per_seed"].values()) / 2)
        assert p["drift"]["reference"] == "none" and p["drift"]["num_inputs"] == 3
        assert p["latency"]["ms"] > 0 and p["latency"]["timer"] == "perf_counter" and p["latency"]["batch"] == 8
        assert p["flops_per_call"] > 0 and p["flops_per_image"] == p["flops_per_call"] / 8
        assert set(p["vs_reference"]) == {"acc_drop", "fid_rise", "fid_rise_pct", "speedup", "speedup_in_mode", "mcnemar"}
        assert set(p["pareto"]) == {"accuracy", "fid"}
    by_name = {p["name"]: p for p in report["points"]}
    assert by_name["none"]["drift"]["max_abs"] == 0.0  # the deterministic reference against itself
    assert by_name["m"]["drift"]["max_abs"] > 0 and by_name["kv"]["drift"]["max_abs"] > 0
    assert by_name["m"]["flops_per_call"] < by_name["none"]["flops_per_call"]  # merging saves attention FLOPs
    assert by_name["kv"]["flops_per_call"] < by_name["none"]["flops_per_call"]
    assert report["answer"]["point"] in by_name  # with these bounds every point qualifies: the fastest
    assert report["answer"]["point"] == min(by_name, key=lambda n: by_name[n]["latency"]["ms_paired"])
    # Latency paired with the reference (protocol 3): ms_paired = the reference's ms / the speedup.
    ref_ms = by_name["none"]["latency"]["ms"]
    assert by_name["none"]["latency"]["ms_paired"] == ref_ms  # 1.0x of itself by definition
    for name in ("m", "kv"):
        lat = by_name[name]["latency"]
        assert lat["speedup"] == pytest.approx(lat["reference_ms"] / lat["ms"])
        assert lat["speedup_min"] <= lat["speedup_max"] and lat["rounds"] == 10
        assert lat["ms_paired"] == pytest.approx(ref_ms / lat["speedup"])
        assert by_name[name]["vs_reference"]["speedup"] == pytest.approx(lat["speedup"])
    assert "Noise check: `none` against its own copy gave" in (tmp_path / "sweep.md").read_text()
    assert report["pareto"]["accuracy"] and report["pareto"]["fid"]
    for name in ("sweep.json", "sweep.md", "accuracy_vs_latency.png", "fid_vs_latency.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "**Answer:**" in (tmp_path / "sweep.md").read_text()
    assert len(list((tmp_path / "points").glob("*.json"))) == 3  # one checkpoint per point


def test_resume_skips_finished_points_and_remeasures_changed_ones(tmp_path, monkeypatch, caplog):
    first = sweep(tmp_path, resume=True)
    counter = Counter(monkeypatch)
    again = sweep(tmp_path, resume=True)
    assert counter.classified == [] and counter.sampled == []  # nothing measured again
    assert _numbers(again) == _numbers(first)

    # The same name with another ratio: that point (only) is measured again, and the log says why.
    caplog.set_level(logging.WARNING, logger="bigain_export.sweep.records")
    changed = sweep(tmp_path, grid=["none", "m=bigain-merge:ratio=0.7", "kv=bigain-kv"], resume=True)
    assert counter.classified == [1] and counter.sampled == [0, 1]
    assert "sweep point m: classify@0 was measured with other settings (method.config.classify.ratio 0.5 vs 0.7)" in caplog.text
    assert changed["points"][1]["config"]["ratio"] == 0.7
    fresh = sweep(tmp_path / "fresh", grid=["none", "m=bigain-merge:ratio=0.7", "kv=bigain-kv"])
    assert _numbers(changed) == _numbers(fresh)

    # One more sampling seed: only that FID is measured.
    counter.classified.clear(), counter.sampled.clear()
    sweep(tmp_path, grid=["none", "m=bigain-merge:ratio=0.7", "kv=bigain-kv"], s=settings(fid_seeds=(0, 1, 2)),
          resume=True)
    assert counter.classified == [] and counter.sampled == [2, 2, 2]


def test_resume_never_reuses_another_models_or_datas_points(tmp_path, monkeypatch):
    sweep(tmp_path, resume=True)
    counter = Counter(monkeypatch)
    other = sweep(tmp_path, denoiser=micro_dit(seed=1), resume=True)
    assert len(counter.classified) == 3  # every point measured again
    assert _numbers(other) == _numbers(sweep(tmp_path / "fresh", denoiser=micro_dit(seed=1)))
    counter.classified.clear()
    imgs, labels = data()
    sweep(tmp_path, denoiser=micro_dit(seed=1), images=(imgs * 0.5, labels), resume=True)
    assert len(counter.classified) == 3
    counter.classified.clear()
    sweep(tmp_path, denoiser=micro_dit(seed=1), images=(imgs * 0.5, labels), s=settings(classifier_seed=1), resume=True)
    assert len(counter.classified) == 3


def test_classification_in_chunks_equals_one_pass_and_a_larger_limit_reuses_them(tmp_path, monkeypatch):
    whole = sweep(tmp_path / "whole", images=data(5), s=settings(sampling=None))
    counter = Counter(monkeypatch)
    chunked = sweep(tmp_path / "chunked", images=data(5), s=settings(sampling=None, chunk=2), resume=True)
    assert len(counter.classified) == 3 * 3  # 3 points x chunks [0:2], [2:4], [4:5]
    assert _numbers(chunked) == _numbers(whole)
    assert [p["num_images"] for p in chunked["points"]] == [5, 5, 5]
    assert chunked["points"][1]["accuracy_ci95"] == whole["points"][1]["accuracy_ci95"]

    # Six images: only the new chunk [4:6] is classified; drift, latency and FLOPs are kept.
    counter.classified.clear()
    grown = sweep(tmp_path / "chunked", images=data(6), s=settings(sampling=None, chunk=2), resume=True)
    assert len(counter.classified) == 3 * 1
    assert [p["seconds"]["latency"] for p in grown["points"]] == [p["seconds"]["latency"] for p in chunked["points"]]
    assert _numbers(grown) == _numbers(sweep(tmp_path / "six", images=data(6), s=settings(sampling=None)))


def test_seeds_make_random_tome_reproducible_and_give_its_spread(tmp_path):
    grid = ["none", "tome:ratio=0.5"]
    first = sweep(tmp_path / "a", grid=grid, seeds=(0, 1, 2), s=settings(fid_seeds=(0,)))
    second = sweep(tmp_path / "b", grid=grid, seeds=(0, 1, 2), s=settings(fid_seeds=(0,)))
    assert _numbers(first) == _numbers(second)  # seeded: a rerun draws the same anchors
    assert [p["name"] for p in first["points"]] == ["none", "tome-0.5@s0", "tome-0.5@s1", "tome-0.5@s2"]
    drifts = {p["drift"]["max_abs"] for p in first["points"][1:]}
    assert len(drifts) == 3  # different seeds draw different anchors
    group = first["seed_groups"]["tome-0.5"]
    assert group["seeds"] == [0, 1, 2] and group["accuracy_min"] <= group["accuracy_mean"] <= group["accuracy_max"]


@pytest.mark.slow
def test_compile_mode_and_a_grid_error_before_any_work(tmp_path, monkeypatch):
    report = sweep(tmp_path, grid=["none", "m=bigain-merge:ratio=0.5"], modes=("eager", "compile"),
                   s=settings(sampling=None), compile_backend="eager")
    names = [p["name"] for p in report["points"]]
    assert names == ["none", "m", "compile:none", "compile:m"]
    by_name = {p["name"]: p for p in report["points"]}
    assert by_name["compile:m"]["predictions"] == by_name["m"]["predictions"]
    assert by_name["compile:m"]["fid"] is None  # sampling off

    counter = Counter(monkeypatch)
    from bigain_export.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="dit_blocks has \\[5\\], but the model has 3 blocks"):
        sweep(tmp_path / "bad", grid=["none", "bad=bigain-merge:dit_blocks=[1,5]"])
    assert counter.classified == []  # refused before measuring anything


def test_a_sweep_without_fid_writes_no_fid_plot_and_removes_an_earlier_one(tmp_path):
    (tmp_path / "fid_vs_latency.png").write_bytes(b"an earlier run's plot")
    sweep(tmp_path, grid=["none", "m=bigain-merge:ratio=0.5"], s=settings(sampling=None))
    assert not (tmp_path / "fid_vs_latency.png").exists()
    assert (tmp_path / "accuracy_vs_latency.png").stat().st_size > 0
    markdown = (tmp_path / "sweep.md").read_text()
    assert "accuracy_vs_latency.png" in markdown and "fid_vs_latency.png" not in markdown


def test_plot_labels_of_close_points_get_their_own_rows():
    from bigain_export.sweep.plots import _label_rows

    # two points at one accuracy 2 ms apart (of a 100 ms range) share no row; a far one reuses row 0
    assert _label_rows([(120.0, 95.0), (122.0, 95.0), (220.0, 95.0), (121.0, 70.0)]) == [0, 1, 0, 0]
    assert _label_rows([]) == []


def test_compiled_points_are_timed_against_the_uncompressed_model_compiled_the_same_way(tmp_path, monkeypatch):
    """A compiled point's speedup comes from rounds against the uncompressed model compiled in the
    same mode (not against eager minutes apart); the uncompressed compiled point itself, and eager
    points, pair with the eager reference, whose checkpoints a later run with more modes reuses."""
    from torch._dynamo.eval_frame import OptimizedModule

    timed = []
    real = sweep_run.measure_latency

    def measure(fn, inputs, lat, *, reference_fn, **kw):
        timed.append(isinstance(reference_fn, OptimizedModule))
        return real(fn, inputs, lat, reference_fn=reference_fn, **kw)

    monkeypatch.setattr(sweep_run, "measure_latency", measure)
    grid, s = ["none", "m=bigain-merge:ratio=0.5"], settings(sampling=None)
    sweep(tmp_path, grid=grid, s=s, resume=True)
    assert timed == [False, False]
    timed.clear()
    report = sweep(tmp_path, grid=grid, modes=("eager", "compile"), s=s, compile_backend="eager", resume=True)
    assert timed == [False, True]  # eager latency reused; compile:none vs eager, compile:m vs compiled
    lat = {p["name"]: p["latency"] for p in report["points"]}
    assert {n: v["paired_with"] for n, v in lat.items()} == {
        "none": "none", "m": "none", "compile:none": "none", "compile:m": "compile:none"}
    assert lat["compile:m"]["ms_paired"] == pytest.approx(lat["compile:none"]["ms_paired"] / lat["compile:m"]["speedup"])
    assert lat["compile:none"]["ms_paired"] == pytest.approx(lat["none"]["ms"] / lat["compile:none"]["speedup"])
    compiled_m = next(p for p in report["points"] if p["name"] == "compile:m")
    assert compiled_m["vs_reference"]["speedup_in_mode"] == pytest.approx(lat["compile:m"]["speedup"])
    # the table puts compile:m's rounds beside its same-mode ratio, the others' beside the eager one
    row = next(line for line in (tmp_path / "sweep.md").read_text().splitlines() if line.startswith("| compile:m |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    rounds = f"[{lat['compile:m']['speedup_min']:.2f}, {lat['compile:m']['speedup_max']:.2f}]"
    assert "[" not in cells[7] and cells[8].endswith(rounds)
    assert "interleaved with the uncompressed model compiled the same way" in (tmp_path / "sweep.md").read_text()


def _worker(rank: int, init_file: str, out_dir: str, result_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        report = sweep(out_dir, images=data(5), s=settings(chunk=2), resume=True)  # chunks cross the shards
        if rank == 1:  # every rank holds the report
            torch.save(report, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_give_the_result_of_one(tmp_path):
    result_file = tmp_path / "rank1.pt"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path / "dist"), str(result_file)), nprocs=2, join=True)
    sharded = torch.load(result_file, weights_only=False)
    single = sweep(tmp_path / "single", images=data(5))
    got, want = _numbers(sharded), _numbers(single)
    for name in want:
        assert got[name]["predictions"] == want[name]["predictions"]
        assert got[name]["accuracy"] == want[name]["accuracy"]
        assert got[name]["fid_per_seed"] == pytest.approx(want[name]["fid_per_seed"], rel=1e-6)
        assert got[name]["drift"]["max_abs"] == pytest.approx(want[name]["drift"]["max_abs"], rel=1e-6, abs=1e-9)
    assert sharded["run"]["world_size"] == 2
    assert (tmp_path / "dist" / "sweep.json").is_file()  # written once, by rank 0


@pytest.mark.parametrize("edit, reason", [
    (lambda r: r.update(correct=r["correct"] + 1), "from its predictions"),        # a raised score
    (lambda r: r.update(accuracy=1.0, correct=r["num_images"]), "from its predictions"),
    (lambda r: r["predictions"].pop(), "predictions for 4 images"),                 # a truncated list
    (lambda r: r["predictions"].__setitem__(0, 10), "outside 0..9"),
])
def test_resume_remeasures_a_hand_edited_classification(tmp_path, monkeypatch, caplog, edit, reason):
    """A checkpoint whose facts still match but whose numbers were edited is not reused: the
    classification is re-derived from its predictions and this run's labels."""
    first = sweep(tmp_path, resume=True)
    path = next(p for p in (tmp_path / "points").glob("m-*.json"))
    record = json.loads(path.read_text())
    edit(record["parts"]["classify@0"]["result"])
    path.write_text(json.dumps(record))
    counter = Counter(monkeypatch)
    caplog.set_level(logging.WARNING, logger="bigain_export.sweep.run")
    again = sweep(tmp_path, resume=True)
    assert counter.classified == [1]  # m's classification only
    assert "sweep point m: the saved classify@0 is inconsistent" in caplog.text and reason in caplog.text
    assert _numbers(again) == _numbers(first)


@pytest.mark.parametrize("part, edit", [
    ("fid@0", lambda r: r.update(fid=float("nan"))),
    ("fid@1", lambda r: r.update(fid_num_images=3)),
    ("latency", lambda r: r.update(ms=r["ms_p90"] * 2)),
    ("latency", lambda r: r.update(speedup=r["speedup"] * 2)),
    ("latency", lambda r: r.pop("reference_ms")),
    ("latency", lambda r: r.update(paired_with="m")),  # its ms_paired would follow another point
    ("drift", lambda r: r.update(rel_l2=-1.0)),
])
def test_resume_remeasures_an_impossible_part(tmp_path, caplog, part, edit):
    sweep(tmp_path, resume=True)
    path = next(p for p in (tmp_path / "points").glob("kv-*.json"))
    record = json.loads(path.read_text())
    edit(record["parts"][part]["result"])
    path.write_text(json.dumps(record))
    caplog.set_level(logging.WARNING, logger="bigain_export.sweep.run")
    sweep(tmp_path, resume=True)
    assert f"sweep point kv: the saved {part} is inconsistent" in caplog.text
    assert json.loads(path.read_text())["parts"][part]["result"] != record["parts"][part]["result"]


@pytest.mark.parametrize("backend, message", [("ort-cuda", "backend 'ort-cuda' needs onnxruntime-gpu and a CUDA device"),
                                              ("trt", "backend 'trt' runs its plan on an NVIDIA GPU")])
def test_engine_points_for_a_runtime_this_machine_lacks_are_refused_before_any_work(tmp_path, monkeypatch, backend,
                                                                                   message):
    from bigain_export.backends.ort import cuda_available
    from bigain_export.errors import EngineError

    if torch.cuda.is_available() or cuda_available():
        pytest.skip("this machine has the runtime")
    counter = Counter(monkeypatch)
    with pytest.raises(EngineError, match=message):
        sweep(tmp_path, modes=("eager", "engine"), engine_backend=backend)
    assert counter.classified == [] and not (tmp_path / "points").exists()


def test_cudagraphs_mode_is_refused_off_cuda_before_any_work(tmp_path, monkeypatch):
    counter = Counter(monkeypatch)
    with pytest.raises(ConfigError, match="--modes cudagraphs needs a CUDA device; got --device cpu"):
        sweep(tmp_path, modes=("eager", "cudagraphs"))
    assert counter.classified == [] and not (tmp_path / "points").exists()


def test_cudagraphs_points_compile_with_cuda_graphs_and_copy_each_output(monkeypatch):
    """The wiring, on the CPU: torch.compile(mode="reduce-overhead", fullgraph=True), a new graph
    step per call and a copy of every output (the next replay overwrites the graph's buffer)."""
    from bigain_export.sweep import methods
    from bigain_export.sweep.methods import PointOpener

    seen, steps = {}, []
    monkeypatch.setattr(methods.torch, "compile", lambda model, **kw: seen.update(kw) or model)
    monkeypatch.setattr(methods.torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    denoiser = micro_dit()
    point = expand([parse_entry("m=bigain-merge:ratio=0.5")], ("cudagraphs",))[0][-1]
    assert (point.name, point.mode) == ("cudagraphs:m", "cudagraphs")
    opener = PointOpener(denoiser, model_hash="x", paper_alpha=False, engine_dir=None, engine_backend="ort-cpu",
                         batch=2, device="cpu")
    assert opener.method_facts(point)["compile"] == {"backend": "inductor", "mode": "reduce-overhead", "fullgraph": True}
    x, t, y = torch.randn(2, 1, 32, 32), torch.full((2,), 500), torch.tensor([1, 2])
    with opener.open(point, "classification") as (fn, _):
        out = fn(x, t, y)
        direct = denoiser(x, t, y)
    # what ran is what the facts record
    assert seen == {"backend": "inductor", "fullgraph": True, "mode": "reduce-overhead"} and steps == [1]
    torch.testing.assert_close(out, direct)
    assert out.data_ptr() != direct.data_ptr()


def test_more_compiled_points_than_dynamos_recompile_limit(monkeypatch):
    """Nine compiled points of distinct patches on one denoiser: each compiles the same
    Denoiser.forward, and without a reset between points the 9th hit Dynamo's recompile limit of 8
    (a fullgraph=True failure: the GPU speed sweep died on it). Reopening a point (its other parts)
    keeps its compile."""
    from bigain_export.sweep import methods
    from bigain_export.sweep.methods import PointOpener

    resets = []
    real_reset = methods.torch._dynamo.reset
    monkeypatch.setattr(methods.torch._dynamo, "reset", lambda: resets.append(1) or real_reset())
    entries = ["none", "a=bigain-merge:ratio=0.5", "b=bigain-merge:ratio=0.5,anchor=released",
               "c=tome:ratio=0.5,anchor=fixed", "d=todo:downsample=2", "e=bigain-kv:downsample=2",
               "f=bigain-both:ratio=0.5,downsample=2", "g=bigain-merge:ratio=0.5,plan_reuse=true",
               "h=tome:ratio=0.5"]
    points = [p for p in expand([parse_entry(e) for e in entries], ("compile",))[0] if p.mode == "compile"]
    assert len(points) == 9
    denoiser = micro_dit()
    opener = PointOpener(denoiser, model_hash="x", paper_alpha=False, engine_dir=None, engine_backend="ort-cpu",
                         batch=2, device="cpu", compile_backend="eager")
    x, t, y = torch.randn(2, 1, 32, 32), torch.full((2,), 500), torch.tensor([1, 2])
    for point in [points[0], *points]:  # the first one twice: e.g. a classification chunk, then drift
        with opener.open(point, "classification") as (fn, _):
            out = fn(x, t, y)
        with opener.eager(point, "classification") as model:
            torch.testing.assert_close(out, model(x, t, y))
    assert len(resets) == 9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_cudagraphs_points_classify_like_eager(tmp_path):
    denoiser = micro_dit().cuda()
    imgs, labels = data()
    points, skipped = expand([parse_entry(e) for e in ["none", "m=bigain-merge:ratio=0.5"]], ("eager", "cudagraphs"))
    report = run_sweep(denoiser, points, imgs.cuda(), labels.cuda(), settings(), tmp_path, model_spec="micro",
                       feature_fn=PixelFeatures(), progress=False, skipped=skipped)
    by_name = {p["name"]: p for p in report["points"]}
    graphs = [p for p in report["points"] if p["mode"] == "cudagraphs"]
    assert len(graphs) == 2 and all(p["latency"]["speedup"] > 0 for p in graphs)
    for p in graphs:
        assert p["vs_eager"]["same_prediction"] >= 0.75, (p["name"], p["vs_eager"])
        assert p["drift"]["rel_l2"] <= by_name[p["vs_eager"]["point"]]["drift"]["rel_l2"] + 1e-3


def test_no_room_for_the_latency_reference_fails_before_any_measurement(tmp_path, monkeypatch):
    from bigain_export.errors import ValidationError

    real = sweep_run.copy.deepcopy

    def no_room(obj, *args, **kwargs):
        if isinstance(obj, Denoiser):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(sweep_run.copy, "deepcopy", no_room)  # inside network_copy
    counter = Counter(monkeypatch)
    with pytest.raises(ValidationError, match=r"against a copy of the uncompressed model, which does not fit on cpu "
                                              r"\(CUDA out of memory. Tried to allocate 2.00 GiB\)"):
        sweep(tmp_path)
    assert counter.classified == [] and counter.sampled == []


def test_the_latency_reference_copies_the_network_only():
    """The pipeline (text encoder, VAE) and the latent space are shared, the network copied: the
    copy computes the same eps and patching the original leaves it alone."""
    from bigain_export import BiGainConfig
    from bigain_export.patch.apply import bigain_patched

    denoiser = micro_dit()
    denoiser.pipeline = object()  # stands for a pipeline folder's DiffusionPipeline
    ref = sweep_run.network_copy(denoiser)
    assert ref.pipeline is denoiser.pipeline and ref.space is denoiser.space
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(ref.model.parameters(), denoiser.model.parameters()))
    x, t, y = torch.randn(2, 1, 32, 32), torch.full((2,), 500), torch.tensor([1, 2])
    with torch.no_grad():
        plain = denoiser(x, t, y)
        with bigain_patched(denoiser, BiGainConfig.preset("bigain-merge")):
            assert not torch.equal(denoiser(x, t, y), plain)  # the original is patched ...
            torch.testing.assert_close(ref(x, t, y), plain, rtol=0, atol=0)  # ... its copy is not


def test_preflight_calls_run_without_autograd():
    """preflight's batch-1 calls build no autograd graph (a model with trainable weights would
    otherwise keep one per call), like every measurement after them."""
    from bigain_export.sweep.methods import PointOpener

    denoiser = micro_dit().requires_grad_(True)
    modes = []
    denoiser.register_forward_pre_hook(lambda module, args: modes.append(torch.is_grad_enabled()))
    points, _ = expand([parse_entry(e) for e in GRID], ("eager",), (0,))
    opener = PointOpener(denoiser, model_hash="x", paper_alpha=False, engine_dir=None, engine_backend="ort-cpu",
                         batch=2, device="cpu")
    sweep_run.preflight(opener, points, (1, 32, 32), "cpu")
    assert modes and not any(modes)
