"""Accuracy and FID of every method on a built-in model, eager and as an engine (issue 5, item 6).

For each method (none, ToMe, BiGain merging at several ratios, ToDo, BiGain KV downsampling) it
builds an eager eps function and an engine (ONNX Runtime CUDA when available), then runs
``bigain_export.validate.validate`` over all of them with the same classifier noise, sampling
seeds and drift inputs, and writes the report (JSON, Markdown, PNG) plus a compact table.

    python scripts/results_table.py --model builtin:fmnist-dit --limit 1000 --device cuda --out results/dit

ToMe's eager baseline uses random anchors (as tomesd); its engine uses fixed anchors, since a
random pattern per call cannot be baked into an engine. BiGain KV downsampling uses the paper's
alpha per task: fixed 0.9 for classification, scheduled 0.8 -> 1.2 for generation (two engines).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export import BiGainConfig, apply_bigain  # noqa: E402
from bigain_export.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from bigain_export.models.registry import load_denoiser  # noqa: E402
from bigain_export.validate import run as validation  # noqa: E402
from bigain_export.validate.fid import InceptionFeatures, reference_statistics  # noqa: E402
from bigain_export.validate.sampling import SamplingConfig  # noqa: E402


def method_configs(ratios, downsample):
    methods = {"none": BiGainConfig.preset("none")}
    for r in ratios:
        methods[f"tome-{r:g}"] = BiGainConfig.preset("tome", ratio=r)
    for r in ratios:
        methods[f"bigain-merge-{r:g}"] = BiGainConfig.preset("bigain-merge", ratio=r)
    methods[f"todo-s{downsample}"] = BiGainConfig.preset("todo", downsample=downsample)
    methods[f"bigain-kv-s{downsample}"] = BiGainConfig.preset("bigain-kv", downsample=downsample)
    return methods


def eager_eps(denoiser, config):
    model = copy.deepcopy(denoiser)
    apply_bigain(model, config)
    return model


def exportable(config: BiGainConfig) -> BiGainConfig:
    return BiGainConfig.from_dict({**config.to_dict(), "anchor": "fixed"}) if config.merge == "tome" else config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:fmnist-dit")
    parser.add_argument("--limit", type=int, default=1000, help="test images (the first N of the 10k)")
    parser.add_argument("--fid-images", type=int, default=None)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--no-engines", action="store_true")
    parser.add_argument("--no-fid", action="store_true", help="skip generation and FID (smoke runs)")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of method names")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--sampler", default=None, help="default: ddim for DiT, euler for UNet (the paper's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="default: 1.0 for the built-in models (they saturate above ~1.5, docs/models.md); "
                        "the paper's 4.0 (DiT) / 7.5 (SD) otherwise")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from bigain_export.engine.build import EngineEpsFn, build_engine

    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    denoiser = load_denoiser(args.model, device=args.device)
    is_dit = denoiser.kind == "dit"
    sampler = args.sampler or ("ddim" if is_dit else "euler")
    builtin = args.model.startswith("builtin:")
    guidance = args.guidance if args.guidance is not None else (1.0 if builtin else 4.0 if is_dit else 7.5)
    test = load_fashion_mnist("test")
    images, labels = test.images[: args.limit], test.labels[: args.limit]
    features = InceptionFeatures(device=args.device)
    fid_ref = None if args.no_fid else reference_statistics(test.images, features, cache_dir=Path("/tmp/bigain-fid-cache"))
    print(f"[{time.time() - t0:.0f}s] reference statistics of the 10k test images ready", flush=True)

    methods, engine_drift = {}, {}
    with contextlib.ExitStack() as stack:
        for name, config in method_configs(args.ratios, args.downsample).items():
            if args.methods and name not in args.methods:
                continue
            cls_config, gen_config = config.for_task("classification"), config.for_task("generation")
            if cls_config == gen_config:
                methods[f"eager:{name}"] = eager_eps(denoiser, config)
            else:
                methods[f"eager:{name}"] = validation.TaskEps(eager_eps(denoiser, cls_config), eager_eps(denoiser, gen_config))
            if args.no_engines:
                continue
            fns = []
            for task, task_config in (("cls", cls_config), ("gen", gen_config)):
                if task == "gen" and task_config == cls_config:
                    fns.append(fns[0])
                    continue
                engine, report = build_engine(denoiser, exportable(task_config),
                                              args.out / "engines" / f"{name}-{task}", backend=args.backend,
                                              batch=args.batch, drift_feeds_count=2, device=args.device)
                engine_drift[f"engine:{name}/{task}"] = report.to_dict()
                fns.append(stack.enter_context(EngineEpsFn(engine)))
                print(f"[{time.time() - t0:.0f}s] engine {name}/{task}: {report.summary().splitlines()[-1].strip()}", flush=True)
            methods[f"engine:{name}"] = fns[0] if fns[0] is fns[1] else validation.TaskEps(fns[0], fns[1])

        settings = validation.ValidationSettings(
            num_classes=denoiser.num_classes, scheduler_config=denoiser.scheduler_config,
            sampling=None if args.no_fid else SamplingConfig(sampler=sampler, num_steps=50, guidance_scale=guidance,
                                                             null_label=denoiser.null_label, seed=0),
            fid_images=args.fid_images, drift_inputs=16, batch_size=args.batch,
        )
        report = validation.validate(
            methods, images.to(args.device), labels.to(args.device), settings, args.out / "report",
            reference_method="eager:none", fid_reference=fid_ref, feature_fn=features, fid_cache_dir=Path("/tmp/bigain-fid-cache"),
            metadata=dict(model=args.model, card=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                          torch=torch.__version__, date=time.strftime("%Y-%m-%d"), limit=args.limit,
                          sampler=sampler, guidance=guidance, engine_drift=engine_drift),
        )
    (args.out / "engine_drift.json").write_text(json.dumps(engine_drift, indent=1))
    print(f"[{time.time() - t0:.0f}s] done; report in {args.out / 'report'}")
    print(json.dumps(report.get("methods", report), indent=None)[:6000])


if __name__ == "__main__":
    main()
