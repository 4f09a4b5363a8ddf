"""Issue 9 item 5: a model folder whose config does not match its weights is an error naming the
keys, never a model with randomly initialised layers; unreadable weights are one line too."""

from __future__ import annotations

import json

import pytest
import torch

from bigain_export.errors import DataError
from bigain_export.models import save_denoiser
from bigain_export.models.registry import load_denoiser, tiny_random_denoiser


@pytest.fixture
def dit_folder(tmp_path):
    return save_denoiser(tiny_random_denoiser("dit"), tmp_path / "dit", dtype=torch.float32)


def _set_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_more_layers_in_the_config_than_in_the_weights_is_an_error(dit_folder):
    _set_config(dit_folder, num_layers=14)
    with pytest.raises(DataError, match=r"config.json does not match the weights \(missing from the weights: "
                                        r"transformer_blocks.12.*\(38 in all\)"):
        load_denoiser(str(dit_folder))


def test_fewer_layers_in_the_config_than_in_the_weights_is_an_error(dit_folder):
    _set_config(dit_folder, num_layers=10)
    with pytest.raises(DataError, match=r"in the weights but not in the model of config.json: transformer_blocks.10"):
        load_denoiser(str(dit_folder))


def test_other_shapes_are_an_error(dit_folder):
    _set_config(dit_folder, attention_head_dim=8)
    with pytest.raises(DataError, match=r"/dit: (cannot load the weights|config.json does not match the weights)"):
        load_denoiser(str(dit_folder))


def test_truncated_weights_are_one_line(dit_folder):
    weights = dit_folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"cannot load the weights .*allowed: a complete diffusers folder") as info:
        load_denoiser(str(dit_folder))
    assert "\n" not in str(info.value)


def test_a_class_encoder_of_other_shape_is_an_error(tmp_path):
    folder = save_denoiser(tiny_random_denoiser("unet"), tmp_path / "unet", dtype=torch.float32)
    config = json.loads((folder / "class_encoder_config.json").read_text())
    config["num_tokens"] = config["num_tokens"] + 1
    (folder / "class_encoder_config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"class_encoder_config.json does not match class_encoder.safetensors"):
        load_denoiser(str(folder))
