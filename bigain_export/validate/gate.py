"""Regression gate: compare a validation report with a baseline report under tolerances.

Running (``validate``) and judging (``check``) are separate so CI can keep one trusted baseline
report and judge every new run against it. The gate first decides whether the two reports CAN
be compared, then judges them:

* **comparable** (else :class:`ValidationError`, exit 2): both reports say what they measured
  (``provenance``), and each pair of methods was measured on the same model weights, data bytes,
  settings (schedule, sampler, steps, guidance, seeds, image counts, drift inputs) and FID
  reference, with the same BiGain config (and, for a method paired with its namesake, the same
  backend, dtype and engine build): :func:`~bigain_export.validate.provenance.incomparable`.
  Each report is also internally consistent (checked when it is loaded: ``report.check_report``);
* **complete**: every baseline method is in the report, unless the methods are named;
* per method, **accuracy** drop in percentage points and **FID** rise (absolute, or percent of
  the baseline) within tolerance; a metric the baseline has but the report lacks fails;
* **engine drift** (an engine against the eager model with the same config), by default, with
  the limits the report recorded (``mean_abs`` per engine precision) and those given here on
  top; an engine method without measured engine drift fails. Eager methods' drift is what BiGain
  changes by design: judged only when the report names them in its drift tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, ValidationError
from .drift import DRIFT_STATS, engine_tolerance, is_engine_drift
from .provenance import engine_of, incomparable, notes

# Slack for float round-off: a drop of exactly the tolerance passes.
_SLACK = 1e-9
_MAX_PROBLEMS = 4


@dataclass(frozen=True)
class Tolerances:
    """Allowed regressions.

    Args:
        max_acc_drop_pp: accuracy drop allowed, in percentage points.
        max_fid_rise: FID rise allowed, absolute, or percent of the baseline when ``fid_relative``.
        fid_relative: read ``max_fid_rise`` as a percentage.
        drift_max_abs / drift_rel_l2 / drift_mean_abs: engine drift limits; ``None`` keeps the
            report's own (``mean_abs`` per engine precision by default).
    """

    max_acc_drop_pp: float = 0.5
    max_fid_rise: float = 1.0
    fid_relative: bool = True
    drift_max_abs: float | None = None
    drift_rel_l2: float | None = None
    drift_mean_abs: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_acc_drop_pp", "max_fid_rise", "drift_max_abs", "drift_rel_l2", "drift_mean_abs"):
            value = getattr(self, name)
            if value is None and name.startswith("drift"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ConfigError(f"tolerance {name}={value!r} is not allowed; allowed: a finite number >= 0")

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

    def drift_overrides(self) -> dict[str, float]:
        return {stat: getattr(self, f"drift_{stat}") for stat in DRIFT_STATS
                if getattr(self, f"drift_{stat}") is not None}


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


def _refuse_incomparable(report, baseline, pairs, sources) -> None:
    problems: list[str] = []
    for name, base in pairs:
        for problem in incomparable(report["provenance"], baseline["provenance"], name, base):
            if problem not in problems:
                problems.append(problem)
    if problems:
        shown = "; ".join(problems[:_MAX_PROBLEMS])
        more = f" (and {len(problems) - _MAX_PROBLEMS} more)" if len(problems) > _MAX_PROBLEMS else ""
        raise ValidationError(f"{sources[0]} and {sources[1]} are not comparable (report vs baseline): {shown}{more}")


def _check_accuracy(got, want, tolerances, tag, failures) -> int:
    if want.get("accuracy") is None:
        return 0
    if got.get("accuracy") is None:
        failures.append(f"FAIL accuracy: missing in report, baseline {100 * want['accuracy']:.2f}%{tag}")
        return 1
    drop = 100 * (want["accuracy"] - got["accuracy"])
    if drop > tolerances.max_acc_drop_pp + _SLACK:
        failures.append(
            f"FAIL accuracy: {100 * got['accuracy']:.2f}% vs baseline {100 * want['accuracy']:.2f}% "
            f"(drop {drop:.2f} pp > {tolerances.max_acc_drop_pp:.2f} pp){tag}"
        )
    return 1


def _check_fid(got, want, tolerances, tag, failures) -> int:
    if want.get("fid") is None:
        return 0
    if got.get("fid") is None:
        failures.append(f"FAIL fid: missing in report, baseline {want['fid']:.3f}{tag}")
        return 1
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
            f"FAIL fid: {got['fid']:.3f} vs baseline {want['fid']:.3f} (rise {shown} > {tolerances.fid_text()}){tag}"
        )
    return 1


def _check_drift(report, name, tolerances, tag, failures) -> int:
    facts = report["provenance"]["methods"]
    limits = dict((report.get("tolerances") or {}).get("drift", {}).get(name, {}))
    drift = report["methods"][name].get("drift")
    is_engine = engine_of(facts.get(name)) is not None
    if not limits and not is_engine:
        return 0  # an eager method: its drift is what its config changes
    if drift is None:
        failures.append(f"FAIL drift: {'engine ' if is_engine else ''}drift of {name!r} not measured{tag}")
        return 1
    if is_engine and not limits and not is_engine_drift(facts.get(name), facts.get(drift.get("reference"))):
        failures.append(f"FAIL drift: engine drift of {name!r} measured against {drift.get('reference')!r}, "
                        f"not the eager model with the same config{tag}")
        return 1
    if is_engine and not limits:  # a report that recorded none: the engine precision's default
        limits["mean_abs"] = engine_tolerance(facts[name])
    limits.update(tolerances.drift_overrides())
    checks = 0
    for stat, limit in sorted(limits.items()):
        checks += 1
        value = drift.get(stat)
        if value is None:
            failures.append(f"FAIL drift {stat}: not measured (limit {limit:.3g}){tag}")
        elif value > limit + _SLACK:
            failures.append(f"FAIL drift {stat}: {value:.3g} > {limit:.3g} (vs {drift.get('reference', '?')}){tag}")
    return checks


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
        methods: report methods to check (default: all, and every baseline method must be there).
        baseline_method: compare every checked method with this baseline method (default: the
            method of the same name).
        sources: names of the two inputs for error messages (file paths).

    Raises:
        ValidationError: the reports cannot be compared (other model, data, settings, config,
            engine build; no provenance), or there is nothing to compare.
    """
    tolerances = tolerances or Tolerances()
    pairs = _pair_methods(report, baseline, methods, baseline_method, sources)
    _refuse_incomparable(report, baseline, pairs, sources)
    tag_methods = len(pairs) > 1
    failures: list[str] = []
    checks = 0
    if not methods and not baseline_method:
        for base in baseline["methods"]:
            if base not in report["methods"]:
                checks += 1
                failures.append(f"FAIL method {base!r}: in the baseline, missing from the report "
                                "(name the methods to compare with --method)")

    for name, base_name in pairs:
        got, want = report["methods"][name], baseline["methods"][base_name]
        tag = f" [{name}]" if tag_methods else ""
        checks += _check_accuracy(got, want, tolerances, tag, failures)
        checks += _check_fid(got, want, tolerances, tag, failures)
        checks += _check_drift(report, name, tolerances, tag, failures)

    if checks == 0:
        raise ValidationError(
            f"{sources[1]}: nothing to compare (no accuracy or FID in the baseline's methods "
            f"{', '.join(b for _, b in pairs)}, no engine drift)"
        )
    return GateResult(failures=tuple(failures), checks=checks, methods=tuple(n for n, _ in pairs),
                      tolerances=tolerances, notes=tuple(notes(report["provenance"], baseline["provenance"])))
