"""Tiny random diffusers *pipeline folders* written the way real ones are laid out (no hub, no weights).

Each builder writes ``model_index.json`` plus one subfolder per component with ``save_pretrained``
(safetensors), like ``stable-diffusion-2-base``, ``stable-diffusion-xl-base-1.0`` and
``DiT-XL-2-256`` on disk, only a few channels wide: images 32x32 RGB, latents 4x16x16 (a VAE
with one downsampling), CLIP text encoders with 32 tokens of width 16 and a byte-level vocabulary
written here (no merges), so every prompt tokenises without downloading anything.

* ``write_sd(folder)``: SD 2-style. UNet with cross-attention at level 0 (16x16 = 256 tokens).
* ``write_sdxl(folder)``: SDXL-style. Two text encoders (the second with a projection: pooled
  embeddings), ``addition_embed_type="text_time"`` (text_embeds + time_ids), no attention at
  level 0 (plain ResNets), cross-attention at level 1 (8x8 = 64 tokens).
* ``write_dit(folder)``: DiT-style. ``DiTTransformer2DModel`` with learned sigma (8 output
  channels for 4 latent ones), 4 blocks, ImageNet's 1000 labels (DiTPipeline hard-codes the null label
  1000), 4 of them named in ``model_index.json``'s ``id2label``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

IMAGE_SIZE = 32
LATENT_SIZE = 16
MAX_TOKENS = 32
DIT_LABELS = {"0": "tabby, tabby cat", "1": "golden retriever", "2": "goldfish", "3": "school bus"}


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP's byte -> printable character table (256 characters)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(folder: Path, max_length: int = MAX_TOKENS) -> int:
    """A CLIP tokenizer folder (vocab.json, merges.txt, configs); returns the vocabulary size."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return len(vocab)


def _text_encoder(vocab: int, hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=MAX_TOKENS, bos_token_id=512, eos_token_id=513,
        pad_token_id=513, projection_dim=projection or hidden,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=IMAGE_SIZE, scaling_factor=0.5,
    ).eval()


def _sd_scheduler(cls_name: str = "DDIMScheduler"):
    import diffusers

    return getattr(diffusers, cls_name)(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    ) if cls_name == "DDIMScheduler" else getattr(diffusers, cls_name)(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="leading", steps_offset=1,
    )


def _save(pipe, folder: Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def write_sd(folder: Path, seed: int = 0) -> Path:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    vocab = write_tokenizer(folder / "tokenizer")
    from transformers import CLIPTokenizer

    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8, use_linear_projection=True,
    ).eval()
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=_text_encoder(vocab, 16), tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        unet=unet, scheduler=_sd_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, folder)


def write_sdxl(folder: Path, seed: int = 0) -> Path:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    vocab = write_tokenizer(folder / "tokenizer")
    write_tokenizer(folder / "tokenizer_2")
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=6 * 4 + 16,
        transformer_layers_per_block=1,
    ).eval()
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(vocab, 16), text_encoder_2=_text_encoder(vocab, 16, projection=16),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        unet=unet, scheduler=_sd_scheduler("EulerDiscreteScheduler"), force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _save(pipe, folder)


def write_dit(folder: Path, seed: int = 0) -> Path:
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=4,
        sample_size=LATENT_SIZE, patch_size=2, num_embeds_ada_norm=1000,  # DiTPipeline hard-codes null label 1000
    ).eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    pipe = DiTPipeline(transformer=transformer, vae=_vae(), scheduler=scheduler, id2label=DIT_LABELS)
    _save(pipe, folder)
    # As in DiT-XL-2-256: the ImageNet names live in model_index.json (DiTPipeline does not save them).
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "id2label": DIT_LABELS}, indent=2))
    return folder


WRITERS = {"sd": write_sd, "sdxl": write_sdxl, "dit": write_dit}


def write_image_folder(folder: Path, classes: list[str], per_class: int = 2, size: int = 40, seed: int = 0) -> Path:
    """One sub-folder per class of PNGs (``size`` px, RGB, not square-cropped yet): a user's data set."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = torch.rand(3, 1, 1, generator=g) * 200
            pixels = (base + 40 * torch.rand(3, size, size + 8, generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folder / name / f"{i}.png")
    return folder
