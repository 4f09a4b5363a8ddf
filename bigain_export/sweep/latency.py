"""Latency and FLOPs of one denoiser call, on the device the sweep runs on.

Latency is the **median ms per eps call** at the model's resolution and the sweep's batch, one
fixed timestep (500) and fixed random inputs, after ``warmup`` calls (a ``torch.compile``d model
compiles during the first; that call's time is reported separately as ``first_call_ms``), with
Python's garbage collector off while timing:

* on a CUDA device, per-call CUDA events on the current stream (no host sync between calls);
* on the CPU, and for engines (whose call returns host memory, so it is synchronous anyway),
  ``time.perf_counter`` around each call (the reference too, so that both share one timer).

**Paired with the reference (protocol 3).** A point's calls are interleaved with calls of the
uncompressed reference: ``rounds`` rounds, each a block of the reference's calls and a block of the
point's (their order alternating between rounds), ``repeats`` calls of each in all. The speedup is
the reference's median over the point's median *of the same minutes*, with the range of the
per-round ratios beside it. Timed separately, minutes apart, launch-bound models drift: on the
H200 three ToMe seeds of the same computation gave 21.6, 36.4 and 25.7 ms (docs/results.md).
The sweep pairs a compressed ``compile`` / ``cudagraphs`` point with the uncompressed model
compiled the same way, a compressed engine with the uncompressed engine of the same recipe (its
``paired_with``), and everything else with the eager one.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over one eager call at the same
batch (matrix multiplies, convolutions and attention; merging's gathers and scatters count 0),
the protocol of the paper's cost column (method.md §3).
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import ConfigError, ValidationError
from ..validate.batching import EpsFn

TIMESTEP = 500


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured: ``batch`` rows per call, ``warmup`` untimed calls, ``repeats`` timed
    calls of the point (and as many of the reference) in ``rounds`` alternating blocks."""

    batch: int
    warmup: int = 5
    repeats: int = 50
    timestep: int = TIMESTEP
    rounds: int = 10
    # 2: Python's garbage collector is off while timing (as timeit does); its pauses showed up as
    # outliers in launch-bound calls. 3: paired with the reference in alternating rounds (module
    # docstring). A part measured under an older protocol is not reused.
    protocol: int = 3

    def __post_init__(self) -> None:
        for name, low in (("batch", 1), ("warmup", 1), ("repeats", 1), ("rounds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                flag = "--batch-size" if name == "batch" else f"--latency-{name}"
                raise ConfigError(f"{flag} {value!r} is not allowed; allowed: an integer >= {low}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(device: torch.device | str) -> str:
    """What the numbers were measured on: ``cuda:NVIDIA H200`` or ``cpu:x86_64 (16 threads)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{platform.machine()} ({torch.get_num_threads()} threads)"


def latency_inputs(sample_shape: tuple[int, ...], num_classes: int, settings: LatencySettings,
                   device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed inputs of one call: ``sample [B, C, H, W]``, ``timestep [B]`` (all 500), ``labels [B]``."""
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn((settings.batch, *sample_shape), generator=generator)
    labels = torch.randint(0, num_classes, (settings.batch,), generator=generator)
    timestep = torch.full((settings.batch,), settings.timestep, dtype=torch.long)
    return sample.to(device), timestep.to(device), labels.to(device)


def round_sizes(repeats: int, rounds: int) -> list[int]:
    """``repeats`` calls split into at most ``rounds`` blocks as evenly as possible (none empty)."""
    count = min(repeats, rounds)
    return [repeats // count + (1 if i < repeats % count else 0) for i in range(count)]


@torch.no_grad()
def measure_latency(eps_fn: EpsFn, inputs: tuple[torch.Tensor, ...], settings: LatencySettings,
                    *, reference_fn: EpsFn, host_synchronous: bool = False) -> dict[str, Any]:
    """Median (and p10/p90/min) ms per call of ``eps_fn`` on ``inputs``, interleaved with
    ``reference_fn`` (the uncompressed model): ``reference_ms``, ``speedup`` (reference median /
    point median) and ``speedup_min``/``speedup_max`` over the rounds' own ratios.

    Args:
        host_synchronous: the point's call returns only when its result is on the host (engines):
            time both with ``perf_counter`` even on a CUDA device.
    """
    device = inputs[0].device
    cuda = device.type == "cuda" and not host_synchronous
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    eps_fn(*inputs)
    sync()
    first_ms = 1e3 * (time.perf_counter() - start)
    for fn, calls in ((eps_fn, settings.warmup - 1), (reference_fn, settings.warmup)):
        for _ in range(calls):
            fn(*inputs)
    sync()
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    blocks: list[list[float]] = []  # the point's calls, one list per round
    reference_blocks: list[list[float]] = []
    try:
        for index, size in enumerate(round_sizes(settings.repeats, settings.rounds)):
            # Reference first in even rounds, the point first in odd ones (ABBA): a steady drift
            # of the machine cancels over each pair of rounds.
            order = ((reference_fn, reference_blocks), (eps_fn, blocks))
            for fn, into in order if index % 2 == 0 else order[::-1]:
                into.append(_timed_calls(fn, inputs, size, cuda, sync))
    finally:
        if collecting:
            gc.enable()
    if min(statistics.median(block) for block in blocks + reference_blocks) <= 0.0:
        raise ValidationError("a denoiser call took 0 ms on the timer (below its resolution): no speedup can be "
                              "measured; allowed: a --batch-size large enough to time")
    ratios = [statistics.median(ref) / statistics.median(own) for ref, own in zip(reference_blocks, blocks)]
    times = [t for block in blocks for t in block]
    reference_ms = statistics.median([t for block in reference_blocks for t in block])
    ordered = sorted(times)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    ms = statistics.median(times)
    return {
        "ms": ms, "ms_p10": quantile(0.1), "ms_p90": quantile(0.9), "ms_min": ordered[0],
        "reference_ms": reference_ms, "speedup": reference_ms / ms,
        "speedup_min": min(ratios), "speedup_max": max(ratios),
        "first_call_ms": first_ms, "timer": "cuda-events" if cuda else "perf_counter",
        "device": device_name(device), **settings.to_dict(),
    }


def _timed_calls(eps_fn: EpsFn, inputs: tuple[torch.Tensor, ...], repeats: int, cuda: bool, sync) -> list[float]:
    """ms of each of ``repeats`` calls: CUDA events on the stream (no host sync between calls),
    else ``perf_counter`` around each synchronised call."""
    times: list[float] = []
    if cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(repeats)]
        for begin, end in events:
            begin.record()
            eps_fn(*inputs)
            end.record()
        sync()
        return [begin.elapsed_time(end) for begin, end in events]
    for _ in range(repeats):
        start = time.perf_counter()
        eps_fn(*inputs)
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return times


@torch.no_grad()
def flops_per_call(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one eager call of ``module`` on ``inputs`` (``FlopCounterMode`` total)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        module(*inputs)
    return int(counter.get_total_flops())
