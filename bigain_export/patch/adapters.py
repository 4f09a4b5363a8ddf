"""Where BiGain goes in each supported model family: one adapter per family, found by class name.

Classes are matched by name along the MRO (as tomesd does), so patching never imports diffusers
and subclasses of the supported models are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PAPER_DIT_BLOCKS, BiGainConfig
from ..errors import UnsupportedModelError

UNET_CLASSES = ("UNet2DConditionModel",)
DIT_CLASSES = ("DiTTransformer2DModel", "PixArtTransformer2DModel")
SUPPORTED = UNET_CLASSES + DIT_CLASSES


def class_names(obj: object) -> list[str]:
    return [cls.__name__ for cls in type(obj).__mro__]


def is_instance_named(obj: object, names: tuple[str, ...]) -> bool:
    return any(name in names for name in class_names(obj))


@dataclass(frozen=True)
class Target:
    """One transformer block whose self-attention (``block.attn1``) gets patched."""

    name: str
    block: torch.nn.Module
    metric_from_block_input: bool


@dataclass(frozen=True)
class ModelLayout:
    """What the patcher needs to know about a model family."""

    family: str  # "unet" | "dit"
    patch_size: int
    targets: tuple[Target, ...]
    sample_arg: str  # name of the spatial input argument
    num_train_timesteps: int = 1000
    unet_levels: tuple[int, ...] | None = None  # UNets: the levels patched (the config's, or the auto choice)


def _check_self_attention(name: str, block: torch.nn.Module) -> None:
    if getattr(block, "only_cross_attention", False) or getattr(block, "attn1", None) is None:
        raise UnsupportedModelError(f"block {name} has no self-attention attn1 (only_cross_attention)")
    if not hasattr(block.attn1, "processor"):
        raise UnsupportedModelError(
            f"block {name}.attn1 is a {type(block.attn1).__name__} without an attention processor slot"
        )


def _unet_level(name: str, num_down: int, num_up: int) -> int:
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "up_blocks":
        return num_up - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return num_down - 1
    raise UnsupportedModelError(f"transformer block {name} is outside down/mid/up blocks")


def unet_layout(unet: torch.nn.Module, config: BiGainConfig) -> ModelLayout:
    """Self-attention of the transformer blocks at the config's resolution levels (0 = full).

    ``unet_levels=None`` picks the highest-resolution level that has transformer blocks: level 0
    on SD 2.x, level 1 on SDXL (whose full-resolution blocks are plain ResNets).
    """
    num_down, num_up = len(unet.down_blocks), len(unet.up_blocks)
    found: dict[int, list[Target]] = {}
    for name, module in unet.named_modules():
        if type(module).__name__ != "BasicTransformerBlock" and not is_instance_named(
            module, ("BasicTransformerBlock",)
        ):
            continue
        level = _unet_level(name, num_down, num_up)
        found.setdefault(level, []).append(Target(name, module, metric_from_block_input=True))
    if not found:
        raise UnsupportedModelError(f"{type(unet).__name__} has no transformer blocks to patch")
    levels = config.unet_levels if config.unet_levels is not None else (min(found),)
    missing = [level for level in levels if level not in found]
    if missing:
        raise UnsupportedModelError(
            f"UNet has no transformer blocks at level(s) {missing}; levels with blocks: {sorted(found)}"
        )
    targets = tuple(t for level in levels for t in found[level])
    for target in targets:
        _check_self_attention(target.name, target.block)
    return ModelLayout("unet", 1, targets, "sample", unet_levels=tuple(levels))


def dit_blocks(config: BiGainConfig, depth: int) -> tuple[int, ...]:
    """Block indices to patch: the config's, or the paper's 1-5 and 7-11 within ``depth``."""
    if config.dit_blocks is None:
        return tuple(i for i in PAPER_DIT_BLOCKS if i < depth)
    bad = [i for i in config.dit_blocks if i >= depth]
    if bad:
        raise UnsupportedModelError(
            f"BiGainConfig.dit_blocks has {bad}, but the model has {depth} blocks (allowed: 0..{depth - 1})"
        )
    return config.dit_blocks


def dit_layout(model: torch.nn.Module, config: BiGainConfig) -> ModelLayout:
    """Self-attention of the selected DiT / PixArt transformer blocks."""
    blocks = model.transformer_blocks
    indices = dit_blocks(config, len(blocks))
    if not indices:
        raise UnsupportedModelError(f"no DiT block selected among {len(blocks)} blocks")
    targets = tuple(Target(f"transformer_blocks.{i}", blocks[i], False) for i in indices)
    for target in targets:
        _check_self_attention(target.name, target.block)
    return ModelLayout("dit", int(model.config.patch_size), targets, "hidden_states")


def layout_of(model: torch.nn.Module, config: BiGainConfig) -> ModelLayout:
    if is_instance_named(model, UNET_CLASSES):
        return unet_layout(model, config)
    if is_instance_named(model, DIT_CLASSES):
        return dit_layout(model, config)
    raise UnsupportedModelError(
        f"found {type(model).__name__}; supported: {', '.join(SUPPORTED)}, "
        "or a DiffusionPipeline / Denoiser holding one"
    )
