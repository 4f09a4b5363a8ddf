"""Property-based tests (Hypothesis) of the report and manifest loaders and of the gate.

Every input, however mangled (fields deleted, types swapped, NaN/inf, path tricks, truncation),
either loads as valid or fails with the project's one-line error: never a traceback of another
type. And the gate never passes what its tolerances forbid.

Hypothesis runs derandomized (the same examples on every CI run) and without its example
database (nothing written to the tree).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bigain_export.errors import BigainError, EngineError, ValidationError  # noqa: E402
from bigain_export.validate.gate import Tolerances, check_against_baseline  # noqa: E402
from bigain_export.validate.report import load_report  # noqa: E402
from reports import RUN, make_report, method  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

PATH_TRICKS = ["../../etc/passwd", "/etc/passwd", "", ".", "..", "a/b", "a\\b", "model.onnx", "manifest.json",
               "x\u0000y", "~", "model.onnx/", "./model.onnx"]
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(PATH_TRICKS),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _nodes(obj, prefix=()):
    """Every path into ``obj`` (dict keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _nodes(value, prefix + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _nodes(value, prefix + (index,))


@st.composite
def mangled(draw, base):
    """``base`` with 1-3 random edits: delete a field, swap a value for junk, or rename a key;
    then serialised (NaN/inf as the JSON extensions) and maybe truncated."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        nodes = [p for p in _nodes(data) if p]
        if not nodes:
            break
        path = draw(st.sampled_from(nodes))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["delete", "replace", "rename"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace" or isinstance(parent, list):
            parent[path[-1]] = draw(JUNK)
        else:
            parent[draw(st.sampled_from(PATH_TRICKS + ["extra"]))] = parent.pop(path[-1])
    text = json.dumps(data, allow_nan=True)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, BigainError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc) and str(exc), repr(exc)


# -- reports ------------------------------------------------------------------------------------

SMALL_RUN = copy.deepcopy(RUN)
SMALL_RUN["data"].update(num_images=4, limit=4)
SMALL_RUN["settings"]["fid_images"] = 4
SMALL_RUN["fid_reference"]["num_images"] = 4


def _small_report():
    classified = method(correct=3, n=4, fid=20.0) | {"classification": {"predictions": [0, 1, 2, 0], "labels": [0, 1, 2, 3]}}
    return make_report({"eager-none": method(correct=2, n=4, fid=30.0, drift=(0.5, 0.2, 0.1)),
                        "eager-same-config": classified,
                        "engine": method(correct=3, n=4, fid=20.5, drift=(1e-6, 1e-6, 1e-7))}, run=SMALL_RUN)


BASE_REPORT = _small_report()


@SETTINGS
@given(text=mangled(BASE_REPORT))
def test_report_loader_and_gate_never_trace_back(tmp_path, text):
    path = tmp_path / "report.json"
    path.write_text(text)
    try:
        report = load_report(path)
    except Exception as exc:  # noqa: BLE001  the property: only our one-line errors
        _one_line(exc)
        return
    for a, b in ((report, BASE_REPORT), (BASE_REPORT, report), (report, report)):
        try:
            result = check_against_baseline(a, b, Tolerances(), sources=("r", "b"))
        except Exception as exc:  # noqa: BLE001
            _one_line(exc)
        else:
            assert result.lines() and all("\n" not in line for line in result.lines())


@pytest.mark.parametrize("trick", ["dir-without-report", "missing", "dev-null", "symlink-to-dir", "binary", "huge-nesting"])
def test_report_path_tricks_are_one_line(tmp_path, trick):
    target = tmp_path / "x"
    if trick == "dir-without-report":
        target.mkdir()
    elif trick == "dev-null":
        target = Path(os.devnull)
    elif trick == "symlink-to-dir":
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "report.json").symlink_to(tmp_path)
        target = tmp_path / "d"
    elif trick == "binary":
        target.write_bytes(b"\xff\xfe\x00garbage")
    elif trick == "huge-nesting":
        target.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValidationError) as info:
        load_report(target)
    _one_line(info.value)


@SETTINGS
@given(base_acc=st.integers(0, 100), got_acc=st.integers(0, 100), base_fid=st.floats(0.5, 100), rise=st.floats(-50, 50),
       mean_abs=st.floats(0, 1e-3), acc_tol=st.floats(0, 5), fid_tol=st.floats(0, 10))
def test_the_gate_passes_exactly_when_every_tolerance_holds(base_acc, got_acc, base_fid, rise, mean_abs, acc_tol, fid_tol):
    got_fid = max(0.0, base_fid * (1 + rise / 100))
    baseline = make_report({"eager-same-config": method(correct=base_acc, fid=base_fid),
                            "engine": method(correct=base_acc, fid=base_fid, drift=(0, 0, 0))})
    report = make_report({"eager-same-config": method(correct=base_acc, fid=base_fid),
                          "engine": method(correct=got_acc, fid=got_fid, drift=(mean_abs, 0, mean_abs))})
    result = check_against_baseline(report, baseline, Tolerances(max_acc_drop_pp=acc_tol, max_fid_rise=fid_tol))
    fid_rise = 100 * (got_fid - base_fid) / base_fid
    expected = (base_acc - got_acc <= acc_tol + 1e-9) and (fid_rise <= fid_tol + 1e-9) and mean_abs <= 1e-4 + 1e-9
    assert result.passed == expected, result.lines()


COMPARED = [("model", "sha256"), ("data", "sha256"), ("data", "num_images"), ("settings", "classifier"),
            ("settings", "sampling"), ("settings", "drift"), ("settings", "fid_images"), ("fid_reference",)]


@SETTINGS
@given(path=st.sampled_from(COMPARED), value=JUNK)
def test_a_report_of_other_settings_never_passes(path, value):
    report = copy.deepcopy(BASE_REPORT)
    node = report["provenance"]["run"]
    for key in path[:-1]:
        node = node[key]
    if node[path[-1]] == value:
        return
    node[path[-1]] = value
    try:
        result = check_against_baseline(report, BASE_REPORT)
    except ValidationError as exc:
        _one_line(exc)
        assert "not comparable" in str(exc) or "not a valid" in str(exc)
    else:
        raise AssertionError(f"compared across {path}: {result.lines()}")


# -- manifests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from bigain_export import BiGainConfig
    from bigain_export.engine.build import build_engine
    from tiny import micro_dit

    engine, _ = build_engine(micro_dit(), BiGainConfig.preset("bigain-merge"), tmp_path_factory.mktemp("p") / "engine",
                             backend="ort-cpu", batch=2, drift_feeds_count=1)
    return engine.path


def _manifest(engine_dir) -> dict:
    return json.loads((engine_dir / "manifest.json").read_text())


@SETTINGS
@given(data=st.data())
def test_manifest_loader_never_traces_back(engine_dir, tmp_path_factory, data):
    from bigain_export.engine.build import load_engine

    work = tmp_path_factory.mktemp("m") / "engine"
    shutil.copytree(engine_dir, work)
    (work / "manifest.json").write_text(data.draw(mangled(_manifest(engine_dir))))
    if data.draw(st.booleans()):  # and sometimes the model file too
        onnx_bytes = (work / "model.onnx").read_bytes()
        (work / "model.onnx").write_bytes(onnx_bytes[: data.draw(st.integers(0, len(onnx_bytes)))])
    try:
        engine = load_engine(work)
    except Exception as exc:  # noqa: BLE001  the property: only our one-line errors
        _one_line(exc)
        assert isinstance(exc, EngineError)
    else:
        # what loaded must be what was built: same files, same hashes
        assert engine.manifest.files == _manifest(engine_dir)["files"]
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)


@pytest.mark.parametrize("name", PATH_TRICKS)
def test_listed_file_names_never_leave_the_engine_folder(engine_dir, tmp_path, name):
    from bigain_export.engine.build import load_engine

    work = tmp_path / "engine"
    shutil.copytree(engine_dir, work)
    manifest = _manifest(engine_dir)
    manifest["files"][name] = manifest["files"]["model.onnx"]
    (work / "manifest.json").write_text(json.dumps(manifest))
    opened = []
    import bigain_export.engine.manifest as manifest_module

    real = manifest_module.file_sha256
    manifest_module.file_sha256 = lambda p: (opened.append(Path(p).resolve()), real(p))[1]
    try:
        load_engine(work)
    except EngineError as exc:
        _one_line(exc)
    finally:
        manifest_module.file_sha256 = real
    assert all(p.parent == work.resolve() for p in opened), opened


@pytest.mark.parametrize("value", [[], {}, ["engine"], 3, None])
def test_a_reference_method_of_the_wrong_type_is_one_line(tmp_path, value):
    """Found by this file's Hypothesis run once: ``reference_method: []`` raised TypeError
    (a list is unhashable in ``x in methods``)."""
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**BASE_REPORT, "reference_method": value}))
    with pytest.raises(Exception) as info:
        load_report(path)
    _one_line(info.value)
    assert "reference_method=" in str(info.value)
