"""Class labels -> cross-attention tokens for a UNet: a learned table, one row per label.

It stands in for the text encoder of Stable Diffusion: SD cross-attends to 77 CLIP tokens of a
prompt; our UNet cross-attends to ``num_tokens`` learned tokens of a class. Row ``num_classes``
is the null (unconditional) label used for classifier-free guidance, as the empty prompt is in SD.
A table filled with precomputed prompt embeddings (see :mod:`.prompts`) serves a real SD UNet
through the very same module.

Saved beside the UNet as ``class_encoder.safetensors`` + ``class_encoder_config.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import DataError

WEIGHTS_NAME = "class_encoder.safetensors"
CONFIG_NAME = "class_encoder_config.json"


class ClassTokenEncoder(nn.Module):
    """labels [B] long in 0..num_classes -> tokens [B, num_tokens, dim].

    Args:
        num_classes: number of real classes; label ``num_classes`` means "unconditional".
        num_tokens: tokens per label (the cross-attention sequence length).
        dim: token width, the UNet's ``cross_attention_dim``.
    """

    def __init__(self, num_classes: int, num_tokens: int, dim: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.num_tokens = int(num_tokens)
        self.dim = int(dim)
        self.table = nn.Embedding(self.num_classes + 1, self.num_tokens * self.dim)
        nn.init.normal_(self.table.weight, std=1.0)  # unit scale, like layer-normed CLIP outputs

    @property
    def null_label(self) -> int:
        return self.num_classes

    def config(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "num_tokens": self.num_tokens, "dim": self.dim}

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels).unflatten(-1, (self.num_tokens, self.dim))

    def save(self, folder: str | os.PathLike, dtype: torch.dtype = torch.float16) -> None:
        """Write the two files into ``folder`` (each via a temp file + os.replace)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        tmp = folder / f".{WEIGHTS_NAME}.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, folder / WEIGHTS_NAME)
        tmp = folder / f".{CONFIG_NAME}.tmp"
        tmp.write_text(json.dumps(self.config(), indent=2) + "\n")
        os.replace(tmp, folder / CONFIG_NAME)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ClassTokenEncoder":
        """Read a saved encoder from ``folder`` (safetensors only: nothing is unpickled)."""
        folder = Path(folder)
        weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
        if not weights.is_file() or not config.is_file():
            raise DataError(f"class encoder files {WEIGHTS_NAME} and {CONFIG_NAME} not found in {folder}")
        try:
            encoder = cls(**json.loads(config.read_text()))
            state = load_file(str(weights))
        except Exception as exc:  # noqa: BLE001  JSON, TypeError (fields), SafetensorError (truncated)
            raise DataError(f"{folder}: cannot load the class encoder ({type(exc).__name__}: {str(exc)[:150]})") from None
        own = encoder.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unexpected or shapes:
            raise DataError(f"{folder}: {CONFIG_NAME} does not match {WEIGHTS_NAME} (missing {missing}, "
                            f"unexpected {unexpected}, other shape {shapes})")
        encoder.load_state_dict({k: v.float() for k, v in state.items()})
        return encoder

    @classmethod
    def from_table(cls, table: torch.Tensor) -> "ClassTokenEncoder":
        """An encoder whose rows are given tokens: table [num_classes + 1, num_tokens, dim]."""
        encoder = cls(table.shape[0] - 1, table.shape[1], table.shape[2])
        with torch.no_grad():
            encoder.table.weight.copy_(table.flatten(1))
        return encoder


def has_class_encoder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / WEIGHTS_NAME).is_file()
