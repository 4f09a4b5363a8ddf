"""``--data`` of the validation commands: a Fashion-MNIST split, an image folder, or an ``.npz``.

* ``fmnist-test`` / ``fmnist-train``: the Debian package's split (pixels, 1x32x32, 10 names);
* a folder: the user's images, one sub-folder per class (:mod:`.image_folder`), read at the
  model's image resolution;
* ``*.npz``: ``images`` ``[N, C, H, W]`` **in model space** (pixels in [-1, 1] or uint8 for a
  pixel model; latents for a latent one) and ``labels`` ``[N]``, optional ``class_names``.

Pixels are mapped to the model's space by ``Denoiser.encode_images`` (the VAE for latent
pipelines); FID references are pixels: the same images, or ``--fid-ref DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .image_folder import LabeledImages, load_image_folder

FMNIST_CHOICES = ("fmnist-test", "fmnist-train")


def load_data(spec: str, image_shape: tuple[int, int, int], *, limit: int | None = None,
              progress: bool = True) -> LabeledImages:
    """``spec`` -> :class:`LabeledImages` at ``image_shape`` (C, H, W) of the model's images."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit {limit} is not allowed; allowed: an integer >= 1")
    if spec in FMNIST_CHOICES:
        from .fashion_mnist import load_fashion_mnist

        data = load_fashion_mnist(spec.split("-", 1)[1])
        return LabeledImages(data.images[:limit], data.labels[:limit], list(data.class_names), source=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        channels, height, width = image_shape
        if height != width:
            raise DataError(f"image folders need a square model resolution; this model takes {height}x{width}")
        return load_image_folder(path, height, channels=channels, limit=limit, progress=progress)
    return _load_npz(spec, limit)


def _load_npz(spec: str | os.PathLike, limit: int | None) -> LabeledImages:
    try:
        with np.load(spec, allow_pickle=False) as npz:
            images, labels = torch.from_numpy(npz["images"]), torch.from_numpy(npz["labels"])
            names = [str(n) for n in npz["class_names"]] if "class_names" in npz else None
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise DataError(
            f"--data {str(spec)!r}: not {' | '.join(FMNIST_CHOICES)}, an image folder, nor a readable .npz with "
            f"'images' and 'labels' ({str(exc)[:120]})"
        ) from None
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    if not (images.dtype.is_floating_point and labels.dtype in (torch.int64, torch.int32, torch.int16, torch.int8,
                                                                torch.uint8)):
        raise DataError(f"--data {str(spec)!r}: images are {images.dtype} and labels {labels.dtype}; allowed: float "
                        "(or uint8) images and integer labels")
    if not torch.isfinite(images).all():
        raise DataError(f"--data {str(spec)!r} has non-finite pixels; allowed: finite values in [-1, 1]")
    return LabeledImages(images.float()[:limit], labels.long()[:limit], names, pixels=False, source=str(spec))
