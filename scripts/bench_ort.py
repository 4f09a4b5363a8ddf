"""ONNX Runtime (CUDA provider) vs eager vs torch.compile on the SD2-base UNet architecture.

Exports the patched UNet (random weights, fp16, batch 2, 512 px) with BiGain's custom nodes and
their function bodies, runs it with onnxruntime-gpu, and times the same inputs on eager and
compiled PyTorch (median ms, CUDA events / synchronised wall clock for ORT with IO binding).

    python scripts/bench_ort.py --res 512 --methods none bigain-merge bigain-kv --out results/
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export import BiGainConfig, apply_bigain, remove_bigain  # noqa: E402
from bigain_export.export.onnx_export import custom_node_counts, save_model_atomically  # noqa: E402
from bigain_export.export.onnx_ops import STANDARD_OPSET, attach_functions  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import SD2_BASE_UNET, cuda_median_ms  # noqa: E402

METHODS = {
    "none": BiGainConfig.preset("none"),
    "bigain-merge": BiGainConfig.preset("bigain-merge", ratio=0.5),
    "bigain-merge-0.7": BiGainConfig.preset("bigain-merge", ratio=0.7),
    "bigain-kv": BiGainConfig.preset("bigain-kv"),
}


class UNetEps(torch.nn.Module):
    """(sample, timestep, encoder_hidden_states) -> eps, the exported signature."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def export(wrapper, config, args, path: Path) -> dict:
    # traced on the CPU: torch.onnx.ops.symbolic's fake outputs live there (see export_onnx)
    wrapper.cpu()
    apply_bigain(wrapper.unet, config)
    try:
        with torch.no_grad():
            program = torch.onnx.export(wrapper, tuple(a.cpu() for a in args), dynamo=True, opset_version=STANDARD_OPSET,
                                        input_names=["sample", "timestep", "encoder_hidden_states"],
                                        output_names=["eps"], external_data=False)
    finally:
        remove_bigain(wrapper.unet)
        wrapper.cuda()
    model = attach_functions(program.model_proto)
    save_model_atomically(model, path)
    return custom_node_counts(model)


def ort_median_ms(session, feeds: dict, warmup: int, iters: int) -> float:
    import onnxruntime as ort

    binding = session.io_binding()
    for name, tensor in feeds.items():
        binding.bind_input(name, "cuda", 0, {torch.float16: np.float16, torch.int64: np.int64}[tensor.dtype], list(tensor.shape), tensor.data_ptr())
    binding.bind_output("eps", "cuda")
    for _ in range(warmup):
        session.run_with_iobinding(binding)
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append((time.perf_counter() - start) * 1e3)
    del ort
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--methods", nargs="+", default=["none", "bigain-merge", "bigain-kv"], choices=list(METHODS))
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_ort"))
    args = parser.parse_args()

    import onnxruntime as ort
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001
        print("preload_dlls:", exc)
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD2_BASE_UNET).to("cuda", torch.float16).eval()
    unet.set_attn_processor(AttnProcessor2_0())
    wrapper = UNetEps(unet)
    side = args.res // 8
    inputs = (torch.randn(2, 4, side, side, device="cuda", dtype=torch.float16),
              torch.full((2,), 500, device="cuda", dtype=torch.int64),
              torch.randn(2, 77, 1024, device="cuda", dtype=torch.float16))
    rows = []
    for name in args.methods:
        config = METHODS[name]
        t0 = time.time()
        path = args.workdir / f"unet_{name}.onnx"
        nodes = export(wrapper, config, inputs, path)
        export_s = time.time() - t0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider"])
        feeds = dict(zip(["sample", "timestep", "encoder_hidden_states"], inputs))
        with torch.inference_mode():
            out_ort = torch.from_numpy(session.run(None, {k: v.cpu().numpy() for k, v in feeds.items()})[0]).cuda()
            ort_ms = ort_median_ms(session, feeds, args.warmup, args.iters)
            apply_bigain(unet, config)
            eager_out = wrapper(*inputs)
            eager_ms = cuda_median_ms(lambda: wrapper(*inputs), args.warmup, args.iters)
            compiled_ms = float("nan")
            if not args.no_compile:
                torch._dynamo.reset()
                compiled = torch.compile(wrapper)
                compiled_ms = cuda_median_ms(lambda: compiled(*inputs), args.warmup, args.iters)
            remove_bigain(unet)
        diff = (out_ort.float() - eager_out.float())
        row = dict(method=name, config=config.describe(), custom_nodes=nodes, export_s=round(export_s, 1),
                   ort_cuda_ms=ort_ms, eager_ms=eager_ms, compile_ms=compiled_ms,
                   ort_vs_eager_mean_abs=diff.abs().mean().item(), ort_vs_eager_max_abs=diff.abs().max().item(),
                   onnx_mb=round(path.stat().st_size / 2**20, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
        del session
        path.unlink()
    meta = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, onnxruntime=ort.__version__,
                cuda=torch.version.cuda, python=platform.python_version(), date=time.strftime("%Y-%m-%d"),
                res=args.res, batch=2, dtype="fp16", iters=args.iters)
    (args.out / "bench_ort.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print(json.dumps(meta))
    print("| method | ORT CUDA ms | eager ms | compile ms | ORT vs eager mean abs |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['ort_cuda_ms']:.2f} | {r['eager_ms']:.2f} | {r['compile_ms']:.2f} | {r['ort_vs_eager_mean_abs']:.2e} |")


if __name__ == "__main__":
    main()
