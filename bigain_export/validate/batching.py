"""Call an eps function in fixed-size batches.

Every validation routine talks to a model through one callable, the **eps function**::

    eps_fn(sample [B, C, H, W] float, timestep [B] long, class_labels [B] long) -> eps [B, C, H, W]

An eager ``Denoiser``, a ``torch.compile`` wrapper and an engine runner all fit. Engines are often
built for one static batch size, so :func:`call_batched` always hands the function exactly
``batch_size`` rows: the last chunk is padded by repeating its final row, and the padding is
dropped from the output. Repeating a real row (rather than zeros) keeps the padded inputs in the
model's normal range, so a padded call costs nothing numerically.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from ..errors import ValidationError

logger = logging.getLogger(__name__)

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def check_batch_size(batch_size: int) -> int:
    """Return ``batch_size`` if it is a positive int, else raise :class:`ValidationError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size={batch_size!r} is not allowed; allowed: an integer >= 1")
    return batch_size


def _pad(tensor: torch.Tensor, size: int) -> torch.Tensor:
    missing = size - tensor.shape[0]
    if missing == 0:
        return tensor
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])], dim=0)


@torch.no_grad()
def call_batched(
    eps_fn: EpsFn,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    class_labels: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """Evaluate ``eps_fn`` on any number of rows, ``batch_size`` rows per call.

    Args:
        eps_fn: the eps function (see module docstring).
        sample: ``[M, C, H, W]`` noisy inputs.
        timestep: ``[M]`` long timesteps.
        class_labels: ``[M]`` long class labels.
        batch_size: rows per call; the last chunk is padded to this size.

    Returns:
        ``[M, C, H, W]`` eps predictions in float32 on ``sample``'s device.
    """
    check_batch_size(batch_size)
    total = sample.shape[0]
    if timestep.shape != (total,) or class_labels.shape != (total,):
        raise ValidationError(
            f"eps inputs disagree: sample {tuple(sample.shape)}, timestep {tuple(timestep.shape)}, "
            f"class_labels {tuple(class_labels.shape)}; allowed: [M, C, H, W], [M], [M]"
        )
    outputs = []
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        x = _pad(sample[start:stop], batch_size)
        t = _pad(timestep[start:stop], batch_size)
        y = _pad(class_labels[start:stop], batch_size)
        out = eps_fn(x, t, y)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValidationError(f"eps function returned {got}; expected a tensor of shape {tuple(x.shape)}")
        outputs.append(out[: stop - start].to(device=sample.device, dtype=torch.float32))
    if not outputs:
        return sample.new_zeros(sample.shape, dtype=torch.float32)
    return torch.cat(outputs, dim=0)
