"""``bigain-export`` command line: one module per subcommand, thin wrappers over the library.

Each subcommand lives in ``bigain_export/cli/<name>.py`` and exposes ``add_parser(subparsers)``
and ``run(args) -> int``. A subcommand whose module fails to import (a missing optional
dependency) is still listed, and says why when run, so ``--help`` never breaks.

Exit status: 0 success, 1 a check failed (drift, regression, unverified engine), 2 bad input
(one line ``bigain-export CMD: error: ...``), 130 / 143 interrupted by SIGINT / SIGTERM (one line,
no traceback; SIGTERM unwinds like Ctrl-C so nothing half-written is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from ..errors import BigainError
from .args import add_common_args, refuse_renamed

# Data-flow order: what users run first comes first in --help.
SUBCOMMANDS = ("export", "build", "info", "compare", "validate", "generate", "check", "sweep")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup (``finally``, context managers) runs."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


# Python runs a signal's handler wherever the main thread is; inside a callback it cannot propagate
# from (a weakref callback such as importlib's module-lock cleanup, a ``__del__``) the exception is
# only printed ("Exception ignored in ...") and the run goes on as if never stopped. CI saw exactly
# that: a SIGTERM during an import, and the validation finished with exit 0.
_REDELIVERY_DELAY_S = 0.05  # long enough for the hook and the callback to return first
_SIGNAL_OF = {Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}


def _redeliver_swallowed_interrupt(unraisable, default_hook, pending: list) -> None:
    """Send a swallowed SIGTERM/SIGINT again, from a timer thread, so it lands in ordinary code."""
    sig = _SIGNAL_OF.get(type(unraisable.exc_value))
    if sig is None:
        default_hook(unraisable)
        return
    timer = threading.Timer(_REDELIVERY_DELAY_S, os.kill, (os.getpid(), sig))
    timer.daemon = True
    pending.append(timer)
    timer.start()


@contextlib.contextmanager
def interrupts_unwind():
    """SIGTERM unwinds like Ctrl-C (``Terminated``), and neither is lost in a callback."""
    if not _main_thread():
        yield
        return
    previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_hook, pending = sys.unraisablehook, []
    sys.unraisablehook = lambda unraisable: _redeliver_swallowed_interrupt(unraisable, previous_hook, pending)
    try:
        yield
    finally:
        for timer in pending:  # the run already stopped: a late re-send would kill it untidily
            timer.cancel()
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous_handler)


def _placeholder(subparsers, name: str, reason: str) -> None:
    parser = subparsers.add_parser(name, help=f"(unavailable: {reason})")
    parser.set_defaults(_run=lambda args: _unavailable(name, reason))


def _unavailable(name: str, reason: str) -> int:
    print(f"bigain-export {name}: unavailable here: {reason}", file=sys.stderr)
    return 2


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line, ``bigain-export CMD: error: ...`` (exit 2), like every other error;
    ``--help`` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="bigain-export",
        description="Bake BiGain token compression into diffusion-model engines (ONNX Runtime, "
        "TensorRT) and validate them against the eager PyTorch model.",
    )
    from .. import __version__

    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (also accepted after COMMAND)")
    parser.add_argument("--version", action="version", version=f"bigain-export {__version__}")
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
        add_common_args(sub)
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
        with interrupts_unwind():
            refuse_renamed(args)
            from ..kernels.launch import kernel_switch

            kernel_switch()
            return int(args._run(args) or 0)
    except BigainError as exc:
        print(f"bigain-export {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bigain-export {args.command}: interrupted (SIGINT); nothing half-written was kept", file=sys.stderr)
        return 130
    except Terminated:
        print(f"bigain-export {args.command}: terminated (SIGTERM); nothing half-written was kept", file=sys.stderr)
        return 143


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
