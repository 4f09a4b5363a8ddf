"""Per-layer cost of the merge path vs the attention it saves, on one patched layer's shapes.

    python scripts/bench_kernels.py --out results/          # needs a CUDA GPU

For each shape (SD2-base level 0 at 512/768/1024 px, batch 2, C=320, 5 heads; DiT-XL/2 at 512 px,
batch 16, C=1152, 16 heads) it times, with CUDA events (median after warm-up):

* attention (q/k/v/out projections + SDPA) at full length, at the merged length for ratio 0.5 /
  0.7, and with keys/values pooled by s=2 — the savings that bound any speed-up;
* the merge path with the Triton kernels (plan, merge, unmerge; plan split into its kernels);
* the same path with the reference ops, eager and under torch.compile (what the project ran before).

Writes ``bench_kernels.json`` / ``.md`` with card and versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export.config import BiGainConfig  # noqa: E402
from bigain_export.kernels import launch  # noqa: E402
from bigain_export.ops import library  # noqa: E402
from bigain_export.ops import reference as ref  # noqa: E402
from bigain_export.validate.atomic import atomic_write  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import capture_graph, cuda_loop_ms, cuda_median_ms, launch_settings  # noqa: E402

SHAPES = {  # name: (batch, grid side, channels, heads)
    "sd2-512": (2, 64, 320, 5),
    "sd2-768": (2, 96, 320, 5),
    "sd2-1024": (2, 128, 320, 5),
    "dit-xl2-512": (16, 32, 1152, 16),
    # the built-ins at the sweep's batch: where CUDA graphs put BiGain's merges at 0.55x of none
    # on the DiT and ToMe fixed (same kernels, other anchors) at 0.87x (docs/results.md)
    "builtin-dit": (250, 16, 128, 2),
    "builtin-unet": (250, 32, 64, 1),
}


def cuda_ms(fn, warmup: int = 5, iters: int = 50) -> float:
    return cuda_median_ms(fn, warmup, iters)


class Attention(torch.nn.Module):
    """What diffusers' AttnProcessor2_0 runs for self-attention: 4 projections and SDPA."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v, self.to_out = (torch.nn.Linear(channels, channels, bias=i == 3) for i in range(4))

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        kv = x if kv is None else kv
        b, n, c = x.shape
        split = lambda t: t.view(b, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(kv)), split(self.to_v(kv)))
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))


def reference_path(x, metric, h, w, r):
    slot = ref.token_merge_plan(metric, h, w, r, "window")
    return ref.unmerge(ref.merge(x, slot, x.shape[1] - r), slot)


def kernel_path(x, metric, h, w, r):
    merged, slot, _ = library.gated_merge(x, metric, h, w, r, "window")
    return library.token_unmerge(merged, slot)


def random_inputs(name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, metric)`` ``[B, N, C]`` of a shape, seeded: every run times the same tokens."""
    b, side, c, _ = SHAPES[name]
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, side * side, c, device="cuda", dtype=dtype, generator=g)
    return x, torch.randn(b, side * side, c, device="cuda", dtype=dtype, generator=g)


def bench_shape(name: str, dtype: torch.dtype, local_only: bool = False) -> list[dict]:
    """Every row of one shape; ``local_only``: attention, the merge path at 0.5 / 0.7 (no compiled
    rows) and the match_radius rows (``--local-only``)."""
    _, side, c, heads = SHAPES[name]
    n = side * side
    x, metric = random_inputs(name, dtype)
    attn = Attention(c, heads).to("cuda", dtype).eval()
    rows = []
    add = lambda what, ms, **extra: rows.append(dict(shape=name, what=what, ms=round(ms, 4), **extra))  # noqa: E731
    with torch.inference_mode():
        full = cuda_ms(lambda: attn(x))
        add("attention full", full, tokens=n)
        pooled = ref.kv_downsample(x, 1.0, side, side, 2)
        add("attention kv s=2", cuda_ms(lambda: attn(x, pooled)), tokens=n)
        for ratio in (0.5, 0.7):
            r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
            short = x[:, : n - r].contiguous()
            add(f"attention merged {ratio}", cuda_ms(lambda: attn(short)), tokens=n - r)
            slot = library.merge_plan(metric, side, side, r, "window")
            merged = library.token_merge(x, slot, side, side, r)
            add(f"kernel plan {ratio}", cuda_ms(lambda: library.merge_plan(metric, side, side, r, "window")))
            add(f"kernel merge {ratio}", cuda_ms(lambda: library.token_merge(x, slot, side, side, r)))
            add(f"kernel unmerge {ratio}", cuda_ms(lambda: library.token_unmerge(merged, slot)))
            add(f"kernel path {ratio}", cuda_ms(lambda: kernel_path(x, metric, side, side, r)))
            # the GPU time alone (no launch cost): what a CUDA-graph or engine call pays per layer
            add(f"kernel path {ratio}, CUDA graph", graph_ms(lambda: kernel_path(x, metric, side, side, r)))
            add(f"reference path eager {ratio}", cuda_ms(lambda: reference_path(x, metric, side, side, r)))
            if ratio != 0.7 or local_only:
                continue
            torch._dynamo.reset()
            compiled = torch.compile(reference_path)
            add(f"reference path compiled {ratio}", cuda_ms(lambda: compiled(x, metric, side, side, r)))
            compiled_kernel = torch.compile(kernel_path, fullgraph=True)
            add(f"kernel path compiled {ratio}", cuda_ms(lambda: compiled_kernel(x, metric, side, side, r)))
        rows.extend(local_match_paths(name, x, metric, side, 0.7))
        if local_only:
            return rows
        if name in ("sd2-1024", "dit-xl2-512", "builtin-dit", "builtin-unet"):
            rows.extend(plan_breakdown(name, x, metric, side, 0.7))
        rows.extend(variant_paths(name, x, metric, side, 0.7))
        rows.extend(fusion_paths(name, x, metric, side, 0.7))
        rows.extend(select_paths(name, metric, side, 0.7))
        rows.extend(anchor_paths(name, metric, side, 0.7))
    return rows


def launch_rows(name: str, dtype: torch.dtype) -> list[dict]:
    """``--launches-only``: :func:`fusion_paths` at ratio 0.7 on this shape's random inputs."""
    x, metric = random_inputs(name, dtype)
    with torch.inference_mode():
        return fusion_paths(name, x, metric, SHAPES[name][1], 0.7)


def select_paths(name, metric, side, ratio) -> list[dict]:
    """The plan with each selection (launch.select_path: a sort in registers up to 4096 sources,
    the radix select walked by one program, the radix select over chunks), eager, host time and
    as a CUDA graph (GPU time alone; the one program forced there too): the data for
    launch.SMALL_SELECT, ONE_PROGRAM_SELECT and RADIX_WHEN_CAPTURING."""
    n = metric.shape[1]
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    plan = lambda: library.merge_plan(metric, side, side, r, "window")  # noqa: E731
    out = []
    for path in launch.SELECT_PATHS:
        if path == "small" and n - n // 4 > 4096:
            continue
        with launch_settings(SMALL_SELECT=1 << 30 if path == "small" else 0,
                             ONE_PROGRAM_SELECT=1 << 30 if path == "one-program" else 0,
                             RADIX_WHEN_CAPTURING=path == "radix"):
            out.append(dict(shape=name, what=f"plan {ratio}, {path} select, eager", ms=round(cuda_ms(plan), 4)))
            out.append(dict(shape=name, what=f"plan {ratio}, {path} select, host", ms=round(host_ms(plan), 4)))
            out.append(dict(shape=name, what=f"plan {ratio}, {path} select, CUDA graph", ms=round(graph_ms(plan), 4)))
    return out


def host_ms(fn, iters: int = 40) -> float:
    """CPU milliseconds per call of ``fn`` with the GPU left to catch up: warmed up, synchronised,
    then ``iters`` calls timed on the host clock without a sync (median of 5 such runs)."""
    for _ in range(3):
        fn()
    runs = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        runs.append((time.perf_counter() - t0) * 1000 / iters)
    torch.cuda.synchronize()
    return sorted(runs)[2]


def graph_ms(fn) -> float:
    """GPU time of ``fn`` alone: captured once (:func:`bench_unet.capture_graph`), each replay
    timed on its own (median)."""
    return cuda_ms(capture_graph(fn).replay)


def anchor_paths(name, metric, side, ratio) -> list[dict]:
    """The plan with each anchor rule (BiGain's Laplacian gate, both conventions; ToMe's fixed
    grid, whose offsets come from torch ops), eager and as a CUDA graph: the cost of the anchor
    step, the only difference between them."""
    n = metric.shape[1]
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    out = []
    for anchor in ("window", "released", "fixed"):
        plan = lambda: library.merge_plan(metric, side, side, r, anchor)  # noqa: E731
        out.append(dict(shape=name, what=f"plan {ratio}, {anchor} anchors, eager", ms=round(cuda_ms(plan), 4)))
        try:
            ms = graph_ms(plan)
        except RuntimeError as exc:  # a step that cannot be captured: say so, keep the other rows
            ms = float("nan")
            print(f"  {name} {anchor}: not capturable: {str(exc).splitlines()[0][:120]}")
        out.append(dict(shape=name, what=f"plan {ratio}, {anchor} anchors, CUDA graph", ms=round(ms, 4)))
    return out


def plan_breakdown(name, x, metric, side, ratio) -> list[dict]:
    """CUDA time of each kernel of the merge path (plan, merge, unmerge; torch.profiler), and
    the plan's time for several tile shapes of the similarity kernel (set through the launch
    module's constants)."""
    from torch.profiler import ProfilerActivity, profile

    n = metric.shape[1]
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    plan = lambda: library.merge_plan(metric, side, side, r, "window")  # noqa: E731
    out = []
    for _ in range(3):
        plan()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            kernel_path(x, metric, side, side, r)
        torch.cuda.synchronize()
    for event in prof.key_averages():
        if event.device_time_total > 0:
            out.append(dict(shape=name, what=f"path kernel {event.key[:60]}", ms=round(event.device_time_total / 10 / 1000, 4)))
    for config in [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (128, 256, 32, 8, 4), (128, 128, 64, 4, 4),
                   (64, 256, 64, 4, 3), (256, 128, 64, 8, 3), (128, 64, 64, 4, 4)]:
        tiles = dict(zip(("SIM_BLOCK_M", "SIM_BLOCK_N", "SIM_BLOCK_K", "SIM_WARPS", "SIM_STAGES"), config))
        with launch_settings(**tiles):
            out.append(dict(shape=name, what="plan with similarity tiles M%d N%d K%d w%d s%d" % config,
                            ms=round(tile_ms(cuda_ms, plan, config), 4)))
    return out


def local_match_paths(name, x, metric, side, ratio) -> list[dict]:
    """``match_radius`` (local anchor matching): plan and path per radius as CUDA graphs beside
    the global plan, and the similarity kernel's own GPU time per radius (profiler)."""
    from torch.profiler import ProfilerActivity, profile

    n = metric.shape[1]
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    out = []
    add = lambda what, ms: out.append(dict(shape=name, what=what, ms=round(ms, 4)))  # noqa: E731
    for radius in (0, 1, 2, 3):
        plan = lambda: library.merge_plan(metric, side, side, r, "window", radius)  # noqa: E731
        path = lambda: library.token_unmerge(*library.gated_merge(x, metric, side, side, r, "window", radius)[:2])  # noqa: E731
        add(f"plan {ratio} radius {radius}, CUDA graph", graph_ms(plan))
        add(f"path {ratio} radius {radius}, CUDA graph", graph_ms(path))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                plan()
            torch.cuda.synchronize()
        for event in prof.key_averages():
            if "best_anchor" in event.key and event.device_time_total > 0:
                add(f"radius {radius} kernel {event.key[:40]}", event.device_time_total / 10 / 1000)
    return out


# launch.py settings that change how many launches a plan makes (the first is the code before
# session 23), compared by fusion_paths
PLAN_LAUNCHES = {"as before": dict(PLAN_FUSION=False, RADIX_BITS=8), "fused": dict(PLAN_FUSION=True, RADIX_BITS=8),
                 "fused, 11-bit digits": dict(PLAN_FUSION=True, RADIX_BITS=11)}


def fusion_paths(name, x, metric, side, ratio, rounds: int = 7) -> list[dict]:
    """The plan's launch settings (:data:`PLAN_LAUNCHES`) as CUDA graphs replayed back to back
    (the kernels and the gaps between them, as in a compiled model's graph), per match_radius 0
    and 1: a per-block plan's path (plan with groups, merge, unmerge) and a call's worth of a
    plan reused by 5 blocks (plan with groups, 5 merges, 5 unmerges). Each graph is captured
    under its setting; the settings alternate over ``rounds`` (median), so that clock drift
    falls on all of them."""
    n = metric.shape[1]
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)

    def reused(radius):
        merged, slot, groups = library.gated_merge(x, metric, side, side, r, "window", radius, serves_more=True)
        outs = [library.token_unmerge(merged, slot)]
        for _ in range(4):
            outs.append(library.token_unmerge(library.token_merge(x, slot, side, side, r, groups), slot))
        return outs

    def per_block(radius):
        merged, slot, _ = library.gated_merge(x, metric, side, side, r, "window", radius)
        return library.token_unmerge(merged, slot)

    graphs = {}
    for label, settings in PLAN_LAUNCHES.items():
        with launch_settings(**settings):
            for radius in (0, 1):
                graphs[(label, f"path {ratio} radius {radius}")] = capture_graph(lambda: per_block(radius))
                graphs[(label, f"reused plan x5 {ratio} radius {radius}")] = capture_graph(lambda: reused(radius))
    times = {key: [] for key in graphs}
    for _ in range(rounds):
        for key, graph in graphs.items():
            times[key].append(cuda_loop_ms(graph.replay, 5, 50))
    return [dict(shape=name, what=f"{what} [{label}], CUDA graph loop", ms=round(sorted(ms)[len(ms) // 2], 4),
                 spread=round(max(ms) - min(ms), 4)) for (label, what), ms in times.items()]


def tile_ms(timer, fn, config) -> float:
    """``timer(fn)``, or NaN (said on stdout) for a tile shape that does not fit the GPU."""
    try:
        return timer(fn)
    except Exception as exc:  # noqa: BLE001 - out of shared memory or registers: keep the other rows
        print(f"  config {config}: {type(exc).__name__}: {str(exc)[:100]}")
        return float("nan")


def variant_paths(name, x, metric, side, ratio) -> list[dict]:
    """The host time of each op, each similarity kernel (source rows resident on chip vs the
    nested channel loop) and each split rule as CUDA graphs (GPU time alone), in one run; then the
    resident kernel's tile shapes (plan)."""
    n = metric.shape[1]
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    slot = library.merge_plan(metric, side, side, r, "window")
    plan = lambda: library.merge_plan(metric, side, side, r, "window")  # noqa: E731
    path = lambda: kernel_path(x, metric, side, side, r)  # noqa: E731
    merge = lambda: library.token_merge(x, slot, side, side, r)  # noqa: E731
    out = []
    add = lambda what, ms: out.append(dict(shape=name, what=what, ms=round(ms, 4)))  # noqa: E731
    add(f"merge {ratio}, CUDA graph", graph_ms(merge))
    merged = merge()
    # the host's cost of enqueueing each op (what eager and torch.compile's default mode pay
    # per layer on the CPU, beside the GPU time of the CUDA-graph rows)
    for what, fn in (("plan", plan), ("merge", merge), ("unmerge", lambda: library.token_unmerge(merged, slot)),
                     ("path", path)):
        add(f"host {what} {ratio}", host_ms(fn))
    with launch_settings(SIM_RESIDENT=True):
        applies = launch.resident_channels(x.shape[2], x.element_size()) is not None
    for resident in (True, False) if applies else (False,):
        sim = "resident" if resident else "nested"
        with launch_settings(SIM_RESIDENT=resident):
            add(f"plan {ratio} [{sim}], CUDA graph", graph_ms(plan))
            add(f"path {ratio} [{sim}], CUDA graph", graph_ms(path))
    for rule in launch.SPLIT_RULES:
        with launch_settings(SIM_RESIDENT=True, SPLIT_RULE=rule):
            add(f"plan {ratio} [splits {rule}], CUDA graph", graph_ms(plan))
    if applies:
        for config in [(128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (128, 32, 8, 4), (64, 128, 4, 3),
                       (64, 64, 4, 4)]:
            tiles = dict(zip(("RES_BLOCK_M", "RES_BLOCK_N", "RES_WARPS", "RES_STAGES"), config))
            with launch_settings(SIM_RESIDENT=True, **tiles):
                add("plan %s [resident M%d N%d w%d s%d], CUDA graph" % ((ratio,) + config),
                    tile_ms(graph_ms, plan, config))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--local-only", action="store_true",
                        help="attention, the merge path at ratio 0.5/0.7 and the match_radius rows only")
    parser.add_argument("--launches-only", action="store_true",
                        help="only the plan's launch settings (PLAN_LAUNCHES) as CUDA graphs, alternating rounds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    meta = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                triton=__import__("triton").__version__, python=platform.python_version(),
                date=time.strftime("%Y-%m-%d"), dtype="bf16", timing="CUDA events, median of 50 after 5 warm-up")
    for name in args.shapes:
        t0 = time.time()
        if args.launches_only:
            rows.extend(launch_rows(name, torch.bfloat16))
        else:
            rows.extend(bench_shape(name, torch.bfloat16, args.local_only))
        print(f"[{name}] {time.time() - t0:.0f} s", flush=True)
        write(args.out, meta, rows)  # after every shape: a run cut short keeps what it measured
    print((args.out / "bench_kernels.md").read_text())


def write(out: Path, meta: dict, rows: list[dict]) -> None:
    """bench_kernels.json / .md, each written atomically (never half-written)."""
    lines = [json.dumps(meta), "", "| shape | what | ms |", "|---|---|---|"]
    lines += [f"| {r['shape']} | {r['what']} | {r['ms']:.4f} |" for r in rows]
    atomic_write(out / "bench_kernels.json", json.dumps(dict(meta=meta, rows=rows), indent=1))
    atomic_write(out / "bench_kernels.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
