"""``bigain-export generate``: images from class names or prompts, eager or with an engine.

Writes ``OUT/<index>-<slug>-seed<S>.png`` per image, ``OUT/grid.png`` (one row per class or
prompt, one column per seed) and ``OUT/generate.json`` (what was drawn and how). Defaults come
from the model: the built-ins' DDIM, 50 steps, guidance 1.0; a pipeline folder's scheduler and
its own steps and guidance. With ``--engine`` the model and config are the engine's; in a
pipeline the engine replaces the UNet / transformer (``EngineUNet`` / ``EngineTransformer``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from .args import (add_config_args, add_device_args, add_model_args, add_prompt_args, check_device,
                   config_from_args, count, nonnegative_float, positive_int)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate", help="generate images from class names or prompts (eager model or engine); PNGs + a grid",
        description="Draw each class (or prompt) once per seed with the eager model, patched with --config, "
        "or with --engine; write one PNG per image, a grid and generate.json.")
    add_model_args(parser, from_engine=True)
    add_config_args(parser, from_engine=True)
    parser.add_argument("--engine", default=None, metavar="DIR", help="generate with this engine (model and config from its manifest)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", nargs="+", metavar="NAME", help="class names (the model's labels; SD/SDXL: prompt-template)")
    what.add_argument("--prompts", nargs="+", metavar="TEXT", help="prompts (text-to-image pipelines only)")
    add_prompt_args(parser)
    parser.add_argument("--seeds", nargs="+", type=count, default=[0], metavar="S", help="one image per seed (default 0)")
    parser.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--sampler", default=None, metavar="NAME",
                        help="ddim | euler | a diffusers scheduler class name (pipelines); default: the model's")
    parser.add_argument("--guidance", type=nonnegative_float, default=None,
                        help="classifier-free guidance scale (default: the model's; built-ins 1.0)")
    add_device_args(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "image"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..models.generation import Request, generate, grid, to_pil
    from ..models.prompts import check_template
    from ..models.registry import DEFAULT_MODEL, load_denoiser
    from ..validate.atomic import atomic_path, check_writable

    device = check_device(args.device)
    check_template(args.prompt_template)
    request = Request(classes=tuple(args.classes or ()), prompts=tuple(args.prompts or ()), seeds=tuple(args.seeds),
                      steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                      prompt_template=args.prompt_template)
    engine = None
    if args.engine:
        from ..engine.build import load_engine

        engine = load_engine(args.engine)
        built = engine.manifest.bigain_config
        config, paper = config_from_args(args, default=built)
        if config != built:
            raise ConfigError(f"--config '{config.describe()}' does not match the engine's '{built.describe()}'; "
                              "allowed: the engine's config (the default)")
        model = args.model or engine.manifest.model
    else:
        config, paper = config_from_args(args)
        model = args.model or DEFAULT_MODEL
    if paper:
        raise ConfigError("--alpha paper is for validate; allowed here: a number or scheduled (generation)")
    check_writable(args.out, what="--out")
    denoiser = load_denoiser(model, device, torch.float32)
    if engine is not None:
        engine = load_engine(args.engine, config=config, denoiser=denoiser)  # built from this model
    images, settings = generate(denoiser, request, config=config, engine=engine, progress=not args.no_progress)

    args.out.mkdir(parents=True, exist_ok=True)
    files = []
    for k, item in enumerate(images):
        name = f"{k:03d}-{_slug(item.label)}-seed{item.seed}.png"
        with atomic_path(args.out / name) as tmp:
            to_pil(item.image).save(tmp, format="PNG")
        files.append({"file": name, "label": item.label, "seed": item.seed})
    with atomic_path(args.out / "grid.png") as tmp:
        to_pil(grid([i.image for i in images], columns=len(request.seeds))).save(tmp, format="PNG")
    record = {"model": model, "engine": args.engine, "config": None if engine is None and not config.enabled else config.to_dict(),
              **settings, "seeds": list(request.seeds), "classes": list(request.classes), "prompts": list(request.prompts),
              "prompt_template": args.prompt_template, "images": files}
    with atomic_path(args.out / "generate.json") as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(images)} images ({settings['sampler']}, {settings['steps']} steps, guidance {settings['guidance']:g}, "
          f"{'engine ' + str(args.engine) if engine is not None else 'eager ' + config.describe()})")
    print(f"images: {args.out}/  grid: {args.out / 'grid.png'}")
    return 0
