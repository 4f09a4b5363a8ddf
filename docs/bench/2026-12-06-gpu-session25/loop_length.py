"""Session 25 probe: is the loop timing's idle time (loop - kernel time, ~0.6 ms a call at 768 px)
the first call's host time shared by a short loop, or GPU idle in every call?

Per model (plain and one BiGain method, CUDA graphs): the loop time per call for loops of 4..50
calls (3 interleaved rounds), the host time per call of 25 calls launched without waiting, and
the kernel time per call from the profiler.
Run from the repository root:
python3 docs/bench/2026-12-06-gpu-session25/loop_length.py OUT.json [sd2|dit-xl2 RES BATCH METHOD]
"""
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, "scripts")
from bench_unet import METHODS, Bench, cuda_loop_ms, patch  # noqa: E402
from profile_unet import CALLS, by_kind, kernel_table  # noqa: E402

LENGTHS = (4, 6, 12, 25, 50)
MODEL, RES, BATCH, METHOD = (sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]) if len(sys.argv) > 2 else (
    "sd2", 768, 2, "bigain-merge r=0.7 radius=1 plan-reuse")
NAMES = ("plain", METHOD)


def main() -> None:
    import copy

    bench = Bench(MODEL, RES, BATCH)
    models = {}
    for name in NAMES:
        model = copy.deepcopy(bench.model)
        patch(model, METHODS[name])
        models[name] = torch.compile(model, mode="reduce-overhead")
        with torch.inference_mode():
            for _ in range(8):
                bench.call(models[name])
        torch.cuda.synchronize()
        print("compiled", name, flush=True)
    loops = {name: {n: [] for n in LENGTHS} for name in NAMES}
    host, kernels = {}, {}
    with torch.inference_mode():
        for _ in range(3):
            for name in NAMES:
                for n in LENGTHS:
                    loops[name][n].append(cuda_loop_ms(lambda: bench.call(models[name]), 3, 0, n))
        for name in NAMES:
            samples = []
            for _ in range(3):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(25):
                    bench.call(models[name])
                samples.append((time.perf_counter() - t0) / 25 * 1000)
                torch.cuda.synchronize()
            host[name] = statistics.median(samples)
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(CALLS):  # kernel_table: per call of CALLS
                    bench.call(models[name])
                torch.cuda.synchronize()
            kernels[name] = sum(by_kind(kernel_table(prof)).values()) / 1000
    result = dict(model=MODEL, res=RES, batch=BATCH, card=torch.cuda.get_device_name(), torch=torch.__version__, date=time.strftime("%Y-%m-%d"),
                  host_ms_per_call=host, kernel_ms_per_call=kernels,
                  loop_ms={name: {n: statistics.median(v) for n, v in d.items()} for name, d in loops.items()},
                  loop_ms_rounds=loops)
    plain, merged = NAMES
    for n in LENGTHS:
        p, m = result["loop_ms"][plain][n], result["loop_ms"][merged][n]
        print(f"{n:3d} calls: plain {p:.3f} ms (idle {p - kernels[plain]:.3f}), merged {m:.3f} ms "
              f"(idle {m - kernels[merged]:.3f}), ratio {p / m:.4f}")
    print(f"host per call: plain {host[plain]:.3f} ms, merged {host[merged]:.3f}; kernels plain "
          f"{kernels[plain]:.3f}, merged {kernels[merged]:.3f} (ratio {kernels[plain] / kernels[merged]:.4f})")
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
