"""Regression gate: compare a validation report with a baseline report under tolerances.

Running (``validate``) and judging (``check``) are separate so CI can keep one trusted baseline
report and judge every new run against it. Checked per method:

* accuracy drop, in percentage points: ``100 * (baseline - report) > max_acc_drop_pp`` fails;
* FID rise, absolute (``report - baseline``) or relative (percent of the baseline);
* eps drift against the report's own reference method, when drift tolerances are given (on the
  command line or in the report's ``tolerances``), for the report's ``drift_methods`` (default:
  every method but the reference).

A metric the baseline has but the report lacks fails; one the baseline lacks is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, ValidationError

# Slack for float round-off: a drop of exactly the tolerance passes.
_SLACK = 1e-9


@dataclass(frozen=True)
class Tolerances:
    """Allowed regressions.

    Args:
        max_acc_drop_pp: accuracy drop allowed, in percentage points.
        max_fid_rise: FID rise allowed, absolute, or percent of the baseline when ``fid_relative``.
        fid_relative: read ``max_fid_rise`` as a percentage.
        drift_max_abs / drift_rel_l2: eps drift limits; ``None`` takes the report's own value (if any).
    """

    max_acc_drop_pp: float = 0.5
    max_fid_rise: float = 1.0
    fid_relative: bool = True
    drift_max_abs: float | None = None
    drift_rel_l2: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_acc_drop_pp", "max_fid_rise", "drift_max_abs", "drift_rel_l2"):
            value = getattr(self, name)
            if value is None and name.startswith("drift"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"tolerance {name}={value!r} is not allowed; allowed: a number >= 0")

    @staticmethod
    def parse_fid_rise(text: str) -> tuple[float, bool]:
        """``"1%"`` -> ``(1.0, True)`` (relative); ``"0.5"`` -> ``(0.5, False)`` (absolute)."""
        raw = str(text).strip()
        relative = raw.endswith("%")
        try:
            value = float(raw[:-1] if relative else raw)
        except ValueError:
            value = float("nan")
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"--max-fid-rise {text!r} is not allowed; allowed: a number >= 0, optionally with '%'")
        return value, relative

    def fid_text(self) -> str:
        return f"{self.max_fid_rise:.2f}%" if self.fid_relative else f"{self.max_fid_rise:.3g}"


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`check_against_baseline`; true when every check passed."""

    failures: tuple[str, ...]
    checks: int
    methods: tuple[str, ...]
    tolerances: Tolerances
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def lines(self) -> list[str]:
        """``FAIL ...`` lines, or one ``PASS ...`` line."""
        if self.failures:
            return list(self.failures)
        t = self.tolerances
        limits = [f"accuracy drop <= {t.max_acc_drop_pp:.2f} pp", f"FID rise <= {t.fid_text()}"]
        return [
            f"PASS: {self.checks} checks on {len(self.methods)} method(s) ({', '.join(self.methods)}) "
            f"within tolerance ({', '.join(limits)})"
        ]


def _pair_methods(
    report: Mapping[str, Any], baseline: Mapping[str, Any], methods: Sequence[str] | None,
    baseline_method: str | None, sources: tuple[str, str],
) -> list[tuple[str, str]]:
    report_methods, baseline_methods = report["methods"], baseline["methods"]
    names = list(methods) if methods else list(report_methods)
    pairs = []
    for name in names:
        if name not in report_methods:
            raise ValidationError(f"{sources[0]}: no method {name!r}; it has: {', '.join(report_methods)}")
        base = baseline_method or name
        if base not in baseline_methods:
            raise ValidationError(
                f"{sources[1]}: no method {base!r} to compare with; it has: {', '.join(baseline_methods)} "
                "(choose with --method / --baseline-method)"
            )
        pairs.append((name, base))
    return pairs


def check_against_baseline(
    report: Mapping[str, Any],
    baseline: Mapping[str, Any],
    tolerances: Tolerances | None = None,
    *,
    methods: Sequence[str] | None = None,
    baseline_method: str | None = None,
    sources: tuple[str, str] = ("report", "baseline"),
) -> GateResult:
    """Judge ``report`` against ``baseline`` (both checked report dicts, see ``report.py``).

    Args:
        tolerances: limits (default :class:`Tolerances`).
        methods: report methods to check (default: all).
        baseline_method: compare every checked method with this baseline method (default: the
            method of the same name).
        sources: names of the two inputs for error messages (file paths).
    """
    tolerances = tolerances or Tolerances()
    pairs = _pair_methods(report, baseline, methods, baseline_method, sources)
    drift_limits = dict(report.get("tolerances") or {})
    drift_methods = drift_limits.pop("drift_methods", None)
    if drift_methods is None:
        drift_methods = [n for n in report["methods"] if n != report.get("reference_method")]
    for key in ("drift_max_abs", "drift_rel_l2"):
        if getattr(tolerances, key) is not None:
            drift_limits[key] = getattr(tolerances, key)
    tag_methods = len(pairs) > 1
    failures: list[str] = []
    checks = 0

    for name, base_name in pairs:
        got, want = report["methods"][name], baseline["methods"][base_name]
        tag = f" [{name}]" if tag_methods else ""
        # accuracy
        if want.get("accuracy") is not None:
            checks += 1
            if got.get("accuracy") is None:
                failures.append(f"FAIL accuracy: missing in report, baseline {100 * want['accuracy']:.2f}%{tag}")
            else:
                drop = 100 * (want["accuracy"] - got["accuracy"])
                if drop > tolerances.max_acc_drop_pp + _SLACK:
                    failures.append(
                        f"FAIL accuracy: {100 * got['accuracy']:.2f}% vs baseline {100 * want['accuracy']:.2f}% "
                        f"(drop {drop:.2f} pp > {tolerances.max_acc_drop_pp:.2f} pp){tag}"
                    )
        # FID
        if want.get("fid") is not None:
            checks += 1
            if got.get("fid") is None:
                failures.append(f"FAIL fid: missing in report, baseline {want['fid']:.3f}{tag}")
            else:
                rise = got["fid"] - want["fid"]
                if tolerances.fid_relative:
                    if want["fid"] > 0:
                        amount = 100 * rise / want["fid"]
                    else:
                        amount = 0.0 if rise <= 0 else float("inf")
                    shown = f"{amount:.2f}%"
                else:
                    amount, shown = rise, f"{rise:.3g}"
                if amount > tolerances.max_fid_rise + _SLACK:
                    failures.append(
                        f"FAIL fid: {got['fid']:.3f} vs baseline {want['fid']:.3f} "
                        f"(rise {shown} > {tolerances.fid_text()}){tag}"
                    )
        # drift against the report's reference method
        drift = got.get("drift")
        for key, limit in sorted(drift_limits.items()):
            if drift is None or name not in drift_methods:
                continue
            value = drift.get(key.removeprefix("drift_"))
            if value is None:
                continue
            checks += 1
            if value > limit + _SLACK:
                failures.append(
                    f"FAIL drift {key.removeprefix('drift_')}: {value:.3g} > {limit:.3g} "
                    f"(vs {drift.get('reference', report.get('reference_method', '?'))}){tag}"
                )

    if checks == 0:
        raise ValidationError(
            f"{sources[1]}: nothing to compare (no accuracy or FID in the baseline's methods "
            f"{', '.join(b for _, b in pairs)}, no drift tolerances)"
        )
    return GateResult(failures=tuple(failures), checks=checks, methods=tuple(n for n, _ in pairs), tolerances=tolerances)
