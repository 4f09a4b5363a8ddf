"""``bigain-export build``: the main job. Export, build the best engine here, check drift.

With no arguments: the default built-in model and the default BiGain config, an ONNX Runtime
engine (CUDA when available, else CPU) under engines/build/, and its drift against eager.
Exit 0 when the drift check passed, 1 when it failed or could not be measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from .args import (DEFAULT_BATCH_SIZE, add_batch_args, add_config_args, add_device_args, add_drift_args,
                   add_engine_args, add_model_args, add_ort_optimize_args, add_precision_args, check_device,
                   config_from_args)

PAPER_ALPHA_ENGINE = ("--alpha paper is not allowed for an engine (it bakes one alpha); allowed: --alpha 0.9 "
                      "(the paper's for classification) or --alpha scheduled (generation)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("build", help="export + build an engine + drift check against eager (the main job)")
    add_model_args(parser)
    add_config_args(parser)
    add_engine_args(parser)
    add_ort_optimize_args(parser)
    add_batch_args(parser)
    add_precision_args(parser)
    add_drift_args(parser)
    add_device_args(parser)
    parser.add_argument("--out", type=Path, help="engine directory (default engines/build/<model>-<hash>)")
    parser.add_argument("--inline-copy", action="store_true", help="also keep a copy with functions inlined")
    return parser


def default_engine_dir(model: str, config, backend: str, batch: int, precision: str, ort_optimize: str = "auto") -> Path:
    recipe = [model, config.to_dict(), backend, batch, precision]
    if ort_optimize != "auto":  # engines built with the default keep the folder names they had
        recipe.append(ort_optimize)
    key = json.dumps(recipe, sort_keys=True)
    name = model.replace("builtin:", "").replace("/", "_").strip("_.")[-40:]
    return Path("engines/build") / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def run(args: argparse.Namespace) -> int:
    from ..backends.ort_optimize import resolve_ort_optimize
    from ..engine.build import (_resolve_backend, build_engine, check_build_args, check_engine_target,
                                drift_feed_count)
    from ..errors import ConfigError
    from ..models.registry import DEFAULT_MODEL, load_denoiser
    from ..validate.atomic import check_writable

    config, paper = config_from_args(args)
    if paper:
        raise ConfigError(PAPER_ALPHA_ENGINE)
    device = check_device(args.device)
    backend = _resolve_backend(args.backend)
    batch = args.batch_size or DEFAULT_BATCH_SIZE
    model = args.model or DEFAULT_MODEL
    feeds = drift_feed_count(args.drift_inputs, batch)
    out = args.out or default_engine_dir(model, config, backend, batch, args.precision, args.ort_optimize)
    # Everything that can be refused is refused before the model loads and the export starts.
    optimize = resolve_ort_optimize(args.ort_optimize, backend, args.precision)
    check_build_args(backend, batch, args.precision, feeds, allow_unmeasured=False)
    check_engine_target(out)
    check_writable(out.parent, what="--out's folder")
    denoiser = load_denoiser(model)
    fused = {"fusions": ", ORT fusions", "onnxscript": ", onnxscript ORT fusions"}.get(optimize, "")
    print(f"building {backend} engine for {model} with {config.describe()} (batch {batch}, {args.precision}{fused})")
    engine, report = build_engine(denoiser, config, out, backend=backend, batch=batch, precision=args.precision,
                                  drift_feeds_count=feeds, inline_copy=args.inline_copy, device=device,
                                  ort_optimize=args.ort_optimize)
    print(f"engine:   {engine.path}/")
    print(f"manifest: {engine.path / 'manifest.json'} (drift recorded there)")
    if report is None:
        print(f"drift NOT measured, so this engine is unverified: {engine.manifest.drift['reason']}")
        return 1
    print(report.summary())
    return 0 if report.passed else 1
