"""A user's image folder as validation data: layout, classes files, resize + centre crop, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bigain_export.data.image_folder import load_image_folder, load_images, read_image
from bigain_export.data.sources import load_data
from bigain_export.errors import DataError

Image = pytest.importorskip("PIL.Image", reason="image folders need Pillow (the validate extra)")


def _write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_resize_shorter_side_then_centre_crop(tmp_path):
    """A 20x40 (H x W) image: shorter side to 10, width 20, the middle 10 columns kept."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, 10:30] = 255  # a white band exactly in the middle half
    _write(tmp_path / "x.png", array)
    out = read_image(tmp_path / "x.png", 10)
    # only the band survives the crop (bicubic smears its very edge a little)
    assert out.shape == (3, 10, 10) and out[:, :, 1:-1].min() >= 250 and out.min() > 200
    grey = read_image(tmp_path / "x.png", 10, channels=1)
    assert grey.shape == (1, 10, 10)


def test_folders_sorted_round_robin_limit_and_range(tmp_path):
    for name, value, count in (("b_cat", 200, 3), ("a_dog", 10, 1)):
        for i in range(count):
            _write(tmp_path / name / f"{i}.jpg", np.full((12, 16, 3), value, np.uint8))
    data = load_image_folder(tmp_path, 8, progress=False)
    assert data.class_names == ["a dog", "b cat"] and data.prompts is None  # underscores read as spaces
    assert data.labels.tolist() == [0, 1, 1, 1] and data.images.shape == (4, 3, 8, 8)
    assert data.images.min() >= -1 and data.images.max() <= 1
    torch.testing.assert_close(data.images[0], torch.full((3, 8, 8), 10 / 127.5 - 1), atol=0.03, rtol=0)
    assert load_image_folder(tmp_path, 8, limit=2, progress=False).labels.tolist() == [0, 1]  # every class first


def test_classes_files_choose_folders_order_names_and_prompts(tmp_path):
    for folder in ("n1", "n2", "unused"):
        _write(tmp_path / folder / "0.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "classes.json").write_text(json.dumps({"n2": {"name": "tabby", "prompt": "a tabby cat"},
                                                       "n1": {"name": "goldfish", "prompt": "a fish"}}))
    data = load_image_folder(tmp_path, 8, progress=False)
    assert data.class_names == ["tabby", "goldfish"] and data.prompts == ["a tabby cat", "a fish"]
    (tmp_path / "classes.json").unlink()
    (tmp_path / "classes.txt").write_text("# ImageNet style\nn1 goldfish, Carassius auratus\nn2 tabby, tabby cat\n")
    data = load_image_folder(tmp_path, 8, progress=False)
    assert data.class_names == ["goldfish, Carassius auratus", "tabby, tabby cat"] and data.labels.tolist() == [0, 1]
    (tmp_path / "classes.txt").write_text("n1 goldfish\nn9 missing\n")
    with pytest.raises(DataError, match=r"lists folders \['n9'\] that do not exist"):
        load_image_folder(tmp_path, 8, progress=False)


def test_bad_folders_and_images_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        load_image_folder(tmp_path / "nope", 8)
    (tmp_path / "cls").mkdir()
    with pytest.raises(DataError, match="has no images in its class sub-folders"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "cls" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot read image .*bad.png"):
        load_image_folder(tmp_path, 8, progress=False)
    (tmp_path / "cls" / "bad.png").unlink()
    Image.new("F", (8, 8)).save(tmp_path / "cls" / "float.tif")
    with pytest.raises(DataError, match="image mode 'F' .*allowed: 8-bit images"):
        load_image_folder(tmp_path, 8, progress=False)
    with pytest.raises(DataError, match="holds 1 images"):
        load_images(tmp_path, 8)


def test_npz_stays_model_space(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 4, 8, 8), np.float32), labels=np.array([0, 1, 2]),
             class_names=np.array(["a", "b", "c"]))
    data = load_data(str(tmp_path / "d.npz"), (3, 64, 64), limit=2)
    assert not data.pixels and data.images.shape == (2, 4, 8, 8) and data.class_names == ["a", "b", "c"]
