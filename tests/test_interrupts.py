"""SIGTERM and SIGINT stop a run even when they arrive inside a callback Python cannot raise from.

CI once sent SIGTERM while the validation was importing a module: Python ran the handler inside
importlib's weakref callback, printed "Exception ignored" and let the run finish with exit 0.
Here a weakref callback stands in for it; the control shows the scenario does swallow the signal.
"""

from __future__ import annotations

import gc
import os
import signal
import time
import weakref

import pytest

from bigain_export.cli.main import Terminated, _on_sigterm, interrupts_unwind


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
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
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
    with pytest.raises(raised):
        with interrupts_unwind():
            _signal_inside_a_weakref_callback(sig)
            _wait_for_the_interrupt()
    assert signal.getsignal(signal.SIGTERM) is not _on_sigterm  # the handler is put back


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
