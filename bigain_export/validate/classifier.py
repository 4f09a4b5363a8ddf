"""Diffusion classifier (Li et al., ICCV 2023) exactly as BiGain evaluates it.

For an image x0 the error of class c is the mean over timesteps t of

    || eps_t - eps_fn(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_t, t, c) ||^2   (mean over pixels)

and the prediction is the class of lowest error. At a given t the SAME noise eps_t is used for
every class: the comparison between classes is then paired, which is what makes a handful of
timesteps enough. Which classes are scored at which t follows a :class:`ClassifierSchedule`
(default: BiGain's two-stage adaptive schedule, ``5 C + 75`` calls per image).

Noise is drawn per image from ``torch.Generator().manual_seed(base + index)``, where ``base`` is
one integer drawn from the generator you pass and ``index`` is the image's global index. Each
image's noise therefore depends only on the seed and its index, not on batching or on which
process evaluates it, so sharded runs (``distributed.py``) reproduce single-process runs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from ..errors import ValidationError
from .batching import EpsFn, call_batched, check_batch_size
from .schedule import ClassifierSchedule, alphas_cumprod, check_timesteps
from .stats import wilson_interval

logger = logging.getLogger(__name__)

# Images per block: bounds the memory of per-image noise ([block, T, C, H, W]) and of the
# per-stage job lists; batches still mix images and classes within a block.
IMAGE_BLOCK = 64


def base_seed(generator: torch.Generator | int | None) -> int:
    """One integer seed from a generator (consumed), an int (used as is) or None (seed 0)."""
    if generator is None:
        return 0
    if isinstance(generator, int) and not isinstance(generator, bool):
        return generator
    if isinstance(generator, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=generator).item())
    raise ValidationError(f"generator={generator!r} is not allowed; allowed: a torch.Generator, an int seed or None")


def image_noise(seed: int, index: int, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """The deterministic noise of image ``index``: ``[*shape]`` standard normal, drawn on CPU."""
    generator = torch.Generator().manual_seed(seed + index)
    return torch.randn(shape, generator=generator).to(device)


def _nonfinite_to_none(values: list) -> list:
    if isinstance(values, list):
        return [_nonfinite_to_none(v) for v in values]
    return values if math.isfinite(values) else None


@dataclass(frozen=True)
class ClassificationResult:
    """What :func:`classify` found, for N images and C classes.

    Attributes:
        predictions: ``[N]`` long, the predicted class of each image.
        labels: ``[N]`` long, the true class.
        errors: ``[N, C]`` float32 mean error over the timesteps of every stage for the classes
            scored in the last stage; ``inf`` for classes pruned earlier.
        timestep_errors: ``[N, C, T]`` float32 error at each timestep of ``timesteps``; NaN where a
            class was not scored.
        indices: ``[N]`` long global image indices (noise seeds; sharding order).
        timesteps: the T timesteps, sorted.
        schedule: the schedule used.
        eps_calls: eps evaluations made (rows, not batches; padding excluded).
        seed: the base noise seed (image i used ``seed + indices[i]``).
    """

    predictions: torch.Tensor
    labels: torch.Tensor
    errors: torch.Tensor
    timestep_errors: torch.Tensor
    indices: torch.Tensor
    timesteps: tuple[int, ...]
    schedule: ClassifierSchedule
    eps_calls: int
    seed: int = 0

    @property
    def num_images(self) -> int:
        return int(self.labels.numel())

    @property
    def correct(self) -> int:
        return int((self.predictions == self.labels).sum().item())

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy as a fraction in [0, 1] (NaN for no images)."""
        return self.correct / self.num_images if self.num_images else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy, fractions."""
        return wilson_interval(self.correct, self.num_images)

    def to_dict(self, per_image: bool = True) -> dict[str, Any]:
        """JSON-ready summary; ``per_image`` adds predictions, labels, indices and class errors
        (pruned classes as ``null``)."""
        data: dict[str, Any] = {
            "accuracy": self.accuracy,
            "accuracy_ci95": list(self.interval),
            "correct": self.correct,
            "num_images": self.num_images,
            "eps_calls": self.eps_calls,
            "seed": self.seed,
            "schedule": self.schedule.to_dict(),
        }
        if per_image:
            data["indices"] = self.indices.tolist()
            data["labels"] = self.labels.tolist()
            data["predictions"] = self.predictions.tolist()
            data["errors"] = _nonfinite_to_none(self.errors.tolist())
        return data

    @classmethod
    def merge(cls, parts: list["ClassificationResult"]) -> "ClassificationResult":
        """Concatenate results over disjoint images, ordered by global index."""
        if not parts:
            raise ValidationError("cannot merge zero classification results")
        indices = torch.cat([p.indices for p in parts])
        order = torch.argsort(indices)
        if indices.unique().numel() != indices.numel():
            raise ValidationError("classification results to merge share image indices; allowed: disjoint shards")
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])[order]  # noqa: E731
        return cls(
            predictions=cat("predictions"),
            labels=cat("labels"),
            errors=cat("errors"),
            timestep_errors=cat("timestep_errors"),
            indices=indices[order],
            timesteps=parts[0].timesteps,
            schedule=parts[0].schedule,
            eps_calls=sum(p.eps_calls for p in parts),
            seed=parts[0].seed,
        )


@torch.no_grad()
def classify(
    eps_fn: EpsFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    scheduler_config: Mapping[str, Any],
    schedule: ClassifierSchedule | None = None,
    batch_size: int = 32,
    generator: torch.Generator | int | None = None,
    indices: torch.Tensor | None = None,
    progress: bool = False,
) -> ClassificationResult:
    """Classify ``images`` with a class-conditional eps model.

    Args:
        eps_fn: ``eps_fn(sample [B, C, H, W], timestep [B] long, class_labels [B] long) -> [B, C, H, W]``.
        images: ``[N, C, H, W]`` clean inputs x0 in the model's space (pixels in [-1, 1], or latents).
        labels: ``[N]`` true classes in ``[0, num_classes)``.
        num_classes: candidate classes are ``0 .. num_classes - 1``.
        scheduler_config: diffusers scheduler config dict (gives ``abar_t``).
        schedule: stages of timesteps and survivors; default :meth:`ClassifierSchedule.bigain_adaptive`.
        batch_size: rows per eps call (the last call is padded to it).
        generator: source of the noise seed (see module docstring); an int is used as the seed.
        indices: ``[N]`` global image indices (default ``0 .. N-1``): image i's noise is seeded by
            ``seed + indices[i]``.
        progress: show a tqdm bar over eps evaluations.

    Returns:
        A :class:`ClassificationResult`.
    """
    schedule = schedule or ClassifierSchedule.bigain_adaptive()
    check_batch_size(batch_size)
    if images.ndim != 4:
        raise ValidationError(f"images of shape {tuple(images.shape)} are not allowed; allowed: [N, C, H, W]")
    n = images.shape[0]
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if labels.shape != (n,):
        raise ValidationError(f"labels of shape {tuple(labels.shape)} do not match {n} images; allowed: [{n}]")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValidationError(f"num_classes={num_classes!r} is not allowed; allowed: an integer >= 1")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValidationError(f"labels span [{labels.min()}, {labels.max()}]; allowed: [0, {num_classes})")
    indices = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long).cpu()
    if indices.shape != (n,):
        raise ValidationError(f"indices of shape {tuple(indices.shape)} do not match {n} images")

    abar = alphas_cumprod(scheduler_config)
    timesteps = schedule.timesteps
    check_timesteps(timesteps, abar.numel())
    column = {t: j for j, t in enumerate(timesteps)}
    seed = base_seed(generator)
    device = images.device

    timestep_errors = torch.full((n, num_classes, len(timesteps)), float("nan"))
    errors = torch.full((n, num_classes), float("inf"))
    predictions = torch.empty(n, dtype=torch.long)
    total_calls = n * schedule.calls_per_image(num_classes)
    calls = 0
    bar = tqdm(total=total_calls, desc="diffusion classifier", unit="eval", disable=not progress, leave=False)
    for start in range(0, n, IMAGE_BLOCK):
        stop = min(start + IMAGE_BLOCK, n)
        x0 = images[start:stop].to(torch.float32)
        noise = torch.stack(
            [image_noise(seed, int(i), (len(timesteps), *x0.shape[1:]), device) for i in indices[start:stop]]
        )  # [b, T, C, H, W]: noise[:, j] is shared by all classes at timesteps[j]
        block_err = timestep_errors[start:stop]  # view: written in place
        active = torch.arange(num_classes).expand(stop - start, num_classes)  # [b, k]
        for stage_ts, keep in schedule.stages:
            cols = torch.tensor([column[t] for t in stage_ts])
            b, k, s = active.shape[0], active.shape[1], len(stage_ts)
            # Jobs ordered (image, timestep, class): consecutive rows share x0 and noise.
            img = torch.arange(b).view(b, 1, 1).expand(b, s, k).reshape(-1)
            col = cols.view(1, s, 1).expand(b, s, k).reshape(-1)
            cls = active.view(b, 1, k).expand(b, s, k).reshape(-1)
            for j in range(0, img.numel(), batch_size):
                ji, jc, jy = img[j : j + batch_size], col[j : j + batch_size], cls[j : j + batch_size]
                t = torch.tensor(timesteps)[jc]
                a = abar[t].to(device).view(-1, 1, 1, 1)
                eps = noise[ji.to(device), jc.to(device)]
                x_t = a.sqrt() * x0[ji.to(device)] + (1 - a).sqrt() * eps
                pred = call_batched(eps_fn, x_t, t.to(device), jy.to(device), batch_size)
                err = (eps - pred).square().flatten(1).mean(dim=1).cpu()
                block_err[ji, jy, jc] = err
                calls += ji.numel()
                bar.update(ji.numel())
            means = block_err.nanmean(dim=-1).gather(1, active)  # [b, k], over timesteps so far
            order = torch.sort(means, dim=1, stable=True).indices[:, : min(keep, k)]
            survivors, active = active, active.gather(1, order)
        final = block_err.nanmean(dim=-1).gather(1, survivors)  # scored in the last stage
        errors[start:stop].scatter_(1, survivors, final)
        predictions[start:stop] = active[:, 0]
    bar.close()
    assert calls == total_calls, (calls, total_calls)
    result = ClassificationResult(
        predictions=predictions,
        labels=labels,
        errors=errors,
        timestep_errors=timestep_errors,
        indices=indices,
        timesteps=timesteps,
        schedule=schedule,
        eps_calls=calls,
        seed=seed,
    )
    logger.debug("diffusion classifier: %d/%d correct, %d eps calls", result.correct, n, calls)
    return result

