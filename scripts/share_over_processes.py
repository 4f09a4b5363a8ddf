"""One configuration's share of the ceiling's gain over every recorded ``bench_unet.py`` process.

Whole-model times move by 1-2% between processes (each compiles anew) while the rounds of one
process agree to ~0.3%, so issue 11's verdict on a target is the median over processes, not one
run. This gathers the rows from the recorded raw files instead of copying numbers by hand:

    python scripts/share_over_processes.py docs/bench/2026-12-06-h100-session2[1-4] --res 768 \\
        --method "bigain-merge r=0.7 radius=1 plan-reuse" --target 0.9 --plot share.png

Each ``bench_unet.json`` is one process; a row with a variant mark (``METHOD @NAME=VALUE``) counts
only with ``--variants`` (its process is then counted once per row). Prints a Markdown table, the
median and how many processes reach the target; ``--plot`` writes a PNG of the shares. Where a
process also timed ``plain-copy`` (a second compile of plain), its speedup over plain stands
beside the share: how far two compiles of one model differ in that process. Since session 30 a
process also records which code it timed (``code``, :func:`bench_unet.code_digest`) and whether it
compiled in an empty Inductor cache (an independent draw) or a warm one; both are listed.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import CONTROL, base_name, loop_length  # noqa: E402  (base_name: the one reader of a "METHOD @NAME=VALUE" label)

from bigain_export.validate.atomic import atomic_write  # noqa: E402

# bench_unet.py's field prefix of each timing: loop = calls back to back (a sampler), call = one
# call after a sync
PREFIXES = {"loop": "loop_", "call": ""}


def shares_of(rows: list[dict], timing: str) -> list[float]:
    """The rows' shares of the ceiling's gain, leaving out rows without one (no ceiling above 1)."""
    key = PREFIXES[timing] + "gain_share"
    return [r[key] for r in rows if r.get(key) is not None]


def process_files(roots: list[Path]) -> list[Path]:
    """Every ``bench_unet.json`` under ``roots`` (files named directly are taken as they are)."""
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(sorted(root.rglob("bench_unet.json")))
        else:
            raise SystemExit(f"{root}: no such file or folder")
    return files


def rows_of(path: Path, model: str, res: int, method: str, mode: str, variants: bool) -> list[dict]:
    """The rows of one process's file for ``method`` on ``model`` (and its variants if asked); the
    first results, from before the DiT was benchmarked, name no model: they are SD2's."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path}: not readable as JSON ({error})") from None
    if not isinstance(data, dict) or "rows" not in data:
        raise SystemExit(f"{path}: not a bench_unet.py result (no 'rows')")
    meta = data.get("meta", {})
    if meta.get("model", "sd2") != model:
        return []
    # the process's floor: plain-copy (a second compile of plain, bench_unet.py) against plain, if timed
    copies = [r for r in data["rows"] if r.get("method") == CONTROL and r.get("res") == res
              and r.get("mode") == mode and not r.get("error")]
    floor = {prefix + "copy_speedup": copies[0].get(prefix + "speedup") for prefix in PREFIXES.values()} if copies else {}
    # code: which code was timed; inductor_cache: "empty" (compiled anew) or "warm" (may reuse an
    # earlier process's kernels and picks); both recorded since session 30, "-" before
    process = dict(file=str(path), card=meta.get("card", "?"), batch=meta.get("batch", "?"),
                   loop_calls=loop_length(int(meta.get("iters", 30)), meta.get("loop_calls", 0)),
                   code=meta.get("code", "-"), inductor_cache=meta.get("inductor_cache", "-"), **floor)
    found = []
    for row in data["rows"]:
        name = row.get("method", "")
        base = base_name(name)
        if row.get("res") != res or row.get("mode") != mode or base != method or row.get("error"):
            continue
        if name != base and not variants:
            continue
        found.append(dict(row, **process))
    return found


def gather(files: list[Path], model: str, res: int, method: str, mode: str, variants: bool) -> list[dict]:
    """The configuration's rows of every file, in file order."""
    return [row for path in files for row in rows_of(path, model, res, method, mode, variants)]


def summary(rows: list[dict], timing: str, target: float | None) -> dict:
    shares = shares_of(rows, timing)
    if not shares:
        return {"processes": 0}
    result = {"processes": len(shares), "median": round(statistics.median(shares), 3),
              "min": min(shares), "max": max(shares)}
    if target is not None:
        result["at_target"] = sum(s >= target for s in shares)
        result["target"] = target
    return result


def markdown(rows: list[dict], timing: str, stats: dict) -> str:
    prefix = PREFIXES[timing]
    lines = ["| file | card | code | Inductor cache | batch | loop calls | method | speedup | ceiling | share "
             "| plain-copy speedup |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['card']} | {r['code']} | {r['inductor_cache']} | {r['batch']} "
                     f"| {r['loop_calls']} | {r['method']} | "
                     f"{r.get(prefix + 'speedup')} "
                     f"| {r.get(prefix + 'ceiling')} | {r.get(prefix + 'gain_share')} "
                     f"| {r.get(prefix + 'copy_speedup', '-')} |")
    if stats["processes"]:
        text = (f"median share ({timing} timing) over {stats['processes']} processes: {stats['median']} "
                f"[{stats['min']}-{stats['max']}]")
        if "target" in stats:
            text += f"; {stats['at_target']} of {stats['processes']} at or above {stats['target']}"
        lines += ["", text]
    else:
        lines += ["", "no process recorded this configuration"]
    return "\n".join(lines)


def plot(rows: list[dict], timing: str, stats: dict, title: str, path: Path) -> None:
    """The shares (as :func:`summary` counts them) against the median and target, as a PNG written
    atomically (a bare Figure, as the validation reports draw theirs: no pyplot state)."""
    from matplotlib.figure import Figure

    shares = shares_of(rows, timing)
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    ax.plot(range(len(shares)), shares, "o", label="process")
    if stats.get("processes"):
        ax.axhline(stats["median"], color="C1", label=f"median {stats['median']}")
    if "target" in stats:
        ax.axhline(stats["target"], color="C3", linestyle="--", label=f"target {stats['target']}")
    ax.set_xlabel("process (file order)")
    ax.set_ylabel(f"share of the ceiling's gain ({timing})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="bench_unet.json files or folders holding them")
    parser.add_argument("--model", default="sd2", choices=("sd2", "dit-xl2"))
    parser.add_argument("--res", type=int, required=True)
    parser.add_argument("--method", required=True, help="the method as bench_unet.py names it, without a variant")
    parser.add_argument("--mode", default="cudagraphs", choices=["eager", "compile", "cudagraphs"])
    parser.add_argument("--timing", default="loop", choices=list(PREFIXES))
    parser.add_argument("--variants", action="store_true", help="count the method's @NAME=VALUE rows too")
    parser.add_argument("--target", type=float, default=None, help="e.g. 0.9: count the processes reaching it")
    parser.add_argument("--plot", type=Path, default=None, help="write the shares as a PNG here")
    args = parser.parse_args(argv)
    if args.target is not None and not 0 < args.target <= 1:
        parser.error(f"--target {args.target}: must be in (0, 1]")
    if args.plot is not None and args.plot.suffix != ".png":
        parser.error(f"--plot {args.plot}: must end in .png")
    rows = gather(process_files(args.paths), args.model, args.res, args.method, args.mode, args.variants)
    stats = summary(rows, args.timing, args.target)
    print(markdown(rows, args.timing, stats))
    if args.plot is not None and stats["processes"]:
        plot(rows, args.timing, stats, f"{args.model}: {args.method}, {args.res} px, {args.mode}", args.plot)
    return 0 if stats["processes"] else 1


if __name__ == "__main__":
    sys.exit(main())
