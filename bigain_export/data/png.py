"""Write greyscale image grids as PNG with the standard library alone (zlib), atomically.

Used for the sample grids of the model cards; it needs neither Pillow nor matplotlib, so the
training script can write grids on machines that have only torch.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch


def image_grid(images: torch.Tensor, nrow: int, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images [N, 1, H, W] in [-1, 1] into one uint8 array [rows*(H+pad)+pad, nrow*(W+pad)+pad]."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"image_grid wants [N, 1, H, W] greyscale images, got {tuple(images.shape)}")
    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    fill = int(round((pad_value + 1) * 127.5))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), fill, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = x[i, 0]
    return grid


def upscale(grid: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlarge, so 32 px tiles stay readable in a model card."""
    return np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)


def encode_png(gray: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W] greyscale array (colour type 0, 8 bit, no interlace)."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"encode_png wants uint8 [H, W], got {gray.dtype} {gray.shape}")
    h, w = gray.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + gray[y].tobytes() for y in range(h))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to a temp file in the same folder, then os.replace it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are shipped and shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int, scale: int = 2) -> None:
    """Save images [N, 1, H, W] in [-1, 1] as one PNG grid, ``nrow`` images per row."""
    write_atomic(path, encode_png(upscale(image_grid(images, nrow), scale)))
