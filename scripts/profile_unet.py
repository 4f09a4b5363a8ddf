"""Where the time of one compiled denoiser call goes (GPU kernels by CUDA time, and wall vs GPU
time), for a few methods; with ``plain`` among them, each method's kernels are also diffed against
plain's (what the merge adds, what attention saves): diagnoses a variant slower than its kernels
predict.

    python scripts/profile_unet.py --res 768 --mode cudagraphs \
        --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" --out results/

Writes ``profile_<method>.txt`` (the profiler's table), ``profile_<res>_<mode>.json`` (every
kernel: calls and GPU microseconds per model call, per method) and ``profile_diff_<res>_<mode>.md``;
with ``--trace``, ``trace_<method>.json.gz`` (the profiled calls' CPU and GPU timeline, for
chrome://tracing or Perfetto): where a loop of calls leaves the GPU idle.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import (CONTROL, METHODS, VARIANT_MARK, Bench, add_loop_calls, base_name, check_loop_calls,  # noqa: E402
                        compile_cache, cuda_loop_ms, cuda_median_ms, inductor_settings, launch_settings, loop_length,
                        method_of, patch, provenance, require_cuda, variant_of)

CALLS = 5  # profiled model calls per method


def write_trace(prof, path: Path) -> None:
    """The profile's CPU and GPU timeline as a gzipped Chrome trace (the raw JSON is ~10x larger)."""
    raw = path.with_name(f".{path.name}.json")
    try:
        prof.export_chrome_trace(str(raw))
        with open(raw, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    finally:
        raw.unlink(missing_ok=True)


def host_issue_ms(fn, calls: int) -> float:
    """Host time per call to issue ``calls`` calls back to back on an idle GPU (nothing waited
    for). Well below the loop's time per call, the GPU bounds the loop; near it, the host may, or
    a launch queue that filled held the host back: at SD2 768 px, 50 graph replays did (session 28:
    issue time 83% of the loop's, the host waiting on the GPU)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    issued = time.perf_counter() - t0
    torch.cuda.synchronize()
    return issued / calls * 1000


def kernel_table(prof) -> dict[str, dict[str, float]]:
    """GPU kernels (and memsets/copies) of the profile: name -> calls and us per model call."""
    table: dict[str, dict[str, float]] = {}
    for event in prof.key_averages():
        if event.self_device_time_total <= 0:
            continue
        row = table.setdefault(event.key, {"calls": 0.0, "us": 0.0})
        row["calls"] += event.count / CALLS
        row["us"] += event.self_device_time_total / CALLS
    return table


def kernel_family(name: str) -> str:
    """An Inductor kernel's name without its graph-local number (``triton_poi_fused_add_view_19`` ->
    ``triton_poi_fused_add_view``): the same fused kernel is numbered differently in two models'
    graphs, so a diff by full name would list it once as added and once as removed."""
    return re.sub(r"_\d+$", "", name) if name.startswith("triton_") else name


def by_family(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    families: dict[str, dict[str, float]] = {}
    for name, row in table.items():
        family = families.setdefault(kernel_family(name), {"calls": 0.0, "us": 0.0})
        family["calls"] += row["calls"]
        family["us"] += row["us"]
    return families


# What a kernel does, coarsely, for the by-kind rows of the diff: merging changes attention,
# the projections, its own kernels and the glue around them; the convolutions and group norms do
# the same work in every model, so their delta is the drift between two compiles and the order
# they ran in (session 25: +11 to +90 us a call, as much as the whole merge path).
KINDS = ("attention (SDPA)", "BiGain kernels", "convolutions, group norms, SiLU", "GEMMs",
         "other Inductor kernels (norms, adds, GELU)", "memsets and copies", "other")


def kernel_kind(name: str) -> str:
    """One of :data:`KINDS` for a kernel's name."""
    lower = name.lower()
    if any(key in lower for key in ("sdpa", "flash", "fmha")):
        return KINDS[0]
    if re.fullmatch(r"[a-z0-9_]+_kernel", name):  # ours (bigain_export.kernels.triton_kernels)
        return KINDS[1]
    if "layer_norm" not in lower and any(key in lower for key in ("fprop", "convolution", "group_norm", "silu")):
        return KINDS[2]
    if any(key in lower for key in ("nvjet", "gemm", "cublas", "cutlass")):
        return KINDS[3]
    if name.startswith("triton_"):
        return KINDS[4]
    if "memset" in lower or "memcpy" in lower:
        return KINDS[5]
    return KINDS[6]


def by_kind(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Microseconds a call per :data:`KINDS` entry (the graph-replay rows left out)."""
    kinds = dict.fromkeys(KINDS, 0.0)
    for name, row in table.items():
        if not name.startswith("## Call"):
            kinds[kernel_kind(name)] += row["us"]
    return kinds


def diff_markdown(res: int, mode: str, kernels: dict[str, dict], summary: dict[str, dict]) -> str:
    """Per method: kernel families (:func:`kernel_family`) whose time changed against plain,
    largest change first."""
    lines = [f"# Kernel time against plain, {res} px, {mode} (us per call)", ""]
    plain = by_family(kernels["plain"])
    for name, table in kernels.items():
        if name == "plain":
            continue
        table = by_family(table)
        s, p = summary[name], summary["plain"]
        lines += [f"## {name}", "",
                  f"one call {s['ms']:.3f} ms (plain {p['ms']:.3f}); in a loop {s['loop_ms']:.3f} ms (plain "
                  f"{p['loop_ms']:.3f}); graph replay {s['graph_ms']:.3f} ms (plain {p['graph_ms']:.3f}); "
                  f"GPU kernel time {s['gpu_ms']:.3f} ms "
                  f"(plain {p['gpu_ms']:.3f}); kernels per call {s['kernels']:.0f} (plain {p['kernels']:.0f})", "",
                  # a loop's time outside kernels: gaps between kernels and host time the GPU waits
                  # for; kernel rows below cannot show a difference here
                  f"idle in a loop (loop - kernel time) {s['loop_ms'] - s['gpu_ms']:.3f} ms "
                  f"(plain {p['loop_ms'] - p['gpu_ms']:.3f})"
                  # recorded since session 27: older JSONs have no host time
                  + (f"; host time to issue a call {s['host_ms']:.3f} ms (plain {p['host_ms']:.3f})"
                     if "host_ms" in s and "host_ms" in p else ""), "",
                  "| kind | us | plain us | delta us |", "|---|---|---|---|"]
        mine, theirs = by_kind(kernels[name]), by_kind(kernels["plain"])
        lines += [f"| {kind} | {mine[kind]:.1f} | {theirs[kind]:.1f} | {mine[kind] - theirs[kind]:+.1f} |"
                  for kind in KINDS if mine[kind] or theirs[kind]]
        lines += ["", "| kernel | calls | us | plain calls | plain us | delta us |", "|---|---|---|---|---|---|"]
        keys = set(table) | set(plain)
        deltas = {k: table.get(k, {}).get("us", 0.0) - plain.get(k, {}).get("us", 0.0) for k in keys}
        for key in sorted(keys, key=lambda k: -abs(deltas[k]))[:40]:
            a, b = table.get(key, {"calls": 0, "us": 0.0}), plain.get(key, {"calls": 0, "us": 0.0})
            lines.append(f"| `{key[:90]}` | {a['calls']:.0f} | {a['us']:.1f} | {b['calls']:.0f} | {b['us']:.1f} "
                         f"| {deltas[key]:+.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd2", "dit-xl2"], default="sd2")
    parser.add_argument("--res", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--mode", choices=["compile", "cudagraphs"], default="compile",
                        help="torch.compile default mode, or mode='reduce-overhead' (CUDA graphs)")
    parser.add_argument("--methods", nargs="+", default=["plain", "bigain-merge r=0.5"], metavar="METHOD",
                        help=f"names of bench_unet.METHODS, each optionally with '{VARIANT_MARK}NAME=VALUE[,...]' "
                             "(launch settings it is compiled and profiled under, as bench_unet.py --variant)")
    add_loop_calls(parser)
    parser.add_argument("--trace", action="store_true",
                        help="also write each method's profiled calls as a Chrome trace (trace_<method>.json.gz)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    check_loop_calls(parser, args.loop_calls)
    for label in args.methods:  # refused before any model is built
        if base_name(label) not in METHODS:
            parser.error(f"--methods: unknown method {base_name(label)!r}; allowed: {', '.join(METHODS)}, "
                         f"each optionally with '{VARIANT_MARK}NAME=VALUE'")
        try:
            variant_of(label)
        except ValueError as error:
            parser.error(f"--methods {label!r}: {error}")
    require_cuda(parser)
    timed_with = provenance()  # before any compile
    from torch.profiler import ProfilerActivity, profile

    args.out.mkdir(parents=True, exist_ok=True)
    loop_calls = loop_length(20, args.loop_calls)  # the 20 timed calls' rule, as cuda_loop_ms below
    bench = Bench(args.model, args.res, args.batch)
    kernels, summary = {}, {}
    for name in args.methods:
        patch(bench.model, method_of(name))
        torch._dynamo.reset()
        model = torch.compile(bench.model, mode="reduce-overhead" if args.mode == "cudagraphs" else None)
        # plain-copy: compiled in a fresh Inductor cache, its kernels generated and autotuned anew
        with torch.inference_mode(), launch_settings(**variant_of(name)), compile_cache(fresh=name == CONTROL):
            ms = cuda_median_ms(lambda: bench.call(model), 5, 20)
            loop_ms = cuda_loop_ms(lambda: bench.call(model), 5, 20, loop_calls)
            host_ms = host_issue_ms(lambda: bench.call(model), loop_calls)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(CALLS):
                    bench.call(model)
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / CALLS * 1000
        kernels[name] = kernel_table(prof)
        label = re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('_')
        if args.trace:
            write_trace(prof, args.out / f"trace_{label}.json.gz")
        # the CUDA graph's replay appears as one "## Call CompiledFxGraph" event over its kernels:
        # kept apart (it is not a kernel); the kernel sum (by_kind) leaves it out
        graph_us = sum(row["us"] for key, row in kernels[name].items() if key.startswith("## Call"))
        gpu = sum(by_kind(kernels[name]).values()) / 1000
        summary[name] = {"ms": ms, "loop_ms": loop_ms, "host_ms": host_ms, "graph_ms": graph_us / 1000, "wall_ms": wall,
                         "gpu_ms": gpu, "kernels": sum(row["calls"] for row in kernels[name].values()),
                         "loop_calls": loop_calls}
        table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70)
        (args.out / f"profile_{label}.txt").write_text(table)
        print(f"== {name}: {ms:.2f} ms (one call), {loop_ms:.2f} ms (in a loop), host issues a call in {host_ms:.2f} ms, "
              f"profiled wall {wall:.2f} ms, "
              f"graph replay {graph_us / 1000:.2f} ms, GPU kernel time {gpu:.2f} ms, "
              f"{summary[name]['kernels']:.0f} kernels a call")
        print("\n".join(table.splitlines()[:22]))
        patch(bench.model, None)
    stem = f"{args.res}_{args.mode}"
    (args.out / f"profile_{stem}.json").write_text(json.dumps(
        {"res": args.res, "mode": args.mode, "model": args.model, "torch": torch.__version__,
         "device": torch.cuda.get_device_name(), "inductor": inductor_settings(), **timed_with, "summary": summary,
         "kernels": kernels}, indent=1))
    if "plain" in kernels:
        text = diff_markdown(args.res, args.mode, kernels, summary)
        (args.out / f"profile_diff_{stem}.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
