"""Timestep schedules of the diffusion classifier, and the noise schedule they index.

A :class:`ClassifierSchedule` is a list of stages, each a pair ``(timesteps, keep)``: every class
still in the running is scored at the stage's timesteps, then only the ``keep`` classes with the
lowest mean error so far go on to the next stage. The last stage keeps 1: the prediction.

BiGain's adaptive schedule (the default, Li et al.'s adaptive evaluation with BiGain's numbers)::

    stage 1: t = 125, 325, 525, 725, 925        every class, keep the best 5
    stage 2: the other 15 of 25, 75, ..., 975   those 5, keep 1 (lowest mean over all 20)

costs ``5 C + 75`` eps evaluations per image for C >= 5 classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError

SCHEDULE_NAMES = ("bigain-adaptive", "uniform")


def uniform_grid(count: int, num_train_timesteps: int = 1000) -> tuple[int, ...]:
    """``count`` timesteps at the centres of equal bins of ``[0, T)``: 20 -> 25, 75, ..., 975."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= num_train_timesteps:
        raise ConfigError(f"timestep count={count!r} is not allowed; allowed: an integer in [1, {num_train_timesteps}]")
    step = num_train_timesteps / count
    return tuple(int(step * i + step / 2) for i in range(count))


@dataclass(frozen=True)
class ClassifierSchedule:
    """Stages of the diffusion classifier, validated on construction.

    Args:
        stages: ``((timesteps, keep), ...)``. Timesteps are distinct integers, no timestep appears
            in two stages, ``keep`` is non-increasing and the last stage keeps 1.
        name: a label for reports.
    """

    stages: tuple[tuple[tuple[int, ...], int], ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        try:
            stages = tuple((tuple(int(t) for t in ts), int(keep)) for ts, keep in self.stages)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"ClassifierSchedule.stages={self.stages!r} is not allowed; allowed: ((timesteps, keep), ...) "
                f"with integer timesteps and keep ({exc})"
            ) from None
        if not stages:
            raise ConfigError("ClassifierSchedule.stages=() is not allowed; allowed: at least one (timesteps, keep) stage")
        seen: set[int] = set()
        previous_keep = None
        for index, (timesteps, keep) in enumerate(stages):
            if not timesteps or len(set(timesteps)) != len(timesteps) or min(timesteps) < 0:
                raise ConfigError(
                    f"ClassifierSchedule stage {index} timesteps={timesteps!r} is not allowed; "
                    "allowed: a non-empty tuple of distinct integers >= 0"
                )
            if seen & set(timesteps):
                raise ConfigError(
                    f"ClassifierSchedule stage {index} repeats timesteps {sorted(seen & set(timesteps))}; "
                    "allowed: each timestep in one stage only"
                )
            seen |= set(timesteps)
            if keep < 1 or (previous_keep is not None and keep > previous_keep):
                raise ConfigError(
                    f"ClassifierSchedule stage {index} keep={keep} is not allowed; allowed: an integer in "
                    f"[1, {previous_keep or 'inf'}] (non-increasing)"
                )
            previous_keep = keep
        if stages[-1][1] != 1:
            raise ConfigError(
                f"ClassifierSchedule last stage keep={stages[-1][1]} is not allowed; allowed: 1 (the prediction)"
            )
        object.__setattr__(self, "stages", stages)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def bigain_adaptive(cls) -> "ClassifierSchedule":
        """BiGain's schedule: 5 timesteps for every class, the best 5 get the other 15."""
        grid = uniform_grid(20)
        first = (125, 325, 525, 725, 925)
        rest = tuple(t for t in grid if t not in first)
        return cls(stages=((first, 5), (rest, 1)), name="bigain-adaptive")

    @classmethod
    def uniform(cls, count: int = 20, num_train_timesteps: int = 1000) -> "ClassifierSchedule":
        """Every class at ``count`` evenly spaced timesteps (``count * C`` calls per image)."""
        return cls(stages=((uniform_grid(count, num_train_timesteps), 1),), name=f"uniform-{count}")

    @classmethod
    def named(cls, name: str) -> "ClassifierSchedule":
        """``bigain-adaptive`` or ``uniform`` / ``uniform-N``."""
        if name == "bigain-adaptive":
            return cls.bigain_adaptive()
        if name == "uniform":
            return cls.uniform()
        if name.startswith("uniform-") and name[len("uniform-"):].isdigit():
            return cls.uniform(int(name[len("uniform-"):]))
        raise ConfigError(f"classifier schedule {name!r} is not known; allowed: bigain-adaptive | uniform | uniform-N")

    # -- derived values -------------------------------------------------------------------------
    @property
    def timesteps(self) -> tuple[int, ...]:
        """Every timestep of every stage, sorted: the columns of per-timestep errors."""
        return tuple(sorted(t for ts, _ in self.stages for t in ts))

    def active_counts(self, num_classes: int) -> tuple[int, ...]:
        """How many classes are scored in each stage."""
        counts, active = [], num_classes
        for _, keep in self.stages:
            counts.append(active)
            active = min(active, keep)
        return tuple(counts)

    def calls_per_image(self, num_classes: int) -> int:
        """eps evaluations per image: ``5 C + 75`` for the BiGain schedule with C >= 5."""
        return sum(len(ts) * n for (ts, _), n in zip(self.stages, self.active_counts(num_classes)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stages": [{"timesteps": list(ts), "keep": keep} for ts, keep in self.stages]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClassifierSchedule":
        try:
            stages = tuple((tuple(s["timesteps"]), s["keep"]) for s in data["stages"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"classifier schedule {data!r} is not allowed; allowed: {{'stages': [{{'timesteps': [...], 'keep': k}}]}}"
            ) from exc
        return cls(stages=stages, name=str(data.get("name", "custom")))


def alphas_cumprod(scheduler_config: Mapping[str, Any]) -> torch.Tensor:
    """``abar_t`` for t in ``[0, T)`` as float32 ``[T]``, from a diffusers scheduler config dict.

    Any diffusers scheduler's config works: the DDPM scheduler reads only the beta fields
    (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``, ``trained_betas``,
    ``rescale_betas_zero_snr``) and ignores the rest.
    """
    from diffusers import DDPMScheduler  # heavy import, only when needed

    try:
        scheduler = DDPMScheduler.from_config(dict(scheduler_config))
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise ConfigError(f"scheduler config {dict(scheduler_config)!r} is not usable: {exc}") from exc
    return scheduler.alphas_cumprod.to(torch.float32)


def check_timesteps(timesteps: Sequence[int], num_train_timesteps: int) -> None:
    """Raise :class:`ConfigError` if a timestep is outside ``[0, T)``."""
    bad = [t for t in timesteps if not 0 <= t < num_train_timesteps]
    if bad:
        raise ConfigError(
            f"classifier timesteps {bad} are outside the scheduler's range; allowed: [0, {num_train_timesteps})"
        )
