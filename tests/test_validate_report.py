"""validate(): methods measured on equal terms; report files (JSON, Markdown, PNG) written atomically."""

from __future__ import annotations

import json

import pytest

from bigain_export.errors import ConfigError, ValidationError
from bigain_export.validate.fid import compute_statistics
from bigain_export.validate.report import SCHEMA, SCHEMA_VERSION, check_report, load_report, write_report
from bigain_export.validate.run import TaskEps, ValidationSettings, validate
from bigain_export.validate.sampling import SamplingConfig
from validate_toys import SCHEDULER_CONFIG, PixelFeatures, PrototypeEps, prototypes, toy_problem

SETTINGS = ValidationSettings(
    num_classes=4, scheduler_config=SCHEDULER_CONFIG, batch_size=8, drift_inputs=5,
    sampling=SamplingConfig(num_steps=5, guidance_scale=2.0, null_label=4),
    tolerances={"drift_max_abs": 0.1, "drift_methods": ["offset"]},
)


def test_validate_measures_every_method_and_writes_the_report(tmp_path):
    images, labels, methods = toy_problem()
    features = PixelFeatures()
    report = validate(methods, images, labels, SETTINGS, tmp_path / "out", feature_fn=features,
                      metadata={"model": "toy"}, progress=False)
    exact, offset = report["methods"]["exact"], report["methods"]["offset"]
    assert report["reference_method"] == "exact"
    assert exact["drift"]["max_abs"] == 0.0
    assert offset["drift"]["max_abs"] == pytest.approx(0.2, abs=1e-5)
    assert offset["drift"]["reference"] == "exact"
    assert exact["num_images"] == 6 and exact["eps_calls"] == 6 * 4 * 20
    assert 0 <= exact["accuracy_ci95"][0] <= exact["accuracy"] <= exact["accuracy_ci95"][1] <= 1
    assert exact["fid"] is not None and offset["fid"] > exact["fid"]  # offset eps drifts the samples
    assert report["settings"]["run"] == {"model": "toy"}
    assert report["settings"]["fid"]["feature_key"] == PixelFeatures.key

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.png", "report.json", "report.md", "samples.png"]
    assert load_report(out) == json.loads((out / "report.json").read_text())
    assert load_report(out)["schema"] == SCHEMA and load_report(out)["schema_version"] == SCHEMA_VERSION
    for png in ("metrics.png", "samples.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| exact |" in md and "| offset |" in md and "samples.png" in md


def test_fid_reference_defaults_to_the_validation_images(tmp_path):
    images, labels, methods = toy_problem()
    features = PixelFeatures()
    given = compute_statistics(images, features)
    a = validate(methods, images, labels, SETTINGS, None, feature_fn=features, progress=False)
    b = validate(methods, images, labels, SETTINGS, None, fid_reference=given, feature_fn=features, progress=False)
    assert a["methods"]["exact"]["fid"] == pytest.approx(b["methods"]["exact"]["fid"])


def test_task_eps_uses_each_function_for_its_task():
    images, labels, methods = toy_problem(num_images=4)
    protos = prototypes(4)
    wrong = PrototypeEps(protos.roll(1, dims=0))
    split = {"ref": methods["exact"], "task": TaskEps(classify=wrong, generate=methods["exact"])}
    report = validate(split, images, labels, SETTINGS, None, feature_fn=PixelFeatures(), progress=False)
    ref, task = report["methods"]["ref"], report["methods"]["task"]
    assert task["classification"]["predictions"] == [(p + 1) % 4 for p in ref["classification"]["predictions"]]
    assert task["fid"] == pytest.approx(ref["fid"])  # generation used the exact function
    assert task["drift"]["max_abs"] > 0  # drift is measured on the classification function


def test_sampling_off_skips_fid():
    images, labels, methods = toy_problem(num_images=3)
    settings = ValidationSettings(num_classes=4, scheduler_config=SCHEDULER_CONFIG, sampling=None, drift_inputs=0)
    report = validate(methods, images, labels, settings, None, progress=False)
    assert report["methods"]["exact"]["fid"] is None and report["methods"]["exact"]["drift"] is None
    assert report["settings"]["fid"] is None and report["methods"]["exact"]["accuracy"] is not None


def test_bad_arguments_are_named():
    images, labels, methods = toy_problem(num_images=3)
    with pytest.raises(ValidationError, match="reference_method='nope'"):
        validate(methods, images, labels, SETTINGS, None, reference_method="nope", progress=False)
    with pytest.raises(ValidationError, match="at least one method"):
        validate({}, images, labels, SETTINGS, None, progress=False)
    with pytest.raises(ConfigError, match="fid_images=1"):
        ValidationSettings(num_classes=4, scheduler_config={}, fid_images=1)


def test_written_report_is_strict_json_and_replaces_atomically(tmp_path):
    from reports import make_report, method

    report = make_report({"m": method(fid=float("nan")) | {"fid_num_images": None}})
    write_report(report, tmp_path)
    text = (tmp_path / "report.json").read_text()
    assert "NaN" not in text and json.loads(text)["methods"]["m"]["fid"] is None
    report["methods"]["m"].update(method(correct=0, fid=None))
    write_report(report, tmp_path)
    report["methods"]["m"].update(method(correct=75, fid=None))
    write_report(report, tmp_path)
    assert load_report(tmp_path / "report.json")["methods"]["m"]["accuracy"] == 0.75
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValidationError, match="'methods' must be a non-empty object"):
        check_report({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "methods": {}}, "x.json")


def test_issue9_a_new_run_in_the_same_folder_leaves_no_stale_files(tmp_path):
    """Issue 9 item 8: the old samples.png does not stay beside a new report without samples, and
    the old report.json is gone the moment a new run starts (a killed run leaves no report)."""
    images, labels, methods = toy_problem(num_images=3)
    validate(methods, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False)
    assert (tmp_path / "samples.png").is_file()
    no_fid = ValidationSettings(num_classes=4, scheduler_config=SCHEDULER_CONFIG, sampling=None, drift_inputs=0)
    validate(methods, images, labels, no_fid, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.png", "report.json", "report.md"]

    class Killed(Exception):
        pass

    def dies(*args):
        assert not (tmp_path / "report.json").exists()  # invalidated before any measuring
        raise Killed

    with pytest.raises(Killed):
        validate({"dies": dies}, images, labels, no_fid, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_issue9_an_unwritable_output_folder_fails_before_measuring(tmp_path):
    images, labels, methods = toy_problem(num_images=3)
    (tmp_path / "file").write_text("x")
    calls = []
    with pytest.raises(ConfigError, match=r"output folder '.*file/out' is not writable"):
        validate({"m": lambda *a: calls.append(a)}, images, labels, SETTINGS, tmp_path / "file" / "out", progress=False)
    with pytest.raises(ConfigError, match=r"output folder '.*file' is a file"):
        validate({"m": lambda *a: calls.append(a)}, images, labels, SETTINGS, tmp_path / "file", progress=False)
    assert calls == []


def test_issue9_a_full_disk_fails_before_measuring(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    images, labels, methods = toy_problem(num_images=3)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 10 << 20, 1 << 20))
    with pytest.raises(ConfigError, match=r"has 1.0 MiB free; at least 16 MiB is needed"):
        validate(methods, images, labels, SETTINGS, tmp_path, progress=False)
