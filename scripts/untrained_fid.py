"""FID of a built-in model against the same architecture untrained (the issue-3 quality bar).

Samples N images (one per test label, the results-table protocol: 50 steps, guidance 1.0, seeds
0..N-1) from the trained model and from a randomly initialised copy, and computes both FIDs
against the reference statistics of the 10k test images. Runs on the CPU (slow: the 10k
reference features dominate; they are cached).

    python scripts/untrained_fid.py --model builtin:fmnist-dit --images 500 --out docs/results/untrained
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from bigain_export.models.registry import load_denoiser  # noqa: E402
from bigain_export.validate.fid import InceptionFeatures, fid, reference_statistics  # noqa: E402
from bigain_export.validate.sampling import SamplingConfig, sample  # noqa: E402


def untrained_copy(denoiser, seed: int = 0):
    """Same architecture and config, weights re-initialised by diffusers' own init."""
    fresh = copy.deepcopy(denoiser)
    torch.manual_seed(seed)
    fresh.model = type(denoiser.model).from_config(denoiser.model.config).to(denoiser.device, denoiser.dtype).eval()
    return fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:fmnist-dit")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    t0 = time.time()
    denoiser = load_denoiser(args.model, device=args.device)
    test = load_fashion_mnist("test")
    features = InceptionFeatures(device=args.device)
    reference = reference_statistics(test.images, features, cache_dir=Path.home() / ".cache/bigain-export/fid")
    print(f"[{time.time() - t0:.0f}s] reference statistics ready", flush=True)
    labels = test.labels[: args.images]
    config = SamplingConfig(sampler="ddim" if denoiser.kind == "dit" else "euler", num_steps=50, guidance_scale=1.0,
                            null_label=denoiser.null_label, seed=0)
    result = dict(model=args.model, images=args.images, sampler=config.sampler, guidance=1.0, device=args.device,
                  torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    for name, model in (("trained", denoiser), ("untrained", untrained_copy(denoiser))):
        with torch.no_grad():
            images = sample(model, labels, scheduler_config=denoiser.scheduler_config, sample_shape=denoiser.sample_shape,
                            config=config, batch_size=100, device=args.device)
        result[f"fid_{name}"] = fid(images, reference, features)
        print(f"[{time.time() - t0:.0f}s] {name}: FID {result[f'fid_{name}']:.2f}", flush=True)
    result["seconds"] = round(time.time() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.model.split(':')[-1]}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
