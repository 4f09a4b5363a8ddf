"""Where two compiles launched the same kernel differently: the launch grids of two profile traces.

Inductor benchmarks several configurations of many of its Triton kernels at their first call and
keeps the fastest there; that pick can differ between two compiles of one model (session 28: 42 of
145 kernel sites of the SD2 UNet at 768 px, between plain and a second compile of it) and costs or
saves tens of microseconds a call at one site. This lists such sites from two Chrome traces
written by ``profile_unet.py --trace``:

    python scripts/kernel_choices.py trace_plain.json.gz trace_plain-copy.json.gz --calls 5

A site is one kernel of the compiled graph, named by Inductor (``triton_per_fused_..._39``); its
launches in a call all use one grid, and a different grid for the same site means a different
block size (XBLOCK), so a different configuration. Sites pair by name with the number stripped, in
the order they first ran: two compiles of one graph number them alike, and a patched graph's sites
still pair where each name occurs equally often in both (the rest are listed as unpaired). Prints
a Markdown table of the sites whose grids differ, with each one's time a call in both traces, and
splits the difference in GPU kernel time a call: at those sites (the compiles' picks), at sites
launched alike, and in the rest (for a patched model against plain: what patching changed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_unet import kernel_family  # noqa: E402  (an Inductor kernel's name without its number)

from bigain_export.validate.atomic import atomic_write  # noqa: E402


def read_sites(path: Path) -> "OrderedDict[str, dict]":
    """Each GPU kernel name of a trace, in the order it first ran, with its launch grids and total
    microseconds."""
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as handle:
            trace = json.load(handle)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path}: not a readable Chrome trace ({error})") from None
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list):
        raise SystemExit(f"{path}: not a Chrome trace (no traceEvents list)")
    kernels = sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    if not kernels:
        raise SystemExit(f"{path}: no GPU kernels in this trace (profiled without CUDA activity?)")
    sites: OrderedDict[str, dict] = OrderedDict()
    for event in kernels:
        site = sites.setdefault(event["name"], {"grids": set(), "us": 0.0, "launches": 0})
        site["grids"].add(tuple(event.get("args", {}).get("grid") or ()))
        site["us"] += float(event["dur"])
        site["launches"] += 1
    return sites


def pair_sites(a: OrderedDict, b: OrderedDict) -> tuple[list[tuple[str, str]], list[str]]:
    """(pairs of site names, unpaired base names): the k-th site of a base name in ``a`` with the
    k-th of that base name in ``b``, where both have equally many."""
    def by_base(sites):
        groups: OrderedDict[str, list[str]] = OrderedDict()
        for name in sites:
            groups.setdefault(kernel_family(name), []).append(name)
        return groups

    groups_a, groups_b = by_base(a), by_base(b)
    pairs, unpaired = [], []
    for base in list(groups_a) + [base for base in groups_b if base not in groups_a]:
        names_a, names_b = groups_a.get(base, []), groups_b.get(base, [])
        if len(names_a) == len(names_b):
            pairs.extend(zip(names_a, names_b))
        else:
            unpaired.append(base)
    return pairs, unpaired


def compare(a: OrderedDict, b: OrderedDict, calls: int, triton_only: bool = True) -> dict:
    """Sites launched with different grids, each with its microseconds a call in ``a`` and ``b``
    (largest difference first), and where the kernel time of ``b`` differs from ``a``'s a call:
    ``delta_us`` at those sites (the compiles' picks), ``same_grid_us`` at paired sites launched
    alike (clocks, caches), ``unpaired_us`` at kernels only one graph has or has more often (the
    graphs' own difference: for a patched model, what patching adds and removes)."""
    pairs, unpaired = pair_sites(a, b)
    compared = [(x, y) for x, y in pairs if x.startswith("triton_")] if triton_only else pairs
    differing, same_grid = [], 0.0
    for name_a, name_b in compared:
        site_a, site_b = a[name_a], b[name_b]
        if site_a["grids"] != site_b["grids"]:
            differing.append(dict(site_a=name_a, site_b=name_b, grids_a=sorted(site_a["grids"]),
                                  grids_b=sorted(site_b["grids"]), launches=site_a["launches"] / calls,
                                  us_a=site_a["us"] / calls, us_b=site_b["us"] / calls))
        else:
            same_grid += (site_b["us"] - site_a["us"]) / calls
    differing.sort(key=lambda d: -abs(d["us_b"] - d["us_a"]))
    delta = sum(d["us_b"] - d["us_a"] for d in differing)
    total_a, total_b = (sum(site["us"] for site in sites.values()) / calls for sites in (a, b))
    return dict(paired=len(compared), differing=differing, unpaired=unpaired, delta_us=delta,
                same_grid_us=same_grid, total_us_a=total_a, total_us_b=total_b,
                # the rest: unpaired kernels, and (without --all-kernels) paired non-Inductor ones
                unpaired_us=total_b - total_a - delta - same_grid)


def trace_label(path: Path) -> str:
    """``trace_plain-copy.json.gz`` -> ``plain-copy`` (method names may hold dots: ``r_0.7``)."""
    name = re.sub(r"\.json(\.gz)?$", "", path.name)
    return name.removeprefix("trace_")


def trace_labels(path_a: Path, path_b: Path) -> tuple[str, str]:
    """Labels for the two columns; one method traced in two processes (``prof-new/trace_plain`` and
    ``prof-reuse/trace_plain``) is told apart by its folder, or the table's columns read alike."""
    a, b = trace_label(path_a), trace_label(path_b)
    if a == b:
        a, b = f"{path_a.parent.name}/{a}", f"{path_b.parent.name}/{b}"
    return (a, b) if a != b else (str(path_a), str(path_b))


def markdown(result: dict, label_a: str, label_b: str, top: int) -> str:
    kinds = "kernels not paired or not compared" if result["unpaired"] else "kernels not compared"
    lines = [f"{len(result['differing'])} of {result['paired']} paired kernel sites launch with different grids; "
             f"at those sites {label_b} takes {result['delta_us']:+.1f} us a call against {label_a}"
             + (f"; unpaired kernel names: {len(result['unpaired'])}" if result["unpaired"] else ""), "",
             f"GPU kernel time a call: {label_a} {result['total_us_a']:.1f} us, {label_b} {result['total_us_b']:.1f} us "
             f"({result['total_us_b'] - result['total_us_a']:+.1f}): {result['delta_us']:+.1f} at sites launched "
             f"with other grids, {result['same_grid_us']:+.1f} at sites launched alike, "
             f"{result['unpaired_us']:+.1f} in {kinds}", ""]
    if not result["differing"]:
        return "\n".join(lines)
    lines += [f"| site ({label_a}) | launches a call | grid {label_a} | grid {label_b} | us {label_a} | us {label_b} "
             "| delta us |",
             "|---|---|---|---|---|---|---|"]
    for d in result["differing"][:top]:
        grids = lambda g: " ".join("x".join(map(str, grid)) for grid in g)  # noqa: E731
        lines.append(f"| `{d['site_a'][:80]}` | {d['launches']:g} | {grids(d['grids_a'])} | {grids(d['grids_b'])} "
                     f"| {d['us_a']:.1f} | {d['us_b']:.1f} | {d['us_b'] - d['us_a']:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace_a", type=Path, help="Chrome trace (.json or .json.gz) of the reference compile")
    parser.add_argument("trace_b", type=Path, help="Chrome trace of the compile compared with it")
    parser.add_argument("--calls", type=int, default=5,
                        help="model calls each trace holds (profile_unet.py profiles 5)")
    parser.add_argument("--all-kernels", action="store_true",
                        help="also compare kernels not generated by Inductor (cuBLAS, cuDNN, BiGain's own)")
    parser.add_argument("--top", type=int, default=40, help="rows of the table")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.top < 1:
        parser.error(f"--calls {args.calls} --top {args.top}: both must be at least 1")
    result = compare(read_sites(args.trace_a), read_sites(args.trace_b), args.calls, not args.all_kernels)
    text = markdown(result, *trace_labels(args.trace_a, args.trace_b), args.top)
    if args.out:
        atomic_write(args.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
