"""SIGTERM and SIGINT stop a run even when they arrive inside a callback Python cannot raise from.

CI once sent SIGTERM while the validation was importing a module: Python ran the handler inside
importlib's weakref callback, printed "Exception ignored" and let the run finish with exit 0.
Here a weakref callback stands in for it; the control shows the scenario does swallow the signal.
Each stop raises once: CI later saw a second re-sent SIGINT arrive after the first was handled
(exit -2 after the "interrupted" line); a second interrupt would also cut the cleanup short.
"""

from __future__ import annotations

import gc
import os
import signal
import time
import weakref

import subprocess
import sys
import textwrap
import types

import pytest

from bigain_export.cli.main import Terminated, _OneInterrupt, interrupts_unwind


class _Referent:
    pass


def _signal_inside_a_weakref_callback(sig: int) -> None:
    """Deliver ``sig`` while a weakref callback runs, so its handler raises there."""
    def callback(_ref):
        os.kill(os.getpid(), sig)
        for _ in range(10_000):  # bytecode, so the pending handler runs inside the callback
            pass

    referent = _Referent()
    ref = weakref.ref(referent, callback)
    del referent
    gc.collect()
    assert ref() is None


def _wait_for_the_interrupt(seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.005)


def test_control_a_callback_swallows_the_sigterm_without_the_hook(monkeypatch):
    previous = signal.signal(signal.SIGTERM, _OneInterrupt(sys.unraisablehook).on_signal)
    swallowed = []
    monkeypatch.setattr("sys.unraisablehook", lambda unraisable: swallowed.append(unraisable.exc_value))
    try:
        _signal_inside_a_weakref_callback(signal.SIGTERM)
        _wait_for_the_interrupt(0.3)  # nothing arrives: the run would go on
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [type(exc) for exc in swallowed] == [Terminated]


@pytest.mark.parametrize("sig, raised", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_swallowed_interrupt_is_delivered_again_in_ordinary_code(sig, raised):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler and sig == signal.SIGINT:
        pytest.skip("SIGINT is ignored in this test process (started in the background)")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(raised):
        with interrupts_unwind():
            _signal_inside_a_weakref_callback(sig)
            _wait_for_the_interrupt()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # put back


def test_other_unraisable_exceptions_still_reach_the_previous_hook(monkeypatch):
    seen = []
    monkeypatch.setattr("sys.unraisablehook", lambda unraisable: seen.append(unraisable.exc_value))

    def callback(_ref):
        raise ValueError("from a callback")

    with interrupts_unwind():
        referent = _Referent()
        ref = weakref.ref(referent, callback)
        del referent
        gc.collect()
    assert [str(exc) for exc in seen] == ["from a callback"]
    assert ref() is None


def _swallowed(exc_type) -> types.SimpleNamespace:
    """What the unraisable hook gets when a callback swallowed an interrupt."""
    return types.SimpleNamespace(exc_type=exc_type, exc_value=exc_type(), exc_traceback=None,
                                 err_msg=None, object=None)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, Terminated])
def test_two_swallowed_interrupts_raise_once_and_the_cleanup_completes(exc_type):
    """Two swallows 20 ms apart schedule two re-sends; the cleanup takes longer than the gap."""
    if exc_type is KeyboardInterrupt and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is ignored in this test process (started in the background): nothing re-sends it")
    cleaned = []
    with pytest.raises(exc_type):
        with interrupts_unwind():
            try:
                sys.unraisablehook(_swallowed(exc_type))
                time.sleep(0.02)
                sys.unraisablehook(_swallowed(exc_type))
                _wait_for_the_interrupt()
            finally:
                _wait_for_the_interrupt(0.2)  # the second re-send would land here
                cleaned.append(True)
    assert cleaned == [True]
    _wait_for_the_interrupt(0.2)  # and nothing arrives after the run stopped


def test_a_repeated_signal_during_cleanup_is_ignored_until_pressed_again_and_again():
    handler = _OneInterrupt(sys.unraisablehook)
    with pytest.raises(KeyboardInterrupt):
        handler.on_signal(signal.SIGINT, None)
    handler.on_signal(signal.SIGINT, None)  # the unwinding goes on
    handler.on_signal(signal.SIGTERM, None)
    with pytest.raises(Terminated):  # the third: the user means it
        handler.on_signal(signal.SIGTERM, None)


def test_the_cli_exits_130_once_with_two_swallowed_interrupts(tmp_path):
    """The CI failure, made deterministic: two re-sends in flight, a slow cleanup, exit 130."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent('''
        import sys, time, types
        import bigain_export.cli.info as info
        from bigain_export.cli.main import main
        def run(args):
            swallowed = types.SimpleNamespace(exc_type=KeyboardInterrupt, exc_value=KeyboardInterrupt(),
                                              exc_traceback=None, err_msg=None, object=None)
            try:
                sys.unraisablehook(swallowed); time.sleep(0.02); sys.unraisablehook(swallowed)
                time.sleep(5)
            finally:
                time.sleep(0.2)
                print("cleanup done", file=sys.stderr)
        info.run = run
        sys.exit(main(["info", "x"]))
    '''))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["cleanup done", "bigain-export info: interrupted (SIGINT); nothing half-written was kept"]
