"""Each BiGain function body alone in ONNX Runtime, on one patched layer's shapes: time and check.

For every shape of ``bench_kernels.py`` and every op (GatedMerge at ``--ratio``, TokenMerge,
TokenUnmerge, KVPool s=2) it builds the one-node model the exporter would write
(``single_node_model``: the node plus its standard-op function body, which ONNX Runtime
inlines), runs it on the chosen provider with inputs and outputs bound on the device, and
records:

* wall time per call (median after warm-up, synchronised), and on CUDA the GPU time per kernel
  (CUPTI through ``torch.profiler``), so a slow ORT kernel shows up by name;
* agreement with the PyTorch reference on the same inputs (slot maps exactly, values within
  fp16 rounding), because ONNX Runtime's CUDA kernels (ArgMax, TopK, CumSum) are not the CPU ones
  the CPU tests check.

It also times the body's costliest step three ways (``MATCH_FORMS``): the best anchor of every
source (value and first index of the row maximum of the float32 similarity, [B, Ns, Nd]). Session
10's profile had one cuDNN max-reduction at ~1 ms per SD2 1024 px layer and could not tell
whether it was the ArgMax or the ReduceMax; these rows say which, and whether a TopK(k=1) (same
tie-break: the lower index first) beats both.

And the Laplacian score two ways (``LAPLACIAN_FORMS``): ``conv3d``, the body since session 12
(one single-channel 3-D convolution, 2-3x faster on ONNX Runtime's CPU EP), and ``slices``, the
body before it (zero border by Concats, four shifted Slices, a Sum); on the H200 (session 13)
the slices were 0.1 ms a layer faster and within noise in whole engines. Each alternative form is also timed inside the whole
GatedMerge body (rows ``GatedMerge[lap=slices]`` etc., ``GATED_FORM_SPECS``); ``bench_ort.py
--body-forms`` builds whole engines with them (``body_forms``), so a GPU session can time a
rewrite without a code change.

    python scripts/bench_ort_ops.py --shapes sd2-1024 sd2-768 --out $OUT    # GPU machine, onnxruntime-gpu
    python scripts/bench_ort_ops.py --shapes sd2-512 --device cpu --iters 3 --out /tmp/ops   # any CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bigain_export.config import BiGainConfig  # noqa: E402
from bigain_export.export.onnx_ops import STANDARD_OPSET, _Body, single_node_model  # noqa: E402
from bigain_export.ops import reference as ref  # noqa: E402
from bigain_export.validate.atomic import atomic_write  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import SHAPES  # noqa: E402
from body_forms import GATED_FORM_SPECS, LAPLACIAN_FORMS, MATCH_FORMS, body_forms  # noqa: E402
from ort_binding import bind_on_device, bound_outputs, median_bound_ms  # noqa: E402
from profile_ort import cuda_kernel_times  # noqa: E402

F16, F32, I64 = TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.INT64


def match_cases(batch: int, side: int, seed: int = 0):
    """``(name, model, feeds, check)`` per best-anchor formulation, on a similarity with exact ties
    at the row maximum in a quarter of the rows (the first index must win)."""
    n = side * side
    num_dst = (side // 2) ** 2
    num_src = n - num_dst
    g = torch.Generator().manual_seed(seed)
    sim = torch.rand(batch, num_src, num_dst, generator=g) * 2 - 1
    first = sim.argmax(-1)
    tied = torch.rand(batch, num_src, generator=g) < 0.25
    twin = torch.randint(0, num_dst, (batch, num_src), generator=g)
    b_idx, s_idx = torch.nonzero(tied, as_tuple=True)
    sim[b_idx, s_idx, twin[tied]] = sim[b_idx, s_idx, first[tied]]
    want_sim, want_dst = sim.max(-1)  # torch: the first maximal index
    for variant, form in MATCH_FORMS.items():
        f = _Body(f"match_{variant}")
        best_sim, best_dst = form(f, "similarity")
        f.nodes += [helper.make_node("Identity", [best_sim], ["best_sim"]),
                    helper.make_node("Identity", [best_dst], ["best_dst"])]
        graph = helper.make_graph(f.nodes, f"match_{variant}",
                                  [helper.make_tensor_value_info("similarity", F32, [batch, num_src, num_dst])],
                                  [helper.make_tensor_value_info("best_sim", F32, [batch, num_src]),
                                   helper.make_tensor_value_info("best_dst", I64, [batch, num_src])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", STANDARD_OPSET)])
        model.ir_version = 10

        def check(outputs, want_sim=want_sim, want_dst=want_dst):
            best_sim, best_dst = outputs
            return dict(slot_equal=bool(np.array_equal(best_dst, want_dst.numpy())),
                        max_abs=float(np.abs(best_sim - want_sim.numpy()).max()))

        yield f"match:{variant}", model, {"similarity": sim.numpy()}, check


def laplacian_cases(batch: int, side: int, channels: int, seed: int = 0):
    """``(name, model, feeds, check)`` per Laplacian formulation: fp16 metric [B, N, C] -> float32
    score [B, H, W], checked against the reference (relative to the largest score)."""
    g = torch.Generator().manual_seed(seed)
    metric = torch.randn(batch, side * side, channels, generator=g).half()
    want = ref.laplacian_score(metric, side, side).reshape(batch, side, side).numpy()
    for variant, form in LAPLACIAN_FORMS.items():
        f = _Body(f"lap_{variant}")
        score = form(f, "metric", f.ints(side), f.ints(side))
        f.nodes.append(helper.make_node("Identity", [score], ["score"]))
        graph = helper.make_graph(f.nodes, f"laplacian_{variant}",
                                  [helper.make_tensor_value_info("metric", F16, [batch, side * side, channels])],
                                  [helper.make_tensor_value_info("score", F32, [batch, side, side])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", STANDARD_OPSET)])
        model.ir_version = 10
        yield (f"lap:{variant}", model, {"metric": metric.numpy()},
               lambda outputs: dict(max_rel=float(np.abs(outputs[0] - want).max() / np.abs(want).max())))


def tied_windows(metric: torch.Tensor, side: int) -> int:
    """2x2 windows whose lowest reference Laplacian score is held by two tokens exactly.

    There the anchor is the first of them in the reference, and any other summation order (the
    body's ReduceSum over channels, a kernel's) may pick the other: a slot map that differs from
    the reference's with ``tied_windows > 0`` is a tie broken by float rounding, not a wrong body
    (sd2-768 at seed 0 has one: two tokens both score 1057.6337890625, session 13)."""
    windows = ref.score_windows(ref.laplacian_score(metric, side, side), side, side)
    return int(((windows == windows.min(-1, keepdim=True).values).sum(-1) > 1).sum())


def cases(batch: int, side: int, channels: int, ratio: float, seed: int = 0, gated_specs=("default",)):
    """``(op, model, feeds, check)`` for each body at one shape; ``check(outputs)`` -> dict of agreement.
    GatedMerge once per body-forms spec in ``gated_specs``; KVPool only where s=2 divides the side."""
    n = side * side
    r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, channels, generator=g).half()
    metric = torch.randn(batch, n, channels, generator=g).half()
    want_slot = ref.token_merge_plan(metric, side, side, r, "window")
    want_merged = ref.merge(x, want_slot, n - r)
    feeds = {"x": x.numpy(), "metric": metric.numpy()}

    def gated_model(spec: str, **attrs):
        with body_forms(spec):
            return single_node_model("GatedMerge", {"x": (F16, [batch, n, channels]), "metric": (F16, [batch, n, channels])},
                                     {"merged": (F16, [batch, n - r, channels]), "slot": (I64, [batch, n])},
                                     grid_h=side, grid_w=side, r=r, anchor=0, **attrs)

    def merge_check(slot_want, merged_want, **extra):
        return lambda outputs: dict(slot_equal=bool(np.array_equal(outputs[1], slot_want.numpy())), **extra,
                                    max_abs=float(np.abs(outputs[0].astype(np.float32) - merged_want.float().numpy()).max()))

    check_merge = merge_check(want_slot, want_merged, tied_windows=tied_windows(metric, side))
    for spec in gated_specs:
        yield ("GatedMerge" if spec == "default" else f"GatedMerge[{spec}]", gated_model(spec), feeds, check_merge)
    # opt-in local matching (BiGainConfig.match_radius = 1): the body's other If branch, per window
    # (the body) and per source (session 16's body; odd grids)
    local_slot = ref.token_merge_plan(metric, side, side, r, "window", match_radius=1)
    check_local = merge_check(local_slot, ref.merge(x, local_slot, n - r))
    for spec in ("default", "local=per-source"):
        yield ("GatedMerge[match_radius=1]" if spec == "default" else f"GatedMerge[match_radius=1,{spec}]",
               gated_model(spec, match_radius=1), feeds, check_local)
    # what a plan-reusing layer runs instead of a GatedMerge (the segment mean alone); at 512 px
    # the plan-reuse engine was slower than the per-block one (session 14), so time it alone
    num_dst = (side // 2) ** 2
    yield ("TokenMerge", single_node_model("TokenMerge", {"x": (F16, [batch, n, channels]), "slot": (I64, [batch, n])},
                                           {"merged": (F16, [batch, n - r, channels])}, num_out=n - r, num_dst=num_dst),
           {"x": x.numpy(), "slot": want_slot.numpy()},
           lambda outputs: dict(max_abs=float(np.abs(outputs[0].astype(np.float32) - want_merged.float().numpy()).max())))
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
    binding = bind_on_device(session, feeds, device)
    ms = median_bound_ms(session, binding, warmup, max(iters, 1))
    return ms, bound_outputs(binding)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["sd2-1024", "sd2-768"], choices=list(SHAPES))
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--no-match", action="store_true",
                        help="skip the best-anchor and Laplacian variants (MATCH_FORMS, LAPLACIAN_FORMS), alone and in GatedMerge")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when visible")
    parser.add_argument("--provider-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an execution provider option, e.g. use_tf32=0 (repeatable)")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    bad = [o for o in args.provider_option if "=" not in o]
    if bad:
        parser.error(f"--provider-option {bad[0]!r}: expected KEY=VALUE, e.g. use_tf32=0")
    provider_options = dict(o.split("=", 1) for o in args.provider_option)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    import onnxruntime as ort

    if device == "cuda":
        ort.preload_dlls()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here; put onnxruntime-gpu first on the path")
    providers = [("CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider", provider_options)]
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(card=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
                onnxruntime=ort.__version__, torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                dtype="fp16", ratio=args.ratio, provider_options=provider_options, iters=args.iters, warmup=args.warmup, argv=sys.argv[1:])
    rows = []
    for shape in args.shapes:
        batch, side, channels, _heads = SHAPES[shape]
        specs = ("default",) if args.no_match else ("default",) + GATED_FORM_SPECS
        todo = list(cases(batch, side, channels, args.ratio, gated_specs=specs))
        if not args.no_match:
            todo += list(match_cases(batch, side)) + list(laplacian_cases(batch, side, channels))
        for op, model, feeds, check in todo:
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
        agree = {k: v for k, v in row.items() if k in ("slot_equal", "tied_windows", "max_abs", "max_rel")}
        print(f"| {row['shape']} | {row['op']} | {row['ms']:.4f} | {row.get('cuda', {}).get('gpu_ms', float('nan')):.4f} | {agree} | {kernels} |")


if __name__ == "__main__":
    main()
