"""Where the time of one compiled SD2-UNet call goes (GPU kernels by CUDA time, and wall vs GPU time),
for a few methods: diagnoses a variant slower than its kernels predict.

    python scripts/profile_unet.py --res 1024 --methods plain "bigain-merge r=0.5" --out results/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import METHODS, Bench, cuda_median_ms, patch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, default=1024)
    parser.add_argument("--methods", nargs="+", default=["plain", "bigain-merge r=0.5"], choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    from torch.profiler import ProfilerActivity, profile

    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench("sd2", args.res, 2)
    for name in args.methods:
        patch(bench.model, METHODS[name])
        torch._dynamo.reset()
        model = torch.compile(bench.model)
        with torch.inference_mode():
            ms = cuda_median_ms(lambda: bench.call(model), 5, 20)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    bench.call(model)
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / 5 * 1000
        events = prof.key_averages()
        gpu = sum(e.self_device_time_total for e in events) / 5 / 1000
        table = events.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70)
        (args.out / f"profile_{name.replace(' ', '_').replace('=', '')}.txt").write_text(table)
        print(f"== {name}: {ms:.2f} ms (events), profiled wall {wall:.2f} ms, GPU kernel time {gpu:.2f} ms")
        print("\n".join(table.splitlines()[:22]))
        patch(bench.model, None)


if __name__ == "__main__":
    main()
