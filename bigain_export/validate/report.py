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

Non-finite numbers are written as ``null`` so the file is strict JSON. Loading
(``report_schema.py``) checks the structure and each method's internal consistency, so a
hand-edited or truncated file is refused with one line instead of being judged.
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

from .atomic import atomic_write
from .report_schema import REPORT_NAME, SCHEMA, SCHEMA_VERSION, check_report, load_report

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA", "SCHEMA_VERSION", "build_report", "check_report", "invalidate_report", "load_report",
           "render_markdown", "write_report"]

SAMPLES_PER_METHOD = 16
# Every file a report folder holds besides checkpoints; report.json first: it is the commit mark.
REPORT_FILES = (REPORT_NAME, "report.md", "samples.png", "metrics.png")


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
