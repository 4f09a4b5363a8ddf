"""Tiny randomly initialised diffusers models, configs built in code (no weights, no hub)."""

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel


def tiny_unet(seed: int = 0, sample_size: int = 16) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8,
    ).eval()


def tiny_dit(seed: int = 0, sample_size: int = 16, num_layers: int = 12) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        num_layers=num_layers, sample_size=sample_size, patch_size=2, num_embeds_ada_norm=10,
    ).eval()


def unet_inputs(batch: int = 2, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, size, size, generator=g), torch.tensor([999, 10][:batch]),
            torch.randn(batch, 3, 32, generator=g))


def dit_inputs(batch: int = 2, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(batch, 4, size, size, generator=g),
                timestep=torch.tensor([999, 10][:batch]), class_labels=torch.tensor([1, 7][:batch]))


def cpu_engine(denoiser, folder, config=None):
    """An ``ort-cpu`` engine of ``denoiser`` in ``folder``: batch 2 and one drift feed, the cheapest
    build (``bigain-merge`` preset unless ``config`` is given)."""
    from bigain_export import BiGainConfig
    from bigain_export.engine.build import build_engine

    engine, _ = build_engine(denoiser, config or BiGainConfig.preset("bigain-merge"), folder, backend="ort-cpu",
                             batch=2, drift_feeds_count=1)
    return engine


def micro_dit(seed: int = 0, name: str = "micro-dit"):
    """3 blocks on 8x8 tokens: the cheapest DiT that BiGain still patches (blocks 1 and 2)."""
    from bigain_export.models import Denoiser
    from bigain_export.models import architectures as arch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = arch.build_dit({**arch.TINY_DIT_CONFIG, "num_layers": 3, "patch_size": 4})
    return Denoiser(model, num_classes=10, sample_shape=(1, 32, 32), scheduler_config=arch.SCHEDULER_CONFIG,
                    name=name).eval()


def jitter(module, scale: float, seed: int):
    """Add N(0, scale) noise to every weight of ``module``, in place; returns it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=g) * scale)
    return module


def responsive_dit():
    """micro_dit with every weight drawn at random: its zero-initialised output layers would give
    one output whatever the input, so a stale buffer or a wrong engine would pass for a good one."""
    denoiser = micro_dit()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in denoiser.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return denoiser

