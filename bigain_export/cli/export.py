"""``bigain-export export``: patched denoiser -> ONNX with bigain.ai nodes and local functions."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import (DEFAULT_BATCH_SIZE, add_batch_args, add_config_args, add_model_args, add_precision_args,
                   check_onnx_out, config_from_args)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="export a patched model to ONNX (custom bigain.ai ops + function bodies)")
    add_model_args(parser)
    add_config_args(parser)
    add_batch_args(parser)
    add_precision_args(parser)
    parser.add_argument("--out", type=Path, default=Path("model.onnx"), help="output .onnx path (default model.onnx)")
    parser.add_argument("--inline-copy", action="store_true", help="also write <out>.inlined.onnx without local functions")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..export.onnx_export import export_onnx
    from ..export.spec import DenoiserSpec
    from ..models.registry import DEFAULT_MODEL, load_denoiser
    from .build import PAPER_ALPHA_ENGINE

    config, paper = config_from_args(args)
    if paper:
        raise ConfigError(PAPER_ALPHA_ENGINE)
    batch = args.batch_size or DEFAULT_BATCH_SIZE
    DenoiserSpec(batch, (1, 1, 1), args.precision)  # batch and precision checks, before loading
    out = check_onnx_out(args.out)
    denoiser = load_denoiser(args.model or DEFAULT_MODEL)
    result = export_onnx(denoiser, config, out, batch=batch, precision=args.precision, inline_copy=args.inline_copy)
    print(f"wrote {result.path} (opset {result.opset}; bigain.ai nodes: {result.custom_nodes or 'none'})")
    if result.inlined_path:
        print(f"wrote {result.inlined_path} (functions inlined)")
    return 0
