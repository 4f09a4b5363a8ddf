"""Class-conditional sampling with DDIM or Euler, classifier-free guidance and fixed seeds.

Generation quality (FID) of an engine is only comparable with the eager model's if both draw the
same images from the same noise. Every image therefore owns a generator seeded with
``seed + index`` (``index`` = the image's global index): its starting noise and any per-step noise
(DDIM with ``eta > 0``) come from it alone, so the images do not depend on batch size, on chunking
or on how images are sharded across processes.

The eps function takes integer timesteps (engines take int64). DDIM's timesteps are integers;
Euler's are integers for ``timestep_spacing`` ``leading`` / ``trailing`` but fractional for
``linspace`` (its default), and are then rounded to the nearest integer for the eps call only: the
scheduler still steps with its own sigmas.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, ValidationError
from .batching import EpsFn, call_batched, check_batch_size

logger = logging.getLogger(__name__)

SAMPLERS = ("ddim", "euler")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings, validated on construction.

    Args:
        sampler: ``ddim`` (diffusers ``DDIMScheduler``) or ``euler`` (``EulerDiscreteScheduler``).
        num_steps: denoising steps (the paper: 50).
        guidance_scale: classifier-free guidance scale; 1 disables guidance (the paper's DiT: 4.0).
        null_label: class label of the unconditional branch; required when guidance_scale != 1.
        eta: DDIM stochasticity (0 = deterministic DDIM); must be 0 for Euler.
        seed: image i starts from ``torch.Generator().manual_seed(seed + i)``.
    """

    sampler: str = "ddim"
    num_steps: int = 50
    guidance_scale: float = 1.0
    null_label: int | None = None
    eta: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler={self.sampler!r} is not allowed; allowed: {' | '.join(SAMPLERS)}")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ConfigError(f"num_steps={self.num_steps!r} is not allowed; allowed: an integer >= 1")
        if not isinstance(self.guidance_scale, (int, float)) or self.guidance_scale < 0:
            raise ConfigError(f"guidance_scale={self.guidance_scale!r} is not allowed; allowed: a number >= 0")
        if self.guidance_scale != 1 and self.null_label is None:
            raise ConfigError(
                f"guidance_scale={self.guidance_scale} needs null_label (the unconditional class label); "
                "allowed: an integer label, or guidance_scale=1"
            )
        if self.null_label is not None and (isinstance(self.null_label, bool) or not isinstance(self.null_label, int)):
            raise ConfigError(f"null_label={self.null_label!r} is not allowed; allowed: an integer or None")
        if not isinstance(self.eta, (int, float)) or self.eta < 0 or (self.sampler == "euler" and self.eta != 0):
            raise ConfigError(f"eta={self.eta!r} is not allowed; allowed: a number >= 0 for ddim, 0 for euler")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed={self.seed!r} is not allowed; allowed: an integer")

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scheduler(config: SamplingConfig, scheduler_config: Mapping[str, Any]):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler  # heavy import, only when needed

    cfg = dict(scheduler_config)
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        # The eps function returns eps by contract, whatever the network predicts internally.
        logger.info("scheduler prediction_type %r overridden by 'epsilon'", cfg["prediction_type"])
    cls = DDIMScheduler if config.sampler == "ddim" else EulerDiscreteScheduler
    scheduler = cls.from_config(cfg, prediction_type="epsilon")
    scheduler.set_timesteps(config.num_steps)
    return scheduler


def _guided_eps(
    eps_fn: EpsFn, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, config: SamplingConfig, batch_size: int
) -> torch.Tensor:
    if not config.guided:
        return call_batched(eps_fn, x, t, y, batch_size)
    null = torch.full_like(y, config.null_label)
    both = call_batched(eps_fn, torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), batch_size)
    cond, uncond = both.chunk(2)
    return uncond + config.guidance_scale * (cond - uncond)


@torch.no_grad()
def sample(
    eps_fn: EpsFn,
    class_labels: torch.Tensor,
    *,
    scheduler_config: Mapping[str, Any],
    sample_shape: Sequence[int],
    config: SamplingConfig | None = None,
    batch_size: int = 32,
    indices: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Draw one image per class label.

    Args:
        eps_fn: ``eps_fn(sample [B, C, H, W], timestep [B] long, class_labels [B] long) -> [B, C, H, W]``.
        class_labels: ``[N]`` long, the class of each image.
        scheduler_config: diffusers scheduler config dict of the model.
        sample_shape: ``(C, H, W)`` of one image.
        config: sampler, steps, guidance, null label, eta and seed (default: 50-step DDIM, no guidance).
        batch_size: rows per eps call; with guidance, ``batch_size // 2`` images per chunk so the
            conditional and unconditional rows of a chunk fill one call.
        indices: ``[N]`` global image indices (default ``0 .. N-1``) that seed each image.
        device: where noise and samples live (the eps function's device).
        progress: show a tqdm bar over denoising steps.

    Returns:
        ``[N, C, H, W]`` float32 images clamped to [-1, 1].
    """
    config = config or SamplingConfig()
    check_batch_size(batch_size)
    labels = torch.as_tensor(class_labels, dtype=torch.long)
    if labels.ndim != 1:
        raise ValidationError(f"class_labels of shape {tuple(labels.shape)} are not allowed; allowed: [N]")
    n = labels.numel()
    indices = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    if indices.shape != (n,):
        raise ValidationError(f"indices of shape {tuple(indices.shape)} do not match {n} labels")
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) != 3:
        raise ValidationError(f"sample_shape={tuple(sample_shape)} is not allowed; allowed: (C, H, W)")

    chunk = max(1, batch_size // 2) if config.guided else batch_size
    outputs = []
    steps = -(-n // chunk) * config.num_steps
    bar = tqdm(total=steps, desc=f"{config.sampler} sampling", unit="step", disable=not progress, leave=False)
    for start in range(0, n, chunk):
        generators = [torch.Generator().manual_seed(config.seed + int(i)) for i in indices[start : start + chunk]]
        y = labels[start : start + chunk].to(device)
        outputs.append(_sample_chunk(eps_fn, y, generators, shape, config, scheduler_config, batch_size, device, bar))
    bar.close()
    if not outputs:
        return torch.empty((0, *shape))
    return torch.cat(outputs).clamp_(-1, 1)


def _randn(generators: list[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    # Drawn on CPU per image so the numbers are the same on every device.
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


def _sample_chunk(eps_fn, y, generators, shape, config, scheduler_config, batch_size, device, bar) -> torch.Tensor:
    scheduler = _scheduler(config, scheduler_config)  # fresh per chunk: schedulers keep a step index
    x = _randn(generators, shape, device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        t_int = torch.full((y.numel(),), int(torch.round(t).item()), dtype=torch.long, device=device)
        if config.sampler == "euler":
            eps = _guided_eps(eps_fn, scheduler.scale_model_input(x, t), t_int, y, config, batch_size)
            x = scheduler.step(eps, t, x).prev_sample
        else:
            eps = _guided_eps(eps_fn, x, t_int, y, config, batch_size)
            noise = _randn(generators, shape, device) if config.eta > 0 else None
            x = scheduler.step(eps, t, x, eta=config.eta, variance_noise=noise).prev_sample
        bar.update(1)
    return x.to(torch.float32)
