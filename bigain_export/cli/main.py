"""``bigain-export`` command line: one module per subcommand, thin wrappers over the library.

Each subcommand lives in ``bigain_export/cli/<name>.py`` and exposes ``add_parser(subparsers)``
and ``run(args) -> int``. A subcommand whose module fails to import (a missing optional
dependency) is still listed, and says why when run, so ``--help`` never breaks.

Exit status: 0 success, 1 a check failed (drift, regression, unverified engine), 2 bad input
(one line ``bigain-export CMD: error: ...``), 130 / 143 interrupted by SIGINT / SIGTERM (one line,
no traceback; SIGTERM unwinds like Ctrl-C so nothing half-written is kept).
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading

from ..errors import BigainError
from .args import add_common_args, refuse_renamed

# Data-flow order: what users run first comes first in --help.
SUBCOMMANDS = ("export", "build", "info", "compare", "validate", "generate", "check", "sweep")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup (``finally``, context managers) runs."""


# Python runs a signal's handler wherever the main thread is; inside a callback it cannot propagate
# from (a weakref callback such as importlib's module-lock cleanup, a ``__del__``) the exception is
# only printed ("Exception ignored in ...") and the run goes on as if never stopped. CI saw exactly
# that: a SIGTERM during an import, and the validation finished with exit 0. So a swallowed
# interrupt is raised again a moment later, in ordinary code, and only once: CI later saw a second
# re-sent SIGINT land after the first had been handled (rc -2 after the "interrupted" line), and a
# second interrupt during the unwinding would cut its cleanup short.
_REDELIVERY_DELAY_S = 0.05  # long enough for the hook and the callback to return first
_SIGNAL_OF = {Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}
_RAISE_ANYWAY_AFTER = 3  # ignored signals while unwinding; then raise (a user pressing Ctrl-C again)


class _OneInterrupt:
    """SIGINT/SIGTERM handler and unraisable hook: one interrupt raised per stop.

    ``armed`` until an interrupt is raised in the main thread; while disarmed (the run unwinds)
    signals are ignored, so neither a late re-send nor a second Ctrl-C interrupts the cleanup. A
    swallowed interrupt re-arms and is re-sent from a timer through ``_thread.interrupt_main``
    (an in-process signal: nothing left in flight once the timer thread has ended)."""

    def __init__(self, previous_hook) -> None:
        self.previous_hook = previous_hook
        self.armed, self.ignored, self.closed = True, 0, False
        self.timers: list[threading.Timer] = []

    def on_signal(self, signum, frame) -> None:
        if self.closed:
            return  # the run is over; its result stands
        if not self.armed:
            self.ignored += 1
            if self.ignored < _RAISE_ANYWAY_AFTER:
                return
        self.armed, self.ignored = False, 0
        self._cancel_timers()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def on_unraisable(self, unraisable) -> None:
        sig = _SIGNAL_OF.get(type(unraisable.exc_value))
        if sig is None or self.closed:
            self.previous_hook(unraisable)
            return
        self.armed = True  # that interrupt was lost: the re-sent one must raise
        timer = threading.Timer(_REDELIVERY_DELAY_S, _thread.interrupt_main, (sig,))
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def close(self) -> None:
        """No interrupt from now on: cancel the re-sends and wait out any already firing."""
        self.closed = True
        self._cancel_timers(wait=True)

    def _cancel_timers(self, wait: bool = False) -> None:
        for timer in self.timers:
            timer.cancel()
            if wait and timer is not threading.current_thread():
                timer.join()
        self.timers = [t for t in self.timers if t.is_alive()]


@contextlib.contextmanager
def interrupts_unwind():
    """SIGTERM unwinds like Ctrl-C (``Terminated``), neither is lost in a callback, and each stop
    raises once (see ``_OneInterrupt``). An ignored SIGINT (a background job) stays ignored."""
    if not _main_thread():
        yield
        return
    interrupts = _OneInterrupt(sys.unraisablehook)
    previous_term = signal.signal(signal.SIGTERM, interrupts.on_signal)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupts.on_signal)
    sys.unraisablehook = interrupts.on_unraisable
    try:
        yield
    finally:
        interrupts.close()
        sys.unraisablehook = interrupts.previous_hook
        # signal.signal first runs pending handlers (ours, closed: they ignore a signal sent by a
        # timer that was firing as the run stopped), then puts the previous ones back
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)


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
