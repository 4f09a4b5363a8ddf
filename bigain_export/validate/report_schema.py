"""Reading a validation report: its structure and its internal consistency.

``load_report`` / ``check_report`` accept a report only when it is schema 2 with provenance and
every method's numbers agree with each other and with the run (accuracy = correct / num_images,
the 95% interval recomputed from those counts, image counts equal to the run's data and FID
settings, per-image predictions agreeing with ``correct``, drift input counts equal to the run's).
Anything else, however mangled (truncated, NaN/Infinity literals, wrong types, not a regular
file), is one :class:`~bigain_export.errors.ValidationError` line naming the file and the first
problem. The layout itself is documented in ``report.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from .drift import DRIFT_STATS
from .stats import wilson_interval

SCHEMA = "bigain-export/validation-report"
SCHEMA_VERSION = 2
REPORT_NAME = "report.json"
MAX_REPORT_BYTES = 256 << 20


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _path(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _check_method(name: str, entry: Any, report: dict[str, Any], bad) -> None:
    """Types of one method entry, and that its numbers agree with each other and with the run."""
    where = f"method {name!r}"
    if not isinstance(entry, dict):
        raise bad(f"{where} is {type(entry).__name__}, expected an object")
    acc, correct, total = entry.get("accuracy"), entry.get("correct"), entry.get("num_images")
    if acc is not None and not (_is_number(acc) and 0 <= acc <= 1):
        raise bad(f"{where} accuracy={acc!r}, expected a fraction in [0, 1] or null")
    if correct is not None and not _is_count(correct):
        raise bad(f"{where} correct={correct!r}, expected an integer >= 0 or null")
    if total is not None and not _is_count(total, 1):
        raise bad(f"{where} num_images={total!r}, expected an integer >= 1 or null")
    run_images = _path(report, "provenance", "run", "data", "num_images")
    if acc is not None:
        if correct is None or total is None or correct > total:
            raise bad(f"{where} accuracy={acc!r} needs counts correct <= num_images; got {correct!r}/{total!r}")
        if abs(acc - correct / total) > 1e-9:
            raise bad(f"{where} accuracy={acc!r} contradicts its counts {correct}/{total} = {correct / total:.6g}")
        interval = entry.get("accuracy_ci95")
        want = wilson_interval(correct, total)
        if not (isinstance(interval, list) and len(interval) == 2 and all(_is_number(v) for v in interval)
                and all(abs(a - b) <= 1e-9 for a, b in zip(interval, want))):
            raise bad(f"{where} accuracy_ci95={interval!r} is not the Wilson interval of {correct}/{total} "
                      f"[{want[0]:.6g}, {want[1]:.6g}]")
        if _is_count(run_images) and total != run_images:
            raise bad(f"{where} num_images={total} but the run measured {run_images} images")
    elif entry.get("accuracy_ci95") is not None:
        raise bad(f"{where} has accuracy_ci95 without an accuracy")
    cls = entry.get("classification")
    if cls is not None:
        if not isinstance(cls, dict):
            raise bad(f"{where} classification is {type(cls).__name__}, expected an object")
        preds, labels = cls.get("predictions"), cls.get("labels")
        if preds is not None or labels is not None:
            if not (isinstance(preds, list) and isinstance(labels, list) and len(preds) == len(labels)
                    and all(_is_count(v) for v in preds + labels)):
                raise bad(f"{where} classification predictions/labels must be equal-length lists of class indices")
            if acc is not None and (len(preds) != total or sum(p == t for p, t in zip(preds, labels)) != correct):
                raise bad(f"{where} per-image predictions ({len(preds)} images) contradict correct={correct}/{total}")
    fid, fid_n = entry.get("fid"), entry.get("fid_num_images")
    if fid is not None and not _is_number(fid):
        raise bad(f"{where} fid={fid!r}, expected a number or null")
    if fid_n is not None and not _is_count(fid_n, 2):
        raise bad(f"{where} fid_num_images={fid_n!r}, expected an integer >= 2 or null")
    if fid is not None:
        run_fid_images = _path(report, "provenance", "run", "settings", "fid_images")
        if fid_n is None or (_is_count(run_fid_images) and fid_n != run_fid_images):
            raise bad(f"{where} fid_num_images={fid_n!r} but the run generated {run_fid_images!r} images per method")
    drift = entry.get("drift")
    if drift is not None:
        if not isinstance(drift, dict) or not all(drift.get(k) is None or (_is_number(drift[k]) and drift[k] >= 0)
                                                  for k in DRIFT_STATS):
            raise bad(f"{where} drift={drift!r}, expected {{'max_abs', 'rel_l2', 'mean_abs': numbers >= 0}} or null")
        if drift.get("reference") not in report["methods"]:
            raise bad(f"{where} drift reference={drift.get('reference')!r} is not a method of the report")
        inputs = _path(report, "provenance", "run", "settings", "drift", "inputs")
        if _is_count(inputs) and drift.get("num_inputs") != inputs:
            raise bad(f"{where} drift num_inputs={drift.get('num_inputs')!r} but the run used {inputs} inputs")


def _check_provenance(data: dict[str, Any], bad) -> None:
    prov = data.get("provenance")
    if not isinstance(prov, dict):
        raise bad("'provenance' must be an object (what the results were measured on)")
    if prov.get("run") is not None and not isinstance(prov["run"], dict):
        raise bad("provenance.run must be an object or null")
    for key in ("methods", "fingerprints"):
        value = prov.get(key)
        if not isinstance(value, dict) or set(value) != set(data["methods"]):
            raise bad(f"provenance.{key} must be an object with one entry per method")
    for name, facts in prov["methods"].items():
        if facts is not None and not isinstance(facts, dict):
            raise bad(f"provenance.methods.{name} must be an object or null")
    for name, value in prov["fingerprints"].items():
        if value is not None and not isinstance(value, str):
            raise bad(f"provenance.fingerprints.{name} must be a string or null")


def _check_tolerances(data: dict[str, Any], bad) -> None:
    tolerances = data.get("tolerances", {})
    if not isinstance(tolerances, dict) or set(tolerances) - {"drift"}:
        raise bad(f"'tolerances' must be an object with only 'drift'; got {_brief(tolerances)}")
    per_method = tolerances.get("drift", {})
    if not isinstance(per_method, dict):
        raise bad("tolerances.drift must be an object {method: {stat: limit}}")
    for name, limits in per_method.items():
        if name not in data["methods"]:
            raise bad(f"tolerances.drift names {name!r}, which is not a method of the report")
        if not isinstance(limits, dict) or not limits or not all(
            k in DRIFT_STATS and _is_number(v) and v >= 0 for k, v in limits.items()
        ):
            raise bad(f"tolerances.drift.{name}={_brief(limits)}; allowed: {{{', '.join(DRIFT_STATS)}: numbers >= 0}}")


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_report(data: Any, source: str) -> dict[str, Any]:
    """Return ``data`` if it is a valid, self-consistent report, else raise
    :class:`ValidationError` (one line naming ``source`` and the first problem)."""

    def bad(what: str) -> ValidationError:
        return ValidationError(f"{source}: not a valid validation report: {what}")

    if not isinstance(data, dict):
        raise bad(f"top level is {type(data).__name__}, expected an object")
    if data.get("schema") != SCHEMA:
        raise bad(f"schema={_brief(data.get('schema'))}, expected {SCHEMA!r}")
    version = data.get("schema_version")
    if version == 1:
        raise bad("schema_version=1 (written before reports recorded what they measured); "
                  "re-run 'bigain-export validate' to get a version-2 report")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise bad(f"schema_version={_brief(version)}, this version reads {SCHEMA_VERSION}")
    methods = data.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise bad("'methods' must be a non-empty object")
    reference = data.get("reference_method")
    if not isinstance(reference, str) or reference not in methods:  # (a list is unhashable: check the type first)
        raise bad(f"reference_method={_brief(data.get('reference_method'))} is not one of its methods")
    if not isinstance(data.get("settings"), dict):
        raise bad("'settings' must be an object")
    _check_provenance(data, bad)
    for name, entry in methods.items():
        _check_method(name, entry, data, bad)
    _check_tolerances(data, bad)
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``report.json`` (or a report folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_NAME
    if not path.is_file():
        reason = "no such file" if not path.exists() else "not a regular file"
        raise ValidationError(f"{path}: cannot read report ({reason})")
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ValidationError(f"{path}: cannot read report ({size} bytes; allowed: up to {MAX_REPORT_BYTES})")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read report ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"{path}: not valid JSON ({str(exc)[:100] or type(exc).__name__})") from exc
    return check_report(data, str(path))
