"""Numerical drift of an eps function against a reference one, on fixed random inputs.

Accuracy and FID are the user-facing gates, but both are coarse: a kernel that is slightly wrong
can leave them inside tolerance on a small validation set. Drift compares raw eps outputs on the
same inputs and catches that early. Inputs are drawn once from a seed: ``x ~ N(0, 1)``, timesteps
uniform over ``[0, T)``, labels uniform over the classes.

**Engine drift** is the drift of an engine against the eager model running the same config: the
engine's own error, which ``bigain-export check`` judges by default, with ``mean_abs`` bounded
by :data:`ENGINE_TOLERANCES` for the engine's precision (the same bound the build's Polygraphy
check uses). Drift between eager methods of different configs is what BiGain changes, by design,
and is reported but never judged unless asked for by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from .batching import EpsFn, call_batched

# Mean |eps_engine - eps_eager| allowed per engine precision (also the build-time Polygraphy check).
ENGINE_TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 1e-2}
DRIFT_STATS = ("mean_abs", "max_abs", "rel_l2")
LIMIT_KEYS = tuple(f"drift_{s}" for s in DRIFT_STATS)


@dataclass(frozen=True)
class DriftInputs:
    """Fixed inputs: ``sample [M, C, H, W]``, ``timestep [M]`` long, ``class_labels [M]`` long."""

    sample: torch.Tensor
    timestep: torch.Tensor
    class_labels: torch.Tensor

    @classmethod
    def random(
        cls,
        count: int,
        sample_shape: Sequence[int],
        num_classes: int,
        num_train_timesteps: int = 1000,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> "DriftInputs":
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"drift input count={count!r} is not allowed; allowed: an integer >= 1")
        generator = torch.Generator().manual_seed(seed)
        sample = torch.randn((count, *sample_shape), generator=generator)
        timestep = torch.randint(0, num_train_timesteps, (count,), generator=generator)
        labels = torch.randint(0, num_classes, (count,), generator=generator)
        return cls(sample.to(device), timestep.to(device), labels.to(device))


@dataclass(frozen=True)
class DriftResult:
    """``max_abs`` = max |eps - eps_ref|; ``rel_l2`` = ||eps - eps_ref|| / ||eps_ref|| over all inputs."""

    max_abs: float
    rel_l2: float
    mean_abs: float
    num_inputs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def eps_outputs(eps_fn: EpsFn, inputs: DriftInputs, batch_size: int) -> torch.Tensor:
    """``[M, C, H, W]`` float32 outputs of ``eps_fn`` on ``inputs``."""
    return call_batched(eps_fn, inputs.sample, inputs.timestep, inputs.class_labels, batch_size)


def drift(outputs: torch.Tensor, reference: torch.Tensor) -> DriftResult:
    """Compare ``outputs`` with ``reference`` (both ``[M, ...]``), in float64."""
    diff = outputs.to(torch.float64) - reference.to(torch.float64)
    ref_norm, diff_norm = reference.to(torch.float64).norm().item(), diff.norm().item()
    if ref_norm > 0:
        rel_l2 = diff_norm / ref_norm
    else:
        rel_l2 = 0.0 if diff_norm == 0 else float("inf")
    return DriftResult(
        max_abs=diff.abs().max().item() if diff.numel() else 0.0,
        rel_l2=rel_l2,
        mean_abs=diff.abs().mean().item() if diff.numel() else 0.0,
        num_inputs=int(outputs.shape[0]),
    )


def check_drift_limits(limits: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate user drift limits ``{"drift_max_abs": x, "drift_rel_l2": y, "drift_mean_abs": z,
    "drift_methods": [names]}`` (every key optional); returns a plain copy."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise ConfigError(f"drift tolerances {limits!r} are not allowed; allowed: a mapping of "
                          f"{', '.join(LIMIT_KEYS)}, drift_methods")
    out: dict[str, Any] = {}
    for key, value in limits.items():
        if key == "drift_methods":
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"drift_methods={value!r} is not allowed; allowed: a list of method names")
            out[key] = list(value)
        elif key in LIMIT_KEYS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ConfigError(f"tolerance {key}={value!r} is not allowed; allowed: a finite number >= 0")
            out[key] = float(value)
        else:
            raise ConfigError(f"tolerance {key!r} is not known; allowed: {', '.join(LIMIT_KEYS)}, drift_methods")
    return out


def is_engine_drift(facts: Mapping[str, Any] | None, reference: Mapping[str, Any] | None) -> bool:
    """Whether a method with ``facts`` measured against ``reference`` (``provenance.method_facts``)
    gives engine drift: an engine against the eager model with the same config per task."""
    from .provenance import engine_of

    return (isinstance(facts, Mapping) and isinstance(reference, Mapping)
            and engine_of(facts) is not None and reference.get("engine") is None
            and reference.get("backend") == "eager" and facts.get("config") == reference.get("config"))


def engine_tolerance(facts: Mapping[str, Any] | None) -> float:
    """The mean-abs engine drift bound of a method's engine precision (the tightest if unknown)."""
    from .provenance import engine_of

    precision = (engine_of(facts) or {}).get("precision")
    if isinstance(precision, str) and precision in ENGINE_TOLERANCES:
        return ENGINE_TOLERANCES[precision]
    return min(ENGINE_TOLERANCES.values())


def drift_tolerances(limits: Mapping[str, Any] | None, method_facts: Mapping[str, Mapping[str, Any] | None],
                     drift_references: Mapping[str, str]) -> dict[str, Any]:
    """The report's ``tolerances``: ``{"drift": {method: {"mean_abs": x, "max_abs": y, ...}}}``.

    Judged methods: ``limits["drift_methods"]`` when given, else every method whose drift is
    engine drift (:func:`is_engine_drift`). An engine's ``mean_abs`` defaults to
    :data:`ENGINE_TOLERANCES` of its precision; the user's limits apply on top.
    """
    user = check_drift_limits(limits)
    named = user.pop("drift_methods", None)
    judged: dict[str, dict[str, float]] = {}
    for name, facts in method_facts.items():
        engine = is_engine_drift(facts, method_facts.get(drift_references[name]))
        if not (name in named if named is not None else engine):
            continue
        entry: dict[str, float] = {}
        if engine:
            entry["mean_abs"] = engine_tolerance(facts)
        entry.update({key.removeprefix("drift_"): value for key, value in user.items()})
        if entry:
            judged[name] = entry
    return {"drift": judged} if judged else {}
