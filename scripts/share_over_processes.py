"""One configuration's share of the ceiling's gain over every recorded ``bench_unet.py`` process.

Whole-model times move by 1-2% between processes (each compiles anew) while the rounds of one
process agree to ~0.3%, so issue 11's verdict on a target is the median over processes, not one
run. This gathers the rows from the recorded raw files instead of copying numbers by hand:

    python scripts/share_over_processes.py docs/bench/2026-12-06-h100-session2[1-4] --res 768 \\
        --method "bigain-merge r=0.7 radius=1 plan-reuse" --target 0.9 --plot share.png

``--cache-table FILE`` names the Inductor cache of processes recorded before the meta did
(``docs/bench/inductor_cache_by_process.json``); with it, or with the meta's own field, the median
is also given for each kind of process: compiled in an empty cache, or reloaded from a warm one.

Each ``bench_unet.json`` is one process; a row with a variant mark (``METHOD @NAME=VALUE``) counts
only with ``--variants`` (its process is then counted once per row). A process run with
``--kernel-setting`` timed another configuration than its rows' names say: its rows count only for
``--setting`` with the same launch settings (settings equal to today's defaults in
bigain_export/kernels/launch.py are left out on both sides), which also gathers the variant rows
timed under them: ``--setting PERSISTENT_GATHER_NORMS=True`` takes ``METHOD @PERSISTENT_GATHER_NORMS=True``
rows and processes run with ``--kernel-setting PERSISTENT_GATHER_NORMS=True``. Prints a Markdown table, the
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
from bench_unet import (  # noqa: E402  (the readers of a "METHOD @NAME=VALUE" label)
    CONTROL, UNGUARDED_SETTINGS, base_name, loop_length, parse_kernel_settings, variant_of, variant_pairs)

from bigain_export.validate.atomic import atomic_write  # noqa: E402

# bench_unet.py's field prefix of each timing: loop = calls back to back (a sampler), call = one
# call after a sync
PREFIXES = {"loop": "loop_", "call": ""}


def shares_of(rows: list[dict], timing: str) -> list[float]:
    """The rows' shares of the ceiling's gain, leaving out rows without one (no ceiling above 1)."""
    key = PREFIXES[timing] + "gain_share"
    return [r[key] for r in rows if r.get(key) is not None]


CACHE_KINDS = ("empty", "warm")  # as bench_unet.inductor_cache_state records them


def read_cache_table(path: Path) -> dict[Path, str]:
    """{resolved file: "empty" | "warm"} from a table ``{"processes": {file: kind}}`` whose files
    are relative to the current folder (the repository root) or absolute."""
    try:
        table = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path}: not readable as JSON ({error})") from None
    entries = table.get("processes") if isinstance(table, dict) else None
    if not isinstance(entries, dict):
        raise SystemExit(f"{path}: needs a 'processes' object mapping each bench_unet.json to its cache kind")
    for name, kind in entries.items():
        if kind not in CACHE_KINDS:
            raise SystemExit(f"{path}: {name}: {kind!r} is not a cache kind; allowed: {', '.join(CACHE_KINDS)}")
    return {Path(name).resolve(): kind for name, kind in entries.items()}


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


def beyond_defaults(settings: dict) -> dict:
    """The launch settings that differ from today's defaults (launch.py)."""
    from bigain_export.kernels import launch

    return {name: value for name, value in settings.items() if getattr(launch, name, object()) != value}


def reused_default_graph(row: dict, name: str) -> bool:
    """A compiled variant of a setting Dynamo has no guard on, from before variants compiled alone:
    it ran its default's graph (session 33's first run of PERSISTENT_GATHER_NORMS=True)."""
    names = [pair.partition("=")[0] for pair in variant_pairs(name)]  # unchecked: a constant may be gone
    return row.get("mode") != "eager" and not row.get("compiled_alone") and any(n in UNGUARDED_SETTINGS for n in names)


def rows_of(path: Path, model: str, res: int, method: str, mode: str, variants: bool,
            caches: dict[Path, str] | None = None, setting: dict | None = None) -> list[dict]:
    """The rows of one process's file for ``method`` on ``model`` (and its variants if asked); the
    first results, from before the DiT was benchmarked, name no model: they are SD2's. The
    process's cache kind comes from its meta, else from ``caches`` (:func:`read_cache_table`). Rows
    count when they ran under ``setting`` (launch settings beyond the defaults; none by default)."""
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
    listed = (caches or {}).get(path.resolve())
    recorded = meta.get("inductor_cache")
    recorded = recorded if recorded in CACHE_KINDS else None  # absent, or "unknown" (a torch without the helper)
    if listed and recorded and recorded != listed:
        raise SystemExit(f"{path}: its meta says inductor_cache {recorded!r}, the cache table {listed!r}")
    cache = recorded or listed or "-"
    process = dict(file=str(path), card=meta.get("card", "?"), batch=meta.get("batch", "?"),
                   loop_calls=loop_length(int(meta.get("iters", 30)), meta.get("loop_calls", 0)),
                   code=meta.get("code", "-"), inductor_cache=cache, **floor)
    process_settings = meta.get("kernel_settings") or {}  # --kernel-setting, for every row of the process
    found = []
    for row in data["rows"]:
        name = row.get("method", "")
        base = base_name(name)
        if row.get("res") != res or row.get("mode") != mode or base != method or row.get("error"):
            continue
        if name != base and reused_default_graph(row, name):
            continue
        if name != base and (variants or not setting):  # a variant row: every one, or none but for --setting
            if variants:
                found.append(dict(row, **process))
            continue
        try:
            ran_under = beyond_defaults({**process_settings, **variant_of(name)})
        except ValueError:  # a variant of a launch constant that no longer exists: not today's settings
            continue
        if ran_under != (setting or {}):
            continue
        found.append(dict(row, **process))
    return found


def gather(files: list[Path], model: str, res: int, method: str, mode: str, variants: bool,
           caches: dict[Path, str] | None = None, setting: dict | None = None) -> list[dict]:
    """The configuration's rows of every file, in file order."""
    return [row for path in files for row in rows_of(path, model, res, method, mode, variants, caches, setting)]


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


def by_cache(rows: list[dict], timing: str, target: float | None) -> dict[str, dict]:
    """:func:`summary` of each cache kind's processes, where any process's kind is known."""
    kinds = [kind for kind in (*CACHE_KINDS, "-") if any(r["inductor_cache"] == kind for r in rows)]
    if not set(kinds) & set(CACHE_KINDS):
        return {}
    return {kind: summary([r for r in rows if r["inductor_cache"] == kind], timing, target) for kind in kinds}


CACHE_WORDS = {"empty": "compiled in an empty Inductor cache", "warm": "reloaded from a warm Inductor cache",
               "-": "cache not recorded"}


def markdown(rows: list[dict], timing: str, stats: dict, split: dict[str, dict] | None = None) -> str:
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
        for kind, part in (split or {}).items():
            text = f"- {CACHE_WORDS[kind]}: median {part['median']} over {part['processes']} [{part['min']}-{part['max']}]"
            if "target" in part:
                text += f"; {part['at_target']} at or above {part['target']}"
            lines.append(text)
    else:
        lines += ["", "no process recorded this configuration"]
    return "\n".join(lines)


def plot(rows: list[dict], timing: str, stats: dict, title: str, path: Path) -> None:
    """The shares (as :func:`summary` counts them) against the median and target, as a PNG written
    atomically (a bare Figure, as the validation reports draw theirs: no pyplot state)."""
    from matplotlib.figure import Figure

    key = PREFIXES[timing] + "gain_share"
    counted = [(i, r) for i, r in enumerate(r for r in rows if r.get(key) is not None)]
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    kinds = {r["inductor_cache"] for _, r in counted}
    for kind, marker in (("empty", "o"), ("warm", "s"), ("-", "o")):  # one series per cache kind
        points = [(i, r[key]) for i, r in counted if r["inductor_cache"] == kind]
        if points:
            label = "process" if kinds == {"-"} else f"process, {CACHE_WORDS[kind]}"
            ax.plot(*zip(*points), marker, color={"empty": "C0", "warm": "C2", "-": "C7"}[kind], label=label)
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
    parser.add_argument("--setting", nargs="+", default=[], metavar="NAME=VALUE",
                        help="count the rows timed under these launch settings (a variant's or a process's "
                        "--kernel-setting) instead of the defaults")
    parser.add_argument("--target", type=float, default=None, help="e.g. 0.9: count the processes reaching it")
    parser.add_argument("--plot", type=Path, default=None, help="write the shares as a PNG here")
    parser.add_argument("--cache-table", type=Path, default=None,
                        help="JSON naming the Inductor cache of processes whose meta does not "
                        "(docs/bench/inductor_cache_by_process.json): the median is then also given per kind")
    args = parser.parse_args(argv)
    if args.target is not None and not 0 < args.target <= 1:
        parser.error(f"--target {args.target}: must be in (0, 1]")
    if args.plot is not None and args.plot.suffix != ".png":
        parser.error(f"--plot {args.plot}: must end in .png")
    if args.setting and args.variants:
        parser.error("--setting and --variants: give one (--variants counts every variant row already)")
    try:
        setting = beyond_defaults(parse_kernel_settings(args.setting))
    except ValueError as error:
        parser.error(str(error).replace("--kernel-setting", "--setting"))
    if args.setting and not setting:
        parser.error(f"--setting {' '.join(args.setting)}: these are today's defaults; leave --setting out")
    caches = read_cache_table(args.cache_table) if args.cache_table is not None else None
    rows = gather(process_files(args.paths), args.model, args.res, args.method, args.mode, args.variants, caches,
                  setting)
    stats = summary(rows, args.timing, args.target)
    print(markdown(rows, args.timing, stats, by_cache(rows, args.timing, args.target)))
    if args.plot is not None and stats["processes"]:
        plot(rows, args.timing, stats, f"{args.model}: {args.method}, {args.res} px, {args.mode}", args.plot)
    return 0 if stats["processes"] else 1


if __name__ == "__main__":
    sys.exit(main())
