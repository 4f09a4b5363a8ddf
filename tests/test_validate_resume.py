"""validate(resume=True): finished methods are checkpointed; a rerun skips them; Deferred methods
are opened only when measured."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from bigain_export.errors import ValidationError
from bigain_export.validate.run import Deferred, ValidationSettings, validate
from bigain_export.validate.sampling import SamplingConfig
from validate_toys import SCHEDULER_CONFIG, PixelFeatures, toy_problem, toy_provenance

SETTINGS = ValidationSettings(
    num_classes=4, scheduler_config=SCHEDULER_CONFIG, batch_size=8, drift_inputs=5,
    sampling=SamplingConfig(num_steps=5, guidance_scale=2.0, null_label=4),
)


class Opener:
    """A Deferred's factory that counts opens/closes and can fail after yielding (a killed run)."""

    def __init__(self, method, fail: bool = False):
        self.method, self.fail = method, fail
        self.opened = self.closed = 0

    @contextlib.contextmanager
    def __call__(self):
        self.opened += 1
        try:
            if self.fail:
                raise RuntimeError("engine build failed")
            yield self.method
        finally:
            self.closed += 1


PROV_NAMES = ("exact", "offset", "tome-0.3", "tome-0.7")


def _measured(report):
    """The report's method entries without wall times (which differ between runs)."""
    return {name: {k: v for k, v in entry.items() if k != "seconds"} for name, entry in report["methods"].items()}


def test_a_rerun_loads_checkpoints_instead_of_measuring(tmp_path):
    images, labels, methods = toy_problem()
    first = validate(methods, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))
    assert len(list((tmp_path / "methods").glob("*.json"))) == 2
    assert len(list((tmp_path / "methods").glob("*.npz"))) == 2  # sample grids, for samples.png

    never = {name: Deferred(Opener(None, fail=True)) for name in methods}  # would raise if opened
    second = validate(never, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))
    assert all(opener.open.opened == 0 for opener in never.values())
    assert _measured(second) == _measured(first)
    assert (tmp_path / "samples.png").is_file()


def test_an_interrupted_run_resumes_after_the_last_finished_method(tmp_path):
    images, labels, methods = toy_problem()
    exact, offset = Opener(methods["exact"]), Opener(methods["offset"], fail=True)
    with pytest.raises(RuntimeError, match="engine build failed"):
        validate({"exact": Deferred(exact), "offset": Deferred(offset)}, images, labels, SETTINGS, tmp_path,
                 feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))
    assert not (tmp_path / "report.json").exists()  # no report from a run that did not finish
    assert exact.closed == exact.opened  # every open was closed, also on failure

    exact_again, offset_again = Opener(methods["exact"]), Opener(methods["offset"])
    report = validate({"exact": Deferred(exact_again), "offset": Deferred(offset_again)}, images, labels, SETTINGS,
                      tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))
    # "exact" is checkpointed: opened only as the drift reference for "offset", never re-measured.
    assert exact_again.opened == 1 and offset_again.opened == 1
    plain = validate(methods, images, labels, SETTINGS, None, feature_fn=PixelFeatures(), progress=False)
    assert _measured(report) == _measured(plain)


def test_checkpoints_of_other_settings_or_images_are_not_used(tmp_path):
    images, labels, methods = toy_problem()
    validate(methods, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))

    for settings, imgs in ((dataclasses.replace(SETTINGS, classifier_seed=1), images), (SETTINGS, images * 0.5)):
        openers = {name: Opener(method) for name, method in methods.items()}
        validate({n: Deferred(o) for n, o in openers.items()}, imgs, labels, settings, tmp_path,
                 feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))
        assert all(o.opened >= 1 for o in openers.values())


def test_deferred_methods_are_opened_once_each_without_resume(tmp_path):
    images, labels, methods = toy_problem()
    openers = {name: Opener(method) for name, method in methods.items()}
    report = validate({n: Deferred(o) for n, o in openers.items()}, images, labels, SETTINGS, None,
                      feature_fn=PixelFeatures(), progress=False)
    plain = validate(methods, images, labels, SETTINGS, None, feature_fn=PixelFeatures(), progress=False)
    assert _measured(report) == _measured(plain)
    # The reference ("exact") is opened once more for the drift reference outputs.
    assert openers["exact"].opened == 2 and openers["offset"].opened == 1
    assert all(o.closed == o.opened for o in openers.values())


def test_resume_needs_an_output_folder():
    images, labels, methods = toy_problem()
    with pytest.raises(ValidationError, match="resume=True needs out_dir"):
        validate(methods, images, labels, SETTINGS, None, progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))


def test_method_names_that_differ_after_a_dot_get_their_own_checkpoints(tmp_path):
    images, labels, methods = toy_problem()
    dotted = {"tome-0.3": methods["exact"], "tome-0.7": methods["offset"]}
    first = validate(dotted, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))
    assert len(list((tmp_path / "methods").glob("*.json"))) == 2
    never = {name: Deferred(Opener(None, fail=True)) for name in dotted}
    second = validate(never, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
                     provenance=toy_provenance(PROV_NAMES))
    assert _measured(second) == _measured(first)


def _prov(**method_extra):
    return toy_provenance(PROV_NAMES, **method_extra)


def test_issue9_checkpoints_of_another_method_model_or_engine_are_not_reused(tmp_path):
    """Issue 9 item 1: the same --out with another config/engine/model re-measures every method."""
    import dataclasses as dc

    images, labels, methods = toy_problem()
    validate(methods, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
             provenance=_prov())
    base = _prov()
    other_model = dc.replace(base, model={**base.model, "sha256": "1" * 64})
    other_engine = _prov(engine_manifest="e2")  # every method's facts changed
    for provenance in (other_model, other_engine):
        openers = {name: Opener(method) for name, method in methods.items()}
        report = validate({n: Deferred(o) for n, o in openers.items()}, images, labels, SETTINGS, tmp_path,
                          feature_fn=PixelFeatures(), progress=False, resume=True, provenance=provenance)
        assert all(o.opened >= 1 for o in openers.values())
        assert report["provenance"]["methods"]["exact"] == dict(provenance.methods["exact"])
        assert report["provenance"]["run"]["model"]["sha256"] == provenance.model["sha256"]


def test_issue9_a_changed_drift_reference_re_measures_the_methods_that_depend_on_it(tmp_path):
    images, labels, methods = toy_problem()
    validate(methods, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
             provenance=_prov())
    changed = _prov()
    changed = dataclasses.replace(changed, methods={**changed.methods, "exact": {**changed.methods["exact"], "seed": 1}})
    openers = {name: Opener(method) for name, method in methods.items()}
    validate({n: Deferred(o) for n, o in openers.items()}, images, labels, SETTINGS, tmp_path,
             feature_fn=PixelFeatures(), progress=False, resume=True, provenance=changed)
    # "offset"'s drift is measured against "exact": both are measured again
    assert openers["offset"].opened == 1 and openers["exact"].opened >= 1


def test_issue9_a_checkpoint_grid_that_does_not_match_its_record_is_not_used(tmp_path):
    images, labels, methods = toy_problem()
    validate(methods, images, labels, SETTINGS, tmp_path, feature_fn=PixelFeatures(), progress=False, resume=True,
             provenance=_prov())
    grid = sorted((tmp_path / "methods").glob("exact*.npz"))[0]
    grid.write_bytes(grid.read_bytes()[:-7])  # a grid from a killed write (or another run)
    openers = {name: Opener(method) for name, method in methods.items()}
    validate({n: Deferred(o) for n, o in openers.items()}, images, labels, SETTINGS, tmp_path,
             feature_fn=PixelFeatures(), progress=False, resume=True, provenance=_prov())
    assert openers["exact"].opened >= 1 and openers["offset"].opened == 0


def test_resume_without_provenance_is_refused(tmp_path):
    images, labels, methods = toy_problem()
    with pytest.raises(ValidationError, match="resume=True needs provenance"):
        validate(methods, images, labels, SETTINGS, tmp_path, progress=False, resume=True)
