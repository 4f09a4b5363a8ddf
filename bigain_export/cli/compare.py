"""``bigain-export compare ENGINE``: eager patched model vs a built engine on fresh random inputs.

The engine's manifest says which model and config it was built from; ``--model`` may point at
another copy of the same weights (checked by hash). Exit 0 when within the precision's tolerance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import add_device_args, add_drift_args, check_device


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compare", help="drift of an engine against the eager model (Polygraphy Comparator)")
    parser.add_argument("engine", type=Path, help="engine directory (from 'bigain-export build')")
    parser.add_argument("--model", default=None, metavar="SPEC",
                        help="the model to compare with (default: the one in the manifest; its weights must match)")
    add_drift_args(parser)
    add_device_args(parser)
    parser.add_argument("--cuda-graph", action="store_true",
                        help="run an 'ort-cuda' engine as one CUDA graph a call, as EngineUNet(cuda_graph=True) does: "
                        "the drift of that runtime")
    parser.add_argument("--json", type=Path, help="also write the comparison as JSON here")
    return parser


def run(args: argparse.Namespace) -> int:
    import json

    from ..backends.ort import check_cuda_graph
    from ..engine.build import drift_feed_count, load_engine, measure_drift
    from ..models.registry import load_denoiser
    from ..validate.atomic import atomic_write, check_writable

    device = check_device(args.device)
    if args.json:
        check_writable(args.json.parent, what="--json's folder")
    engine = load_engine(args.engine)
    check_cuda_graph(engine.manifest.backend, args.cuda_graph)  # before the model loads
    denoiser = load_denoiser(args.model or engine.manifest.model)
    load_engine(args.engine, denoiser=denoiser)  # same weights, shapes and classes as the build
    feeds = drift_feed_count(args.drift_inputs, engine.spec.batch)
    report = measure_drift(denoiser, engine.manifest.bigain_config, engine, feeds=feeds, device=device,
                           cuda_graph=args.cuda_graph)
    print(report.summary())
    if args.json:
        atomic_write(args.json, json.dumps(report.to_dict(), indent=2))
    return 0 if report.passed else 1
