"""Small statistics helpers shared by the classifier, the report and the gate."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``correct / total``, as fractions in [0, 1].

    Wilson rather than the normal approximation because validation sets are small and accuracies
    can sit near 0 or 1, where the normal interval leaves [0, 1] or collapses to a point.
    ``total == 0`` gives the uninformative ``(0, 1)``.
    """
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # At 0 or total correct the bound is exactly 0 or 1; round-off would leave ~1e-17.
    lo = 0.0 if correct == 0 else max(0.0, centre - half)
    hi = 1.0 if correct == total else min(1.0, centre + half)
    return (lo, hi)
