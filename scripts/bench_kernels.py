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
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export.config import BiGainConfig  # noqa: E402
from bigain_export.ops import library  # noqa: E402
from bigain_export.ops import reference as ref  # noqa: E402

SHAPES = {  # name: (batch, grid side, channels, heads)
    "sd2-512": (2, 64, 320, 5),
    "sd2-768": (2, 96, 320, 5),
    "sd2-1024": (2, 128, 320, 5),
    "dit-xl2-512": (16, 32, 1152, 16),
}


def cuda_ms(fn, warmup: int = 5, iters: int = 50) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


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
    merged, slot = library.gated_merge(x, metric, h, w, r, "window")
    return library.token_unmerge(merged, slot)


def bench_shape(name: str, dtype: torch.dtype) -> list[dict]:
    b, side, c, heads = SHAPES[name]
    n = side * side
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, n, c, device="cuda", dtype=dtype, generator=g)
    metric = torch.randn(b, n, c, device="cuda", dtype=dtype, generator=g)
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
            add(f"reference path eager {ratio}", cuda_ms(lambda: reference_path(x, metric, side, side, r)))
            if ratio != 0.7:
                continue
            torch._dynamo.reset()
            compiled = torch.compile(reference_path)
            add(f"reference path compiled {ratio}", cuda_ms(lambda: compiled(x, metric, side, side, r)))
            compiled_kernel = torch.compile(kernel_path, fullgraph=True)
            add(f"kernel path compiled {ratio}", cuda_ms(lambda: compiled_kernel(x, metric, side, side, r)))
        if name == "sd2-1024":
            rows.extend(plan_breakdown(name, metric, side, 0.7))
    return rows


def plan_breakdown(name, metric, side, ratio) -> list[dict]:
    """Each kernel of the plan alone (launch.merge_plan's sequence, timed stage by stage)."""
    from bigain_export.kernels import launch, triton_kernels as k

    b, n, c = metric.shape
    hs = ws = side // 2
    nd, ns = hs * ws, n - hs * ws
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    score = torch.empty(b, n, device="cuda")
    offsets = torch.empty(b, nd, dtype=torch.int32, device="cuda")
    row = torch.empty(b, n, dtype=torch.int32, device="cuda")
    src_tok = torch.empty(b, ns, dtype=torch.int32, device="cuda")
    slot = torch.empty(b, n, dtype=torch.int64, device="cuda")
    units = torch.empty_like(metric)
    stages = {
        "laplacian": lambda: k.laplacian_score_kernel[(-(-n // 64), b)](metric, score, n, c, side, side, BLOCK_T=64, BLOCK_C=64),
        "window argmin": lambda: k.window_offsets_kernel[(-(-nd // 256), b)](score, offsets, n, side, hs, ws, RELEASED=False, BLOCK=256),
        "bipartite rows": lambda: k.bipartite_rows_kernel[(b,)](offsets, nd, row, src_tok, slot, n, side, hs, ws, ns - r, BLOCK=1024, num_warps=4),
        "unit rows": lambda: k.unit_rows_kernel[(-(-n // 32), b)](metric, row, units, n, c, BLOCK_T=32, BLOCK_C=64),
    }
    out = []
    for stage, fn in stages.items():
        fn()
    for stage, fn in stages.items():
        out.append(dict(shape=name, what=f"plan stage {stage}", ms=round(cuda_ms(fn), 4)))
    m_tiles = -(-ns // launch.SIM_BLOCK_M)
    for bm, bn, bk, warps, stages_n in [(128, 128, 64, 8, 3), (128, 64, 64, 4, 3), (64, 128, 64, 4, 3), (128, 128, 32, 8, 4), (64, 64, 64, 4, 4)]:
        for splits in (1, 2, 4, 8):
            per_split = -(-(-(-nd // splits)) // bn) * bn
            ns_ = -(-nd // per_split)
            sim = torch.empty(b, ns_, ns, device="cuda")
            idx = torch.empty(b, ns_, ns, dtype=torch.int32, device="cuda")
            grid = (-(-ns // bm), ns_, b)
            fn = lambda: k.best_anchor_kernel[grid](units, sim, idx, n, c, ns, nd, per_split, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,  # noqa: E731
                                                    IEEE=False, num_warps=warps, num_stages=stages_n)
            try:
                ms = cuda_ms(fn)
            except Exception as exc:  # a config that does not fit shared memory
                ms = float("nan")
                print(f"  config {bm}x{bn}x{bk} w{warps} s{stages_n}: {type(exc).__name__}")
            sel = lambda: k.select_kernel[(b,)](sim, idx, src_tok, slot, n, ns, ns_, r, BLOCK=2048, num_warps=8)  # noqa: E731
            out.append(dict(shape=name, what=f"plan stage similarity {bm}x{bn}x{bk} w{warps} s{stages_n} splits{ns_}",
                            ms=round(ms, 4), select_ms=round(cuda_ms(sel), 4)))
    del m_tiles
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.shapes:
        t0 = time.time()
        rows.extend(bench_shape(name, torch.bfloat16))
        print(f"[{name}] {time.time() - t0:.0f} s", flush=True)
    meta = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                triton=__import__("triton").__version__, python=platform.python_version(),
                date=time.strftime("%Y-%m-%d"), dtype="bf16", timing="CUDA events, median of 50 after 5 warm-up")
    (args.out / "bench_kernels.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [json.dumps(meta), "", "| shape | what | ms |", "|---|---|---|"]
    lines += [f"| {r['shape']} | {r['what']} | {r['ms']:.4f}" + (f" (select {r['select_ms']:.4f})" if "select_ms" in r else "") + " |" for r in rows]
    (args.out / "bench_kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
