"""``bigain-export check``: exit codes and messages, through the real CLI dispatcher."""

from __future__ import annotations

import copy
import json

import pytest

from bigain_export.cli.main import main
from bigain_export.config import BiGainConfig
from bigain_export.errors import ConfigError, ValidationError
from bigain_export.validate.gate import Tolerances, check_against_baseline
from reports import RUN, facts_for, make_report, method, write


@pytest.fixture
def baseline(tmp_path):
    return write(tmp_path / "baseline.json", make_report({"eager-same-config": method()}))


def _single(tmp_path, **kwargs):
    return write(tmp_path / "r.json", make_report({"eager-same-config": method(**kwargs)}))


def test_pass_prints_one_pass_line(tmp_path, baseline, capsys):
    assert main(["check", _single(tmp_path, correct=72, fid=12.4), "--baseline", baseline, "--max-fid-rise", "1%"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("PASS")


def test_accuracy_drop_fails_with_the_documented_line(tmp_path, capsys):
    baseline = write(tmp_path / "b.json", make_report({"eager-same-config": method(correct=144, n=200)},
                                                      run=_run(num_images=200)))
    report = write(tmp_path / "r.json", make_report({"eager-same-config": method(correct=142, n=200)},
                                                    run=_run(num_images=200)))
    assert main(["check", report, "--baseline", baseline, "--max-acc-drop", "0.5"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL accuracy: 71.00% vs baseline 72.00% (drop 1.00 pp > 0.50 pp)"
    assert main(["check", report, "--baseline", baseline, "--max-acc-drop", "1.0"]) == 0  # equal to the bound


def test_fid_rise_relative_and_absolute(tmp_path, baseline, capsys):
    report = _single(tmp_path, fid=12.5)
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "1%"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL fid: 12.500 vs baseline 12.300 (rise 1.63% > 1.00%)"
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "2%"]) == 0
    capsys.readouterr()
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "0.1"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL fid: 12.500 vs baseline 12.300 (rise 0.2 > 0.1)"
    assert main(["check", report, "--baseline", baseline, "--max-fid-rise", "0.25"]) == 0


def test_one_line_per_violation_tagged_by_method(tmp_path, capsys):
    baseline = write(tmp_path / "b.json", make_report({"eager-none": method(), "eager-same-config": method()}))
    report = write(tmp_path / "r.json", make_report({"eager-none": method(correct=60, fid=20.0),
                                                     "eager-same-config": method()}))
    assert main(["check", report, "--baseline", baseline]) == 1
    assert capsys.readouterr().out.strip().splitlines() == [
        "FAIL accuracy: 60.00% vs baseline 72.00% (drop 12.00 pp > 0.50 pp) [eager-none]",
        "FAIL fid: 20.000 vs baseline 12.300 (rise 62.60% > 1.00%) [eager-none]",
    ]


# -- issue 9 item 2: a method of the baseline missing from the report ---------------------------


def test_a_baseline_method_missing_from_the_report_fails(tmp_path, capsys):
    three = {"eager-none": method(), "eager-same-config": method(), "engine": method(drift=(1e-6, 1e-6, 1e-7))}
    baseline = write(tmp_path / "b.json", make_report(three))
    report = write(tmp_path / "r.json", make_report({k: v for k, v in three.items() if k != "engine"}))
    assert main(["check", report, "--baseline", baseline]) == 1
    assert capsys.readouterr().out.strip() == (
        "FAIL method 'engine': in the baseline, missing from the report (name the methods to compare with --method)")
    # naming the methods to compare is the way to check a subset
    assert main(["check", report, "--baseline", baseline, "--method", "eager-same-config"]) == 0


# -- issue 9 item 3: incomparable settings are refused, inconsistent reports too -----------------


def _run(**changes):
    run = copy.deepcopy(RUN)
    if "num_images" in changes:
        n = changes.pop("num_images")
        run["data"].update(num_images=n, limit=n)
        run["settings"]["fid_images"] = n
        run["fid_reference"]["num_images"] = n
    for path, value in changes.items():
        node = run
        *parents, leaf = path.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return run


@pytest.mark.parametrize("change, named", [
    ({"model__sha256": "b" * 64}, "model.sha256 bbbbbbbbbbbb… vs aaaaaaaaaaaa…"),
    ({"settings__sampling": {**RUN["settings"]["sampling"], "num_steps": 20}}, "settings.sampling.num_steps 20 vs 50"),
    ({"settings__classifier": {**RUN["settings"]["classifier"], "seed": 1}}, "settings.classifier.seed 1 vs 0"),
    ({"data__sha256": "c" * 64}, "data.sha256 cccccccccccc… vs dddddddddddd…"),
    ({"fid_reference": None}, "fid_reference null vs"),
])
def test_reports_measured_on_other_settings_are_refused(tmp_path, baseline, capsys, change, named):
    report = write(tmp_path / "r.json", make_report({"eager-same-config": method()}, run=_run(**change)))
    assert main(["check", report, "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "are not comparable" in err and named in err


def test_one_image_against_a_baseline_of_eight_is_refused(tmp_path, capsys):
    baseline = write(tmp_path / "b.json", make_report({"eager-same-config": method(correct=6, n=8)}, run=_run(num_images=8)))
    report = write(tmp_path / "r.json", make_report({"eager-same-config": method(correct=1, n=1, fid=None)},
                                                    run=_run(num_images=1)))
    assert main(["check", report, "--baseline", baseline]) == 2
    assert "data.num_images 1 vs 8" in capsys.readouterr().err


def test_another_ratio_or_engine_is_refused(tmp_path, capsys):
    other = BiGainConfig.preset("bigain-merge", ratio=0.7)
    base = {"eager-same-config": method(), "engine": method(drift=(1e-6, 1e-6, 1e-7))}
    baseline = write(tmp_path / "b.json", make_report(base))
    report = write(tmp_path / "r.json", make_report(
        base, facts={"eager-same-config": facts_for("eager-same-config", other), "engine": facts_for("engine", other)}))
    assert main(["check", report, "--baseline", baseline]) == 2
    assert "method eager-same-config: config.classify.ratio 0.7 vs 0.5" in capsys.readouterr().err
    trt = facts_for("engine")
    trt["engine"] = {**trt["engine"], "backend": "trt", "precision": "fp16"}
    report = write(tmp_path / "r.json", make_report(base, facts={"engine": trt}))
    assert main(["check", report, "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert "method engine: engine.backend trt vs ort-cpu" in err and "engine.precision fp16 vs fp32" in err


def test_a_rebuilt_engine_of_the_same_build_is_comparable(tmp_path):
    base = {"eager-same-config": method(), "engine": method(drift=(1e-6, 1e-6, 1e-7))}
    rebuilt = facts_for("engine")
    rebuilt["engine"] = {**rebuilt["engine"], "manifest_sha256": "9" * 64, "path": "/elsewhere"}
    report = make_report(base, facts={"engine": rebuilt}, run=_run(packages={"bigain_export": "0.2.0"}))
    result = check_against_baseline(report, make_report(base))
    assert result.passed and any("packages" in note for note in result.notes)


def test_a_report_whose_accuracy_contradicts_its_counts_is_refused(tmp_path, baseline, capsys):
    report = make_report({"eager-same-config": method()})
    report["methods"]["eager-same-config"].update(accuracy=1.0)
    path = write(tmp_path / "r.json", report)
    assert main(["check", path, "--baseline", baseline]) == 2
    assert "accuracy=1.0 contradicts its counts 72/100 = 0.72" in capsys.readouterr().err


def test_a_report_without_provenance_cannot_be_judged(tmp_path, baseline, capsys):
    report = make_report({"eager-same-config": method()})
    report["provenance"]["run"]["model"] = None
    assert main(["check", write(tmp_path / "r.json", report), "--baseline", baseline]) == 2
    assert "report does not say which model it measured" in capsys.readouterr().err


# -- issue 9 item 7: engine drift is judged by default, eager drift never by design -------------


def test_engine_drift_is_judged_by_default_with_the_precision_tolerance(tmp_path, capsys):
    good = {"eager-none": method(drift=(0.5, 0.3, 0.1)), "eager-same-config": method(drift=(0, 0, 0)),
            "engine": method(drift=(1e-5, 1e-6, 2e-6))}
    report = make_report(good)
    assert report["tolerances"] == {"drift": {"engine": {"mean_abs": 1e-4}}}
    path = write(tmp_path / "r.json", report)
    assert main(["check", path, "--baseline", path]) == 0  # eager-none's drift is BiGain's, not judged
    bad = dict(good, engine=method(drift=(3e-3, 1e-3, 3e-4)))
    path = write(tmp_path / "bad.json", make_report(bad))
    assert main(["check", path, "--baseline", path]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "FAIL drift mean_abs: 0.0003 > 0.0001 (vs eager-same-config) [engine]"
    # the command line bounds engines (never the eager methods) on top of the report's tolerance
    path = write(tmp_path / "r.json", report)
    assert main(["check", path, "--baseline", path, "--drift-max-abs", "1e-6"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL drift max_abs: 1e-05 > 1e-06 (vs eager-same-config) [engine]"


def test_engine_without_measured_engine_drift_fails(tmp_path, capsys):
    methods = {"eager-same-config": method(), "engine": method()}  # drift inputs 0
    path = write(tmp_path / "r.json", make_report(methods, run=_run(settings__drift={"inputs": 0, "seed": 0})))
    assert main(["check", path, "--baseline", path]) == 1
    assert "FAIL drift: engine drift of 'engine' not measured [engine]" in capsys.readouterr().out


def test_method_pairing_options(tmp_path, capsys):
    baseline = write(tmp_path / "b.json", make_report({"eager-same-config": method()}))
    report = write(tmp_path / "r.json", make_report({"eager-same-config": method(),
                                                     "engine": method(correct=70, drift=(0, 0, 0))}))
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
    (json.dumps({"schema": "bigain-export/validation-report", "schema_version": 1, "methods": {}}),
     "schema_version=1 (written before reports recorded what they measured)"),
    ('{"schema": NaN}', "non-standard JSON constant NaN"),
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


def test_missing_metric_in_report_fails_and_nothing_to_compare_is_an_error(tmp_path):
    base = make_report({"eager-same-config": method()})
    report = make_report({"eager-same-config": method(fid=None)})
    result = check_against_baseline(report, base)
    assert not result and result.lines() == ["FAIL fid: missing in report, baseline 12.300"]
    empty = make_report({"eager-same-config": method(fid=None) | {"accuracy": None, "accuracy_ci95": None}})
    with pytest.raises(ValidationError, match="nothing to compare"):
        check_against_baseline(report, empty)


def test_methods_with_one_engine_per_task_are_compared_per_task(tmp_path):
    """A method whose classification and generation run different engines (the paper's alpha
    per task): its engine drift is judged, and another engine for either task is refused."""
    from bigain_export.validate.provenance import method_facts

    from reports import ENGINE

    kv = BiGainConfig.preset("bigain-kv")
    per_task = {"classify": kv.for_task("classification"), "generate": kv.for_task("generation")}
    engines = {task: {**ENGINE, "config": c.to_dict()} for task, c in per_task.items()}
    facts = {"eager-same-config": method_facts(per_task), "engine": method_facts(per_task, backend="ort-cpu", engine=engines)}
    methods = {"eager-same-config": method(), "engine": method(drift=(1e-6, 1e-6, 5e-5))}
    report = make_report(methods, facts=facts)
    assert report["tolerances"] == {"drift": {"engine": {"mean_abs": 1e-4}}}
    assert check_against_baseline(report, report).passed
    other = copy.deepcopy(facts)
    other["engine"]["engine"]["generate"]["precision"] = "fp16"
    with pytest.raises(ValidationError, match=r"method engine: generate engine.precision fp16 vs fp32"):
        check_against_baseline(make_report(methods, facts=other), report)
