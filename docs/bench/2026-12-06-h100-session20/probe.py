"""Session 20 probe: the merge path's kernels under row-tile / merge-path settings (CUDA graphs)."""
import json, sys, itertools
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from torch.profiler import ProfilerActivity, profile
from bigain_export.config import BiGainConfig
from bigain_export.kernels import launch
from bigain_export.ops import library
from bench_kernels import graph_ms, SHAPES

out = []
for name in sys.argv[1].split(","):
    b, side, c, heads = SHAPES[name]
    n = side * side
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, n, c, device="cuda", dtype=torch.bfloat16, generator=g)
    metric = torch.randn(b, n, c, device="cuda", dtype=torch.bfloat16, generator=g)
    r = BiGainConfig(ratio=0.7).merged_count(n, side, side)
    for radius in (0,):
        for tile, warps, mpath, bc in [(2048, 8, "atomic", 128), (2048, 8, "atomic", 0), (2048, 8, "groups", 128), (2048, 8, "groups", 0)]:
            launch.ROW_TILE, launch.ROW_WARPS, launch.MERGE_PATH, launch.MERGE_BLOCK_C = tile, warps, mpath, bc
            path = lambda: library.token_unmerge(*library.gated_merge(x, metric, side, side, r, "window", radius)[:2])
            ms = graph_ms(path)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    path()
                torch.cuda.synchronize()
            kern = {e.key[:40]: round(e.device_time_total / 10, 1) for e in prof.key_averages() if e.device_time_total > 0}
            row = dict(shape=name, radius=radius, tile=tile, warps=warps, merge=mpath, merge_block_c=bc, path_graph_ms=round(ms, 4), kernels_us=kern)
            out.append(row)
            print(name, radius, tile, warps, mpath, bc, round(ms * 1000, 1), "us |", " ".join(f"{k.split('(')[0][:22]}={v}" for k, v in kern.items()), flush=True)
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
