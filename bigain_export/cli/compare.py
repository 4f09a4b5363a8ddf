"""``bigain-export compare ENGINE``: eager patched model vs a built engine on fresh random inputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compare", help="drift of an engine against the eager model (Polygraphy Comparator)")
    parser.add_argument("engine", type=Path, help="engine directory (from 'bigain-export build')")
    parser.add_argument("--model", help="model spec to compare with (default: the one in the manifest)")
    parser.add_argument("--feeds", type=int, default=4, help="random feeds (default 4)")
    parser.add_argument("--json", type=Path, help="also write the comparison as JSON here")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..engine.build import load_engine, measure_drift
    from ..engine.manifest import model_sha256
    from ..models.registry import load_denoiser
    from ..validate.atomic import atomic_write

    engine = load_engine(args.engine)
    denoiser = load_denoiser(args.model or engine.manifest.model)
    load_engine(args.engine, model_hash=model_sha256(denoiser))  # same weights as the build
    report = measure_drift(denoiser, engine.manifest.bigain_config, engine, feeds=args.feeds)
    print(report.summary())
    if args.json:
        atomic_write(args.json, json.dumps(report.to_dict(), indent=2))
    return 0 if report.passed else 1
