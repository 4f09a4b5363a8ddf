"""Each BiGain function body alone in ONNX Runtime, on one patched layer's shapes: time and check.

For every shape of ``bench_kernels.py`` and every op (GatedMerge at ``--ratio``, TokenUnmerge,
KVPool s=2) it builds the one-node model the exporter would write (``single_node_model``: the
node plus its standard-op function body, which ONNX Runtime inlines), runs it on the chosen
provider with inputs and outputs bound on the device, and records:

* wall time per call (median after warm-up, synchronised), and on CUDA the GPU time per kernel
  (CUPTI through ``torch.profiler``), so a slow ORT kernel shows up by name;
* agreement with the PyTorch reference on the same inputs (slot maps exactly, values within
  fp16 rounding), because ONNX Runtime's CUDA kernels (ArgMax, TopK, CumSum) are not the CPU ones
  the CPU tests check.

    python scripts/bench_ort_ops.py --shapes sd2-1024 sd2-768 --out $OUT    # GPU machine, onnxruntime-gpu
    python scripts/bench_ort_ops.py --shapes sd2-512 --device cpu --iters 3 --out /tmp/ops   # any CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bigain_export.config import BiGainConfig  # noqa: E402
from bigain_export.export.onnx_ops import single_node_model  # noqa: E402
from bigain_export.ops import reference as ref  # noqa: E402
from bigain_export.validate.atomic import atomic_write  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import SHAPES  # noqa: E402
from profile_ort import cuda_kernel_times  # noqa: E402

F16, F32, I64 = TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.INT64


def cases(batch: int, side: int, channels: int, ratio: float, seed: int = 0):
    """``(op, model, feeds, check)`` for each body at one shape; ``check(outputs)`` -> dict of agreement.
    KVPool only where s=2 divides the grid side."""
    n = side * side
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, channels, generator=g).half()
    metric = torch.randn(batch, n, channels, generator=g).half()
    want_slot = ref.token_merge_plan(metric, side, side, r, "window")
    want_merged = ref.merge(x, want_slot, n - r)

    def check_merge(outputs):
        merged, slot = outputs
        return dict(slot_equal=bool(np.array_equal(slot, want_slot.numpy())),
                    max_abs=float(np.abs(merged.astype(np.float32) - want_merged.float().numpy()).max()))

    yield ("GatedMerge", single_node_model("GatedMerge", {"x": (F16, [batch, n, channels]), "metric": (F16, [batch, n, channels])},
                                           {"merged": (F16, [batch, n - r, channels]), "slot": (I64, [batch, n])},
                                           grid_h=side, grid_w=side, r=r, anchor=0),
           {"x": x.numpy(), "metric": metric.numpy()}, check_merge)
    y = want_merged
    want_out = ref.unmerge(y, want_slot)
    yield ("TokenUnmerge", single_node_model("TokenUnmerge", {"y": (F16, [batch, n - r, channels]), "slot": (I64, [batch, n])},
                                             {"out": (F16, [batch, n, channels])}),
           {"y": y.numpy(), "slot": want_slot.numpy()},
           lambda outputs: dict(max_abs=float(np.abs(outputs[0].astype(np.float32) - want_out.float().numpy()).max())))
    s = 2
    if side % s:
        return  # KV pooling needs s to divide the grid (the patcher skips such layers)
    alpha = torch.tensor([0.8] * batch, dtype=torch.float32).reshape(batch, 1, 1)
    want_pool = ref.kv_downsample(x, alpha, side, side, s)
    yield ("KVPool", single_node_model("KVPool", {"x": (F16, [batch, n, channels]), "alpha": (F32, [batch, 1, 1])},
                                       {"out": (F16, [batch, (side // s) ** 2, channels])}, grid_h=side, grid_w=side, s=s),
           {"x": x.numpy(), "alpha": alpha.numpy()},
           lambda outputs: dict(max_abs=float(np.abs(outputs[0].astype(np.float32) - want_pool.float().numpy()).max())))


def time_session(session, feeds: dict, device: str, warmup: int, iters: int) -> tuple[float, list]:
    """Median wall ms per call with inputs and outputs on the device; and the outputs (host)."""
    import onnxruntime as ort

    binding = session.io_binding()
    place = ("cuda", 0) if device == "cuda" else ("cpu", 0)
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, *place))
    for out in session.get_outputs():
        binding.bind_output(out.name, place[0])
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), [v.numpy() for v in binding.get_outputs()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["sd2-1024", "sd2-768"], choices=list(SHAPES))
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when visible")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    import onnxruntime as ort

    if device == "cuda":
        ort.preload_dlls()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here; put onnxruntime-gpu first on the path")
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(card=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
                onnxruntime=ort.__version__, torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                dtype="fp16", ratio=args.ratio, iters=args.iters, warmup=args.warmup, argv=sys.argv[1:])
    rows = []
    for shape in args.shapes:
        batch, side, channels, _heads = SHAPES[shape]
        for op, model, feeds, check in cases(batch, side, channels, args.ratio):
            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
            ms, outputs = time_session(session, feeds, device, args.warmup, args.iters)
            row = dict(shape=shape, op=op, ms=ms, **check(outputs))
            if device == "cuda":
                row["cuda"] = cuda_kernel_times(session, feeds, args.iters)
            rows.append(row)
            atomic_write(args.out / "bench_ort_ops.json", json.dumps(dict(meta=meta, rows=rows), indent=1))
            print(f"{shape} {op}: {ms:.4f} ms" + (f", GPU {row['cuda']['gpu_ms']:.4f} ms" if "cuda" in row else "")
                  + f", agreement {check(outputs)}", flush=True)
    print(json.dumps(meta))
    print("| shape | op | ms | GPU ms | agreement | slowest kernels |\n|---|---|---|---|---|---|")
    for row in rows:
        kernels = "; ".join(f"{k['name'][:40]} {k['ms']:.3f}" for k in row.get("cuda", {}).get("kernels", [])[:3])
        agree = {k: v for k, v in row.items() if k in ("slot_equal", "max_abs")}
        print(f"| {row['shape']} | {row['op']} | {row['ms']:.4f} | {row.get('cuda', {}).get('gpu_ms', float('nan')):.4f} | {agree} | {kernels} |")


if __name__ == "__main__":
    main()
