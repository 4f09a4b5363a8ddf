"""``bigain-export validate``: accuracy, FID and eps drift of eager and engine models, as a report.

Methods compared (names are stable so ``bigain-export check`` can pair them across runs):

* ``eager-none``: the eager model without token compression;
* ``eager-same-config``: the eager model patched with ``--config`` (skipped for ``none``);
* ``engine``: the engine in ``--engine DIR``, when given.

The eager model and the engine use the same config for every task, so their difference is the
engine's own. ``--paper-alpha`` instead gives ``eager-same-config`` the paper's per-task alpha
(``BiGainConfig.for_task``: fixed 0.9 for classification, scheduled for generation).
Under ``torchrun`` the images are sharded across ranks and rank 0 writes the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import Any


DATA_CHOICES = ("fmnist-test", "fmnist-train")
PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        help="measure accuracy, FID and eps drift of eager and engine models; write a report",
        description="Run the diffusion classifier, sampling + FID and eps drift for the eager model "
        "(unpatched and patched with --config) and an optional engine; write report.json/.md/.png.",
    )
    parser.add_argument("--model", default="builtin:fmnist-dit", help="built-in name or diffusers folder")
    parser.add_argument("--config", default="none", metavar="PRESET|JSON",
                        help="BiGain preset name (none, tome, todo, bigain-merge, bigain-kv, bigain-both), "
                        "a JSON file, or an inline JSON object")
    parser.add_argument("--engine", default=None, metavar="DIR",
                        help="engine folder to validate (built with the same --config)")
    parser.add_argument("--paper-alpha", action="store_true",
                        help="eager-same-config uses alpha 0.9 for classification, scheduled for generation")
    parser.add_argument("--data", default="fmnist-test", metavar="NAME|NPZ",
                        help=f"{' | '.join(DATA_CHOICES)}, or an .npz with 'images' [N,C,H,W] in [-1,1] "
                        "(or uint8) and 'labels' [N]")
    parser.add_argument("--limit", type=int, default=100, metavar="N", help="first N images (default 100)")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.add_argument("--resume", action="store_true",
                        help="checkpoint each finished method in DIR/methods and reuse checkpoints of an "
                        "earlier run with the same settings (rerun after a timeout to continue)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per eps call (default: the engine's static batch, else 32)")
    parser.add_argument("--schedule", default="bigain-adaptive", metavar="NAME",
                        help="classifier schedule: bigain-adaptive (default) | uniform | uniform-N")
    parser.add_argument("--seed", type=int, default=0, help="seed of classifier noise and sampling")
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "euler"))
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (default 4.0)")
    parser.add_argument("--fid-images", type=int, default=None, metavar="N",
                        help="images generated per method (default: --limit)")
    parser.add_argument("--no-fid", action="store_true", help="skip generation and FID")
    parser.add_argument("--fid-cache", default=None, metavar="DIR",
                        help="reference-statistics cache (default: $XDG_CACHE_HOME/bigain-export/fid)")
    parser.add_argument("--drift-inputs", type=int, default=16, metavar="N", help="random inputs for eps drift")
    parser.add_argument("--drift-max-abs", type=float, default=None, metavar="X",
                        help="record this max-abs drift tolerance for the engine in the report")
    parser.add_argument("--drift-rel-l2", type=float, default=None, metavar="X",
                        help="record this relative-L2 drift tolerance for the engine in the report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _load_config(text: str):
    from ..config import PRESETS, BiGainConfig
    from ..errors import ConfigError

    if text in PRESETS:
        return BiGainConfig.preset(text)
    raw = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"--config {text!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
        raw = path.read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {text!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {text!r} holds {type(data).__name__}; allowed: a JSON object of BiGainConfig fields")
    if "preset" in data:
        preset = data.pop("preset")
        return BiGainConfig.preset(preset, **data)
    return BiGainConfig.from_dict(data)


def _load_data(spec: str, limit: int):
    import numpy as np
    import torch

    from ..errors import DataError

    if spec in DATA_CHOICES:
        from ..data.fashion_mnist import load_fashion_mnist

        data = load_fashion_mnist(spec.split("-", 1)[1])
        images, labels = data.images, data.labels
    else:
        try:
            with np.load(spec, allow_pickle=False) as npz:
                images, labels = torch.from_numpy(npz["images"]), torch.from_numpy(npz["labels"]).long()
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(
                f"--data {spec!r}: not {' | '.join(DATA_CHOICES)} nor a readable .npz with 'images' and 'labels' ({exc})"
            ) from exc
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1
        images = images.float()
    if limit < 1:
        raise DataError(f"--limit {limit} is not allowed; allowed: an integer >= 1")
    return images[:limit], labels[:limit]


def _patched_eps(denoiser, config):
    """An eps function that runs ``denoiser`` patched with ``config`` (None: unpatched).

    One model serves every eager method: the patch is switched only when the wanted config
    differs from the active one, so consecutive calls of one method cost nothing extra.
    """
    from ..patch import apply_bigain, patch_info, remove_bigain

    def eps_fn(sample, timestep, class_labels):
        record = patch_info(denoiser)
        active = None if record is None else record.config
        if active != config:
            if config is None:
                remove_bigain(denoiser)
            else:
                apply_bigain(denoiser, config)
        return denoiser(sample, timestep, class_labels)

    return eps_fn


def _open_engine(path: str, config, stack: contextlib.ExitStack):
    """(eps function, static batch size) of the engine in ``path``, checked against ``config``;
    its runtime session stays open until ``stack`` closes."""
    from ..engine.build import EngineEpsFn, load_engine  # ONNX Runtime / TensorRT imports stay lazy

    eps_fn = stack.enter_context(EngineEpsFn(load_engine(path, config=config)))
    return eps_fn, eps_fn.batch


def _maybe_init_distributed(device: str) -> str:
    """Join the torchrun process group when launched by torchrun; return this rank's device."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = device.startswith("cuda")
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return f"cuda:{local}"
    return device


def _cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bigain-export" / "fid"


def _settings(args, denoiser, schedule, batch_size: int):
    from ..validate.run import ValidationSettings
    from ..validate.sampling import SamplingConfig

    tolerances: dict[str, Any] = {}
    if args.drift_max_abs is not None:
        tolerances["drift_max_abs"] = args.drift_max_abs
    if args.drift_rel_l2 is not None:
        tolerances["drift_rel_l2"] = args.drift_rel_l2
    sampling = None
    if not args.no_fid:
        guided = args.guidance != 1
        sampling = SamplingConfig(sampler=args.sampler, num_steps=args.steps, guidance_scale=args.guidance,
                                  null_label=denoiser.null_label if guided else None, seed=args.seed)
    return ValidationSettings(
        num_classes=denoiser.num_classes,
        scheduler_config=denoiser.scheduler_config,
        schedule=schedule,
        classifier_seed=args.seed,
        sampling=sampling,
        fid_images=args.fid_images,
        drift_inputs=args.drift_inputs,
        drift_seed=args.seed,
        batch_size=batch_size,
        tolerances=tolerances or None,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..models.registry import load_denoiser
    from ..validate.provenance import Provenance, engine_facts, method_facts, model_facts
    from ..validate.run import TaskEps, validate
    from ..validate.schedule import ClassifierSchedule

    device = _maybe_init_distributed(args.device)
    config = _load_config(args.config)
    schedule = ClassifierSchedule.named(args.schedule)
    images, labels = _load_data(args.data, args.limit)
    denoiser = load_denoiser(args.model, device, getattr(torch, args.dtype))

    methods: dict[str, Any] = {"eager-none": _patched_eps(denoiser, None)}
    if config.enabled:
        if args.paper_alpha:
            methods["eager-same-config"] = TaskEps(
                classify=_patched_eps(denoiser, config.for_task("classification")),
                generate=_patched_eps(denoiser, config.for_task("generation")),
            )
        else:
            methods["eager-same-config"] = _patched_eps(denoiser, config)
    reference = "eager-same-config" if "eager-same-config" in methods else "eager-none"
    dtype = args.dtype
    facts = {"eager-none": method_facts(None, dtype=dtype)}
    if "eager-same-config" in methods:
        facts["eager-same-config"] = method_facts(
            {"classify": config.for_task("classification"), "generate": config.for_task("generation")}
            if args.paper_alpha else config, dtype=dtype)
    metadata = {
        "model": args.model, "config": config.to_dict(), "config_label": config.describe(),
        "engine": args.engine, "paper_alpha": args.paper_alpha, "data": args.data, "limit": args.limit,
        "device": device, "dtype": args.dtype,
    }

    with contextlib.ExitStack() as stack:
        batch_size = args.batch_size
        if args.engine:
            methods["engine"], engine_batch = _open_engine(args.engine, config, stack)
            engine = methods["engine"].engine
            facts["engine"] = method_facts(config, backend=engine.manifest.backend,
                                           dtype=PRECISION_DTYPES[engine.spec.precision], engine=engine_facts(engine))
            if batch_size not in (None, engine_batch):
                raise ConfigError(f"--batch-size {batch_size} is not allowed with this engine; allowed: {engine_batch}")
            batch_size = engine_batch
        settings = _settings(args, denoiser, schedule, batch_size or 32)
        report = validate(
            methods, images.to(device), labels, settings, args.out, reference_method=reference,
            fid_cache_dir=_cache_dir(args.fid_cache), metadata=metadata, progress=not args.no_progress,
            resume=args.resume, provenance=Provenance(
                model=model_facts(denoiser, args.model), methods=facts, data_source=args.data,
                data_limit=args.limit, device=device),
        )
    if int(os.environ.get("RANK", "0")) == 0:
        for name, m in report["methods"].items():
            fid = "n/a" if m.get("fid") is None else f"{m['fid']:.3f}"
            print(f"{name}: accuracy {100 * m['accuracy']:.2f}% ({m['correct']}/{m['num_images']}), FID {fid}")
        print(f"report: {Path(args.out) / 'report.json'}")
    return 0
