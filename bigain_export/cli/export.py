"""``bigain-export export``: patched denoiser -> ONNX with bigain.ai nodes and local functions."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import add_config_args, add_model_args, config_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="export a patched model to ONNX (custom bigain.ai ops + function bodies)")
    add_model_args(parser)
    add_config_args(parser)
    parser.add_argument("--out", type=Path, default=Path("model.onnx"), help="output .onnx path")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--inline-copy", action="store_true", help="also write <out>.inlined.onnx without local functions")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..export.onnx_export import export_onnx
    from ..models.registry import load_denoiser

    config = config_from_args(args)
    denoiser = load_denoiser(args.model)
    result = export_onnx(denoiser, config, args.out, batch=args.batch, precision=args.precision, inline_copy=args.inline_copy)
    print(f"wrote {result.path} (opset {result.opset}; bigain.ai nodes: {result.custom_nodes or 'none'})")
    if result.inlined_path:
        print(f"wrote {result.inlined_path} (functions inlined)")
    return 0
