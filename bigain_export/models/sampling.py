"""Class-conditional sampling with classifier-free guidance, through diffusers' schedulers.

The scheduler is built from the denoiser's own training config, so DDIM (the paper's DiT
protocol: 50 steps, guidance 4.0) or Euler (the SD protocol) apply unchanged.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .denoiser import Denoiser


def guided_eps(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """eps_uncond + g * (eps_cond - eps_uncond) in one batched call; g == 1 skips the null pass."""
    if guidance_scale == 1.0:
        return denoiser(x, t, labels)
    null = torch.full_like(labels, denoiser.null_label)
    eps_cond, eps_uncond = denoiser(torch.cat([x, x]), t, torch.cat([labels, null])).chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    class_labels: torch.Tensor,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 4.0,
    scheduler: SchedulerMixin | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one sample per label: class_labels [B] long -> samples [B, C, H, W] in the model's space.

    For the pixel-space built-ins that is an image in [-1, 1]. ``scheduler`` defaults to DDIM
    (eta 0) from ``denoiser.scheduler_config``; the start noise comes from ``generator`` on the
    CPU, so a seed gives the same images on every device.
    """
    if scheduler is None:
        scheduler = DDIMScheduler.from_config(denoiser.scheduler_config)
    device, dtype = denoiser.device, denoiser.dtype
    labels = class_labels.to(device)
    scheduler.set_timesteps(num_inference_steps)  # timesteps stay on the CPU: the scheduler indexes CPU tables
    x = torch.randn((labels.shape[0], *denoiser.sample_shape), generator=generator, dtype=torch.float32)
    x = x.to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(x, t)
        eps = guided_eps(denoiser, model_in.to(dtype), t, labels, guidance_scale).float()
        x = scheduler.step(eps, t, x).prev_sample
    return x


def ddim_sample(
    denoiser: Denoiser,
    class_labels: torch.Tensor,
    num_inference_steps: int = 50,
    guidance_scale: float = 4.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDIM (eta 0) sampling with guidance; see :func:`sample`."""
    return sample(
        denoiser,
        class_labels,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=generator,
    )
