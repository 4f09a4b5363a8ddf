"""Diffusion models behind one interface: :class:`Denoiser` (see docs/models.md).

``load_denoiser("builtin:fmnist-dit")`` (or ``"builtin:fmnist-unet"``, or a local diffusers
folder) returns a Denoiser; ``tiny_random_denoiser("dit" | "unet")`` gives a small random one for
tests.
"""

from .class_encoder import ClassTokenEncoder
from .denoiser import Denoiser
from .registry import BUILTIN_MODELS, DEFAULT_MODEL, load_denoiser, tiny_random_denoiser
from .sampling import ddim_sample, sample
from .storage import save_denoiser

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "ClassTokenEncoder",
    "Denoiser",
    "ddim_sample",
    "load_denoiser",
    "sample",
    "save_denoiser",
    "tiny_random_denoiser",
]
