"""Trade-off plots of a sweep: quality vs latency, the Pareto front joined, the reference marked.

Colour = method family (merging / KV downsampling, BiGain or baseline), marker = mode (eager,
compile, engine); accuracy carries its 95% Wilson interval, FID its spread (sd) over sampling
seeds. Rendered with a bare matplotlib ``Figure`` (no pyplot state, no display needed).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..validate.report import _figure, _png
from .pareto import latency_ms

MARKERS = {"eager": "o", "compile": "s", "cudagraphs": "D", "engine": "^"}
COLOURS = {"none": "#000000", "tome": "#ee7733", "bigain-merge": "#0077bb", "todo": "#cc3311",
           "bigain-kv": "#009988", "merge+kv": "#aa3377"}


def family(config: Mapping[str, Any]) -> str:
    merges = config["merge"] != "none" and config["ratio"] > 0
    pools = config["kv"] != "none" and config["downsample"] > 1
    if merges and pools:
        return "merge+kv"
    if merges:
        return "tome" if config["merge"] == "tome" else "bigain-merge"
    if pools:
        return "todo" if config["kv"] == "todo" else "bigain-kv"
    return "none"


def _label_rows(xy: list[tuple[float, float]]) -> list[int]:
    """A text row per point so that labels of points at about the same height and close in ms do
    not print over each other (equal accuracies are common: few images, discrete scores)."""
    if not xy:
        return []
    xs, ys = [x for x, _ in xy], [y for _, y in xy]
    near_x, near_y = 0.15 * ((max(xs) - min(xs)) or 1.0), 0.03 * ((max(ys) - min(ys)) or 1.0)
    rows: list[int] = []
    for i, (x, y) in enumerate(xy):
        taken = {rows[j] for j in range(i) if abs(xy[j][0] - x) < near_x and abs(xy[j][1] - y) < near_y}
        rows.append(next(r for r in range(len(xy)) if r not in taken))
    return rows


def plot_tradeoff(report: Mapping[str, Any], quality: str) -> bytes:
    """PNG of ``quality`` (``accuracy`` or ``fid``) against ms per call for every point."""
    fig = _figure(figsize=(7.5, 5.0))
    ax = fig.subplots()
    points = [p for p in report["points"] if latency_ms(p) is not None and p.get(quality) is not None]
    scale = 100.0 if quality == "accuracy" else 1.0
    label_rows = _label_rows([(latency_ms(p), scale * p[quality]) for p in points])
    for p, row in zip(points, label_rows):
        x, y = latency_ms(p), scale * p[quality]
        if quality == "accuracy" and p.get("accuracy_ci95"):
            lo, hi = (scale * v for v in p["accuracy_ci95"])
            yerr = [[max(0.0, y - lo)], [max(0.0, hi - y)]]
        else:
            yerr = [[p["fid_std"]], [p["fid_std"]]] if p.get("fid_std") is not None else None
        reference = p["name"] == report["reference"]
        ax.errorbar([x], [y], yerr=yerr, fmt="*" if reference else MARKERS.get(p["mode"], "o"),
                    markersize=14 if reference else 7, color=COLOURS[family(p["config"])], capsize=3,
                    markeredgecolor="black" if p["pareto"].get(quality) else "none")
        ax.annotate(p["name"], (x, y), textcoords="offset points", xytext=(5, 4 + 9 * row), fontsize=7)
    front = [p for name in report["pareto"][quality] for p in points if p["name"] == name]
    if front:
        ax.step([latency_ms(p) for p in front], [scale * p[quality] for p in front], where="post",
                color="grey", linestyle="--", linewidth=1, label="Pareto front")
    for name, colour in COLOURS.items():
        if any(family(p["config"]) == name for p in points):
            ax.plot([], [], "o", color=colour, label=name)
    paired = any("ms_paired" in (p.get("latency") or {}) for p in points)
    ax.set_xlabel(f"ms per denoiser call{', paired with ' + report['reference'] if paired else ''} "
                  f"(batch {report['settings']['latency']['batch']}, {report['run']['device_name']})")
    ax.set_ylabel("top-1 accuracy (%)" if quality == "accuracy" else "FID (lower is better)")
    ax.set_title(f"{'accuracy' if quality == 'accuracy' else 'FID'} vs latency "
                 f"({report['run']['model']['id']}; star = uncompressed)", fontsize=10)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig)
