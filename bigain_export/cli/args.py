"""Argument groups shared by subcommands; each maps flags onto one library object."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import PRESETS, BiGainConfig
from ..errors import ConfigError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    from ..models.registry import BUILTIN_MODELS, DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="SPEC",
                        help=f"{' | '.join(BUILTIN_MODELS)} or a local diffusers folder (default {DEFAULT_MODEL})")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("token compression (BiGainConfig)")
    group.add_argument("--method", default="bigain-merge", choices=sorted(PRESETS),
                       help="preset (default bigain-merge)")
    group.add_argument("--config", type=Path, metavar="JSON", help="a saved BiGainConfig (overrides --method)")
    group.add_argument("--ratio", type=float, help="merge ratio in [0, 0.75] (default 0.5)")
    group.add_argument("--anchor", help="window | released (BiGain), random | fixed (ToMe)")
    group.add_argument("--downsample", type=int, help="KV downsampling factor s (default 2)")
    group.add_argument("--alpha", type=float, help="fixed IE-KVD alpha (default: scheduled 0.8 -> 1.2 in t)")
    group.add_argument("--task", choices=("generation", "classification"),
                       help="use the paper's alpha for this task (classification: 0.9)")


def config_from_args(args: argparse.Namespace) -> BiGainConfig:
    overrides = {k: getattr(args, k) for k in ("ratio", "anchor", "downsample", "alpha") if getattr(args, k) is not None}
    if args.config is not None:
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{args.config}: cannot read a BiGainConfig JSON ({exc})") from None
        config = BiGainConfig.from_dict({**data, **overrides})
    else:
        config = BiGainConfig.preset(args.method, **overrides)
    return config.for_task(args.task) if args.task else config


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--backend", default="auto", choices=("auto", "ort-cpu", "ort-cuda", "trt"),
                       help="auto: ONNX Runtime CUDA when available, else CPU")
    group.add_argument("--batch", type=int, default=2, help="static batch size (default 2)")
    group.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
