"""Session 25 probe: the unmerge kernel (launch.unmerge, the eager path and the custom op) with
the merges' channel block (64 for C=320, the new default) against the earlier 128 (three blocks
of 128 for 320 channels, half of the last masked). Each captured in a CUDA graph, replayed 50
times a loop, 7 alternating rounds, median; outputs checked equal.
Run from the repository root: python3 docs/bench/2026-12-06-gpu-session25/unmerge_block.py
"""
import statistics
import sys

import torch

sys.path.insert(0, "scripts")
from bench_unet import capture_graph, cuda_loop_ms  # noqa: E402

from bigain_export.config import BiGainConfig  # noqa: E402
from bigain_export.kernels import launch  # noqa: E402
from bigain_export.ops import reference as ref  # noqa: E402

SHAPES = {"sd2-768": (2, 96, 96, 320), "sd2-1024": (2, 128, 128, 320), "sd2-768 level 1": (2, 48, 48, 640)}

torch.manual_seed(0)
for name, (b, h, w, c) in SHAPES.items():
    n = h * w
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    metric = torch.randn(b, n, c, device="cuda", dtype=torch.bfloat16)
    slot = ref.token_merge_plan(metric.float(), h, w, r)  # int64, as the plan kernel returns
    y = torch.randn(b, n - r, c, device="cuda", dtype=torch.bfloat16)
    outs, graphs = {}, {}
    for block in (0, 128):
        launch.MERGE_BLOCK_C = block
        outs[block] = launch.unmerge(y, slot)
        graphs[block] = capture_graph(lambda: launch.unmerge(y, slot))
    launch.MERGE_BLOCK_C = 0
    assert torch.equal(outs[0], outs[128]) and torch.equal(outs[0], ref.unmerge(y, slot))
    times = {0: [], 128: []}
    for _ in range(7):
        for block in (0, 128):
            times[block].append(cuda_loop_ms(graphs[block].replay, 5, 0, 50) * 1000)
    new, old = statistics.median(times[0]), statistics.median(times[128])
    print(f"{name} B={b} N={n} C={c}: block {launch.merge_channels(c)} {new:.2f} us, block 128 {old:.2f} us "
          f"(spreads {max(times[0]) - min(times[0]):.2f} / {max(times[128]) - min(times[128]):.2f})", flush=True)
print(torch.cuda.get_device_name(), torch.__version__)
