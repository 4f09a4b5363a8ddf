"""``bigain-export validate`` end to end on a tiny random DiT, then ``check`` on its report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bigain_export.cli.main import main
from bigain_export.models import save_denoiser
from tiny import micro_dit


@pytest.fixture(scope="module")
def tiny_model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate-cli")
    model_dir = save_denoiser(micro_dit(), root / "micro-dit", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    np.savez(root / "data.npz", images=images.numpy(), labels=np.array([0, 3, 9]))
    return str(model_dir), str(root / "data.npz")


def _validate(model, data, out, config, *extra):
    # FID off: the Inception network takes seconds per call on 2 cores.
    batch = [] if "--batch-size" in extra else ["--batch-size", "20"]
    return main([
        "validate", "--model", model, "--data", data, "--config", config, "--limit", "2", "--out", str(out),
        "--schedule", "uniform-2", "--drift-inputs", "3", "--no-fid", "--no-progress", *batch, *extra,
    ])


def test_validate_then_check(tiny_model_and_data, tmp_path, capsys):
    model, data = tiny_model_and_data
    out = tmp_path / "report"
    assert _validate(model, data, out, "bigain-both", "--drift-max-abs", "1e-3") == 0
    printed = capsys.readouterr().out
    assert "eager-none: accuracy" in printed and "eager-same-config: accuracy" in printed
    report = json.loads((out / "report.json").read_text())
    assert list(report["methods"]) == ["eager-none", "eager-same-config"]
    assert report["reference_method"] == "eager-same-config"
    assert report["methods"]["eager-none"]["eps_calls"] == 2 * 10 * 2
    assert report["methods"]["eager-same-config"]["drift"]["max_abs"] == 0.0  # deterministic patched model
    assert report["methods"]["eager-none"]["drift"]["max_abs"] > 0  # BiGain changes the output
    assert "tolerances" not in report  # no engine: the eager methods' drift is BiGain's own, never judged
    assert report["settings"]["run"]["config"]["merge"] == "bigain"

    assert main(["check", str(out), "--baseline", str(out / "report.json")]) == 0
    assert capsys.readouterr().out.startswith("PASS: 2 checks on 2 method(s)")


def test_json_config_and_bad_config(tiny_model_and_data, tmp_path, capsys):
    model, data = tiny_model_and_data
    config = json.dumps({"preset": "bigain-kv", "downsample": 2})
    assert _validate(model, data, tmp_path / "r", config, "--alpha", "paper") == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["settings"]["run"]["config"]["kv"] == "bigain"
    assert report["settings"]["run"]["paper_alpha"] is True
    capsys.readouterr()
    assert _validate(model, data, tmp_path / "r2", "fastest") == 2
    err = capsys.readouterr().err
    assert "--config 'fastest' is neither a preset" in err and err.count("\n") == 1
    assert _validate(model, data, tmp_path / "r3", "none", "--schedule", "quick") == 2
    assert "classifier schedule 'quick'" in capsys.readouterr().err


def test_validate_an_onnx_runtime_engine(tiny_model_and_data, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("polygraphy")
    from bigain_export.config import BiGainConfig
    from bigain_export.engine.build import build_engine
    from bigain_export.models.registry import load_denoiser

    model, data = tiny_model_and_data
    engine_dir = tmp_path / "engine"
    build_engine(load_denoiser(model), BiGainConfig.preset("bigain-merge"), engine_dir, backend="ort-cpu", batch=8,
                 drift_feeds_count=1)
    out = tmp_path / "report"
    assert _validate(model, data, out, "bigain-merge", "--engine", str(engine_dir), "--batch-size", "8",
                     "--drift-max-abs", "1e-4") == 0
    report = json.loads((out / "report.json").read_text())
    engine, eager = report["methods"]["engine"], report["methods"]["eager-same-config"]
    assert engine["classification"]["predictions"] == eager["classification"]["predictions"]
    assert engine["drift"]["max_abs"] < 1e-4 and engine["drift"]["reference"] == "eager-same-config"
    assert report["tolerances"] == {"drift": {"engine": {"mean_abs": 1e-4, "max_abs": 1e-4}}}
    capsys.readouterr()
    check = ["check", str(out), "--baseline", str(out), "--method", "engine", "--baseline-method", "eager-same-config"]
    assert main(check) == 0
    assert capsys.readouterr().out.startswith("PASS")
    # an engine's static batch is the only batch size it takes
    assert _validate(model, data, tmp_path / "r2", "bigain-merge", "--engine", str(engine_dir), "--batch-size", "20") == 2
    assert "--batch-size 20 is not allowed with this engine; allowed: 8" in capsys.readouterr().err


def test_validate_resume_reuses_checkpoints(tiny_model_and_data, tmp_path):
    model, data = tiny_model_and_data
    out = tmp_path / "report"
    assert _validate(model, data, out, "bigain-merge", "--resume") == 0
    first = json.loads((out / "report.json").read_text())
    checkpoints = sorted(p.name for p in (out / "methods").glob("*.json"))
    assert len(checkpoints) == 2
    stamps = {p: p.stat().st_mtime_ns for p in (out / "methods").iterdir()}
    assert _validate(model, data, out, "bigain-merge", "--resume") == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "methods").iterdir()} == stamps  # nothing re-measured
    second = json.loads((out / "report.json").read_text())
    for name in first["methods"]:
        assert second["methods"][name]["classification"] == first["methods"][name]["classification"]
