"""Latency protocol 3: a point's calls interleaved with the reference's, on a fake clock.

The clock is a counter the fake models advance, so these tests are exact and do not time anything.
The machine "drifts": each call costs more than the one before (clocks, other tenants), the case
in which two medians measured one after the other gave ratios far from the true one.
"""

from __future__ import annotations

import pytest
import torch

from bigain_export.errors import ConfigError
from bigain_export.sweep import latency
from bigain_export.sweep.latency import LatencySettings, measure_latency, round_sizes


class DriftingMachine:
    """A fake clock whose calls cost ``cost x (1 + drift x calls so far)``."""

    def __init__(self, drift: float):
        self.now, self.calls, self.drift = 0.0, 0, drift

    def model(self, cost_s: float):
        def call(*inputs):
            self.now += cost_s * (1.0 + self.drift * self.calls)
            self.calls += 1
            return inputs[0]
        return call

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture()
def machine(monkeypatch):
    fake = DriftingMachine(drift=0.02)
    monkeypatch.setattr(latency.time, "perf_counter", fake.perf_counter)
    return fake


INPUTS = (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_paired_speedup_survives_a_drifting_machine(machine):
    point, reference = machine.model(0.002), machine.model(0.004)  # truly 2x faster
    settings = LatencySettings(batch=2, warmup=2, repeats=50, rounds=10)
    got = measure_latency(point, INPUTS, settings, reference_fn=reference)
    assert machine.calls == 1 + 1 + 2 + 50 + 50  # first call, warmups, timed calls of each
    assert got["speedup"] == pytest.approx(2.0, rel=0.03)
    assert got["speedup"] == pytest.approx(got["reference_ms"] / got["ms"])
    assert got["speedup_min"] <= got["speedup"] <= got["speedup_max"]
    assert got["timer"] == "perf_counter" and got["rounds"] == 10 and got["protocol"] == 3
    # What protocol 2 did: the two medians measured one after the other. On this machine the ratio
    # is far off, which is what the pairing is for.
    machine.calls = 0
    alone = measure_latency(reference, INPUTS, LatencySettings(batch=2, warmup=2, repeats=50, rounds=1),
                            reference_fn=reference)
    after = measure_latency(point, INPUTS, LatencySettings(batch=2, warmup=2, repeats=50, rounds=1),
                            reference_fn=point)
    assert alone["ms"] / after["ms"] < 1.5


def test_the_reference_against_itself_is_one(machine):
    model = machine.model(0.003)
    got = measure_latency(model, INPUTS, LatencySettings(batch=2, warmup=1, repeats=20, rounds=4),
                          reference_fn=model)
    assert got["speedup"] == pytest.approx(1.0, abs=0.02)


def test_alternating_order_within_rounds(machine):
    order = []

    def model(name):
        timed = machine.model(0.001)
        return lambda *x: (order.append(name), timed(*x))[1]

    point, reference = model("p"), model("r")
    measure_latency(point, INPUTS, LatencySettings(batch=2, warmup=1, repeats=4, rounds=2), reference_fn=reference)
    assert "".join(order) == "p" + "r" + "rr" + "pp" + "pp" + "rr"  # first call, warmup, ABBA


@pytest.mark.parametrize("repeats, rounds, sizes", [
    (50, 10, [5] * 10), (7, 3, [3, 2, 2]), (2, 10, [1, 1]), (1, 10, [1]), (10, 1, [10]),
])
def test_round_sizes(repeats, rounds, sizes):
    assert round_sizes(repeats, rounds) == sizes and sum(sizes) == repeats


@pytest.mark.parametrize("field, value, flag", [
    ("rounds", 0, "--latency-rounds 0"), ("repeats", 0, "--latency-repeats 0"), ("rounds", True, "--latency-rounds True"),
])
def test_bad_settings(field, value, flag):
    with pytest.raises(ConfigError, match=flag):
        LatencySettings(batch=2, **{field: value})


def test_a_call_below_the_timer_resolution_is_an_error(machine):
    from bigain_export.errors import ValidationError

    instant = machine.model(0.0)
    with pytest.raises(ValidationError, match="took 0 ms on the timer"):
        measure_latency(instant, INPUTS, LatencySettings(batch=2, warmup=1, repeats=4, rounds=2),
                        reference_fn=machine.model(0.001))
