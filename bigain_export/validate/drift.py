"""Numerical drift of an eps function against a reference one, on fixed random inputs.

Accuracy and FID are the user-facing gates, but both are coarse: a kernel that is slightly wrong
can leave them inside tolerance on a small validation set. Drift compares raw eps outputs on the
same inputs and catches that early. Inputs are drawn once from a seed: ``x ~ N(0, 1)``, timesteps
uniform over ``[0, T)``, labels uniform over the classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from .batching import EpsFn, call_batched


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
