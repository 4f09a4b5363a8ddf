"""The command line's one vocabulary: argument groups shared by every subcommand.

The same thing has the same flag and the same default everywhere (Polygraphy's rule: one
reusable group per concept). Each group maps its flags onto one library object, and every
value is checked when parsed, so bad input is one line (exit 2) before any work starts:

==================  ==================================================  ===========================
flag                meaning                                             default
==================  ==================================================  ===========================
``--model``         built-in name or local diffusers folder             builtin:fmnist-dit (with an
                                                                        engine: the engine's)
``--config``        BiGain preset, JSON file, or inline JSON object     bigain-merge (engine's)
``--ratio`` ...     overrides of single config fields                   the config's
``--alpha``         a number, ``scheduled``, or ``paper`` (0.9 when     the config's
                    classifying, scheduled when generating)
``--batch-size``    rows per denoiser call = an engine's static batch   8 (with an engine: its batch)
``--precision``     fp32 | fp16 | bf16                                  fp32
``--drift-inputs``  random inputs of the drift check                    16
``--device``        cpu, cuda, cuda:N                                   cpu
``--backend``       auto | ort-cpu | ort-cuda | trt                     auto
``--ort-optimize``  auto | none | fusions | onnxscript (ORT only)       auto (fp16: onnxscript on
                                                                        ort-cuda, fusions on ort-cpu)
``--prompt-template``  a class's prompt for SD / SDXL pipelines         ``a photo of a {}.``
``-v``              debug logging (before or after the subcommand)      off
==================  ==================================================  ===========================
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..config import PRESETS, BiGainConfig
from ..errors import ConfigError

# The registry's names, repeated so that building the parser imports no model code (diffusers
# takes seconds to import; `--help`, `check` and `info` need none of it). A test keeps them equal.
BUILTIN_MODELS = ("builtin:fmnist-dit", "builtin:fmnist-unet")
DEFAULT_MODEL = "builtin:fmnist-dit"
DEFAULT_CONFIG = "bigain-merge"
DEFAULT_BATCH_SIZE = 8
DEFAULT_DRIFT_INPUTS = 16
PRECISIONS = ("fp32", "fp16", "bf16")
PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
ALPHA_WORDS = ("scheduled", "paper")


# -- value types: each raises argparse's one-line usage error -----------------------------------


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, else a one-line error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: an integer >= {minimum}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; allowed: an integer >= {minimum}")
        return value

    return parse


positive_int = _int_at_least(1)
count = _int_at_least(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a finite number")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a finite number >= 0")
    return value


def alpha_value(text: str) -> float | str:
    if text in ALPHA_WORDS:
        return text
    try:
        return finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a finite number, scheduled, or paper") from None


# -- groups -------------------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the subcommand too (``SUPPRESS``: a subcommand's default never undoes
    ``bigain-export -v CMD``)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")


def add_model_args(parser: argparse.ArgumentParser, *, from_engine: bool = False) -> None:
    default = f"the engine's model, else {DEFAULT_MODEL}" if from_engine else DEFAULT_MODEL
    parser.add_argument("--model", default=None, metavar="SPEC",
                        help=f"{' | '.join(BUILTIN_MODELS)} or a local diffusers folder (default: {default})")


def add_config_args(parser: argparse.ArgumentParser, *, from_engine: bool = False) -> None:
    group = parser.add_argument_group("token compression (BiGainConfig)")
    default = f"the engine's config, else {DEFAULT_CONFIG}" if from_engine else DEFAULT_CONFIG
    group.add_argument("--config", default=None, metavar="PRESET|FILE|JSON",
                       help=f"a preset ({', '.join(PRESETS)}), a BiGainConfig JSON file, or an inline JSON "
                       f"object ('{{\"preset\": \"bigain-kv\", \"downsample\": 4}}' or BiGainConfig fields); default: {default}")
    group.add_argument("--ratio", type=finite_float, help="merge ratio in [0, 0.75]")
    group.add_argument("--anchor", help="window | released (BiGain), random | fixed (ToMe)")
    group.add_argument("--downsample", type=positive_int, help="KV downsampling factor s")
    group.add_argument("--alpha", type=alpha_value, metavar="X|scheduled|paper",
                       help="IE-KVD alpha: a fixed number, 'scheduled' (0.8 -> 1.2 in t), or 'paper' "
                       "(0.9 when classifying, scheduled when generating; validate only)")
    # Renamed flags answer with their new names instead of argparse's "unrecognized arguments".
    group.add_argument("--method", dest="_renamed_method", default=None, help=argparse.SUPPRESS)
    group.add_argument("--task", dest="_renamed_task", default=None, help=argparse.SUPPRESS)
    group.add_argument("--paper-alpha", dest="_renamed_paper_alpha", action="store_true", help=argparse.SUPPRESS)


def add_batch_args(parser: argparse.ArgumentParser, *, from_engine: bool = False) -> None:
    default = f"the engine's batch, else {DEFAULT_BATCH_SIZE}" if from_engine else str(DEFAULT_BATCH_SIZE)
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                        help=f"rows per denoiser call (an engine's static batch); default: {default}")
    parser.add_argument("--batch", dest="_renamed_batch", default=None, help=argparse.SUPPRESS)


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="compute precision (default fp32)")
    parser.add_argument("--dtype", dest="_renamed_dtype", default=None, help=argparse.SUPPRESS)


def add_drift_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--drift-inputs", type=positive_int, default=DEFAULT_DRIFT_INPUTS, metavar="N",
                        help=f"random inputs of the drift check (default {DEFAULT_DRIFT_INPUTS})")
    parser.add_argument("--feeds", dest="_renamed_feeds", default=None, help=argparse.SUPPRESS)


def add_drift_limit_args(parser: argparse.ArgumentParser, *, recorded: bool) -> None:
    what = "record for the engine in the report" if recorded else "allow for engine methods (on top of the report's)"
    parser.add_argument("--drift-max-abs", type=nonnegative_float, default=None, metavar="X",
                        help=f"max |eps_engine - eps_eager| to {what}")
    parser.add_argument("--drift-rel-l2", type=nonnegative_float, default=None, metavar="X",
                        help=f"relative L2 engine drift to {what}")
    parser.add_argument("--drift-mean-abs", type=nonnegative_float, default=None, metavar="X",
                        help=f"mean |eps_engine - eps_eager| to {what} (default 1e-4 fp32, 1e-2 fp16/bf16)")
    parser.add_argument("--max-drift-abs", dest="_renamed_max_drift_abs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max-drift-rel", dest="_renamed_max_drift_rel", default=None, help=argparse.SUPPRESS)


DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."  # the paper's (models.prompts.DEFAULT_TEMPLATE)


DATA_CHOICES = ("fmnist-test", "fmnist-train")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--limit`` and ``--prompt-template``: what validate and sweep measure on."""
    parser.add_argument("--data", default="fmnist-test", metavar="NAME|DIR|NPZ",
                        help=f"{' | '.join(DATA_CHOICES)}; an image folder DIR/<class>/<images> (optional "
                        "DIR/classes.json or classes.txt: folder -> name, prompt), resized and centre-cropped "
                        "to the model's resolution; or an .npz with 'images' [N,C,H,W] in model space "
                        "(pixels in [-1,1] or uint8, or latents) and 'labels' [N]")
    parser.add_argument("--limit", type=positive_int, default=100, metavar="N",
                        help="first N images (default 100; image folders: round-robin over the classes)")
    add_prompt_args(parser)


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt-template", default=DEFAULT_PROMPT_TEMPLATE, metavar="TEXT",
                        help="text-to-image pipelines (SD, SDXL): the prompt of a class, {} = its name "
                        f"(default {DEFAULT_PROMPT_TEMPLATE!r}; a classes file's prompts win)")


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="where the eager model runs: cpu, cuda, cuda:N (default cpu)")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--backend", default="auto", choices=("auto", "ort-cpu", "ort-cuda", "trt"),
                       help="auto: ONNX Runtime CUDA when available, else CPU")


ORT_OPTIMIZE_CHOICES = ("auto", "none", "fusions", "onnxscript")  # = backends.ort_optimize.ORT_OPTIMIZE (a test keeps them equal)
DEFAULT_ORT_OPTIMIZE = "auto"


def add_ort_optimize_args(parser: argparse.ArgumentParser) -> None:
    """``--ort-optimize``: ONNX Runtime's transformers-optimizer fusions in the engine's graph.

    On the subcommands that build engines (``build``, ``sweep``'s engine points), same default.
    """
    parser.add_argument("--ort-optimize", default=DEFAULT_ORT_OPTIMIZE, choices=ORT_OPTIMIZE_CHOICES,
                        help="ONNX Runtime engines: auto = for fp16 builds onnxscript's ORT fusions on ort-cuda and ORT's "
                        "transformers-optimizer fusions on ort-cpu, none for fp32/bf16; fusions = ORT's, for fp32 and fp16 "
                        "builds; onnxscript = onnxscript's ORT fusions (attention and, on ort-cuda, GroupNorm; fp32/fp16); "
                        "none = the graph as exported "
                        f"(default {DEFAULT_ORT_OPTIMIZE}; not applicable to --backend trt)")


RENAMED = {
    "_renamed_method": ("--method", "--config (a preset, a JSON file or inline JSON)"),
    "_renamed_task": ("--task", "--alpha 0.9 (the paper's for classification) or --alpha scheduled (generation)"),
    "_renamed_paper_alpha": ("--paper-alpha", "--alpha paper"),
    "_renamed_batch": ("--batch", "--batch-size"),
    "_renamed_dtype": ("--dtype", "--precision fp32 | fp16 | bf16"),
    "_renamed_feeds": ("--feeds", "--drift-inputs N (random inputs, not batches)"),
    "_renamed_max_drift_abs": ("--max-drift-abs", "--drift-max-abs"),
    "_renamed_max_drift_rel": ("--max-drift-rel", "--drift-rel-l2"),
}


def refuse_renamed(args: argparse.Namespace) -> None:
    for dest, (old, new) in RENAMED.items():
        if getattr(args, dest, None) not in (None, False):
            raise ConfigError(f"{old} was renamed; use {new}")


# -- values -------------------------------------------------------------------------------------


def parse_config(text: str) -> BiGainConfig:
    """A preset name, a JSON file, or an inline JSON object -> BiGainConfig (one-line errors)."""
    if text in PRESETS:
        return BiGainConfig.preset(text)
    raw = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"--config {text!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--config {text!r}: cannot read it ({exc})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {text!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ConfigError(f"--config {text!r} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {text!r} holds a JSON {type(data).__name__}; allowed: a JSON object of "
                          "BiGainConfig fields (or {\"preset\": NAME, ...})")
    if "preset" in data:
        preset = data.pop("preset")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(f"--config preset={preset!r} is not allowed; allowed: {' | '.join(PRESETS)}")
        return BiGainConfig.from_dict({**PRESETS[preset], **data})
    return BiGainConfig.from_dict(data)


def config_from_args(args: argparse.Namespace, default: BiGainConfig | None = None) -> tuple[BiGainConfig, bool]:
    """``(config, paper_alpha)`` from ``--config`` and the field overrides; ``paper_alpha`` is
    True for ``--alpha paper`` (the task decides alpha). ``default`` replaces the preset default
    (validate and compare use the engine's config)."""
    if args.config is not None:
        base = parse_config(args.config)
    else:
        base = default if default is not None else BiGainConfig.preset(DEFAULT_CONFIG)
    overrides: dict[str, Any] = {k: getattr(args, k) for k in ("ratio", "anchor", "downsample") if getattr(args, k) is not None}
    paper = args.alpha == "paper"
    if args.alpha == "scheduled":
        overrides["alpha"] = None
    elif args.alpha is not None and not paper:
        overrides["alpha"] = args.alpha
    if not overrides:
        return base, paper
    return BiGainConfig.from_dict({**base.to_dict(), **overrides}), paper


def check_device(device: str) -> str:
    """``cpu`` / ``cuda`` / ``cuda:N`` that this machine has, else a one-line ConfigError."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r} is not allowed; allowed: cpu, cuda, cuda:N") from None
    if parsed.type == "cpu":
        return device
    if parsed.type != "cuda":
        raise ConfigError(f"--device {device!r} is not allowed; allowed: cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r} is not available here (no CUDA device is visible); allowed: cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device!r} is not available here; allowed: cpu, "
                          f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


def check_onnx_out(path: Path) -> Path:
    """An ``--out`` for a single ONNX file: not a folder, in a folder that can be written."""
    from ..validate.atomic import check_writable

    if path.is_dir() or str(path).endswith(("/", "\\")):
        raise ConfigError(f"--out {str(path)!r} is a folder; allowed: a file path such as {str(path).rstrip('/')}/model.onnx")
    check_writable(path.parent if str(path.parent) else Path("."), what="--out's folder")
    return path
