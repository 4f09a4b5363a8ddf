"""Milliseconds per UNet call: SD2-base UNet architecture (random weights), plain vs tomesd vs
BiGain, eager and torch.compile, timed with CUDA events (median after warm-up).

    python scripts/bench_unet.py --res 512 768 1024 --out results/

Writes ``bench_unet.json`` and ``bench_unet.md`` (table with card and versions) to --out, and
with --profile a torch.profiler table of the BiGain merge path. Needs a CUDA GPU.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export import BiGainConfig, apply_bigain, remove_bigain  # noqa: E402

SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
    norm_num_groups=32,
)

METHODS = {
    "plain": None,
    "tomesd r=0.5": ("tomesd", 0.5),
    "tomesd r=0.7": ("tomesd", 0.7),
    "bigain-merge r=0.5": BiGainConfig.preset("bigain-merge", ratio=0.5),
    "bigain-merge r=0.7": BiGainConfig.preset("bigain-merge", ratio=0.7),
    "bigain-kv s=2": BiGainConfig.preset("bigain-kv", downsample=2),
}


def cuda_median_ms(fn, warmup: int, iters: int) -> float:
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


def patch(unet, method):
    import tomesd

    tomesd.remove_patch(unet)
    remove_bigain(unet)
    if method is None:
        return
    if isinstance(method, tuple):
        tomesd.apply_patch(unet, ratio=method[1], max_downsample=1)
    else:
        apply_bigain(unet, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, nargs="+", default=[512, 768, 1024])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile the bigain-merge r=0.7 path")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()

    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    device, dtype = "cuda", torch.bfloat16
    unet = UNet2DConditionModel(**SD2_BASE_UNET).to(device, dtype).eval()
    unet.set_attn_processor(AttnProcessor2_0())
    rows = []
    with torch.inference_mode():  # first-call costs (cuDNN heuristics, allocator) out of the table
        for _ in range(10):
            unet(torch.randn(args.batch, 4, 64, 64, device=device, dtype=dtype), torch.tensor([1], device=device),
                 torch.randn(args.batch, 77, 1024, device=device, dtype=dtype))
    for res in args.res:
        side = res // 8
        sample = torch.randn(args.batch, 4, side, side, device=device, dtype=dtype)
        context = torch.randn(args.batch, 77, 1024, device=device, dtype=dtype)
        timestep = torch.full((args.batch,), 500, device=device)
        for name in args.methods:
            for mode in args.modes:
                patch(unet, METHODS[name])
                model = unet
                if mode == "compile":
                    torch._dynamo.reset()
                    model = torch.compile(unet)
                t0 = time.time()
                with torch.inference_mode():
                    fn = lambda: model(sample, timestep, context).sample  # noqa: E731
                    try:
                        ms = cuda_median_ms(fn, args.warmup, args.iters)
                        err = None
                    except Exception as exc:  # record, keep benchmarking the rest
                        ms, err = float("nan"), f"{type(exc).__name__}: {str(exc)[:200]}"
                row = dict(res=res, method=name, mode=mode, ms=ms, error=err, setup_s=round(time.time() - t0, 1))
                rows.append(row)
                print(f"[{res}px] {name:20s} {mode:8s} {ms:8.2f} ms  ({row['setup_s']} s){'  ' + err if err else ''}", flush=True)
        if args.profile:
            profile_merge(unet, sample, timestep, context, args.out / f"profile_{res}.txt")
    patch(unet, None)
    meta = dict(
        card=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
        python=platform.python_version(), date=time.strftime("%Y-%m-%d"), batch=args.batch,
        dtype="bf16", attention="SDPA (AttnProcessor2_0)", iters=args.iters, warmup=args.warmup,
    )
    (args.out / "bench_unet.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    table = markdown_table(rows, args.res, args.methods, args.modes)
    (args.out / "bench_unet.md").write_text(f"{json.dumps(meta)}\n\n{table}\n")
    print(json.dumps(meta))
    print(table)


def profile_merge(unet, sample, timestep, context, path: Path) -> None:
    """Where the time of an eager BiGain-merge UNet call goes, by CUDA kernel."""
    from torch.profiler import ProfilerActivity, profile

    patch(unet, METHODS["bigain-merge r=0.7"])
    with torch.inference_mode():
        for _ in range(3):
            unet(sample, timestep, context)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            unet(sample, timestep, context)
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=60)
    path.write_text(table)
    print(table[:4000])
    patch(unet, None)


def markdown_table(rows, resolutions, methods, modes) -> str:
    by_key = {(r["res"], r["method"], r["mode"]): r["ms"] for r in rows}
    header = "| method | " + " | ".join(f"{res}px {mode}" for res in resolutions for mode in modes) + " |"
    lines = [header, "|" + "---|" * (1 + len(resolutions) * len(modes))]
    for name in methods:
        cells = [f"{by_key.get((res, name, mode), float('nan')):.2f}" for res in resolutions for mode in modes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
