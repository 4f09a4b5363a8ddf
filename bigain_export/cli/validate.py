"""``bigain-export validate``: accuracy, FID and eps drift of eager and engine models, as a report.

Methods compared (names are stable so ``bigain-export check`` can pair them across runs):

* ``eager-none``: the eager model without token compression;
* ``eager-same-config``: the eager model patched with ``--config`` (skipped for ``none``);
* ``engine``: the engine in ``--engine DIR``, when given.

With ``--engine`` the model and config come from the engine's manifest; a ``--model`` or
``--config`` that does not match it (weights, config, shapes, classes) is refused. The eager
model and the engine use the same config for every task, so their difference is the engine's own
(engine drift, judged by ``check`` by default). ``--alpha paper`` instead gives
``eager-same-config`` the paper's per-task alpha (``BiGainConfig.for_task``: fixed 0.9 for
classification, scheduled for generation); an engine bakes one alpha, so not with ``--engine``.
Under ``torchrun`` the images are sharded across ranks and rank 0 writes the report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .args import (DEFAULT_BATCH_SIZE, PRECISION_DTYPES, add_batch_args, add_config_args, add_data_args,
                   add_device_args, add_drift_limit_args, add_model_args, add_precision_args, check_device,
                   config_from_args, count, finite_float, positive_int)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        help="measure accuracy, FID and eps drift of eager and engine models; write a report",
        description="Run the diffusion classifier, sampling + FID and eps drift for the eager model "
        "(unpatched and patched with --config) and an optional engine; write report.json/.md/.png.",
    )
    add_model_args(parser, from_engine=True)
    add_config_args(parser, from_engine=True)
    parser.add_argument("--engine", default=None, metavar="DIR",
                        help="engine folder to validate; the model and config default to its manifest's")
    add_data_args(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.add_argument("--resume", action="store_true",
                        help="checkpoint each finished method in DIR/methods and reuse checkpoints measured on "
                        "the same model, config, engine, settings and data (rerun after a timeout to continue)")
    add_device_args(parser)
    add_precision_args(parser)
    add_batch_args(parser, from_engine=True)
    parser.add_argument("--schedule", default="bigain-adaptive", metavar="NAME",
                        help="classifier schedule: bigain-adaptive (default) | uniform | uniform-N")
    parser.add_argument("--seed", type=count, default=0, help="seed of classifier noise and sampling (default 0)")
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "euler"))
    parser.add_argument("--steps", type=positive_int, default=50, help="sampling steps (default 50)")
    parser.add_argument("--guidance", type=finite_float, default=4.0,
                        help="classifier-free guidance scale (default 4.0)")
    parser.add_argument("--fid-images", type=positive_int, default=None, metavar="N",
                        help="images generated per method (default: --limit)")
    parser.add_argument("--no-fid", action="store_true", help="skip generation and FID")
    parser.add_argument("--fid-ref", "--fid-reference", dest="fid_ref", default=None, metavar="DIR|NAME|NPZ",
                        help="FID reference images: any folder of images, or a --data spec of pixels "
                        "(default: the --data images)")
    parser.add_argument("--fid-cache", default=None, metavar="DIR",
                        help="reference-statistics cache (default: $XDG_CACHE_HOME/bigain-export/fid)")
    parser.add_argument("--drift-inputs", type=count, default=16, metavar="N",
                        help="random inputs of the drift check (default 16; 0 skips drift)")
    add_drift_limit_args(parser, recorded=True)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


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


def process_group_plan(device: str, local_rank: int, local_world: int, gpus: int) -> tuple[str, str]:
    """``(backend, this rank's device)`` for a torchrun launch on ``device``.

    One GPU per local rank: NCCL, rank r on ``cuda:r``. More local ranks than GPUs (several
    processes sharing a GPU, which overlaps the launch-bound calls of small models): NCCL refuses
    two ranks on one device, so gloo (results travel as CPU objects either way,
    ``validate/distributed.py``) with rank r on ``cuda:(r mod gpus)``. CPU: gloo.
    """
    if not device.startswith("cuda"):
        return "gloo", device
    if gpus < 1:
        raise ConfigError(f"--device {device} is not allowed here: no CUDA device is visible; allowed: cpu")
    if local_world <= gpus:
        return "nccl", f"cuda:{local_rank}"
    return "gloo", f"cuda:{local_rank % gpus}"


def _maybe_init_distributed(device: str) -> str:
    """Join the torchrun process group when launched by torchrun; return this rank's device."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
        backend, device = process_group_plan(device, local, local_world, gpus)
        dist.init_process_group(backend=backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
    return device


def _cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bigain-export" / "fid"


def _settings(args, denoiser, schedule, batch_size: int):
    from ..validate.run import ValidationSettings
    from ..validate.sampling import SamplingConfig

    tolerances = {key: getattr(args, key) for key in ("drift_max_abs", "drift_rel_l2", "drift_mean_abs")
                  if getattr(args, key) is not None}
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


def _engine_and_config(args):
    """``(engine or None, config, paper_alpha, model spec)``: with ``--engine``, the manifest's
    model and config unless given, and a given config must equal the engine's."""
    from ..errors import ConfigError
    from ..models.registry import DEFAULT_MODEL

    if not args.engine:
        config, paper = config_from_args(args)
        return None, config, paper, args.model or DEFAULT_MODEL
    from ..engine.build import load_engine  # ONNX Runtime / TensorRT imports stay lazy

    engine = load_engine(args.engine)
    built = engine.manifest.bigain_config
    config, paper = config_from_args(args, default=built)
    if config != built:
        raise ConfigError(f"--config '{config.describe()}' does not match the engine's '{built.describe()}' "
                          f"({Path(args.engine) / 'manifest.json'}); allowed: the engine's config (the default)")
    if paper and any(config.for_task(t) != config for t in ("classification", "generation")):
        raise ConfigError("--alpha paper gives the eager model a per-task alpha, which an engine (one baked alpha) "
                          "cannot match; allowed with --engine: the engine's own alpha (drop --alpha)")
    return engine, config, paper, args.model or engine.manifest.model


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.build import EngineEpsFn, load_engine
    from ..errors import ConfigError
    from ..models.prompts import check_template
    from ..models.registry import load_denoiser
    from ..validate.fid import InceptionFeatures, reference_statistics
    from ..data.image_folder import scan_image_folder
    from ..validate.inputs import prepare_inputs
    from ..validate.atomic import check_writable
    from ..validate.provenance import Provenance, engine_facts, method_facts, model_facts
    from ..validate.run import TaskEps, validate
    from ..validate.schedule import ClassifierSchedule

    # Everything that can be refused is refused before the model loads or anything is measured.
    device = _maybe_init_distributed(check_device(args.device))
    engine, config, paper_alpha, model = _engine_and_config(args)
    schedule = ClassifierSchedule.named(args.schedule)
    if args.fid_images is not None and args.fid_images < 2:
        raise ConfigError(f"--fid-images {args.fid_images} is not allowed; allowed: an integer >= 2")
    if engine is not None and args.batch_size not in (None, engine.spec.batch):
        raise ConfigError(f"--batch-size {args.batch_size} is not allowed with this engine; allowed: {engine.spec.batch}")
    batch_size = engine.spec.batch if engine is not None else (args.batch_size or DEFAULT_BATCH_SIZE)
    if int(os.environ.get("RANK", "0")) == 0:
        check_writable(args.out, what="--out")
        if not args.no_fid:
            check_writable(_cache_dir(args.fid_cache), what="--fid-cache")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    check_template(args.prompt_template)
    if Path(args.data).is_dir():  # the folder's layout is checked before the model loads
        scan_image_folder(args.data)
    denoiser = load_denoiser(model, device, dtype)
    model_provenance = model_facts(denoiser, model)  # hashes the weights once, for the engine check too
    if engine is not None:  # the engine belongs to this model: weights, shapes, classes, config
        engine = load_engine(args.engine, config=config, denoiser=denoiser, model_hash=model_provenance["sha256"])
    # The data's classes become the candidates (prompts for SD/SDXL); pixels -> the model's space.
    inputs = prepare_inputs(denoiser, args.data, limit=args.limit, prompt_template=args.prompt_template,
                            fid_ref=args.fid_ref, progress=not args.no_progress)
    denoiser, images, labels = inputs.denoiser, inputs.images, inputs.labels
    model_provenance.update(num_classes=int(denoiser.num_classes), null_label=int(denoiser.null_label),
                            prompts=getattr(denoiser.conditioning, "prompts", None))  # the bound classes
    fid_reference, feature_fn, decode = None, None, None
    if denoiser.space.kind != "pixels":
        decode = denoiser.decode
    if not args.no_fid and (decode is not None or args.fid_ref):
        if inputs.fid_images is None:
            raise ConfigError(f"--data {args.data} holds latents: FID needs real images; allowed: --fid-ref DIR or --no-fid")
        if int(os.environ.get("RANK", "0")) == 0:
            feature_fn = InceptionFeatures(device=device)
            fid_reference = reference_statistics(inputs.fid_images, feature_fn, _cache_dir(args.fid_cache))

    dtype_name = PRECISION_DTYPES[args.precision]
    methods: dict[str, Any] = {"eager-none": _patched_eps(denoiser, None)}
    facts = {"eager-none": method_facts(None, dtype=dtype_name)}
    if config.enabled:
        if paper_alpha:
            per_task = {"classify": config.for_task("classification"), "generate": config.for_task("generation")}
            methods["eager-same-config"] = TaskEps(classify=_patched_eps(denoiser, per_task["classify"]),
                                                   generate=_patched_eps(denoiser, per_task["generate"]))
            facts["eager-same-config"] = method_facts(per_task, dtype=dtype_name)
        else:
            methods["eager-same-config"] = _patched_eps(denoiser, config)
            facts["eager-same-config"] = method_facts(config, dtype=dtype_name)
    reference = "eager-same-config" if "eager-same-config" in methods else "eager-none"
    metadata = {
        "model": model, "config": config.to_dict(), "config_label": config.describe(),
        "engine": args.engine, "paper_alpha": paper_alpha, "data": args.data, "limit": args.limit,
        "device": device, "precision": args.precision, "class_names": denoiser.class_names,
        "prompts": getattr(denoiser.conditioning, "prompts", None), "fid_ref": args.fid_ref,
    }

    with contextlib.ExitStack() as stack:
        if engine is not None:
            methods["engine"] = stack.enter_context(EngineEpsFn(engine, condition=denoiser.condition))
            facts["engine"] = method_facts(config, backend=engine.manifest.backend,
                                           dtype=PRECISION_DTYPES[engine.spec.precision], engine=engine_facts(engine))
        settings = _settings(args, denoiser, schedule, batch_size)
        report = validate(
            methods, images.to(device), labels, settings, args.out, reference_method=reference,
            fid_reference=fid_reference, feature_fn=feature_fn, decode=decode,
            fid_cache_dir=_cache_dir(args.fid_cache), metadata=metadata, progress=not args.no_progress,
            resume=args.resume, provenance=Provenance(
                model=model_provenance, methods=facts, data_source=args.data,
                data_limit=args.limit, device=device),
        )
    if int(os.environ.get("RANK", "0")) == 0:
        for name, m in report["methods"].items():
            fid = "n/a" if m.get("fid") is None else f"{m['fid']:.3f}"
            print(f"{name}: accuracy {100 * m['accuracy']:.2f}% ({m['correct']}/{m['num_images']}), FID {fid}")
        print(f"report: {Path(args.out) / 'report.json'}")
    return 0
