"""Fashion-MNIST loader: official split, balanced labels, 32x32 in [-1, 1], clear errors."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from bigain_export.data import CLASS_NAMES, load_fashion_mnist
from bigain_export.data.fashion_mnist import DEBIAN_DIR, ENV_VAR, dataset_sha256, resolve_root
from bigain_export.data.png import encode_png, image_grid, save_png_grid
from bigain_export.errors import DataError


@pytest.fixture(scope="module")
def test_split():
    return load_fashion_mnist("test")


def test_official_split_sizes_and_balanced_labels(test_split):
    train = load_fashion_mnist("train")
    for split, n, per_class in ((train, 60000, 6000), (test_split, 10000, 1000)):
        assert len(split) == n
        assert split.images.shape == (n, 1, 32, 32)
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
    assert train.split == "train" and test_split.split == "test"


def test_images_are_padded_and_scaled(test_split):
    x = test_split.images
    assert x.min() == -1.0 and x.max() == 1.0
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, 0][:, border] == -1.0).all()  # the 2 px pad is background
    assert test_split.class_names == CLASS_NAMES and len(CLASS_NAMES) == 10
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot"


def test_first_test_image_matches_raw_idx(test_split):
    with gzip.open(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz") as fh:
        raw = np.frombuffer(fh.read(), np.uint8, count=28 * 28, offset=16).reshape(28, 28)
    with gzip.open(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz") as fh:
        label = fh.read()[8]
    expected = torch.from_numpy(raw.astype(np.float32)) / 127.5 - 1
    assert torch.equal(test_split.images[0, 0, 2:30, 2:30], expected)
    assert test_split.labels[0].item() == label == 9  # the first test image is an ankle boot


def test_missing_package_gives_install_hint(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_root() == tmp_path
    with pytest.raises(DataError, match=str(tmp_path)):
        load_fashion_mnist("train")


def test_unknown_split_and_corrupt_file(tmp_path):
    with pytest.raises(DataError, match="'val'.*allowed: train, test"):
        load_fashion_mnist("val")
    shutil.copy(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">IIII", 1234, 10000, 28, 28))
    with pytest.raises(DataError, match="magic 1234"):
        load_fashion_mnist("test", root=tmp_path)


def test_dataset_hash_is_stable():
    digest = dataset_sha256()
    assert len(digest) == 64 and digest == dataset_sha256(DEBIAN_DIR)


def test_png_grid_round_trips_through_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    images = torch.linspace(-1, 1, 6 * 32 * 32).reshape(6, 1, 32, 32)
    grid = image_grid(images, nrow=3, pad=2)
    assert grid.shape == (2 * 34 + 2, 3 * 34 + 2) and grid.dtype == np.uint8
    save_png_grid(images, tmp_path / "g.png", nrow=3, scale=2)
    decoded = np.asarray(Image.open(tmp_path / "g.png"))
    assert decoded.shape == (2 * grid.shape[0], 2 * grid.shape[1])
    assert np.array_equal(decoded[::2, ::2], grid)
    assert encode_png(grid[:1, :1]).startswith(b"\x89PNG")
