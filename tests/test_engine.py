"""Engines: build with manifest and drift, atomicity, and one-line errors for bad files."""

import json
import shutil

import pytest
import torch

from bigain_export import BiGainConfig
from bigain_export.cli.main import main
from bigain_export.engine.build import EngineEpsFn, build_engine, load_engine
from bigain_export.engine.manifest import model_sha256
from bigain_export.errors import EngineError, ExportError
from bigain_export.models.registry import tiny_random_denoiser

CONFIG = BiGainConfig.preset("bigain-both", ratio=0.5)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    denoiser = tiny_random_denoiser("dit")
    engine, report = build_engine(denoiser, CONFIG, tmp_path_factory.mktemp("e") / "engine", backend="ort-cpu", batch=2)
    return denoiser, engine, report


@pytest.fixture
def engine_copy(built, tmp_path):
    path = tmp_path / "engine"
    shutil.copytree(built[1].path, path)
    return path


def test_build_writes_a_complete_engine_with_drift(built):
    denoiser, engine, report = built
    assert sorted(p.name for p in engine.path.iterdir()) == ["config.json", "manifest.json", "model.onnx"]
    manifest = json.loads((engine.path / "manifest.json").read_text())
    assert manifest["config"] == CONFIG.to_dict()
    assert manifest["model"] == "tiny-random:dit" and manifest["model_sha256"] == model_sha256(denoiser)
    assert manifest["spec"] == {"batch": 2, "sample_shape": [1, 32, 32], "precision": "fp32"}
    assert manifest["custom_nodes"] == {"GatedMerge": 10, "TokenUnmerge": 10, "KVPool": 10}
    assert {"torch", "onnx", "onnxruntime", "bigain_export"} <= set(manifest["versions"])
    assert manifest["drift"]["passed"] and report.passed
    assert manifest["drift"]["outputs"][0]["mean_abs"] < 1e-4
    assert not [p for p in engine.path.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_engine_as_eps_function_matches_eager(built):
    denoiser, engine, _ = built
    from bigain_export import apply_bigain, remove_bigain

    g = torch.Generator().manual_seed(7)
    sample, t, labels = torch.randn(2, 1, 32, 32, generator=g), torch.tensor([5, 900]), torch.tensor([3, 10])
    with EngineEpsFn(load_engine(engine.path)) as eps_fn:
        got = eps_fn(sample, t, labels)
    apply_bigain(denoiser, CONFIG)
    with torch.no_grad():
        want = denoiser(sample, t, labels)
    remove_bigain(denoiser)
    assert (got - want).abs().mean() < 1e-4


def test_wrong_input_shape_is_one_line(built):
    with EngineEpsFn(load_engine(built[1].path)) as eps_fn:
        with pytest.raises(EngineError, match=r"input 'sample' has shape \[3, 1, 32, 32\]; this engine takes \[2, 1, 32, 32\]"):
            eps_fn(torch.zeros(3, 1, 32, 32), torch.tensor([1]), torch.zeros(3, dtype=torch.long))


def test_corrupted_onnx_is_named(engine_copy):
    onnx_path = engine_copy / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"model.onnx: corrupted or replaced"):
        load_engine(engine_copy)


def test_missing_files_and_bad_manifest(engine_copy):
    (engine_copy / "model.onnx").unlink()
    with pytest.raises(EngineError, match=r"model.onnx: missing"):
        load_engine(engine_copy)
    (engine_copy / "manifest.json").write_text("{not json")
    with pytest.raises(EngineError, match=r"manifest.json: not a valid manifest"):
        load_engine(engine_copy)
    (engine_copy / "manifest.json").unlink()
    with pytest.raises(EngineError, match=r"manifest.json: missing"):
        load_engine(engine_copy)
    with pytest.raises(EngineError, match=r"no such engine directory"):
        load_engine(engine_copy / "nope")


def test_garbage_onnx_with_matching_hash_fails_in_one_line(engine_copy):
    from bigain_export.engine.manifest import file_sha256

    (engine_copy / "model.onnx").write_bytes(b"not an onnx model")
    manifest = json.loads((engine_copy / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = file_sha256(engine_copy / "model.onnx")
    (engine_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"model.onnx: not a readable ONNX model"):
        load_engine(engine_copy)


def test_config_and_model_mismatch(engine_copy):
    with pytest.raises(EngineError, match=r"built with config 'bigain-merge r=0.5 .*expected 'todo-kv s=2 alpha=1'"):
        load_engine(engine_copy, config=BiGainConfig.preset("todo"))
    with pytest.raises(EngineError, match=r"built from other weights"):
        load_engine(engine_copy, model_hash=model_sha256(tiny_random_denoiser("dit", seed=1)))
    manifest = json.loads((engine_copy / "manifest.json").read_text())
    manifest["config"]["ratio"] = 3.0
    (engine_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"manifest.json: BiGainConfig.ratio=3.0"):
        load_engine(engine_copy)


def test_cli_prints_one_line_for_a_corrupted_engine(engine_copy, capsys):
    (engine_copy / "model.onnx").write_bytes(b"x")
    assert main(["compare", str(engine_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.onnx: corrupted or replaced" in err and "Traceback" not in err


def test_compare_refuses_a_cuda_graph_on_a_cpu_engine_before_loading_the_model(engine_copy, capsys, monkeypatch):
    from bigain_export.models import registry

    monkeypatch.setattr(registry, "load_denoiser", lambda *a, **k: pytest.fail("the model was loaded first"))
    assert main(["compare", str(engine_copy), "--cuda-graph"]) == 2
    assert capsys.readouterr().err.strip() == ("bigain-export compare: error: cuda_graph=True needs an 'ort-cuda' "
                                               "engine; this one runs on 'ort-cpu'")


def test_failed_build_leaves_nothing_and_keeps_the_old_engine(built, tmp_path):
    out = tmp_path / "engine"
    shutil.copytree(built[1].path, out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(ExportError):
        build_engine(built[0], BiGainConfig.preset("tome"), out, backend="ort-cpu")  # random anchors: not exportable
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]


def test_the_weights_hash_is_of_values_so_exact_half_copies_match_and_lossy_casts_do_not():
    module = torch.nn.Linear(8, 4)
    with torch.no_grad():
        module.weight.copy_(module.weight.half().float())  # values fp16 holds exactly
        module.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))  # not exact in fp16
    fp32 = model_sha256(module)
    assert model_sha256(_copy_at(module, torch.float16)) != fp32  # the bias lost bits
    with torch.no_grad():
        module.bias.copy_(module.bias.half().float())
    exact = model_sha256(module)
    assert model_sha256(_copy_at(module, torch.float16)) == exact
    assert model_sha256(_copy_at(module, torch.float64)) != exact  # float64 is hashed as itself


def _copy_at(module, dtype):
    import copy

    return copy.deepcopy(module).to(dtype)


def test_a_loaded_denoisers_recorded_hash_is_void_once_its_weights_change(tmp_path):
    from bigain_export.engine.manifest import weights_sha256
    from bigain_export.models import save_denoiser
    from bigain_export.models.registry import load_denoiser

    folder = save_denoiser(tiny_random_denoiser("dit"), tmp_path / "dit", dtype=torch.float32)
    fp32 = load_denoiser(str(folder))
    fp16 = load_denoiser(str(folder), dtype=torch.float16)
    assert weights_sha256(fp16) == weights_sha256(fp32) == model_sha256(fp32) != model_sha256(fp16)
    with torch.no_grad():
        next(fp16.model.parameters()).mul_(2)  # changed in place after the load: other weights
    assert weights_sha256(fp16) == model_sha256(fp16) != weights_sha256(fp32)
    with torch.inference_mode():
        frozen = load_denoiser(str(folder))  # no version counters to watch: hashed every time
    assert weights_sha256(frozen) == model_sha256(frozen) == weights_sha256(fp32)


@pytest.mark.slow
def test_an_fp16_build_leaves_the_callers_fp32_weights_exact_and_measures_drift_against_them(tmp_path):
    """Exporting at fp16 cast the denoiser there and back: its weights came back rounded, and the
    build's drift was measured against that rounded "eager" model."""
    denoiser = tiny_random_denoiser("dit")
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    build_engine(denoiser, CONFIG, tmp_path / "engine", backend="ort-cpu", batch=2, precision="fp16", drift_feeds_count=1)
    after = denoiser.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert any(not torch.equal(v, v.half().float()) for v in before.values() if v.is_floating_point())
