"""ONNX Runtime engines (with and without ORT's transformers-optimizer fusions) vs eager vs torch.compile.

Exports the patched SD2-base UNet architecture (or ``--model dit-xl2``: the DiT-XL/2 transformer;
random weights from their diffusers configs, fp16, batch 2) with BiGain's custom nodes and their
function bodies, once per method and resolution;
runs it in ONNX Runtime as exported (``--ort-optimize none``) and after
``bigain_export.backends.ort_optimize`` (``fusions`` / ``onnxscript``: the same steps as
``bigain-export build --ort-optimize``), and times the same inputs on eager and compiled PyTorch in the same run
(median ms; CUDA events for torch, synchronised wall clock with IO binding for ORT CUDA).
Writes raw JSON (card, versions, date, every row) to ``--out/bench_ort.json`` after every row
(atomically; ``complete`` is false until the last), so a run cut off by a time limit keeps what it
measured. ``--modes`` names the PyTorch baselines as ``bench_unet.py`` does (compile = default
mode, cudagraphs = ``mode="reduce-overhead"``).

    # the GPU machine (onnxruntime-gpu): issue 11's ORT targets, one call per resolution
    python scripts/bench_ort.py --res 1024 --methods none bigain-merge-0.7 --ort-optimize none onnxscript \
        --modes eager compile cudagraphs --out $OUT
    # the same with ORT's CUDA provider options (NHWC convolutions, a CUDA graph per call)
    python scripts/bench_ort.py --res 1024 --methods none --ort-optimize onnxscript --modes compile \
        --ort-variants default nhwc cuda-graph nhwc+cuda-graph --out $OUT
    # plan reuse in the engine (one GatedMerge, then TokenMerge), and the body with another form
    python scripts/bench_ort.py --res 1024 --methods none bigain-merge-0.7 bigain-merge-0.7-reuse \
        --ort-optimize onnxscript --modes compile --ort-variants nhwc --body-forms default lap=slices --out $OUT
    # DiT-XL/2 at 512 px, batch 16 (issue 11's DiT target), plan reuse across its 28 blocks
    python scripts/bench_ort.py --model dit-xl2 --res 512 --batch 16 --methods none bigain-merge-0.7 \
        bigain-merge-0.7-reuse --ort-optimize onnxscript --modes eager compile --out $OUT
    # any CPU, tiny SD2-shaped UNet (or --model dit-xl2: a 3-block DiT): every code path in ~1-2 min
    python scripts/bench_ort.py --tiny --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from math import nan
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export import BiGainConfig, apply_bigain, remove_bigain  # noqa: E402
from bigain_export.export.onnx_export import custom_node_counts, save_model_atomically  # noqa: E402
from bigain_export.export.onnx_ops import STANDARD_OPSET, attach_functions  # noqa: E402
from bigain_export.backends.ort_optimize import optimize_model_proto  # noqa: E402
from bigain_export.validate.atomic import atomic_write  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import DIT_XL2, SD2_BASE_UNET, cuda_median_ms, use_sdpa  # noqa: E402
from body_forms import body_forms, parse_body_forms  # noqa: E402
from ort_binding import bind_on_device, bound_outputs, median_bound_ms, run_bound  # noqa: E402

# The SD2-base UNet's structure (3 cross-attention levels, linear projections, a DownBlock2D at the
# bottom) at toy widths, for CPU runs of this script.
TINY_UNET = dict(SD2_BASE_UNET, sample_size=8, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
                 attention_head_dim=(2, 2, 4, 4), cross_attention_dim=32, norm_num_groups=8)

METHODS = {
    "none": BiGainConfig.preset("none"),
    "bigain-merge": BiGainConfig.preset("bigain-merge", ratio=0.5),
    "bigain-merge-0.7": BiGainConfig.preset("bigain-merge", ratio=0.7),
    "bigain-merge-0.7-reuse": BiGainConfig.preset("bigain-merge", ratio=0.7, plan_reuse=True),
    "bigain-merge-0.7-r1": BiGainConfig.preset("bigain-merge", ratio=0.7, match_radius=1),
    "bigain-merge-0.7-r1-reuse": BiGainConfig.preset("bigain-merge", ratio=0.7, match_radius=1, plan_reuse=True),
    # layers under 8,192 tokens uncompressed: at 512 px no layer merges (level 0 has 4,096 tokens),
    # where merging engines were slower than plain (0.96x, session 14); 768 and 1024 px merge as above
    "bigain-merge-0.7-min8192": BiGainConfig.preset("bigain-merge", ratio=0.7, min_tokens=8192),
    "bigain-kv": BiGainConfig.preset("bigain-kv"),
}


# ONNX Runtime CUDA provider options to time (session 10's profile of the plain engine: 3.5 ms of
# its 36.9 ms GPU time in cuDNN's NCHW->NHWC transposes, and 42.4 ms wall for 36.9 ms of GPU time,
# a host gap that a CUDA graph removes). Benchmarks only until measured: engines use "default".
ORT_VARIANTS = {
    "default": {},
    "nhwc": {"prefer_nhwc": "1"},
    "cuda-graph": {"enable_cuda_graph": "1"},
    "nhwc+cuda-graph": {"prefer_nhwc": "1", "enable_cuda_graph": "1"},
}

# PyTorch baselines: bench_unet.py's --modes and what torch.compile gets for each.
TORCH_MODES = {"eager": None, "compile": dict(), "cudagraphs": dict(mode="reduce-overhead")}


# DiT-XL/2's structure (adaLN-zero blocks, patch 2) at toy size: 3 blocks (the paper patches 1 and 2
# of them), 8x8 tokens at 128 px
TINY_DIT = dict(DIT_XL2, num_attention_heads=2, attention_head_dim=16, num_layers=3, sample_size=16)


class UNetEps(torch.nn.Module):
    """(sample, timestep, encoder_hidden_states) -> eps, the exported signature."""

    INPUTS = ("sample", "timestep", "encoder_hidden_states")

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.model(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class DiTEps(UNetEps):
    """(sample, timestep, class_labels) -> the DiT's output (eps and the learned variance)."""

    INPUTS = ("sample", "timestep", "class_labels")

    def forward(self, sample, timestep, class_labels):
        return self.model(sample, timestep, class_labels, return_dict=False)[0]


def build_model(kind: str, tiny: bool, device: str):
    """(wrapper, its diffusers config) of the SD2-base UNet or DiT-XL/2, fp16, SDPA attention."""
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    torch.manual_seed(0)
    if kind == "sd2":
        config = TINY_UNET if tiny else SD2_BASE_UNET
        model, wrapper = UNet2DConditionModel(**config), UNetEps
    else:
        config = TINY_DIT if tiny else DIT_XL2
        model, wrapper = DiTTransformer2DModel(**config), DiTEps
    model = model.to(device, torch.float16).eval()
    use_sdpa(model, AttnProcessor2_0)
    return wrapper(model), config


def model_inputs(kind: str, config: dict, batch: int, px: int, device: str) -> tuple:
    """Random inputs at ``px`` pixels (latent side px / 8), in the wrapper's INPUTS order."""
    side = px // 8
    sample = torch.randn(batch, 4, side, side, device=device, dtype=torch.float16)
    timestep = torch.full((batch,), 500, device=device, dtype=torch.int64)
    if kind == "sd2":
        return sample, timestep, torch.randn(batch, 77, config["cross_attention_dim"], device=device, dtype=torch.float16)
    return sample, timestep, torch.randint(config["num_embeds_ada_norm"], (batch,), device=device)


def export(wrapper, config, args, path: Path, device: str) -> dict:
    # traced on the CPU: torch.onnx.ops.symbolic's fake outputs live there (see export_onnx)
    wrapper.cpu()
    apply_bigain(wrapper.model, config)
    try:
        with torch.no_grad():
            program = torch.onnx.export(wrapper, tuple(a.cpu() for a in args), dynamo=True, opset_version=STANDARD_OPSET,
                                        input_names=list(wrapper.INPUTS), output_names=["eps"], external_data=False)
    finally:
        remove_bigain(wrapper.model)
        wrapper.to(device)
    model = attach_functions(program.model_proto)
    save_model_atomically(model, path)
    return custom_node_counts(model)


def wall_median_ms(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def torch_median_ms(fn, warmup: int, iters: int, device: str) -> float:
    return cuda_median_ms(fn, warmup, iters) if device == "cuda" else wall_median_ms(fn, warmup, iters)


def ort_run_and_time(session, feeds: dict, warmup: int, iters: int, device: str):
    """(output of the first call, median ms) of ``session`` bound to device buffers (ort_binding)."""
    binding = bind_on_device(session, {k: v.cpu().numpy() for k, v in feeds.items()}, device)
    run_bound(session, binding)  # with enable_cuda_graph, this call captures the graph
    first = torch.from_numpy(bound_outputs(binding)[0])
    return first, median_bound_ms(session, binding, warmup, iters)


def torch_baselines(wrapper, config, inputs, modes, warmup: int, iters: int, device: str, px: int, name: str):
    """(eager output, {mode: median ms}) of the patched model under each PyTorch mode."""
    torch_ms = {}
    with torch.inference_mode():
        apply_bigain(wrapper.model, config)
        try:
            eager_out = wrapper(*inputs).clone()
            for mode in modes:
                fn = wrapper
                if TORCH_MODES[mode] is not None:
                    torch._dynamo.reset()
                    fn = torch.compile(wrapper, **TORCH_MODES[mode])
                torch_ms[mode] = torch_median_ms(lambda: fn(*inputs), warmup, iters, device)
                print(f"{px} px {name}: torch {mode} {torch_ms[mode]:.2f} ms", flush=True)
        finally:
            torch._dynamo.reset()
            remove_bigain(wrapper.model)
    return eager_out, torch_ms


def write_raw(out: Path, meta: dict, rows: list, *, complete: bool) -> None:
    atomic_write(out / "bench_ort.json", json.dumps(dict(meta=meta, rows=rows, complete=complete), indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd2", choices=("sd2", "dit-xl2"),
                        help="the SD2-base UNet or the DiT-XL/2 transformer (bench_unet.py's names)")
    parser.add_argument("--res", type=int, nargs="+", default=None,
                        help="pixels (default sd2: 512 1024, dit-xl2: 512; --tiny: 64, dit-xl2 128)")
    parser.add_argument("--methods", nargs="+", default=["none", "bigain-merge-0.7"], choices=list(METHODS))
    parser.add_argument("--ort-optimize", nargs="+", default=["none", "fusions", "onnxscript"],
                        choices=["none", "fusions", "onnxscript"],
                        help="ONNX Runtime graphs to time: as exported, after ORT's transformers optimizer, after onnxscript's ORT fusions")
    parser.add_argument("--ort-variants", nargs="+", default=["default"], choices=list(ORT_VARIANTS),
                        help="CUDA provider options per ORT graph: nhwc = prefer_nhwc (convolutions without cuDNN's layout "
                        "transposes), cuda-graph = enable_cuda_graph (one graph launch per call); ort-cuda only")
    parser.add_argument("--body-forms", nargs="+", default=["default"], metavar="SPEC",
                        help="GatedMerge bodies to build merge engines with: 'default' or e.g. 'lap=slices,match=topk1' "
                             "(exact forms of body steps, scripts/body_forms.py); one export each")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=None, help="default 30 (--tiny: 3)")
    parser.add_argument("--warmup", type=int, default=None, help="default 5 (--tiny: 1)")
    parser.add_argument("--tiny", action="store_true", help="toy widths of the SD2 UNet structure on any device (CPU check)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when visible")
    parser.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=list(TORCH_MODES),
                        help="PyTorch baselines timed beside ORT (bench_unet.py's names; eager output is always the reference)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_ort"))
    args = parser.parse_args()
    for spec in args.body_forms:
        try:
            parse_body_forms(spec)
        except ValueError as exc:
            parser.error(f"--body-forms: {exc}")
    if args.body_forms != ["default"] and not any(METHODS[m].merge == "bigain" for m in args.methods):
        parser.error(f"--body-forms {' '.join(args.body_forms)}: GatedMerge bodies, but --methods "
                     f"{' '.join(args.methods)} has no BiGain merging")
    res = args.res or {(False, "sd2"): [512, 1024], (True, "sd2"): [64], (False, "dit-xl2"): [512],
                       (True, "dit-xl2"): [128]}[args.tiny, args.model]
    iters, warmup = args.iters or (3 if args.tiny else 30), args.warmup or (1 if args.tiny else 5)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = "ort-cuda" if device == "cuda" else "ort-cpu"
    if device != "cuda" and args.ort_variants != ["default"]:
        parser.error(f"--ort-variants {' '.join(args.ort_variants)}: CUDA provider options; on --device cpu only 'default' runs")

    import onnx
    import onnxruntime as ort

    if device == "cuda":
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001
            print("preload_dlls:", exc)
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SystemExit(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here (the CPU build "
                             "would run silently); put onnxruntime-gpu first on the path")
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    wrapper, model_config = build_model(args.model, args.tiny, device)
    meta = dict(card=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
                device=device, torch=torch.__version__, onnxruntime=ort.__version__, onnx=onnx.__version__,
                cuda=torch.version.cuda, python=platform.python_version(), date=time.strftime("%Y-%m-%d %H:%M:%S"),
                model=args.model, architecture=("tiny " if args.tiny else "") + {"sd2": "SD2-base", "dit-xl2": "DiT-XL/2"}[args.model],
                model_config=model_config, res=res,
                batch=args.batch, dtype="fp16", iters=iters, warmup=warmup, argv=sys.argv[1:])
    rows = []
    for px in res:
        inputs = model_inputs(args.model, model_config, args.batch, px, device)
        feeds = dict(zip(wrapper.INPUTS, inputs))
        torch_done = {}  # method -> (eager output, torch ms): body forms change only the engine
        runs = [(name, spec) for name in args.methods
                for spec in (args.body_forms if METHODS[name].merge == "bigain" else ["default"])]
        for name, spec in runs:
            config = METHODS[name]
            t0 = time.time()
            path = args.workdir / f"{args.model}_{name}_{px}.onnx"
            with body_forms(spec):
                nodes = export(wrapper, config, inputs, path, device)
            export_s = time.time() - t0
            if name not in torch_done:
                torch_done[name] = torch_baselines(wrapper, config, inputs, args.modes, warmup, iters, device, px, name)
            eager_out, torch_ms = torch_done[name]
            best_mode = min(torch_ms, key=torch_ms.get) if torch_ms else None
            for optimize in args.ort_optimize:
                record, run_path = None, path
                if optimize != "none":
                    optimizer = "onnxscript" if optimize == "onnxscript" else "onnxruntime"
                    optimized, record = optimize_model_proto(onnx.load(str(path)), backend=backend, precision="fp16",
                                                             optimizer=optimizer)
                    run_path = path.with_name(f"{path.stem}.{optimize}.onnx")
                    save_model_atomically(optimized, run_path)
                for variant in args.ort_variants:
                    options = ort.SessionOptions()
                    options.log_severity_level = 3
                    cuda_options = ORT_VARIANTS[variant]
                    try:  # a CUDA graph needs every node on the CUDA EP: an option ORT refuses is a row, not the end
                        session = ort.InferenceSession(str(run_path), options, providers=[(providers[0], dict(cuda_options))])
                        with torch.inference_mode():
                            out_ort, ort_ms = ort_run_and_time(session, feeds, warmup, iters, device)
                    except Exception as exc:  # noqa: BLE001
                        if variant == "default":  # no provider options: a failure is a bug, not a row
                            raise
                        error = str(exc).strip().splitlines()[0][:300]
                        print(f"{px} px {name} [{spec}] {optimize} {variant}: ORT failed: {error}", flush=True)
                        rows.append(dict(px=px, method=name, body_forms=spec, ort_optimize=optimize, ort_variant=variant,
                                         ort_provider_options=cuda_options, error=error))
                        write_raw(args.out, meta, rows, complete=False)
                        continue
                    diff = (out_ort.to(device).float() - eager_out.float())
                    row = dict(px=px, method=name, body_forms=spec, config=config.describe(), ort_optimize=optimize, ort_variant=variant,
                               ort_provider_options=cuda_options, ort_backend=backend,
                               ort_optimization=record, custom_nodes=nodes, export_s=round(export_s, 1), ort_ms=ort_ms,
                               torch_ms=torch_ms, eager_ms=torch_ms.get("eager", nan), compile_ms=torch_ms.get("compile", nan),
                               ort_over_compile=ort_ms / torch_ms.get("compile", nan),
                               best_torch_mode=best_mode, ort_over_best_torch=ort_ms / torch_ms[best_mode] if best_mode else nan,
                               ort_vs_eager_mean_abs=diff.abs().mean().item(), ort_vs_eager_max_abs=diff.abs().max().item(),
                               onnx_mb=round(run_path.stat().st_size / 2**20, 1))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    write_raw(args.out, meta, rows, complete=False)
                    del session
                if run_path != path:
                    run_path.unlink()
            path.unlink()
    write_raw(args.out, meta, rows, complete=True)
    print(json.dumps(meta, default=str))
    print("| px | method | body forms | ORT graph | ORT options | ORT ms | " + " | ".join(f"{m} ms" for m in args.modes)
          + " | ORT / best torch | ORT vs eager mean abs |")
    print("|---" * (8 + len(args.modes)) + "|")
    for r in rows:
        if "error" in r:
            print(f"| {r['px']} | {r['method']} | {r['body_forms']} | {r['ort_optimize']} | {r['ort_variant']} | failed: {r['error'][:80]} |")
            continue
        print(f"| {r['px']} | {r['method']} | {r['body_forms']} | {r['ort_optimize']} | {r['ort_variant']} | {r['ort_ms']:.2f} | "
              + " | ".join(f"{r['torch_ms'][m]:.2f}" for m in args.modes)
              + f" | {r['ort_over_best_torch']:.2f} ({r['best_torch_mode']}) | {r['ort_vs_eager_mean_abs']:.2e} |")


if __name__ == "__main__":
    main()
