"""Class prompts -> a :class:`ClassTokenEncoder` table, for a real Stable Diffusion pipeline folder.

SD conditions on CLIP embeddings of a prompt. For a class-conditional :class:`Denoiser` we encode
``template.format(name)`` for every class name once (the paper: ``"a photo of a {}."``) plus the
empty prompt (the unconditional row, as SD's classifier-free guidance uses), exactly as
``StableDiffusionPipeline.encode_prompt`` does with ``clip_skip=None``: tokens padded to the
tokenizer's max length, last hidden state of the text encoder. The result is a fixed table, so
the text encoder is not part of the exported graph.

Needs the optional package ``transformers`` and the pipeline's ``tokenizer/`` and
``text_encoder/`` subfolders (safetensors weights).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError, UnsupportedModelError
from .class_encoder import ClassTokenEncoder

DEFAULT_TEMPLATE = "a photo of a {}."


@torch.no_grad()
def prompt_class_encoder(
    pipeline_dir: str | Path,
    class_names: list[str],
    template: str = DEFAULT_TEMPLATE,
    batch_size: int = 16,
) -> ClassTokenEncoder:
    """Encode one prompt per class plus the empty prompt with the pipeline's CLIP text encoder.

    Returns a ClassTokenEncoder with table [len(class_names) + 1, max_length, hidden] (fp32),
    the last row being the empty prompt (the null label).
    """
    pipeline_dir = Path(pipeline_dir)
    for sub in ("tokenizer", "text_encoder"):
        if not (pipeline_dir / sub).is_dir():
            raise DataError(f"{pipeline_dir} has no {sub}/ folder; a UNet without class_encoder needs the "
                            "pipeline's tokenizer and text_encoder to encode class prompts")
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:
        raise UnsupportedModelError(
            "encoding class prompts for a Stable Diffusion UNet needs `pip install transformers`"
        ) from exc
    tokenizer = CLIPTokenizer.from_pretrained(pipeline_dir / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder", use_safetensors=True).eval()
    prompts = [template.format(name) for name in class_names] + [""]
    rows = []
    for start in range(0, len(prompts), batch_size):
        ids = tokenizer(
            prompts[start : start + batch_size],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        rows.append(encoder(ids)[0].float())
    return ClassTokenEncoder.from_table(torch.cat(rows))
