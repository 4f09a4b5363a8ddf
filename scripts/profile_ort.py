"""Where an ONNX Runtime engine's time goes: ORT's own profiler, per operator type and provider.

Exports the SD2-base UNet architecture (random weights, fp16, batch 2) once per method exactly as
``bench_ort.py`` does, optionally optimizes it the same way, runs a few profiled calls and sums
ORT's per-node kernel times by (operator type, execution provider), so a node that fell back to
the CPU shows up as such, and by graph-level node for the slowest ones. Comparing ``none`` with
``bigain-merge-0.7`` shows what the BiGain function bodies cost (their nodes are inlined by ORT
and named after the ``bigain.ai`` node they came from).

    # the GPU machine (onnxruntime-gpu first on the path)
    python scripts/profile_ort.py --res 1024 --methods none bigain-merge-0.7 --ort-optimize onnxscript --out $OUT
    # any CPU: tiny SD2-shaped UNet
    python scripts/profile_ort.py --tiny --out /tmp/profile
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ort import METHODS, SD2_BASE_UNET, TINY_UNET, UNetEps, export  # noqa: E402
from ort_binding import bind_on_device, run_bound  # noqa: E402
from bigain_export.backends.ort_optimize import optimize_model_proto  # noqa: E402
from bigain_export.export.onnx_export import save_model_atomically  # noqa: E402
from bigain_export.validate.atomic import atomic_write  # noqa: E402

CUSTOM_OPS = ("GatedMerge", "TokenMerge", "TokenUnmerge", "KVPool")


def node_events(profile_path: Path, calls: int) -> list[dict]:
    """The ``Node`` kernel events of the last ``calls`` runs in an ORT profile, with op type,
    provider and duration (us); earlier runs (warm-up) are left out by their ``model_run`` spans."""
    events = json.loads(profile_path.read_text())
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-calls:]
    inside = lambda ts: any(start <= ts <= end for start, end in spans)  # noqa: E731
    rows = []
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or not inside(event["ts"]):
            continue
        args = event.get("args", {})
        rows.append(dict(node=event["name"][: -len("_kernel_time")], op=args.get("op_name", "?"),
                         provider=args.get("provider", "?"), us=float(event.get("dur", 0))))
    return rows


def inline_labelled(model):
    """The model with its ``bigain.ai`` function calls inlined (as ORT does on load), each inlined
    node named ``<op type>:<call node>/<i>`` so its kernel time can be told from the model's own.

    onnx's inliner leaves inlined nodes unnamed and puts them where their call node stood, so the
    nodes between two of the model's own nodes belong to the call node between them."""
    import onnx.inliner

    from bigain_export.export.onnx_export import with_default_attributes

    model = with_default_attributes(model)  # the inliner ignores function attribute defaults
    calls = [node for node in model.graph.node]
    inlined = onnx.inliner.inline_selected_functions(model, [(f.domain, f.name) for f in model.functions])
    own_names = {node.name for node in calls if node.domain != "bigain.ai"}
    position, current, count = 0, None, 0
    for node in inlined.graph.node:
        if node.name and node.name in own_names:
            while calls[position].name != node.name:  # skip past custom calls before this node
                position += 1
            position += 1
            continue
        while position < len(calls) and calls[position].domain != "bigain.ai":
            position += 1
        call = calls[position]
        if call is not current:
            current, count = call, 0
        node.name = f"{call.op_type}:{call.name}/{count}"
        count += 1
    return inlined


def origin(node_name: str) -> str:
    """Which BiGain op an inlined function-body node came from ('' for the model's own nodes)."""
    op, sep, _ = node_name.partition(":")
    return op if sep and op in CUSTOM_OPS else ""


def summarize(rows: list[dict], calls: int, top: int) -> dict:
    by_op: dict = collections.defaultdict(float)
    by_origin: dict = collections.defaultdict(float)
    by_node: dict = collections.defaultdict(float)
    for row in rows:
        by_op[(row["op"], row["provider"])] += row["us"] / calls
        by_origin[origin(row["node"]) or "model"] += row["us"] / calls
        by_node[(row["node"], row["op"], row["provider"])] += row["us"] / calls
    ms = lambda us: round(us / 1e3, 4)  # noqa: E731
    return dict(
        total_ms=ms(sum(by_op.values())),
        by_origin={k: ms(v) for k, v in sorted(by_origin.items(), key=lambda kv: -kv[1])},
        by_op=[dict(op=op, provider=provider, ms=ms(us)) for (op, provider), us in sorted(by_op.items(), key=lambda kv: -kv[1])],
        top_nodes=[dict(node=n, op=op, provider=p, ms=ms(us))
                   for (n, op, p), us in sorted(by_node.items(), key=lambda kv: -kv[1])[:top]],
        cpu_nodes=sorted({row["node"] for row in rows if row["provider"] == "CPUExecutionProvider"}),
    )


def cuda_kernel_times(session, feeds: dict, calls: int) -> dict:
    """GPU time per CUDA kernel name over ``calls`` runs (CUPTI through torch.profiler, which sees
    every kernel of the process, ORT's included): ORT's own profile times the host side only.
    Every kernel is kept, slowest first (session 10 kept 25 and lost a 6 ms tail of small ones)."""
    from torch.profiler import ProfilerActivity, profile

    binding = bind_on_device(session, feeds, "cuda")  # no host copies in the timings
    run_bound(session, binding)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            session.run_with_iobinding(binding)
        torch.cuda.synchronize()
    kernels = collections.defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type.name == "CUDA":
            kernels[event.name][0] += event.device_time / calls  # us
            kernels[event.name][1] += 1
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])
    return dict(gpu_ms=round(sum(v[0] for v in kernels.values()) / 1e3, 4),
                kernels=[dict(name=k[:160], ms=round(v[0] / 1e3, 4), launches=v[1] // calls) for k, v in ranked])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, nargs="+", default=None, help="pixels (default 1024; --tiny: 64)")
    parser.add_argument("--methods", nargs="+", default=["none", "bigain-merge-0.7"], choices=list(METHODS))
    parser.add_argument("--ort-optimize", default="onnxscript", choices=["none", "fusions", "onnxscript"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--calls", type=int, default=3, help="profiled calls (after --warmup unprofiled ones)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=25, help="slowest graph nodes kept in the JSON (CUDA kernels: all)")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/profile_ort"))
    args = parser.parse_args()
    res = args.res or ([64] if args.tiny else [1024])
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = "ort-cuda" if device == "cuda" else "ort-cpu"

    import onnx
    import onnxruntime as ort
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    if device == "cuda":
        ort.preload_dlls()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here; put onnxruntime-gpu first on the path")
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet_config = TINY_UNET if args.tiny else SD2_BASE_UNET
    unet = UNet2DConditionModel(**unet_config).to(device, torch.float16).eval()
    unet.set_attn_processor(AttnProcessor2_0())
    wrapper = UNetEps(unet)
    report = dict(meta=dict(card=torch.cuda.get_device_name() if device == "cuda" else "cpu", torch=torch.__version__,
                            onnxruntime=ort.__version__, date=time.strftime("%Y-%m-%d %H:%M:%S"), batch=args.batch,
                            dtype="fp16", ort_optimize=args.ort_optimize, calls=args.calls, argv=sys.argv[1:]),
                  runs=[])
    for px in res:
        side = px // 8
        inputs = (torch.randn(args.batch, 4, side, side, device=device, dtype=torch.float16),
                  torch.full((args.batch,), 500, device=device, dtype=torch.int64),
                  torch.randn(args.batch, 77, unet_config["cross_attention_dim"], device=device, dtype=torch.float16))
        feeds = {k: v.cpu().numpy() for k, v in zip(["sample", "timestep", "encoder_hidden_states"], inputs)}
        for name in args.methods:
            path = args.workdir / f"unet_{name}_{px}.onnx"
            export(wrapper, METHODS[name], inputs, path, device)
            if args.ort_optimize != "none":
                optimizer = "onnxscript" if args.ort_optimize == "onnxscript" else "onnxruntime"
                optimized, _ = optimize_model_proto(onnx.load(str(path)), backend=backend, precision="fp16", optimizer=optimizer)
                save_model_atomically(optimized, path)
            save_model_atomically(inline_labelled(onnx.load(str(path))), path)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.enable_profiling = True
            options.profile_file_prefix = str(args.workdir / f"profile_{name}_{px}")
            session = ort.InferenceSession(str(path), options, providers=providers)
            for _ in range(args.warmup):
                session.run(None, feeds)
            start = time.perf_counter()
            for _ in range(args.calls):
                session.run(None, feeds)
            wall_ms = (time.perf_counter() - start) * 1e3 / args.calls
            profile = Path(session.end_profiling())
            summary = summarize(node_events(profile, args.calls), args.calls, args.top)
            if device == "cuda":
                summary["cuda"] = cuda_kernel_times(session, feeds, args.calls)
            run = dict(px=px, method=name, wall_ms_with_host_copies=round(wall_ms, 3), **summary)
            report["runs"].append(run)
            atomic_write(args.out / "profile_ort.json", json.dumps(report, indent=1))
            profile.unlink()
            path.unlink()
            del session
            print(f"\n## {px} px {name}: kernels {run['total_ms']:.2f} ms/call, by origin {run['by_origin']}, "
                  f"CPU nodes {len(run['cpu_nodes'])} {run['cpu_nodes'][:8]}")
            print("| op | provider | ms/call |\n|---|---|---|")
            for row in run["by_op"][:6]:
                print(f"| {row['op']} | {row['provider'].replace('ExecutionProvider', '')} | {row['ms']:.3f} |")
            if "cuda" in run:
                print(f"| CUDA kernel ({run['cuda']['gpu_ms']:.2f} ms GPU/call) | launches | ms/call |\n|---|---|---|")
                for row in run["cuda"]["kernels"][:25]:
                    print(f"| {row['name'][:90]} | {row['launches']} | {row['ms']:.3f} |")
            print("| top node | op | ms/call |\n|---|---|---|")
            for row in run["top_nodes"][:5]:
                print(f"| {row['node'][-60:]} | {row['op']} | {row['ms']:.3f} |")


if __name__ == "__main__":
    main()
