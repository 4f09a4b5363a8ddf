"""Sampling from a :class:`Denoiser` in one call: a convenience over the project's one sampler,
:func:`bigain_export.validate.sampling.sample` (DDIM or Euler from the model's own scheduler
config, classifier-free guidance, per-image seeds)."""

from __future__ import annotations

import torch

from .denoiser import Denoiser


def sample(
    denoiser: Denoiser,
    class_labels: torch.Tensor,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    sampler: str = "ddim",
    seed: int = 0,
    batch_size: int = 64,
) -> torch.Tensor:
    """One image per label: ``class_labels [B]`` long -> ``[B, C, H, W]`` float32 in [-1, 1].

    Image i starts from noise seeded by ``seed + i``, so a seed gives the same images on every
    device and batch size. Guidance 1.0 is the right setting for the built-ins (docs/models.md);
    the paper used 4.0 (DiT-XL/2) and 7.5 (SD 2).
    """
    from ..validate.sampling import SamplingConfig
    from ..validate.sampling import sample as sample_images

    config = SamplingConfig(sampler=sampler, num_steps=num_inference_steps, guidance_scale=guidance_scale,
                            null_label=denoiser.null_label, seed=seed)
    with torch.no_grad():
        return sample_images(denoiser, class_labels.to(denoiser.device), scheduler_config=denoiser.scheduler_config,
                             sample_shape=denoiser.sample_shape, config=config, batch_size=batch_size,
                             device=denoiser.device)


def ddim_sample(denoiser: Denoiser, class_labels: torch.Tensor, num_inference_steps: int = 50,
                guidance_scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """DDIM (eta 0); see :func:`sample`."""
    return sample(denoiser, class_labels, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)
