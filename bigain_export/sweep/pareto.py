"""The trade-off picture: Pareto fronts of quality vs latency, and the budget question.

Points are the sweep report's point dicts (``sweep.json``): what is read here is ``name``,
``latency.ms_paired`` (else ``latency.ms``; :func:`latency_ms`), ``accuracy`` (a fraction) and ``fid``.

* :func:`pareto_front`: the points no other point beats on both latency and quality.
* :func:`fastest_within`: ``--max-acc-drop 1.0 --max-fid-rise 5%``: the fastest point whose
  accuracy is at most 1.0 points below the uncompressed reference and whose FID is at most 5%
  above it (``--max-fid-rise 2.5`` without ``%``: 2.5 FID units). The comparison is on the point
  estimates; their intervals are printed beside the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

Point = Mapping[str, Any]


def latency_ms(point: Point) -> float | None:
    """ms per call to compare points by: ``ms_paired`` (the reference's median over this point's
    paired speedup, report.py) where the latency was measured against the reference, else ``ms``."""
    latency = point.get("latency") or {}
    return latency.get("ms_paired", latency.get("ms"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_front(points: Sequence[Point], quality: str, higher_is_better: bool) -> list[str]:
    """Names of the points on the front of (lower latency, better ``quality``), fastest first.

    A point is on the front when no other point is at least as fast and at least as good, and
    strictly better in one of the two. Points without a latency or a ``quality`` value are left out.
    """
    sign = 1.0 if higher_is_better else -1.0
    scored = [(latency_ms(p), sign * p[quality], p["name"]) for p in points
              if _finite(latency_ms(p)) and _finite(p.get(quality))]
    front = []
    for lat, good, name in scored:
        dominated = any(
            other_lat <= lat and other_good >= good and (other_lat < lat or other_good > good)
            for other_lat, other_good, _ in scored
        )
        if not dominated:
            front.append((lat, -good, name))
    return [name for *_, name in sorted(front)]


@dataclass(frozen=True)
class Budget:
    """Quality bounds relative to the uncompressed reference.

    Args:
        max_acc_drop: accuracy points (percentage points) a point may lose, or None (no bound).
        max_fid_rise: FID it may gain, or None; in percent of the reference FID when
            ``fid_relative``, else in FID units.
    """

    max_acc_drop: float | None = None
    max_fid_rise: float | None = None
    fid_relative: bool = False

    @classmethod
    def parse(cls, max_acc_drop: float | None, max_fid_rise: str | None) -> "Budget":
        """From the CLI: ``--max-acc-drop 1.0``, ``--max-fid-rise 5%`` (relative) or ``2.5`` (absolute)."""
        if max_acc_drop is not None and not (_finite(max_acc_drop) and max_acc_drop >= 0):
            raise ConfigError(f"--max-acc-drop {max_acc_drop!r} is not allowed; allowed: accuracy points >= 0, e.g. 1.0")
        rise, relative = None, False
        if max_fid_rise is not None:
            text = str(max_fid_rise).strip()
            relative = text.endswith("%")
            try:
                rise = float(text.rstrip("%"))
            except ValueError:
                rise = None
            if rise is None or not math.isfinite(rise) or rise < 0:
                raise ConfigError(f"--max-fid-rise {max_fid_rise!r} is not allowed; allowed: a number >= 0, "
                                  "in FID units (2.5) or percent of the reference FID (5%)")
        return cls(max_acc_drop, rise, relative)

    @property
    def active(self) -> bool:
        return self.max_acc_drop is not None or self.max_fid_rise is not None

    def describe(self) -> str:
        parts = []
        if self.max_acc_drop is not None:
            parts.append(f"accuracy drop <= {self.max_acc_drop:g} points")
        if self.max_fid_rise is not None:
            parts.append(f"FID rise <= {self.max_fid_rise:g}{'%' if self.fid_relative else ''}")
        return " and ".join(parts) or "no bounds"

    def to_dict(self) -> dict[str, Any]:
        return {"max_acc_drop": self.max_acc_drop, "max_fid_rise": self.max_fid_rise, "fid_relative": self.fid_relative}


def quality_change(point: Point, reference: Point) -> dict[str, float | None]:
    """``acc_drop`` (points), ``fid_rise`` (FID units) and ``fid_rise_pct`` of ``point`` vs ``reference``."""
    acc_drop = fid_rise = fid_pct = None
    if _finite(point.get("accuracy")) and _finite(reference.get("accuracy")):
        acc_drop = 100.0 * (reference["accuracy"] - point["accuracy"])
    if _finite(point.get("fid")) and _finite(reference.get("fid")):
        fid_rise = point["fid"] - reference["fid"]
        fid_pct = 100.0 * fid_rise / reference["fid"] if reference["fid"] > 0 else None
    return {"acc_drop": acc_drop, "fid_rise": fid_rise, "fid_rise_pct": fid_pct}


def within(point: Point, reference: Point, budget: Budget, tol: float = 1e-9) -> bool:
    """True when ``point`` has every metric the budget bounds, each within its bound."""
    change = quality_change(point, reference)
    if not _finite(latency_ms(point)):
        return False
    if budget.max_acc_drop is not None and (change["acc_drop"] is None or change["acc_drop"] > budget.max_acc_drop + tol):
        return False
    if budget.max_fid_rise is not None:
        rise = change["fid_rise_pct"] if budget.fid_relative else change["fid_rise"]
        if rise is None or rise > budget.max_fid_rise + tol:
            return False
    return True


def fastest_within(points: Sequence[Point], reference: Point, budget: Budget) -> dict[str, Any]:
    """The budget's answer: ``{"point": name or None, "within": [names, fastest first], "message": str}``."""
    ok = sorted((p for p in points if within(p, reference, budget)),
                key=lambda p: (latency_ms(p), -(p.get("accuracy") or 0.0), p["name"]))
    if not ok:
        return {"point": None, "within": [], "budget": budget.to_dict(),
                "message": f"no configuration is within {budget.describe()} of {reference['name']}"}
    best = ok[0]
    change = quality_change(best, reference)
    speedup = latency_ms(reference) / latency_ms(best) if _finite(latency_ms(reference)) and latency_ms(best) else None
    facts = [f"{latency_ms(best):.3g} ms per call"]
    if speedup is not None:
        facts.append(f"{speedup:.2f}x the speed of {reference['name']}")
    if change["acc_drop"] is not None:
        facts.append(f"accuracy {100 * best['accuracy']:.1f}% ({0.0 - change['acc_drop'] + 0.0:+.1f} points)")
    if change["fid_rise"] is not None:
        facts.append(f"FID {best['fid']:.2f} ({change['fid_rise']:+.2f})")
    if best["name"] == reference["name"]:
        message = (f"{best['name']} (uncompressed) is the fastest within {budget.describe()}: "
                   f"no compression pays off here ({', '.join(facts)})")
    else:
        message = f"fastest within {budget.describe()}: {best['name']} ({', '.join(facts)})"
    return {"point": best["name"], "within": [p["name"] for p in ok], "speedup": speedup,
            "budget": budget.to_dict(), "message": message}
