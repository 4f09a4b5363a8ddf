"""``bigain-export export``: patched denoiser -> ONNX with bigain.ai nodes and local functions.

``--layout optimum`` writes a whole SD 2.x / SDXL pipeline folder instead (``--out`` is then a
folder), which optimum's ``ORTStableDiffusionPipeline`` / ``ORTStableDiffusionXLPipeline`` load
as they are (``export/optimum_layout.py``). Its UNet has a static batch: the rows of one UNet
call, 2 per prompt with classifier-free guidance (the default batch of this layout).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import (DEFAULT_BATCH_SIZE, add_batch_args, add_config_args, add_model_args, add_precision_args,
                   check_onnx_out, config_from_args)

OPTIMUM_BATCH = 2


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="export a patched model to ONNX (custom bigain.ai ops + function bodies)")
    add_model_args(parser)
    add_config_args(parser)
    add_batch_args(parser)
    add_precision_args(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="output .onnx path (default model.onnx); with --layout optimum a folder (default optimum-pipeline)")
    parser.add_argument("--layout", default="onnx", choices=("onnx", "optimum"),
                        help="onnx: one graph; optimum: an SD/SDXL pipeline folder for optimum's ORT pipelines "
                        f"(its UNet batch defaults to {OPTIMUM_BATCH}: one prompt with guidance)")
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
    batch = args.batch_size or (OPTIMUM_BATCH if args.layout == "optimum" else DEFAULT_BATCH_SIZE)
    DenoiserSpec(batch, (1, 1, 1), args.precision)  # batch and precision checks, before loading
    if args.layout == "optimum":
        from ..export.optimum_layout import export_optimum
        from ..validate.atomic import check_writable

        out = args.out or Path("optimum-pipeline")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {str(out)!r} is a file; allowed with --layout optimum: a folder")
        check_writable(out.parent if str(out.parent) else Path("."), what="--out's folder")
        denoiser = load_denoiser(args.model or DEFAULT_MODEL)
        written = export_optimum(denoiser, config, out, batch=batch, precision=args.precision)
        print(f"wrote {written}/ (optimum ONNX Runtime layout; UNet batch {batch}, {config.describe()}); load it with "
              f"optimum.onnxruntime.ORTDiffusionPipeline.from_pretrained('{written}')")
        return 0
    out = check_onnx_out(args.out or Path("model.onnx"))
    denoiser = load_denoiser(args.model or DEFAULT_MODEL)
    result = export_onnx(denoiser, config, out, batch=batch, precision=args.precision, inline_copy=args.inline_copy)
    print(f"wrote {result.path} (opset {result.opset}; bigain.ai nodes: {result.custom_nodes or 'none'})")
    if result.inlined_path:
        print(f"wrote {result.inlined_path} (functions inlined)")
    return 0
