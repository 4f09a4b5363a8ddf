"""``bigain-export build``: the main job. Export, build the best engine here, check drift.

With no arguments: the default built-in model and the default BiGain config, an ONNX Runtime
engine (CUDA when available, else CPU) under engines/build/, and its drift against eager.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from .args import add_config_args, add_engine_args, add_model_args, config_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("build", help="export + build an engine + drift check against eager (the main job)")
    add_model_args(parser)
    add_config_args(parser)
    add_engine_args(parser)
    parser.add_argument("--out", type=Path, help="engine directory (default engines/build/<model>-<method>-<hash>)")
    parser.add_argument("--feeds", type=int, default=3, help="random feeds for the drift check (default 3)")
    parser.add_argument("--inline-copy", action="store_true", help="also keep a copy with functions inlined")
    return parser


def default_engine_dir(model: str, config, backend: str, batch: int, precision: str) -> Path:
    key = json.dumps([model, config.to_dict(), backend, batch, precision], sort_keys=True)
    name = model.replace("builtin:", "").replace("/", "_").strip("_.")[-40:]
    return Path("engines/build") / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def run(args: argparse.Namespace) -> int:
    from ..engine.build import _resolve_backend, build_engine
    from ..models.registry import load_denoiser

    config = config_from_args(args)
    backend = _resolve_backend(args.backend)
    denoiser = load_denoiser(args.model)
    out = args.out or default_engine_dir(args.model, config, backend, args.batch, args.precision)
    print(f"building {backend} engine for {args.model} with {config.describe()} (batch {args.batch}, {args.precision})")
    engine, report = build_engine(denoiser, config, out, backend=backend, batch=args.batch, precision=args.precision,
                                  drift_feeds_count=args.feeds, inline_copy=args.inline_copy)
    if report is None:
        print(f"drift NOT measured: {engine.manifest.drift['reason']}")
    else:
        print(report.summary())
    print(f"engine:   {engine.path}/")
    print(f"manifest: {engine.path / 'manifest.json'} (drift recorded there)")
    return 0 if report is None or report.passed else 1
