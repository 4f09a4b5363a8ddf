"""``bigain-export sweep`` end to end on a micro DiT folder and a few images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bigain_export.cli.main import main
from bigain_export.models import save_denoiser
from test_sweep_run import micro_dit, one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-cli")
    model_dir = save_denoiser(micro_dit(), root / "micro-dit", dtype=torch.float32)
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    np.savez(root / "data.npz", images=images.numpy(), labels=np.array([0, 3, 9]))
    return str(model_dir), str(root / "data.npz")


def _sweep(model, data, out, *extra):
    return main(["sweep", "--model", model, "--data", data, "--limit", "3", "--out", str(out), "--schedule", "uniform-2",
                 "--batch-size", "8", "--drift-inputs", "2", "--latency-warmup", "1", "--latency-repeats", "2",
                 "--no-progress", *extra])


def test_sweep_answers_the_budget_and_resumes(model_and_data, tmp_path, capsys):
    model, data = model_and_data
    out = tmp_path / "sweep"
    grid = ["--grid", "none", "bigain-merge:ratio=0.5", "kv=bigain-kv"]
    assert _sweep(model, data, out, *grid, "--no-fid", "--max-acc-drop", "100", "--resume") == 0
    printed = capsys.readouterr().out
    assert "| bigain-merge-0.5 | eager |" in printed and "within accuracy drop <= 100 points" in printed
    report = json.loads((out / "sweep.json").read_text())
    assert [p["name"] for p in report["points"]] == ["none", "bigain-merge-0.5", "kv"]
    assert report["answer"]["point"] in {"none", "bigain-merge-0.5", "kv"}
    assert report["provenance"]["run"]["data"]["source"] == data
    assert report["provenance"]["run"]["model"]["id"] == model
    first = {p["name"]: p["predictions"] for p in report["points"]}

    assert _sweep(model, data, out, *grid, "--no-fid", "--resume") == 0
    again = json.loads((out / "sweep.json").read_text())
    assert {p["name"]: p["predictions"] for p in again["points"]} == first
    assert again["answer"] is None  # no budget asked this time
    assert again["points"][1]["seconds"] == report["points"][1]["seconds"]  # loaded, not measured


def test_alpha_paper_gives_kv_points_the_papers_alpha_per_task(model_and_data, tmp_path):
    model, data = model_and_data
    assert _sweep(model, data, tmp_path, "--grid", "none", "kv=bigain-kv", "todo", "--alpha", "paper", "--no-fid") == 0
    methods = json.loads((tmp_path / "sweep.json").read_text())["provenance"]["methods"]
    assert methods["kv"]["config"]["classify"]["alpha"] == 0.9 and methods["kv"]["config"]["generate"]["alpha"] is None
    assert methods["todo"]["config"]["classify"] == methods["todo"]["config"]["generate"]  # alpha is ToDo's 1
    assert methods["none"]["config"] == {"classify": None, "generate": None}  # unpatched
    assert _sweep(model, data, tmp_path / "fixed", "--grid", "kv=bigain-kv", "--alpha", "0.5", "--no-fid") == 0
    fixed = json.loads((tmp_path / "fixed" / "sweep.json").read_text())["provenance"]["methods"]["kv"]["config"]
    assert fixed["classify"]["alpha"] == fixed["generate"]["alpha"] == 0.5


@pytest.mark.parametrize("extra, message", [
    (["--grid", "fastest"], "--grid entry 'fastest': preset 'fastest' is not known"),
    (["--no-fid", "--max-fid-rise", "5%"], "--no-fid cannot be combined with --fid-seeds or --max-fid-rise"),
    (["--max-fid-rise", "lots"], "--max-fid-rise 'lots' is not allowed"),
    (["--grid", "none", "tome", "--modes", "warp"], None),  # argparse: invalid choice, exit 2
    (["--grid", "bad=bigain-merge:dit_blocks=[7]", "--no-fid"], "dit_blocks has [7], but the model has 3 blocks"),
    (["--grid", "kv=bigain-kv:downsample=3", "--no-fid"], "downsample=3 does not divide the 8x8 token grid"),
    (["--paper-alpha", "--no-fid"], "--paper-alpha was renamed; use --alpha paper"),
    (["--device", "cuda:7", "--no-fid"], "--device 'cuda:7' is not available here"),
])
def test_bad_arguments_fail_at_once_with_one_line(model_and_data, tmp_path, capsys, extra, message):
    model, data = model_and_data
    try:
        rc = _sweep(model, data, tmp_path / "s", *extra)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    if message:
        assert message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "s" / "points").exists()  # nothing measured


def test_out_must_be_a_writable_folder(model_and_data, tmp_path, capsys):
    model, data = model_and_data
    (tmp_path / "file").write_text("x")
    assert _sweep(model, data, tmp_path / "file", "--grid", "none", "--no-fid") == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow
def test_fid_over_seeds_with_the_inception_network(model_and_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from bigain_export.validate.fid import inception_path

    try:
        inception_path()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"FID network not installed: {exc}")
    model, data = model_and_data
    out = tmp_path / "fid"
    assert _sweep(model, data, out, "--grid", "none", "bigain-merge:ratio=0.5", "--steps", "2", "--guidance", "1",
                  "--fid-seeds", "0", "1", "--fid-cache", str(tmp_path / "cache"), "--max-fid-rise", "5%") == 0
    report = json.loads((out / "sweep.json").read_text())
    for p in report["points"]:
        assert set(p["fid_per_seed"]) == {"0", "1"} and p["fid_std"] is not None and p["fid"] > 0
    assert report["provenance"]["fid_reference"]["num_images"] == 3
    assert "FID rise <= 5%" in capsys.readouterr().out


@pytest.mark.slow
def test_engine_points_build_onnx_runtime_engines(model_and_data, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("polygraphy")
    model, data = model_and_data
    out = tmp_path / "eng"
    args = ["--grid", "none", "m=bigain-merge:ratio=0.5", "tome:ratio=0.5", "--modes", "eager", "engine",
            "--backend", "ort-cpu", "--no-fid", "--resume"]
    assert _sweep(model, data, out, *args) == 0
    report = json.loads((out / "sweep.json").read_text())
    by_name = {p["name"]: p for p in report["points"]}
    assert set(by_name) == {"none", "m", "tome-0.5", "engine:none", "engine:m"}
    assert report["skipped"][0]["point"] == "engine:tome-0.5"
    engine = by_name["engine:m"]
    assert engine["engine"]["backend"] == "ort-cpu" and len(engine["engine"]["manifest_sha256"]) == 64
    assert engine["latency"]["timer"] == "perf_counter" and engine["flops_per_call"] == by_name["m"]["flops_per_call"]
    assert engine["predictions"] == by_name["m"]["predictions"]  # the engine classifies like eager
    assert engine["drift"]["reference"] == "none"
    assert engine["vs_eager"]["point"] == "m" and engine["vs_eager"]["same_prediction"] == 1.0
    # against the uncompressed model of its own mode: the engine of none, timed in the same rounds
    # (paired), and eager none for eager m and for the engine of none
    ms = {name: p["latency"]["ms_paired"] for name, p in by_name.items()}
    assert {n: p["latency"]["paired_with"] for n, p in by_name.items()} == {
        "none": "none", "m": "none", "tome-0.5": "none", "engine:none": "none", "engine:m": "engine:none"}
    assert engine["latency"]["speedup"] == pytest.approx(engine["latency"]["reference_ms"] / engine["latency"]["ms"])
    assert engine["vs_reference"]["speedup_in_mode"] == pytest.approx(engine["latency"]["speedup"])
    assert ms["engine:m"] == pytest.approx(ms["engine:none"] / engine["latency"]["speedup"])
    assert by_name["m"]["vs_reference"]["speedup_in_mode"] == pytest.approx(by_name["m"]["vs_reference"]["speedup"])
    assert "| vs uncompressed, same mode |" in (out / "sweep.md").read_text()
    built = sorted(p.name for p in (out / "engines").iterdir())
    assert len(built) == 2
    assert _sweep(model, data, out, *args) == 0  # resumed: nothing rebuilt
    assert sorted(p.name for p in (out / "engines").iterdir()) == built
    # The same points with ORT's fusions: other engines (new folders), facts and manifests say so.
    assert _sweep(model, data, out, *args, "--ort-optimize", "fusions") == 0
    fused = sorted(set(p.name for p in (out / "engines").iterdir()) - set(built))
    assert len(fused) == 2
    manifest = json.loads((out / "engines" / fused[0] / "manifest.json").read_text())
    assert manifest["ort_optimization"]["optimizer"] == "onnxruntime.transformers.optimizer"
    report = json.loads((out / "sweep.json").read_text())
    facts = report["provenance"]["methods"]["engine:m"]["engine"]  # one engine serves both tasks
    assert facts["ort_optimize"] == "fusions" and facts["precision"] == "fp32"


def test_engine_facts_follow_the_model_precision_and_graph_optimization():
    """An fp16 sweep plans fp16 engines with ORT's fusions (``auto``); fp32 ones stay as exported."""
    from bigain_export.models.registry import tiny_random_denoiser
    from bigain_export.sweep.grid import expand, parse_entry
    from bigain_export.sweep.methods import PointOpener

    points, _ = expand([parse_entry("m=bigain-merge:ratio=0.5")], ["engine"], [0])
    point = next(p for p in points if p.mode == "engine")
    for dtype, precision, optimized in ((torch.float32, "fp32", "none"), (torch.float16, "fp16", "fusions")):
        opener = PointOpener(tiny_random_denoiser("dit").to(dtype), model_hash="0" * 64, paper_alpha=False,
                             engine_dir=None, engine_backend="ort-cpu", batch=2, device="cpu")
        facts = opener.method_facts(point)
        assert facts["dtype"] == str(dtype).replace("torch.", "")
        assert (facts["engine"]["precision"], facts["engine"]["ort_optimize"]) == (precision, optimized)


def test_sweep_refuses_a_graph_optimization_that_does_not_apply(capsys, tmp_path):
    rc = main(["sweep", "--out", str(tmp_path / "s"), "--modes", "engine", "--backend", "trt",
               "--ort-optimize", "fusions"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not applicable to --backend trt" in err[0]


def _load_script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_protocol_parses_and_names_the_checkpointed_points():
    """scripts/results_table.py's flags are sweep flags, and its grid names the points whose
    checkpoints docs/results/sweep/<model>/points holds (a renamed point would not resume)."""
    from pathlib import Path

    from bigain_export.cli.main import build_parser
    from bigain_export.cli.sweep import _grid

    table = _load_script("results_table")
    root = Path(__file__).resolve().parents[1]
    for model in ("builtin:fmnist-dit", "builtin:fmnist-unet"):
        args = build_parser().parse_args(["sweep", "--model", model, "--out", "x", *table.published_args(model)])
        assert (args.precision, args.limit, args.fid_images, args.modes) == ("fp16", 2000, 1000, ["eager"])
        points, _ = _grid(args)
        names = {p.name for p in points}
        assert len(points) == 24 and {"none", "bigain-merge-reuse-0.7", "tome-0.7@s2"} <= names
        saved = root / "docs" / "results" / "sweep" / model.split("-")[1] / "points"
        for path in saved.glob("*.json"):
            assert json.loads(path.read_text())["name"] in names, path


def test_sweep_progress_shows_measured_and_missing_parts(tmp_path):
    from bigain_export.sweep.records import PointRecords

    records = PointRecords(tmp_path / "points")
    facts = {"run": {"device": {"name": "cpu"}, "packages": {"torch": "x"}, "model": {"id": "m"}},
             "method": {"dtype": "float32"}}
    chunk = {"accuracy": 0.5, "correct": 5, "num_images": 10, "eps_calls": 1, "predictions": [0] * 10}
    records.save("none", "classify@0", facts, chunk)
    records.save("none", "fid@0", facts, {"fid": 10.0})
    records.save("none", "fid@1", facts, {"fid": 12.0})
    records.save("m", "classify@0", {**facts, "method": {"dtype": "float16"}}, {**chunk, "correct": 2})
    text = _load_script("sweep_progress").render(tmp_path)
    assert "| none | 10 | 50.0 [" in text and "11.0 ± 1.4 (2)" in text
    assert "| m | 10 | 20.0 [" in text and "fid@0, fid@1" in text  # m lacks both FIDs
    assert "dtype: \"float16\", \"float32\"  **(differs between points)**" in text
