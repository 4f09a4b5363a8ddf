"""Where a denoiser works: pixels (the built-ins) or a VAE's latents (SD 2.x, SDXL, DiT-XL/2).

Validation and sampling only ever call :meth:`encode_images` (images -> model space, for the
diffusion classifier) and :meth:`decode` (model space -> images, for FID and sample grids), so
they do not care which space a model lives in.

Latents follow Diffusion Classifier and the pipelines: ``encode`` is the VAE posterior **mean**
(no sampling noise) times ``scaling_factor`` (minus ``shift_factor`` first, where a VAE has one);
``decode`` undoes the scaling and runs the decoder. The VAE always computes in float32 (SDXL's
VAE overflows in fp16) on the device of its input, in chunks, under ``no_grad``.
"""

from __future__ import annotations

import torch

from ..errors import DataError

ENCODE_CHUNK = 8  # images per VAE call: bounds activation memory at 512-1024 px


class PixelSpace:
    """Identity: the model denoises images in [-1, 1] directly (the built-in Fashion-MNIST models)."""

    kind = "pixels"

    def __init__(self, image_shape: tuple[int, int, int]):
        self.image_shape = tuple(int(s) for s in image_shape)
        self.sample_shape = self.image_shape

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images, self.image_shape)
        return images.float()

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.float().clamp(-1, 1)


class LatentSpace:
    """A diffusers ``AutoencoderKL``: images ``[N, 3, H, W]`` in [-1, 1] <-> latents ``[N, c, H/f, W/f]``."""

    kind = "latents"

    def __init__(self, vae: torch.nn.Module, resolution: int):
        self.vae = vae.float().eval().requires_grad_(False)
        config = vae.config
        factor = 2 ** (len(config.block_out_channels) - 1)
        if resolution % factor:
            raise DataError(f"resolution {resolution} is not a multiple of the VAE's factor {factor}")
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.image_shape = (int(config.in_channels), resolution, resolution)
        self.sample_shape = (int(config.latent_channels), resolution // factor, resolution // factor)

    def _on(self, tensor: torch.Tensor) -> torch.nn.Module:
        return self.vae.to(tensor.device)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[N, 3, H, W]`` in [-1, 1] -> latents ``[N, c, h, w]`` float32 (posterior mean, scaled)."""
        _check_images(images, self.image_shape)
        vae = self._on(images)
        chunks = [vae.encode(x.float()).latent_dist.mean for x in images.split(ENCODE_CHUNK)]
        latents = torch.cat(chunks) if chunks else images.new_zeros((0, *self.sample_shape))
        return (latents - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents ``[N, c, h, w]`` -> images ``[N, 3, H, W]`` float32 in [-1, 1]."""
        vae = self._on(latents)
        chunks = [vae.decode(z.float() / self.scaling_factor + self.shift_factor).sample for z in latents.split(ENCODE_CHUNK)]
        images = torch.cat(chunks) if chunks else latents.new_zeros((0, *self.image_shape))
        return images.clamp(-1, 1)


def _check_images(images: torch.Tensor, shape: tuple[int, int, int]) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"images of shape {list(images.shape)} do not fit this model; allowed: [N, {', '.join(map(str, shape))}] "
                        "in [-1, 1] (image folders are resized and cropped to it)")
