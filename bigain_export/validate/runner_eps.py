"""Adapt an inference runner (Polygraphy-style) to the eps-function interface.

Engines are driven through runners with ``activate()``, ``infer(feed_dict)`` and
``deactivate()``, fed numpy arrays by tensor name. :class:`RunnerEps` turns one into
``eps_fn(sample, timestep, class_labels) -> eps`` so validation treats engines and eager models
alike. Feeds follow the exported denoiser's I/O: ``sample`` float32, ``timestep`` and
``class_labels`` int64, output ``eps`` float32 (engines cast internally at lower precision).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..errors import ValidationError

logger = logging.getLogger(__name__)


class RunnerEps:
    """``eps_fn`` over a runner; activates it on first use.

    Args:
        runner: object with ``activate()``, ``infer(dict[str, np.ndarray]) -> dict[str, np.ndarray]``,
            ``deactivate()`` and ``is_active`` (Polygraphy's ``BaseRunner`` has all four).
        batch_size: the runner's static batch, if it has one (checked on every call).
        output: name of the eps output.
    """

    def __init__(self, runner: Any, batch_size: int | None = None, output: str = "eps") -> None:
        self.runner = runner
        self.batch_size = batch_size
        self.output = output

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        if self.batch_size is not None and sample.shape[0] != self.batch_size:
            raise ValidationError(
                f"runner {getattr(self.runner, 'name', self.runner)!r} takes batch {self.batch_size}, got "
                f"{sample.shape[0]}; pass batch_size={self.batch_size} to the validation functions"
            )
        if not getattr(self.runner, "is_active", False):
            self.runner.activate()
        feed = {
            "sample": sample.detach().to("cpu", torch.float32).numpy(),
            "timestep": timestep.detach().to("cpu", torch.int64).numpy(),
            "class_labels": class_labels.detach().to("cpu", torch.int64).numpy(),
        }
        outputs = self.runner.infer(feed)
        if self.output not in outputs:
            raise ValidationError(f"runner returned outputs {sorted(outputs)}; expected {self.output!r}")
        return torch.from_numpy(np.asarray(outputs[self.output], dtype=np.float32)).to(sample.device)

    def close(self) -> None:
        """Deactivate the runner (frees its session or engine)."""
        if getattr(self.runner, "is_active", False):
            self.runner.deactivate()
