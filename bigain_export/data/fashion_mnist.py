"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, ready for 32x32 diffusion models.

The package installs the four official idx files (gzip) into ``/usr/share/datasets/fashion-mnist``.
Images are 28x28 uint8; we pad 2 px on each side to 32x32 (so a patch-2 DiT sees 16x16 tokens
and a UNet can halve the grid three times) and scale to [-1, 1], the range diffusion models
are trained on. Nothing is downloaded: a missing package raises :class:`DataError` saying how to
install it.

Where the files are looked for, first match wins: the ``root`` argument, the environment variable
``BIGAIN_FMNIST_DIR``, then the Debian path.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "BIGAIN_FMNIST_DIR"
INSTALL_HINT = "install it with `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu)"

CLASS_NAMES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SPLITS = ("train", "test")
SPLIT_SIZES = {"train": 60000, "test": 10000}
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049  # idx headers: images at offset 16, labels at offset 8
PAD = 2  # 28 + 2 * 2 = 32


@dataclass
class FashionMNIST:
    """One split of Fashion-MNIST.

    Attributes:
        images: float32 [N, 1, 32, 32] in [-1, 1] (background -1, 2 px zero-padding included).
        labels: int64 [N] class indices in 0..9.
        class_names: the 10 official class names, indexed by label.
        split: ``"train"`` or ``"test"``.
        root: the folder the idx files were read from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    split: str
    root: Path

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the idx files: ``root``, else ``$BIGAIN_FMNIST_DIR``, else Debian's."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEBIAN_DIR


def _require_files(root: Path, split: str) -> tuple[Path, Path]:
    paths = tuple(root / name for name in _FILES[split])
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST {split} files {missing} not found in {root} (looked at the root "
            f"argument, ${ENV_VAR}, then {DEBIAN_DIR}); {INSTALL_HINT}"
        )
    return paths  # type: ignore[return-value]


def _read_idx(path: Path, magic: int, offset: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Decompress an idx file; check its magic number and size; return (uint8 payload, dims)."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}; reinstall: {INSTALL_HINT}") from exc
    if len(raw) < offset:
        raise DataError(f"{path} is truncated ({len(raw)} bytes); reinstall: {INSTALL_HINT}")
    header = np.frombuffer(raw[:offset], dtype=">u4")
    if int(header[0]) != magic:
        raise DataError(f"{path} has idx magic {int(header[0])}, expected {magic}")
    dims = tuple(int(d) for d in header[1:])
    payload = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if payload.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {payload.size} bytes of data, header says {dims}")
    return payload, dims


def load_fashion_mnist_uint8(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The raw split: uint8 images [N, 28, 28] and uint8 labels [N]."""
    if split not in SPLITS:
        raise DataError(f"Fashion-MNIST split {split!r} is not allowed; allowed: {', '.join(SPLITS)}")
    folder = resolve_root(root)
    image_path, label_path = _require_files(folder, split)
    pixels, (n, h, w) = _read_idx(image_path, _IMAGE_MAGIC, 16)
    labels, (n_labels,) = _read_idx(label_path, _LABEL_MAGIC, 8)
    if n != n_labels or n != SPLIT_SIZES[split] or (h, w) != (28, 28):
        raise DataError(
            f"Fashion-MNIST {split} in {folder} has {n} images of {h}x{w} and {n_labels} labels; "
            f"expected {SPLIT_SIZES[split]} of 28x28"
        )
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{label_path} has label {int(labels.max())}, expected 0..9")
    return pixels.reshape(n, h, w).copy(), labels.copy()  # writable copies, off the gzip buffer


def to_model_range(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 32, 32] in [-1, 1], padded with the background value."""
    x = torch.as_tensor(np.asarray(pixels), dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    return torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> FashionMNIST:
    """Load the official ``"train"`` (60000) or ``"test"`` (10000) split as a :class:`FashionMNIST`.

    Raises:
        DataError: the split name is unknown, the files are missing (with the apt-get command),
            or they are corrupt.
    """
    pixels, labels = load_fashion_mnist_uint8(split, root)
    return FashionMNIST(
        images=to_model_range(pixels),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASS_NAMES),
        split=split,
        root=resolve_root(root),
    )


def dataset_sha256(root: str | os.PathLike | None = None) -> str:
    """SHA-256 over the four idx.gz files (in a fixed order), recorded with every trained model."""
    folder = resolve_root(root)
    digest = hashlib.sha256()
    for split in SPLITS:
        for path in _require_files(folder, split):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
