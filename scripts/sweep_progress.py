"""What an unfinished sweep has measured so far: one Markdown row per checkpointed point.

    python scripts/sweep_progress.py SWEEP_DIR [--out FILE]

Reads ``SWEEP_DIR/points/*.json`` (docs/sweep.md, "Resuming") and prints, per point, the images
classified, accuracy with its Wilson 95% interval, FID mean and sd over the seeds measured, eps
drift, median latency (p10-p90) and which parts are still missing against the most complete point.
It does **not** vouch for the numbers the way the sweep's own report does: it checks no facts
against a run. It prints the facts that differ between points (device, dtype, packages), so a
table that mixes runs says so. Use it to look at a run the GPU time cut off; publish the report
that ``bigain-export sweep --resume`` writes once every point is done.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bigain_export.sweep.records import SCHEMA  # noqa: E402
from bigain_export.sweep.report import merge_classification  # noqa: E402


def load_points(folder: Path) -> list[dict]:
    points = []
    for path in sorted((folder / "points").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != SCHEMA:
            raise SystemExit(f"{path}: not a sweep checkpoint (schema {data.get('schema')!r}; allowed: {SCHEMA})")
        points.append(data)
    if not points:
        raise SystemExit(f"{folder}: no checkpoints in {folder / 'points'}; allowed: a bigain-export sweep --out folder")
    return points


def run_facts(parts: dict) -> dict:
    """The facts every part shares (device, dtype, packages), from any part of a point."""
    facts = next(iter(parts.values()))["facts"]
    return {"device": facts["run"]["device"]["name"], "dtype": facts["method"]["dtype"],
            "packages": facts["run"]["packages"], "model": facts["run"]["model"]["id"]}


def row(point: dict, all_parts: list[str]) -> str:
    parts = {k: v["result"] for k, v in point["parts"].items()}
    cls = merge_classification(parts)
    fids = [r["fid"] for k, r in sorted(parts.items()) if k.startswith("fid@") and r.get("fid") is not None]
    lat = parts.get("latency")
    acc = "n/a" if not cls else (f"{100 * cls['accuracy']:.1f} [{100 * cls['accuracy_ci95'][0]:.1f}, "
                                 f"{100 * cls['accuracy_ci95'][1]:.1f}]")
    fid = "n/a" if not fids else f"{statistics.fmean(fids):.1f}" + (
        f" ± {statistics.stdev(fids):.1f} ({len(fids)})" if len(fids) > 1 else " (1)")
    drift = f"{parts['drift']['rel_l2']:.3g}" if "drift" in parts else "n/a"
    ms = f"{lat['ms']:.1f} ({lat['ms_p10']:.1f}-{lat['ms_p90']:.1f})" if lat else "n/a"
    missing = [p for p in all_parts if p not in parts]
    return (f"| {point['name']} | {cls.get('num_images', 0)} | {acc} | {fid} | {drift} | {ms} | "
            f"{', '.join(missing) or 'none'} |")


def render(folder: Path) -> str:
    points = load_points(folder)
    all_parts = sorted({p for point in points for p in point["parts"]},
                       key=lambda p: (not p.startswith("classify@"), int(p.split("@")[1]) if "@" in p else 0, p))
    facts = [run_facts(p["parts"]) for p in points]
    lines = [f"Checkpoints of `{folder}` ({len(points)} points; not the sweep's report: no facts were checked).", ""]
    for key in ("model", "device", "dtype", "packages"):
        values = {json.dumps(f[key], sort_keys=True) for f in facts}
        shown = ", ".join(sorted(values)) if key != "packages" else (
            ", ".join(f"{k} {v}" for k, v in facts[0]["packages"].items()))
        lines.append(f"- {key}: {shown}" + ("  **(differs between points)**" if len(values) > 1 else ""))
    lines += ["", "| point | images | accuracy % (95% CI) | FID ± sd (seeds) | eps drift rel L2 | ms / call (p10-p90) | missing parts |",
              "|---|---:|---|---|---:|---|---|"]
    lines += [row(p, all_parts) for p in points]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a bigain-export sweep --out folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    text = render(args.folder)
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
