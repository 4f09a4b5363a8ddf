"""Is the GPU fp32 drift between eager PyTorch and ONNX Runtime CUDA TF32? Measure all four combinations.

Exports one built-in model (no compression) once, then compares eager CUDA with ONNX Runtime CUDA
on the same random feeds with TF32 on/off on each side (PyTorch: cuDNN + matmul flags; ONNX
Runtime: the CUDA provider's ``use_tf32``). Prints mean / max abs drift per combination.

    python scripts/tf32_drift.py --model builtin:fmnist-dit --out results/tf32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export import BiGainConfig, apply_bigain  # noqa: E402
from bigain_export.engine.build import drift_feeds  # noqa: E402
from bigain_export.export.onnx_export import export_onnx  # noqa: E402
from bigain_export.export.spec import DenoiserSpec  # noqa: E402
from bigain_export.models.registry import load_denoiser  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:fmnist-dit")
    parser.add_argument("--preset", default="none")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import onnxruntime as ort

    ort.preload_dlls()
    denoiser = load_denoiser(args.model)
    config = BiGainConfig.preset(args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    path = export_onnx(denoiser, config, args.out / "model.onnx", batch=args.batch).path
    spec = DenoiserSpec(args.batch, tuple(denoiser.sample_shape))
    feeds = drift_feeds(spec, 3, denoiser.num_classes)  # the feeds build_engine's drift check uses
    model = denoiser.to("cuda").eval()
    apply_bigain(model, config)

    def eager(tf32: bool) -> list[np.ndarray]:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        with torch.no_grad():
            return [model(*(torch.as_tensor(f[s.name]).cuda() for s in spec.inputs)).float().cpu().numpy() for f in feeds]

    def onnxrt(tf32: bool) -> list[np.ndarray]:
        session = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider", {"use_tf32": str(int(tf32))})])
        return [session.run(None, f)[0] for f in feeds]

    rows = []
    for eager_tf32 in (True, False):
        for ort_tf32 in (True, False):
            diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(eager(eager_tf32), onnxrt(ort_tf32))])
            rows.append(dict(eager_tf32=eager_tf32, ort_tf32=ort_tf32, mean_abs=float(diff.mean()), max_abs=float(diff.max())))
            print(f"eager TF32 {eager_tf32!s:5}  ORT TF32 {ort_tf32!s:5}  mean abs {diff.mean():.2e}  max abs {diff.max():.2e}", flush=True)
    meta = dict(model=args.model, preset=args.preset, batch=args.batch, card=torch.cuda.get_device_name(),
                torch=torch.__version__, onnxruntime=ort.__version__)
    (args.out / "tf32_drift.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
