"""The architectures of the built-in models and of the tiny random test models, as diffusers configs.

Both families are pixel-space (no VAE), class-conditional, epsilon-predicting, sized for 1x32x32:

* DiT (:class:`~diffusers.DiTTransformer2DModel`): patch 2 -> 16x16 = 256 tokens, 12 transformer
  blocks so the paper's DiT block choice (1-5 and 7-11) exists. The label embedding has the
  built-in null row ``num_classes`` used for classifier-free guidance.
* UNet (:class:`~diffusers.UNet2DConditionModel`), SD-style: cross-attention down/up blocks at full
  resolution (32x32 = 1024 tokens; 2 down + 3 up transformer blocks there, as in SD 2.x), a
  plain ResNet block at the lowest resolution, cross-attention to class tokens from
  :class:`~bigain_export.models.class_encoder.ClassTokenEncoder`.

The configs here are used to *build* models (training, tests); loading always reads the saved
``config.json``, so changing a number here never changes a shipped model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

NUM_CLASSES = 10
SAMPLE_SHAPE = (1, 32, 32)

# DDPM training schedule of the built-ins (the DDPM / DiT linear betas). Saved as
# scheduler_config.json so diffusers' DDIM, Euler, ... schedulers read it unchanged.
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,  # pixel space: x0 estimates live in [-1, 1]
    "clip_sample_range": 1.0,
    "variance_type": "fixed_small",
    "timestep_spacing": "leading",
    "steps_offset": 0,
}

DIT_CONFIG: dict[str, Any] = dict(
    sample_size=32,
    patch_size=2,
    in_channels=1,
    out_channels=1,  # epsilon only (no learned sigma)
    num_layers=12,
    num_attention_heads=2,
    attention_head_dim=64,
    num_embeds_ada_norm=NUM_CLASSES,
    norm_type="ada_norm_zero",
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=32,
    in_channels=1,
    out_channels=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 64, 96),
    layers_per_block=2,
    attention_head_dim=1,  # diffusers' UNet reads this as the number of heads: 1 head of 64 at full res
    cross_attention_dim=64,
    use_linear_projection=True,  # as SD 2.x
    norm_num_groups=32,
)
CLASS_TOKENS = 4  # ClassTokenEncoder tokens per label for the UNet's cross-attention

# Tiny random models for fast CPU tests elsewhere: same families and block layout, small width.
TINY_DIT_CONFIG: dict[str, Any] = {**DIT_CONFIG, "num_attention_heads": 2, "attention_head_dim": 16}
TINY_UNET_CONFIG: dict[str, Any] = {
    **UNET_CONFIG,
    "block_out_channels": (32, 32, 32),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
}


def build_dit(config: dict[str, Any] | None = None) -> DiTTransformer2DModel:
    """A freshly initialised DiT from ``config`` (default: the built-in ``fmnist-dit`` layout)."""
    return DiTTransformer2DModel(**copy.deepcopy(config or DIT_CONFIG))


def build_unet(config: dict[str, Any] | None = None) -> UNet2DConditionModel:
    """A freshly initialised SD-style UNet from ``config`` (default: the ``fmnist-unet`` layout)."""
    return UNet2DConditionModel(**copy.deepcopy(config or UNET_CONFIG))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
