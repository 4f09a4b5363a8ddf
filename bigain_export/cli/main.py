"""``bigain-export`` command line: one module per subcommand, thin wrappers over the library.

Each subcommand lives in ``bigain_export/cli/<name>.py`` and exposes ``add_parser(subparsers)``
and ``run(args) -> int``. A subcommand whose module fails to import (a missing optional
dependency) is still listed, and says why when run, so ``--help`` never breaks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import BigainError

# Data-flow order: what users run first comes first in --help.
SUBCOMMANDS = ("export", "build", "compare", "validate", "check", "sweep")


def _placeholder(subparsers, name: str, reason: str) -> None:
    parser = subparsers.add_parser(name, help=f"(unavailable: {reason})")
    parser.set_defaults(_run=lambda args: _unavailable(name, reason))


def _unavailable(name: str, reason: str) -> int:
    print(f"bigain-export {name}: unavailable here: {reason}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigain-export",
        description="Bake BiGain token compression into diffusion-model engines (ONNX Runtime, "
        "TensorRT) and validate them against the eager PyTorch model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # not written yet
            _placeholder(subparsers, name, f"missing module {exc.name!r}")
            continue
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def quiet_third_party() -> None:
    """Keep the exporter's and runtimes' chatter out of the user's terminal (``-v`` shows it)."""
    import warnings

    for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export", "polygraphy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not args.verbose:
        quiet_third_party()
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if argv is None and len(sys.argv) == 1 else 2
    try:
        return int(args._run(args) or 0)
    except BigainError as exc:
        print(f"bigain-export {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
