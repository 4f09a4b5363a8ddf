"""``bigain-export check``: exit codes and messages, through the real CLI dispatcher."""

from __future__ import annotations

import json

import pytest

from bigain_export.cli.main import main
from bigain_export.errors import ConfigError, ValidationError
from bigain_export.validate.gate import Tolerances, check_against_baseline
from bigain_export.validate.report import build_report


def _report(path, methods, tolerances=None, reference="eager-none"):
    report = build_report(methods, reference_method=reference, settings={}, tolerances=tolerances)
    path.write_text(json.dumps(report))
    return str(path)


def _method(accuracy=0.72, fid=12.3, drift=None):
    entry = {"accuracy": accuracy, "accuracy_ci95": [0.6, 0.8], "num_images": 100, "fid": fid}
    if drift is not None:
        entry["drift"] = {"max_abs": drift[0], "rel_l2": drift[1], "reference": "eager-none"}
    return entry


@pytest.fixture
def baseline(tmp_path):
    return _report(tmp_path / "baseline.json", {"engine": _method()})


def test_pass_prints_one_pass_line(tmp_path, baseline, capsys):
    report = _report(tmp_path / "r.json", {"engine": _method(accuracy=0.7151, fid=12.4)})
    assert main(["check", report, "--baseline", baseline]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("PASS")


def test_accuracy_drop_fails_with_the_documented_line(tmp_path, baseline, capsys):
    report = _report(tmp_path / "r.json", {"engine": _method(accuracy=0.712)})
    assert main(["check", report, "--baseline", baseline, "--max-acc-drop", "0.5"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL accuracy: 71.20% vs baseline 72.00% (drop 0.80 pp > 0.50 pp)"


def test_drop_equal_to_the_tolerance_passes(tmp_path, baseline):
    report = _report(tmp_path / "r.json", {"engine": _method(accuracy=0.715)})
    assert main(["check", report, "--baseline", baseline, "--max-acc-drop", "0.5"]) == 0


def test_fid_rise_relative_and_absolute(tmp_path, baseline, capsys):
    report = _report(tmp_path / "r.json", {"engine": _method(fid=12.5)})
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "1%"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL fid: 12.500 vs baseline 12.300 (rise 1.63% > 1.00%)"
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "2%"]) == 0
    capsys.readouterr()
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "0.1"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL fid: 12.500 vs baseline 12.300 (rise 0.2 > 0.1)"
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "0.25"]) == 0


def test_one_line_per_violation_tagged_by_method(tmp_path, capsys):
    baseline = _report(tmp_path / "b.json", {"a": _method(), "b": _method()})
    report = _report(tmp_path / "r.json", {"a": _method(accuracy=0.6, fid=20.0), "b": _method()})
    assert main(["check", report, "--baseline", baseline]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "FAIL accuracy: 60.00% vs baseline 72.00% (drop 12.00 pp > 0.50 pp) [a]",
        "FAIL fid: 20.000 vs baseline 12.300 (rise 62.60% > 1.00%) [a]",
    ]


def test_drift_tolerances_from_the_report_and_the_command_line(tmp_path, baseline, capsys):
    methods = {"eager-none": _method(drift=(0.0, 0.0)), "engine": _method(drift=(0.03, 0.002))}
    both = _report(tmp_path / "b2.json", {"eager-none": _method(), "engine": _method()})
    report = _report(tmp_path / "r.json", methods, tolerances={"drift_max_abs": 0.01, "drift_methods": ["engine"]})
    assert main(["check", report, "--baseline", both]) == 1
    assert capsys.readouterr().out.strip() == "FAIL drift max_abs: 0.03 > 0.01 (vs eager-none) [engine]"
    assert main(["check", report, "--baseline", both, "--max-drift-abs", "0.05"]) == 0
    capsys.readouterr()
    assert main(["check", report, "--baseline", both, "--max-drift-abs", "0.05", "--max-drift-rel", "1e-3"]) == 1
    assert "FAIL drift rel_l2: 0.002 > 0.001" in capsys.readouterr().out


def test_method_pairing_options(tmp_path, capsys):
    baseline = _report(tmp_path / "b.json", {"eager-same-config": _method(accuracy=0.72)})
    report = _report(tmp_path / "r.json", {"eager-same-config": _method(), "engine": _method(accuracy=0.70)})
    argv = ["check", report, "--baseline", baseline, "--method", "engine", "--baseline-method", "eager-same-config"]
    assert main(argv) == 1
    assert capsys.readouterr().out.startswith("FAIL accuracy: 70.00% vs baseline 72.00%")
    assert main(["check", report, "--baseline", baseline]) == 2  # 'engine' has no baseline of its name
    err = capsys.readouterr().err
    assert "b.json: no method 'engine'" in err and err.count("\n") == 1


@pytest.mark.parametrize("content, match", [
    (None, "cannot read report"),
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": "other"}), "schema='other'"),
    (json.dumps({"schema": "bigain-export/validation-report", "schema_version": 99, "methods": {}}), "schema_version=99"),
    (json.dumps({"schema": "bigain-export/validation-report", "schema_version": 1,
                 "methods": {"m": {"accuracy": 72.0}}}), "accuracy=72.0"),
])
def test_unreadable_or_invalid_files_exit_2_naming_the_file(tmp_path, baseline, capsys, content, match):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    assert main(["check", str(path), "--baseline", baseline]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.json" in err and match in err
    assert main(["check", baseline, "--baseline", str(path)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_bad_tolerance_values_exit_2(tmp_path, baseline, capsys):
    assert main(["check", baseline, "--baseline", baseline, "--max-fid-rise", "lots"]) == 2
    assert "--max-fid-rise 'lots'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_acc_drop_pp=-1"):
        Tolerances(max_acc_drop_pp=-1)


def test_missing_metric_in_report_fails_and_nothing_to_compare_is_an_error(tmp_path, baseline):
    report = build_report({"engine": {"accuracy": 0.72}}, reference_method="engine", settings={})
    base = json.loads(open(baseline).read())
    result = check_against_baseline(report, base)
    assert not result and result.lines() == ["FAIL fid: missing in report, baseline 12.300"]
    empty = build_report({"engine": {}}, reference_method="engine", settings={})
    with pytest.raises(ValidationError, match="nothing to compare"):
        check_against_baseline(report, empty)
