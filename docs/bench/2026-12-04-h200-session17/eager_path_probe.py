import time, torch, sys
sys.path.insert(0, ".")
from bigain_export.ops import library
from bigain_export.config import BiGainConfig
from torch.profiler import profile, ProfilerActivity
torch.manual_seed(0)
for side, c in ((128, 320), (96, 320)):
    n = side * side
    x = torch.randn(2, n, c, device="cuda", dtype=torch.float16); metric = torch.randn_like(x)
    r = BiGainConfig(ratio=0.7).merged_count(n, side, side)
    for radius in (0, 1):
        path = lambda: library.token_unmerge(*library.gated_merge(x, metric, side, side, r, "window", radius))
        for _ in range(5): path()
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(50): path()
        torch.cuda.synchronize(); ms = (time.perf_counter() - t) / 50 * 1000
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5): path()
            torch.cuda.synchronize()
        ev = sorted(prof.key_averages(), key=lambda e: -e.cpu_time_total)[:6]
        print(f"side {side} radius {radius}: eager wall {ms:.3f} ms/path", flush=True)
        for e in ev:
            print(f"   {e.key[:60]:60s} cpu {e.cpu_time_total/5/1000:.3f} ms  cuda {e.device_time_total/5/1000:.3f} ms  n {e.count/5:.0f}")
