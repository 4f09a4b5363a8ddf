"""Issue 9 through the command line: a resumed run never reuses another run's results (item 1),
validate --engine checks that the engine belongs to the model (item 4), and ``info``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bigain_export.cli.main import main
from bigain_export.config import BiGainConfig
from bigain_export.models import save_denoiser
from tiny import micro_dit

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from bigain_export.engine.build import build_engine
    from bigain_export.models.registry import load_denoiser

    root = tmp_path_factory.mktemp("trust")
    model = save_denoiser(micro_dit(), root / "micro-dit", dtype=torch.float32)
    other = save_denoiser(micro_dit(seed=1), root / "other-dit", dtype=torch.float32)  # same config, other weights
    g = torch.Generator().manual_seed(0)
    np.savez(root / "data.npz", images=(torch.rand(3, 1, 32, 32, generator=g) * 2 - 1).numpy(), labels=np.array([0, 3, 9]))
    engines = {}
    for name in ("bigain-merge", "bigain-kv"):
        engines[name] = root / f"engine-{name}"
        build_engine(load_denoiser(str(model)), BiGainConfig.preset(name), engines[name], backend="ort-cpu", batch=4,
                     drift_feeds_count=1)
    return {"model": str(model), "other": str(other), "data": str(root / "data.npz"), "engines": engines}


def _validate(setup, out, *extra):
    return main(["validate", "--data", setup["data"], "--limit", "2", "--out", str(out), "--schedule", "uniform-2",
                 "--drift-inputs", "4", "--no-fid", "--no-progress", *extra])


def _numbers(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    return {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in report["methods"].items()}, report


def test_issue9_resume_with_another_engine_or_model_measures_again(setup, tmp_path):
    shared = tmp_path / "shared"
    merge, kv = str(setup["engines"]["bigain-merge"]), str(setup["engines"]["bigain-kv"])
    assert _validate(setup, shared, "--resume", "--config", "bigain-merge", "--engine", merge, "--batch-size", "4") == 0
    # Same folder, another engine (and with it another config): nothing of the first run is reported.
    assert _validate(setup, shared, "--resume", "--config", "bigain-kv", "--engine", kv, "--batch-size", "4") == 0
    assert _validate(setup, tmp_path / "fresh", "--config", "bigain-kv", "--engine", kv, "--batch-size", "4") == 0
    resumed, report = _numbers(shared)
    fresh, _ = _numbers(tmp_path / "fresh")
    assert resumed == fresh
    assert report["provenance"]["methods"]["engine"]["engine"]["config"]["kv"] == "bigain"
    assert report["settings"]["run"]["config"]["kv"] == "bigain"
    # Same folder, another model of the same config: every method is measured again.
    other = ("--model", setup["other"], "--config", "bigain-kv", "--batch-size", "4")
    assert _validate(setup, shared, "--resume", *other) == 0
    assert _validate(setup, tmp_path / "fresh-other", *other) == 0
    assert _numbers(shared)[0] == _numbers(tmp_path / "fresh-other")[0]


def test_issue9_validate_takes_model_and_config_from_the_engine(setup, tmp_path):
    assert _validate(setup, tmp_path / "r", "--engine", str(setup["engines"]["bigain-kv"])) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["settings"]["run"]["model"] == setup["model"]
    assert report["provenance"]["methods"]["eager-same-config"]["config"]["classify"]["kv"] == "bigain"
    assert report["tolerances"] == {"drift": {"engine": {"mean_abs": 1e-4}}}
    assert main(["check", str(tmp_path / "r"), "--baseline", str(tmp_path / "r")]) == 0


def test_issue9_an_engine_of_other_weights_or_config_is_refused(setup, tmp_path, capsys):
    engine = str(setup["engines"]["bigain-merge"])
    assert _validate(setup, tmp_path / "r", "--engine", engine, "--model", setup["other"]) == 2
    assert "built from other weights" in capsys.readouterr().err
    assert _validate(setup, tmp_path / "r", "--engine", engine, "--config", "bigain-kv") == 2
    assert "--config 'bigain-kv s=2 alpha=t-scheduled' does not match the engine's 'bigain-merge r=0.5" in capsys.readouterr().err
    assert _validate(setup, tmp_path / "r", "--engine", engine, "--ratio", "0.7") == 2
    assert "does not match the engine's" in capsys.readouterr().err
    assert _validate(setup, tmp_path / "r", "--engine", str(setup["engines"]["bigain-kv"]), "--alpha", "paper") == 2
    assert "--alpha paper gives the eager model a per-task alpha" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.json").exists()


@pytest.mark.slow
def test_issue9_a_unet_engine_against_the_default_dit_is_refused(tmp_path, capsys):
    from bigain_export.engine.build import build_engine
    from bigain_export.models.registry import tiny_random_denoiser

    engine = tmp_path / "unet-engine"
    build_engine(tiny_random_denoiser("unet"), BiGainConfig.preset("bigain-merge"), engine, backend="ort-cpu", batch=2,
                 drift_feeds_count=1)
    assert main(["validate", "--engine", str(engine), "--model", "builtin:fmnist-dit", "--out", str(tmp_path / "r"),
                 "--no-fid"]) == 2
    assert "built from other weights" in capsys.readouterr().err
    assert main(["compare", str(engine), "--model", "builtin:fmnist-dit"]) == 2
    assert "built from other weights" in capsys.readouterr().err


def test_info_says_what_an_engine_is_and_whether_it_verifies(setup, tmp_path, capsys):
    engine = tmp_path / "engine"
    shutil.copytree(setup["engines"]["bigain-kv"], engine)
    assert main(["info", str(engine)]) == 0
    out = capsys.readouterr().out
    assert f"model:      {setup['model']}" in out and "config:     bigain-kv s=2 alpha=t-scheduled" in out
    assert "backend:    ort-cpu, precision fp32" in out and "sample [4, 1, 32, 32] float32" in out
    assert "drift:      PASS vs eager" in out and "model.onnx" in out and "verified:   yes" in out
    assert main(["info", str(engine), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] and data["files"]["model.onnx"]["verified"]
    onnx_path = engine / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    assert main(["info", str(engine)]) == 1
    out = capsys.readouterr().out
    assert "NOT VERIFIED" in out and "verified:   NO:" in out and "corrupted or replaced" in out
    (engine / "manifest.json").write_text("{")
    assert main(["info", str(engine)]) == 2
    assert "not a valid manifest" in capsys.readouterr().err


@pytest.mark.slow
def test_an_fp16_engine_validates_at_either_precision_of_its_fp32_weights(setup, tmp_path, capsys):
    """The weights' identity is taken before --precision casts them: the fp16 engine that `build`
    made from an fp32 folder belongs to that folder at --precision fp16 too (it was refused)."""
    from bigain_export.engine.manifest import model_sha256, weights_sha256
    from bigain_export.models.registry import load_denoiser

    engine = tmp_path / "engine-fp16"
    assert main(["build", "--model", setup["model"], "--config", "bigain-kv", "--backend", "ort-cpu", "--batch-size", "4",
                 "--precision", "fp16", "--drift-inputs", "2", "--out", str(engine)]) == 0
    manifest = json.loads((engine / "manifest.json").read_text())
    fp32 = load_denoiser(setup["model"])
    assert manifest["model_sha256"] == weights_sha256(fp32) == model_sha256(fp32)  # fp32 loads hash as before
    hashes = {}
    for precision in ("fp16", "fp32"):
        out = tmp_path / f"r-{precision}"
        assert _validate(setup, out, "--engine", str(engine), "--precision", precision) == 0, capsys.readouterr().err
        hashes[precision] = json.loads((out / "report.json").read_text())["provenance"]["run"]["model"]["sha256"]
    assert hashes == {"fp16": manifest["model_sha256"], "fp32": manifest["model_sha256"]}
    # other weights at fp16 are still other weights
    assert _validate(setup, tmp_path / "r-other", "--engine", str(engine), "--model", setup["other"],
                     "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert "built from other weights" in err and "before 2026-12-02 from fp32 weights" in err and "rebuild it" in err
