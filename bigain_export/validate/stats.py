"""Small statistics helpers shared by the classifier, the report and the gate."""

from __future__ import annotations

import fractions
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


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for paired classifiers on the same images.

    ``only_a`` images are right only under method A, ``only_b`` only under B. Images both get right
    (or wrong) carry no information about which is better; under "equally good" the discordant
    ones split 50/50, so the p-value is a two-sided binomial tail. Paired, it separates methods whose
    Wilson intervals overlap (the classifier noise is shared, so their errors are correlated).
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts ({only_a}, {only_b}) are not allowed; allowed: integers >= 0")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    # Integer arithmetic: 2.0**n overflows a float beyond n = 1023 discordant images.
    tail = fractions.Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(fractions.Fraction(1), 2 * tail))


def paired_comparison(a_correct, b_correct) -> dict:
    """Agreement of two methods' per-image correctness (equal-length sequences of bools)."""
    a_correct, b_correct = [bool(x) for x in a_correct], [bool(x) for x in b_correct]
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired results of {len(a_correct)} and {len(b_correct)} images; allowed: the same images")
    only_a = sum(a and not b for a, b in zip(a_correct, b_correct))
    only_b = sum(b and not a for a, b in zip(a_correct, b_correct))
    return {"images": len(a_correct), "only_a": only_a, "only_b": only_b,
            "mcnemar_p": mcnemar_exact(only_a, only_b)}
