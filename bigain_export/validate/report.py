"""Validation report: one JSON file for machines, a Markdown summary and PNG figures for people.

Layout of ``<out>/``::

    report.json    schema-versioned results (read by ``bigain-export check``); written last
    report.md      summary table and settings
    samples.png    a grid of generated images per method, side by side (when samples are given)
    metrics.png    accuracy (with 95% interval) and FID per method as bar charts

JSON schema (``schema_version`` 2)::

    {"schema": "bigain-export/validation-report", "schema_version": 2, "created": ISO-8601,
     "reference_method": name, "settings": {...},
     "provenance": {"run": run facts | null, "methods": {name: method facts | null},
                    "fingerprints": {name: sha256 | null}}          (see provenance.py)
     "tolerances": {"drift": {name: {"mean_abs": x, "max_abs": y, "rel_l2": z}}} (optional),
     "methods": {name: {"accuracy": fraction | null, "accuracy_ci95": [lo, hi] | null,
                        "correct": int | null, "num_images": int | null, "fid": float | null,
                        "fid_num_images": int | null, "drift": {"max_abs", "rel_l2", "mean_abs",
                        "num_inputs", "reference"} | null, "eps_calls": int, "seconds": {...},
                        "classification": {per-image predictions and errors} (optional)}}}

Non-finite numbers are written as ``null`` so the file is strict JSON. Loading checks the
structure and each method's internal consistency (accuracy = correct / num_images, the interval
recomputed from the counts, counts equal to the run's data and settings), so a hand-edited or
truncated file is refused with one line instead of being judged.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ValidationError
from .atomic import atomic_write
from .drift import DRIFT_STATS
from .stats import wilson_interval

logger = logging.getLogger(__name__)

SCHEMA = "bigain-export/validation-report"
SCHEMA_VERSION = 2
SAMPLES_PER_METHOD = 16
REPORT_NAME = "report.json"
# Every file a report folder holds besides checkpoints; report.json first: it is the commit mark.
REPORT_FILES = (REPORT_NAME, "report.md", "samples.png", "metrics.png")
MAX_REPORT_BYTES = 256 << 20


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def build_report(
    methods: Mapping[str, Mapping[str, Any]],
    *,
    reference_method: str,
    settings: Mapping[str, Any],
    tolerances: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a report dict (see module docstring) and check it.

    ``provenance`` is ``{"run": ..., "methods": {...}, "fingerprints": {...}}`` as ``validate()``
    writes it; ``None`` records that nothing is known about what was measured (such a report is
    readable, but the gate refuses to judge it).
    """
    names = list(methods)
    provenance = dict(provenance or {})
    provenance = {
        "run": provenance.get("run"),
        "methods": {n: (provenance.get("methods") or {}).get(n) for n in names},
        "fingerprints": {n: (provenance.get("fingerprints") or {}).get(n) for n in names},
    }
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reference_method": reference_method,
        "settings": dict(settings),
        "provenance": provenance,
        "methods": {name: dict(entry) for name, entry in methods.items()},
    }
    if tolerances:
        report["tolerances"] = dict(tolerances)
    report = _finite_or_none(report)
    return check_report(report, "report")


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
    if data.get("reference_method") not in methods:
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


def invalidate_report(out_dir: str | os.PathLike) -> None:
    """Remove a previous run's report files from ``out_dir`` (``report.json`` first), so that a
    run which stops before writing its own leaves no report at all rather than a stale one."""
    for name in REPORT_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)


# -- rendering ---------------------------------------------------------------------------------


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def render_markdown(report: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str:
    """A human summary of ``report``: one table row per method, then settings."""
    ref = report.get("reference_method")
    lines = [
        "# Validation report",
        "",
        f"Created {report.get('created', '?')}; drift reference: `{ref}`.",
        "",
        "| method | accuracy | 95% interval | images | FID | drift max abs | drift rel L2 | eps calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in report["methods"].items():
        ci = m.get("accuracy_ci95")
        interval = "n/a" if not ci or None in ci else f"{100 * ci[0]:.2f}-{100 * ci[1]:.2f}%"
        drift = m.get("drift") or {}
        lines.append(
            f"| {name} | {_fmt(m.get('accuracy'), '.2f', 100)}% | {interval} | {m.get('num_images', 'n/a')} "
            f"| {_fmt(m.get('fid'), '.3f')} | {_fmt(drift.get('max_abs'), '.3g')} "
            f"| {_fmt(drift.get('rel_l2'), '.3g')} | {m.get('eps_calls', 'n/a')} |"
        )
    for name, limits in (report.get("tolerances") or {}).get("drift", {}).items():
        lines += ["", f"Drift tolerance of `{name}`: " + ", ".join(f"{k} <= {v:g}" for k, v in limits.items())]
    for title, name in (figures or {}).items():
        lines += ["", f"![{title}]({name})"]
    lines += ["", "## Settings", "", "```json", json.dumps(report.get("settings", {}), indent=2), "```", ""]
    return "\n".join(lines)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _figure(**kwargs):
    # A bare Figure renders with the Agg canvas on savefig and touches no pyplot state: no
    # display needed on CI, and a user's interactive backend is left alone.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_samples(samples: Mapping[str, torch.Tensor], per_method: int = SAMPLES_PER_METHOD) -> bytes:
    """PNG of the first ``per_method`` images ``[N, C, H, W]`` in [-1, 1] of each method, side by side."""
    names = list(samples)
    cols = max(1, math.ceil(math.sqrt(per_method)))
    fig = _figure(figsize=(2.6 * len(names), 2.9))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        images = samples[name][:per_method].detach().float().cpu().clamp(-1, 1).add(1).div(2)
        n, c, h, w = images.shape
        rows = max(1, math.ceil(n / cols))
        canvas = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
        for k in range(n):
            r, q = divmod(k, cols)
            canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = images[k]
        if c == 1:
            ax.imshow(canvas[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(canvas.permute(1, 2, 0).numpy())
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return _png(fig)


def plot_metrics(report: Mapping[str, Any]) -> bytes:
    """PNG with two bar charts: accuracy (%, 95% interval as error bars) and FID per method."""
    names = list(report["methods"])
    methods = report["methods"]
    fig = _figure(figsize=(max(6.0, 1.6 * len(names) + 3), 3.4))
    ax_acc, ax_fid = fig.subplots(1, 2)
    xs = range(len(names))
    acc = [100 * (methods[n].get("accuracy") or 0.0) for n in names]
    lo_hi = [methods[n].get("accuracy_ci95") or [None, None] for n in names]
    # max(0, ...): at 0% or 100% the Wilson bound equals the accuracy up to round-off.
    yerr = [
        [max(0.0, a - 100 * ci[0]) if ci[0] is not None else 0.0 for a, ci in zip(acc, lo_hi)],
        [max(0.0, 100 * ci[1] - a) if ci[1] is not None else 0.0 for a, ci in zip(acc, lo_hi)],
    ]
    ax_acc.bar(xs, acc, yerr=yerr, capsize=4, color="#4477aa")
    ax_acc.set_ylabel("top-1 accuracy (%)")
    ax_acc.set_title("diffusion classifier")
    fid = [methods[n].get("fid") for n in names]
    ax_fid.bar(xs, [f if f is not None else 0.0 for f in fid], color="#cc6677")
    for x, f in zip(xs, fid):
        if f is None:
            ax_fid.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8)
    ax_fid.set_ylabel("FID (lower is better)")
    ax_fid.set_title("generation")
    for ax in (ax_acc, ax_fid):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def write_report(
    report: Mapping[str, Any], out_dir: str | os.PathLike, samples: Mapping[str, torch.Tensor] | None = None
) -> dict[str, Path]:
    """Write ``report`` (checked first) into ``out_dir``; every file atomically, ``report.json`` last
    so its presence means the folder is complete. Returns the written paths by kind."""
    report = check_report(_finite_or_none(dict(report)), "report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    invalidate_report(out)  # no moment where an old report.json sits beside new figures
    written: dict[str, Path] = {}
    figures: dict[str, str] = {}
    if samples:
        written["samples"] = atomic_write(out / "samples.png", plot_samples(samples))
        figures["samples per method"] = "samples.png"
    written["metrics"] = atomic_write(out / "metrics.png", plot_metrics(report))
    figures["accuracy and FID per method"] = "metrics.png"
    written["markdown"] = atomic_write(out / "report.md", render_markdown(report, figures))
    written["json"] = atomic_write(out / REPORT_NAME, json.dumps(report, indent=2, allow_nan=False) + "\n")
    logger.info("validation report written to %s", out)
    return written
