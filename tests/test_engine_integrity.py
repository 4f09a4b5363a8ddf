"""Issue 9: an engine folder vouches only for what it holds (items 4, 6, 8, 9, 10)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from bigain_export import BiGainConfig
from bigain_export.engine.build import EngineEpsFn, build_engine, clean_stale_staging, load_engine
from bigain_export.engine.manifest import file_sha256
from bigain_export.errors import ConfigError, EngineError
from bigain_export.models.registry import tiny_random_denoiser
from tiny import cpu_engine, micro_dit

CONFIG = BiGainConfig.preset("bigain-merge")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    denoiser = micro_dit()
    return denoiser, cpu_engine(denoiser, tmp_path_factory.mktemp("e") / "engine", CONFIG)


@pytest.fixture
def engine_copy(built, tmp_path):
    path = tmp_path / "engine"
    shutil.copytree(built[1].path, path)
    return path


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return manifest


# -- item 6: manifest integrity -----------------------------------------------------------------


def test_an_empty_file_list_with_a_swapped_model_is_refused(engine_copy):
    import onnx

    swapped = onnx.load(str(engine_copy / "model.onnx"))
    swapped.doc_string = "not the model this manifest was written for"
    onnx.save_model(swapped, str(engine_copy / "model.onnx"))
    _edit_manifest(engine_copy, files={})
    with pytest.raises(EngineError, match=r"manifest.json: does not list model.onnx"):
        load_engine(engine_copy)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "sub/model.onnx", "a\\b"])
def test_file_names_outside_the_engine_folder_are_refused(engine_copy, name):
    manifest = json.loads((engine_copy / "manifest.json").read_text())
    _edit_manifest(engine_copy, files={**manifest["files"], name: "0" * 64})
    with pytest.raises(EngineError, match=r"file name .* is not allowed; allowed: a plain file name"):
        load_engine(engine_copy)


def test_a_linked_or_unlisted_file_is_refused(engine_copy, tmp_path):
    (engine_copy / "model.onnx.data").write_bytes(b"weights nobody hashed")
    with pytest.raises(EngineError, match=r"model.onnx.data: not listed in manifest.json"):
        load_engine(engine_copy)
    (engine_copy / "model.onnx.data").unlink()
    outside = tmp_path / "outside.onnx"
    shutil.move(engine_copy / "model.onnx", outside)
    os.symlink(outside, engine_copy / "model.onnx")
    with pytest.raises(EngineError, match=r"model.onnx: not a regular file"):
        load_engine(engine_copy)


def test_external_data_must_be_listed(engine_copy):
    import onnx

    model = onnx.load(str(engine_copy / "model.onnx"))
    onnx.save_model(model, str(engine_copy / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    files = {name: file_sha256(engine_copy / name) for name in ("model.onnx", "config.json")}
    _edit_manifest(engine_copy, files=files)
    (engine_copy / "model.onnx.data").rename(engine_copy.parent / "hidden.data")
    with pytest.raises(EngineError, match=r"external data 'model.onnx.data' is not listed"):
        load_engine(engine_copy)
    (engine_copy.parent / "hidden.data").rename(engine_copy / "model.onnx.data")
    _edit_manifest(engine_copy, files={**files, "model.onnx.data": file_sha256(engine_copy / "model.onnx.data")})
    assert load_engine(engine_copy).manifest.files.keys() == {"model.onnx", "config.json", "model.onnx.data"}


def test_the_spec_must_match_the_graph(engine_copy):
    manifest = json.loads((engine_copy / "manifest.json").read_text())
    _edit_manifest(engine_copy, spec={**manifest["spec"], "batch": 4})
    with pytest.raises(EngineError, match=r"graph inputs sample\[2, 1, 32, 32\].* do not match the manifest's spec sample\[4, 1, 32, 32\]"):
        load_engine(engine_copy)


@pytest.mark.parametrize("field, value, said", [
    ("config", {**CONFIG.to_dict(), "ratio": 0.6}, r"config says 'bigain-merge r=0.6.*', but model.onnx was built with 'bigain-merge r=0.5"),
    ("model_sha256", "0" * 64, r"model_sha256 says '0000.*, but model.onnx was built with '[0-9a-f]"),
    ("model", "builtin:fmnist-dit", r"model says 'builtin:fmnist-dit', but model.onnx was built with 'micro-dit'"),
    ("backend", "ort-cuda", r"backend says 'ort-cuda', but model.onnx was built with 'ort-cpu'"),
    ("custom_nodes", {"GatedMerge": 1, "TokenUnmerge": 1}, r"custom_nodes.GatedMerge says 1, but model.onnx was built with 2"),
    ("drift", None, r"drift says None, but model.onnx was built with \{"),
])
def test_a_manifest_edited_after_the_build_disagrees_with_its_graph(engine_copy, field, value, said):
    """The graph records what it was built as and its drift; a hand-edited (still valid) manifest is refused,
    naming the field."""
    _edit_manifest(engine_copy, **{field: value})
    with pytest.raises(EngineError, match=r"manifest.json: " + said + r".*edited after the build or belongs to another engine"):
        load_engine(engine_copy)


def test_a_failed_drift_edited_into_a_pass_is_refused(engine_copy):
    manifest = json.loads((engine_copy / "manifest.json").read_text())
    drift = manifest["drift"]
    assert drift["passed"] is True
    _edit_manifest(engine_copy, drift={**drift, "tolerance": 1.0})  # a looser tolerance than measured with
    with pytest.raises(EngineError, match=r"manifest.json: drift.tolerance says 1.0, but model.onnx was built with 0.0001"):
        load_engine(engine_copy)


def test_a_graph_without_a_build_record_is_refused(engine_copy):
    import onnx

    model = onnx.load(str(engine_copy / "model.onnx"))
    del model.metadata_props[:]
    onnx.save_model(model, str(engine_copy / "model.onnx"))
    _edit_manifest(engine_copy, files={"model.onnx": file_sha256(engine_copy / "model.onnx"),
                                       "config.json": file_sha256(engine_copy / "config.json")})
    with pytest.raises(EngineError, match=r"model.onnx: carries no readable build record \('bigain.build' metadata\); rebuild"):
        load_engine(engine_copy)


def test_another_engines_manifest_beside_this_graph_is_refused(built, tmp_path):
    """Two engines of one model differing only in config: swapping manifests (hashes rewritten) is caught."""
    other, _ = build_engine(built[0], BiGainConfig.preset("bigain-merge", ratio=0.7), tmp_path / "other",
                            backend="ort-cpu", batch=2, drift_feeds_count=1)
    path = tmp_path / "engine"
    shutil.copytree(built[1].path, path)
    manifest = json.loads((other.path / "manifest.json").read_text())
    manifest["files"] = {name: file_sha256(path / name) for name in manifest["files"]}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"config says 'bigain-merge r=0.7.*built with 'bigain-merge r=0.5"):
        load_engine(path)


# -- item 4 (engine side): an engine is checked against the model it is used with -----------


def test_an_engine_of_other_weights_or_shapes_is_refused(built, engine_copy):
    with pytest.raises(EngineError, match="built from other weights"):
        load_engine(engine_copy, denoiser=micro_dit(seed=1))
    with pytest.raises(EngineError, match=r"built for samples \[1, 32, 32\], the model takes"):
        unet = tiny_random_denoiser("unet")
        unet.sample_shape = (4, 16, 16)
        load_engine(engine_copy, denoiser=unet)
    assert load_engine(engine_copy, denoiser=built[0]).manifest.model == "micro-dit"


# -- item 9: values an engine cannot take are named, not passed to the runtime ----------------


@pytest.mark.parametrize("labels, timestep, match", [
    ([99, 0], [5, 5], r"class label 99 is not allowed; allowed: 0 .. 9, or the null label 10"),
    ([1, 2], [5000, 5], r"timestep 5000 is not allowed; allowed: 0 .. 999"),
    ([1, 2], [-1, 5], r"timestep -1 is not allowed"),
])
def test_out_of_range_labels_and_timesteps_are_refused(built, labels, timestep, match):
    with EngineEpsFn(load_engine(built[1].path)) as eps_fn:
        with pytest.raises(EngineError, match=match):
            eps_fn(torch.zeros(2, 1, 32, 32), torch.tensor(timestep), torch.tensor(labels))
        eps_fn(torch.zeros(2, 1, 32, 32), torch.tensor([0, 999]), torch.tensor([9, 10]))  # the edges are fine


# -- item 8: leftovers of killed builds; build targets that are not engines -------------------


def test_leftovers_of_killed_builds_are_removed_by_the_next_build(built, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    leftover = tmp_path / f".engine.building-{pid}-abc123"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"x" * 1000)
    mine = tmp_path / f".other.building-{os.getpid()}-xyz"  # a live build (this process): kept
    mine.mkdir()
    assert clean_stale_staging(tmp_path) == [leftover]
    assert not leftover.exists() and mine.exists()
    (tmp_path / f".engine.building-{pid}-def").mkdir()
    build_engine(built[0], CONFIG, tmp_path / "engine", backend="ort-cpu", drift_feeds_count=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "engine"]


def test_a_build_never_replaces_a_folder_that_is_not_an_engine(built, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match=r"is a folder that is not an engine"):
        build_engine(built[0], CONFIG, tmp_path / "mine", backend="ort-cpu")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


# -- item 10: TensorRT where no GPU can run the plan -----------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_trt_without_a_gpu_is_refused_before_any_work(built, tmp_path):
    with pytest.raises(EngineError, match=r"backend 'trt' runs its plan on an NVIDIA GPU, and no CUDA device is visible"):
        build_engine(built[0], CONFIG, tmp_path / "trt", backend="trt")
    assert list(tmp_path.iterdir()) == []


def test_zero_drift_feeds_are_refused_in_one_line(built):
    from bigain_export.engine.build import measure_drift

    with pytest.raises(ConfigError, match=r"drift feeds=0 is not allowed; allowed: an integer >= 1"):
        measure_drift(built[0], CONFIG, load_engine(built[1].path), feeds=0)
