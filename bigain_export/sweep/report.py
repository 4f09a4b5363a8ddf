"""The sweep report: ``sweep.json`` for machines, ``sweep.md`` and two PNG plots for people.

Layout of ``<out>/``::

    sweep.json                 schema-versioned results; written last (its presence = complete)
    sweep.md                   the table, the budget answer, seed spreads, paired comparisons
    accuracy_vs_latency.png    accuracy (95% interval) vs ms per call, Pareto front, reference
    fid_vs_latency.png         FID (spread over sampling seeds) vs ms per call, Pareto front
                               (only when some point has an FID)
    points/                    one checkpoint per point (records.py)
    engines/                   engines built for engine points

``sweep.json``: ``{"schema": "bigain-export/sweep-report", "schema_version": 1, "created",
"reference": name, "settings", "run": {model, device_name, world_size, metadata},
"provenance": {"run": validate.provenance run facts, "methods": {point: method facts},
"fid_reference": facts}, "labels": [N], "points": [{name, group, entry, mode, seed,
config, label, accuracy, accuracy_ci95, correct, num_images, eps_calls, predictions, fid, fid_std,
fid_per_seed, fid_num_images, drift, latency (latency.py's fields and ``ms_paired``), flops_per_call,
flops_per_image, engine, seconds,
vs_reference: {acc_drop, fid_rise, fid_rise_pct, speedup, speedup_in_mode, mcnemar}, vs_eager: {point, same_prediction,
mcnemar} | null (compile and engine points), pareto: {accuracy, fid}}],
"pareto": {"accuracy": [names], "fid": [names]}, "seed_groups": {group: {...}}, "paired": [...],
"skipped": [...], "answer": {...} | null}``. Metrics not measured are ``null``.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..validate.atomic import atomic_write
from ..validate.report import _finite_or_none
from ..validate.stats import paired_comparison, wilson_interval
from .grid import SweepPoint
from .pareto import Budget, fastest_within, latency_ms, pareto_front, quality_change
from .plots import plot_tradeoff

SCHEMA = "bigain-export/sweep-report"
SCHEMA_VERSION = 1
FILES = ("sweep.json", "sweep.md", "accuracy_vs_latency.png", "fid_vs_latency.png")


def remove_report(out: Path) -> None:
    """Delete an earlier report in ``out`` (checkpoints stay): a run that dies leaves none."""
    for name in reversed(FILES):  # sweep.json first
        (out / name).unlink(missing_ok=True)


def merge_classification(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The classification chunks (``classify@<first image>``) of a point merged, in image order."""
    chunks = sorted(((int(k.split("@")[1]), r) for k, r in parts.items() if k.startswith("classify@")),
                    key=lambda c: c[0])
    if not chunks:
        return {}
    correct, total = sum(r["correct"] for _, r in chunks), sum(r["num_images"] for _, r in chunks)
    return {"accuracy": correct / total if total else None, "accuracy_ci95": list(wilson_interval(correct, total)),
            "correct": correct, "num_images": total, "eps_calls": sum(r["eps_calls"] for _, r in chunks),
            "predictions": [p for _, r in chunks for p in r["predictions"]], "engine": chunks[0][1].get("engine")}


def _point_entry(point: SweepPoint, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    cls = merge_classification(parts)
    fids = {key[4:]: r.get("fid") for key, r in parts.items() if key.startswith("fid@")}
    values = [v for v in fids.values() if v is not None]
    flops = parts.get("flops", {})
    latency = {k: v for k, v in parts.get("latency", {}).items() if k != "seconds"} or None
    drift = {k: v for k, v in parts.get("drift", {}).items() if k != "seconds"} or None
    return {
        "name": point.name, "group": point.group, "entry": point.entry, "mode": point.mode, "seed": point.seed,
        "config": point.config.to_dict(), "label": point.config.describe(), "uncompressed": point.uncompressed,
        **{k: cls.get(k) for k in ("accuracy", "accuracy_ci95", "correct", "num_images", "eps_calls", "predictions")},
        "fid": statistics.fmean(values) if values else None,
        "fid_std": statistics.stdev(values) if len(values) > 1 else None,
        "fid_per_seed": fids or None,
        "fid_num_images": next((r.get("fid_num_images") for k, r in parts.items() if k.startswith("fid@")), None),
        "drift": drift, "latency": latency,
        "flops_per_call": flops.get("flops_per_call"), "flops_per_image": flops.get("flops_per_image"),
        "engine": cls.get("engine"),
        "seconds": {part: r.get("seconds") for part, r in parts.items()},
    }


def _correct(entry: Mapping[str, Any], labels: Sequence[int]) -> list[bool] | None:
    preds = entry.get("predictions")
    return None if preds is None else [p == y for p, y in zip(preds, labels)]


def _counterparts(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when ``a`` is BiGain's version of baseline ``b`` (ToMe for merging, ToDo for KV):
    the same mode, seed-free settings, ratio / downsample and patched blocks."""
    if a["mode"] != b["mode"]:
        return False
    ca, cb = a["config"], b["config"]
    same = lambda *keys: all(ca[k] == cb[k] for k in keys)  # noqa: E731
    if not same("ratio", "downsample", "dit_blocks", "unet_levels"):
        return False
    merge_pair = ca["merge"] == "bigain" and cb["merge"] == "tome" and same("kv")
    kv_pair = ca["kv"] == "bigain" and cb["kv"] == "todo" and ca["merge"] == cb["merge"] == "none"
    return merge_pair or kv_pair


def _seed_groups(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Spread over seeds of every group measured with more than one seed (the random baseline)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for e in entries:
        groups.setdefault(e["group"], []).append(e)
    out = {}
    for group, members in groups.items():
        if len(members) < 2:
            continue
        acc = [m["accuracy"] for m in members if m.get("accuracy") is not None]
        fid = [m["fid"] for m in members if m.get("fid") is not None]
        out[group] = {
            "points": [m["name"] for m in members], "seeds": [m["seed"] for m in members],
            "accuracy_mean": statistics.fmean(acc) if acc else None,
            "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else None,
            "accuracy_min": min(acc, default=None), "accuracy_max": max(acc, default=None),
            "fid_mean": statistics.fmean(fid) if fid else None,
            "fid_std": statistics.stdev(fid) if len(fid) > 1 else None,
        }
    return out


def _put_on_reference_clock(entries: Sequence[dict[str, Any]]) -> None:
    """``latency.ms_paired``: the ms of the point each latency was paired with (``paired_with``;
    the eager reference when absent, as in older reports) over the paired speedup (latency.py),
    so that points timed minutes apart compare by ratios measured in the same minutes. The eager
    reference is 1.0x of itself by definition; its measured ratio against its own copy stays in its
    ``latency.speedup`` (the noise check printed in the report). A compiled point or engine paired
    with the uncompressed model of its mode goes through that point's ``ms_paired`` (its own
    pairing with the eager reference), so the chain is two ratios, each from one stretch of minutes."""
    reference = entries[0].get("latency") or {}
    if "speedup" not in reference or not reference.get("ms"):
        return
    by_name = {e["name"]: e for e in entries}
    first, second = [], []
    for index, e in enumerate(entries):
        latency = e.get("latency")
        if latency and latency.get("speedup"):
            partner = latency.get("paired_with", entries[0]["name"])
            (first if partner == entries[0]["name"] else second).append((index, latency, partner))
    for index, latency, _ in first:
        latency["ms_paired"] = reference["ms"] / (1.0 if index == 0 else latency["speedup"])
    for _, latency, partner in second:
        partner_ms = ((by_name.get(partner) or {}).get("latency") or {}).get("ms_paired")
        if partner_ms:
            latency["ms_paired"] = partner_ms / latency["speedup"]


def build_sweep_report(
    points: Sequence[SweepPoint], measured: Mapping[str, Mapping[str, Mapping[str, Any]]], *,
    settings: Mapping[str, Any], labels: Sequence[int], run: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None, budget: Budget | None = None, skipped: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Assemble the report dict (module docstring) from each point's part results."""
    entries = [_point_entry(p, measured[p.name]) for p in points]
    reference = entries[0]
    _put_on_reference_clock(entries)
    ref_correct = _correct(reference, labels)
    plain: dict[str, Mapping[str, Any]] = {}  # the uncompressed point of each mode
    for e in entries:
        if e["uncompressed"]:
            plain.setdefault(e["mode"], e)
    for e in entries:
        change = quality_change(e, reference)
        lat, ref_lat = latency_ms(e), latency_ms(reference)
        mode_lat = latency_ms(plain[e["mode"]]) if e["mode"] in plain else None
        correct = _correct(e, labels)
        e["vs_reference"] = {
            **change, "speedup": ref_lat / lat if lat and ref_lat else None,
            # does compression pay in this mode: against the uncompressed model run the same way
            "speedup_in_mode": mode_lat / lat if lat and mode_lat else None,
            "mcnemar": paired_comparison(correct, ref_correct) if correct and ref_correct else None,
        }
    eager = {(e["entry"], e["seed"]): e for e in entries if e["mode"] == "eager"}
    for e in entries:  # engines and compiled models against the eager model they come from
        twin = eager.get((e["entry"], e["seed"])) if e["mode"] != "eager" else None
        preds, twin_preds = e.get("predictions"), twin and twin.get("predictions")
        e["vs_eager"] = None if not (preds and twin_preds) else {
            "point": twin["name"], "same_prediction": sum(a == b for a, b in zip(preds, twin_preds)) / len(preds),
            "mcnemar": paired_comparison(_correct(e, labels), _correct(twin, labels)),
        }
    fronts = {"accuracy": pareto_front(entries, "accuracy", True), "fid": pareto_front(entries, "fid", False)}
    for e in entries:
        e["pareto"] = {key: e["name"] in names for key, names in fronts.items()}
    paired = []
    for a in entries:
        for b in entries:
            if _counterparts(a, b) and _correct(a, labels) and _correct(b, labels):
                paired.append({"a": a["name"], "b": b["name"],
                               **paired_comparison(_correct(a, labels), _correct(b, labels))})
    report = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reference": reference["name"], "settings": dict(settings), "run": dict(run),
        "provenance": dict(provenance or {}), "labels": list(labels),
        "points": entries, "pareto": fronts, "seed_groups": _seed_groups(entries), "paired": paired,
        "skipped": list(skipped),
        "answer": fastest_within(entries, reference, budget) if budget is not None and budget.active else None,
    }
    return _finite_or_none(report)


# -- rendering ---------------------------------------------------------------------------------------

def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _num(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def render_markdown(report: Mapping[str, Any]) -> str:
    """A person's view of the report: the trade-off table first, the answer, then the details."""
    ref = report["reference"]
    lines = ["# Sweep: accuracy, FID and latency per configuration", "",
             f"Created {report['created']}; model `{report['run']['model']['id']}`; measured on "
             f"{report['run']['device_name']}; reference `{ref}` (uncompressed, eager). "
             "P = on the Pareto front (acc: accuracy vs latency, fid: FID vs latency).", ""]
    # With several modes, also each point against the uncompressed model run its own way.
    several_modes = len({e["mode"] for e in report["points"]}) > 1
    columns = [("point", "---"), ("mode", "---"), ("accuracy % (95% CI)", "---"), ("vs ref (points)", "---:"),
               ("FID (sd over seeds)", "---"), ("eps drift rel L2", "---:"), ("ms / call", "---:"),
               ("speedup [rounds]", "---:")] + ([("vs uncompressed, same mode", "---:")] if several_modes else []) + [
               ("GFLOP / call", "---:"), ("P", "---")]
    lines += ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "|".join(a for _, a in columns) + "|"]
    for e in report["points"]:
        ci = e.get("accuracy_ci95")
        acc = f"{_pct(e.get('accuracy'))} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else _pct(e.get("accuracy"))
        vs = e["vs_reference"]
        fid = _num(e.get("fid"), ".2f") + (f" ± {e['fid_std']:.2f}" if e.get("fid_std") is not None else "")
        drift = (e.get("drift") or {}).get("rel_l2")
        flops = e.get("flops_per_call")
        pareto = ",".join(k for k, v in e["pareto"].items() if v)
        gain = None if vs["acc_drop"] is None else 0.0 - vs["acc_drop"] + 0.0  # + 0.0: no "-0.0"
        speedup, in_mode = _num(vs["speedup"], ".2f"), _num(vs.get("speedup_in_mode"), ".2f")
        lat = e.get("latency") or {}
        if e["name"] != ref and "speedup_min" in lat:  # the rounds' range beside the ratio they measured
            rounds = f" [{lat['speedup_min']:.2f}, {lat['speedup_max']:.2f}]"
            if lat.get("paired_with", ref) == ref:
                speedup += rounds
            else:
                in_mode += rounds
        lines.append(
            f"| {e['name']} | {e['mode']} | {acc} | {_num(gain, '+.1f')} "
            f"| {fid} | {_num(drift, '.3g')} | {_num(latency_ms(e), '.3g')} | {speedup} "
            + (f"| {in_mode} " if several_modes else "")
            + f"| {_num(None if flops is None else flops / 1e9, '.3g')} | {pareto} |")
    ref_lat = report["points"][0].get("latency") or {}
    if "speedup_min" in ref_lat:
        lines += ["", f"Latency: each point interleaved with `{ref}` in {ref_lat['rounds']} "
                  f"alternating rounds (ms / call = `{ref}`'s median over the paired speedup; [rounds] = the "
                  f"range of the rounds' own ratios). Noise check: `{ref}` against its own copy gave "
                  f"{ref_lat['speedup']:.2f}x [{ref_lat['speedup_min']:.2f}, {ref_lat['speedup_max']:.2f}]; "
                  "speedups within that are not speedups."]
        if any((e.get("latency") or {}).get("paired_with", ref) != ref for e in report["points"]):
            lines[-1] += (" Compressed compiled points were interleaved with the uncompressed model compiled "
                          "the same way, and compressed engines with the uncompressed engine: their rounds "
                          "stand beside the same-mode ratio.")
    if report.get("answer"):
        lines += ["", f"**Answer:** {report['answer']['message']}."]
    if report["seed_groups"]:
        lines += ["", "## Spread over seeds (ToMe's random anchors)", "",
                  "| group | seeds | accuracy % mean ± sd [min, max] | FID mean ± sd |", "|---|---|---|---|"]
        for group, g in report["seed_groups"].items():
            lines.append(f"| {group} | {', '.join(map(str, g['seeds']))} | {_pct(g['accuracy_mean'])} ± "
                         f"{_pct(g['accuracy_std'])} [{_pct(g['accuracy_min'])}, {_pct(g['accuracy_max'])}] | "
                         f"{_num(g['fid_mean'], '.2f')} ± {_num(g['fid_std'], '.2f')} |")
    twins = [e for e in report["points"] if e.get("vs_eager")]
    if twins:
        lines += ["", "## Compiled models and engines vs their eager model", "",
                  "| point | eager point | same prediction % | right only here / only eager | p |", "|---|---|---:|---:|---:|"]
        for e in twins:
            v = e["vs_eager"]
            lines.append(f"| {e['name']} | {v['point']} | {_pct(v['same_prediction'])} | "
                         f"{v['mcnemar']['only_a']} / {v['mcnemar']['only_b']} | {v['mcnemar']['mcnemar_p']:.2g} |")
    if report["paired"]:
        lines += ["", "## Paired comparisons (McNemar, same images and noise)", "",
                  "| A vs B | right only under A | only under B | p |", "|---|---:|---:|---:|"]
        for p in report["paired"]:
            lines.append(f"| {p['a']} vs {p['b']} | {p['only_a']} | {p['only_b']} | {p['mcnemar_p']:.2g} |")
    for s in report.get("skipped") or []:
        lines += ["", f"Skipped {s['point']}: {s['reason']}."]
    lines += ["", "![accuracy vs latency](accuracy_vs_latency.png)"]
    if has_fid(report):
        lines += ["", "![FID vs latency](fid_vs_latency.png)"]
    lines += ["", "## Settings", "", "```json", json.dumps({"settings": report["settings"], "run": report["run"],
                                                                          "packages": report["provenance"]["run"]["packages"]},
                                                              indent=2), "```", ""]
    return "\n".join(lines)


def has_fid(report: Mapping[str, Any]) -> bool:
    """Whether any point has an FID (a sweep with ``--no-fid`` has none, so no FID plot)."""
    return any(p.get("fid") is not None for p in report["points"])


def write_sweep_report(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write the plots, the Markdown and (last) ``sweep.json`` into ``out``, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"accuracy_plot": atomic_write(out / "accuracy_vs_latency.png", plot_tradeoff(report, "accuracy"))}
    if has_fid(report):  # (--no-fid: no empty chart; remove_report took an earlier run's away)
        written["fid_plot"] = atomic_write(out / "fid_vs_latency.png", plot_tradeoff(report, "fid"))
    written["markdown"] = atomic_write(out / "sweep.md", render_markdown(report))
    written["json"] = atomic_write(out / "sweep.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    return written
