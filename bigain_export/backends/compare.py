"""Eager model vs engine on the same fresh random inputs, through Polygraphy's Comparator.

Polygraphy runs every runner on the same feeds and gives the pass/fail verdict per output
(Polygraphy's simple comparison on the MEAN error, relative or absolute, per precision); we add the two
numbers users track over time, max absolute error and relative L2, computed over all feeds.
TensorRT slots in as one more runner.

Why the mean and not the max: token merging makes discrete choices (argmin of the Laplacian per
window, the sort of similarities). A float-rounding difference between two runtimes can flip one
near-tie, which changes a few tokens of one sample by ~1e-3 while everything else agrees to 1e-7
(seen on a random DiT: a 1e-6 relative input perturbation of the EAGER model alone moved its
output by 1.5e-4 relative L2). A max-error or L2 gate would fail correct engines at random; the
mean error still catches a wrong kernel, which moves every token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from ..validate.drift import ENGINE_TOLERANCES as TOLERANCES  # per precision, on the mean error
from ..validate.drift import drift


@dataclass(frozen=True)
class OutputDrift:
    name: str
    max_abs: float
    rel_l2: float
    mean_abs: float
    passed: bool  # Polygraphy's mean-error check: the verdict


@dataclass
class CompareReport:
    reference: str
    candidate: str
    precision: str
    tolerance: float
    num_feeds: int
    outputs: list[OutputDrift] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def summary(self) -> str:
        lines = [f"{self.candidate} vs {self.reference} ({self.precision}, {self.num_feeds} feeds, rel tol {self.tolerance:g}):"]
        for o in self.outputs:
            verdict = "PASS" if o.passed else "FAIL"
            lines.append(f"  {verdict} {o.name}: max abs {o.max_abs:.3e}, rel L2 {o.rel_l2:.3e}, mean abs {o.mean_abs:.3e}")
        return "\n".join(lines)


def quiet_polygraphy() -> None:
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR


def _simple_compare(**options):
    """Polygraphy's simple comparison: ``SimpleCompareFunc`` where it exists (``CompareFunc.simple``
    warns of its removal in Polygraphy 0.60; seen with 0.53.6), the older spelling before it."""
    from polygraphy.comparator import compare

    if hasattr(compare, "SimpleCompareFunc"):
        return compare.SimpleCompareFunc(**options)
    return compare.CompareFunc.simple(**options)


def compare_runners(reference, candidate, feeds: Iterable[dict[str, np.ndarray]], precision: str) -> CompareReport:
    """Run both Polygraphy runners on ``feeds`` and judge every output."""
    from polygraphy.comparator import Comparator

    quiet_polygraphy()
    feeds = [{k: np.asarray(v) for k, v in feed.items()} for feed in feeds]
    tolerance = TOLERANCES[precision]
    results = Comparator.run([reference, candidate], data_loader=feeds)
    verdict = Comparator.compare_accuracy(
        results, compare_func=_simple_compare(rtol=tolerance, atol=tolerance, check_error_stat="mean")
    )
    by_runner = dict(results.items())
    ref_iters, cand_iters = by_runner[reference.name], by_runner[candidate.name]
    report = CompareReport(reference.name, candidate.name, precision, tolerance, len(feeds))
    for name in ref_iters[0].keys():
        ref = torch.from_numpy(np.stack([np.asarray(it[name]) for it in ref_iters]))
        got = torch.from_numpy(np.stack([np.asarray(it[name]) for it in cand_iters]))
        stats = drift(got.flatten(0, 1), ref.flatten(0, 1))
        # AccuracyResults: one AccuracyResult per compare function; each maps a runner pair to
        # per-iteration {output: OutputCompareResult}.
        poly_ok = all(
            bool(iteration[name]) for accuracy in verdict for per_iteration in accuracy.values() for iteration in per_iteration
        )
        report.outputs.append(OutputDrift(name, stats.max_abs, stats.rel_l2, stats.mean_abs, poly_ok))
    return report
