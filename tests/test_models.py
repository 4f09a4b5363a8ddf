"""Built-in models, the Denoiser interface, local diffusers folders, safetensors-only loading."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch
from diffusers import DDPMScheduler

from bigain_export.data import load_fashion_mnist
from bigain_export.errors import DataError, UnsupportedModelError
from bigain_export.models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    ClassTokenEncoder,
    Denoiser,
    ddim_sample,
    load_denoiser,
    save_denoiser,
    tiny_random_denoiser,
)
from bigain_export.models.registry import WEIGHTS_DIR

ALLOWED_SUFFIXES = {".json", ".safetensors", ".md", ".png"}


def _refuse(*args, **kwargs):
    raise AssertionError("a pickle load was attempted")


def forbid_unpickling(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(torch, "load", _refuse)
    mp.setattr(pickle, "load", _refuse)
    mp.setattr(pickle, "loads", _refuse)


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Every load in this file must go through safetensors: unpickling fails the test."""
    forbid_unpickling(monkeypatch)


@pytest.fixture(scope="module")
def builtins():
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse one
        forbid_unpickling(mp)
        return {spec: load_denoiser(spec) for spec in BUILTIN_MODELS}


def test_builtin_names_and_shipped_files():
    assert BUILTIN_MODELS == ("builtin:fmnist-dit", "builtin:fmnist-unet")
    assert DEFAULT_MODEL == "builtin:fmnist-dit"
    for spec in BUILTIN_MODELS:
        folder = WEIGHTS_DIR / spec.split(":", 1)[1]
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json",
                "MODEL_CARD.md", "samples.png", "loss_curve.png"} <= names
        assert {p.suffix for p in folder.iterdir()} <= ALLOWED_SUFFIXES  # no .bin/.pt/.pkl shipped
    assert (WEIGHTS_DIR / "fmnist-unet" / "class_encoder.safetensors").is_file()


@pytest.mark.parametrize("spec", BUILTIN_MODELS)
def test_builtin_loads_with_expected_interface(builtins, spec):
    d = builtins[spec]
    assert isinstance(d, Denoiser) and d.name == spec and not d.training
    assert (d.num_classes, d.null_label, d.sample_shape) == (10, 10, (1, 32, 32))
    assert d.class_names[0] == "T-shirt/top" and len(d.class_names) == 10
    assert d.scheduler_config["num_train_timesteps"] == 1000
    assert d.scheduler_config["prediction_type"] == "epsilon"
    assert d.dtype == torch.float32
    if spec.endswith("dit"):
        assert d.kind == "dit" and len(d.model.transformer_blocks) == 12 and d.class_encoder is None
    else:
        assert d.kind == "unet" and d.class_encoder.num_classes == 10
        assert d.model.config.down_block_types[0] == "CrossAttnDownBlock2D"


@pytest.mark.parametrize("spec", BUILTIN_MODELS)
def test_forward_shapes_dtypes_and_timestep_forms(builtins, spec):
    d = builtins[spec]
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 5, d.null_label])
    with torch.no_grad():
        eps_scalar = d(x, torch.tensor(500), labels)
        eps_vector = d(x, torch.tensor([500, 500, 500]), labels)
        eps_float = d(x, torch.tensor([500.0, 500.0, 500.0]), labels)
    assert eps_scalar.shape == x.shape and eps_scalar.dtype == torch.float32
    assert torch.isfinite(eps_scalar).all()
    torch.testing.assert_close(eps_scalar, eps_vector)
    torch.testing.assert_close(eps_scalar, eps_float, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert d(x.double(), torch.tensor(10), labels).dtype == torch.float64  # output follows input


@pytest.mark.parametrize("spec", BUILTIN_MODELS)
def test_builtin_is_trained_and_uses_its_label(builtins, spec):
    """On real test images at t = 500 the trained model predicts the noise far better than the
    zero predictor (MSE 1), and the true label beats a wrong one."""
    d = builtins[spec]
    data = load_fashion_mnist("test")
    x0, y = data.images[:32], data.labels[:32]
    abar = DDPMScheduler.from_config(d.scheduler_config).alphas_cumprod[500]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    t = torch.tensor(500)
    with torch.no_grad():
        right = torch.mean((d(xt, t, y) - noise) ** 2).item()
        wrong = torch.mean((d(xt, t, (y + 3) % 10) - noise) ** 2).item()
    assert right < 0.05 and right < wrong


@pytest.mark.parametrize("spec", BUILTIN_MODELS)
def test_four_step_ddim_sample(builtins, spec):
    out = ddim_sample(builtins[spec], torch.tensor([1, 7]), num_inference_steps=4, guidance_scale=1.5, seed=0)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
    assert out.min() >= -1.0 and out.max() <= 1.0  # DDIM clips x0 in pixel space


def test_fp16_load_keeps_caller_dtype():
    d = load_denoiser(DEFAULT_MODEL, dtype=torch.float16)
    assert d.dtype == torch.float16
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        eps = d(x, torch.tensor(300), torch.tensor([2]))
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


def test_unknown_specs_raise_with_allowed_names(tmp_path):
    with pytest.raises(DataError, match="builtin:nope.*allowed: builtin:fmnist-dit, builtin:fmnist-unet"):
        load_denoiser("builtin:nope")
    with pytest.raises(DataError, match="neither a built-in name nor a folder"):
        load_denoiser(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="not a diffusers folder"):
        load_denoiser(str(tmp_path))


# ----------------------------------------------------------------------------- tiny random models


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_tiny_random_is_seeded_and_leaves_global_rng(kind):
    state = torch.random.get_rng_state()
    a, b, c = tiny_random_denoiser(kind, seed=0), tiny_random_denoiser(kind, seed=0), tiny_random_denoiser(kind, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.name == f"tiny-random:{kind}" and a.sample_shape == (1, 32, 32) and a.null_label == 10
    assert sum(p.numel() for p in a.parameters()) < 1_000_000
    if kind == "dit":
        assert len(a.model.transformer_blocks) == 12
    with pytest.raises(UnsupportedModelError, match="allowed: dit, unet"):
        tiny_random_denoiser("vit")


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_saved_folder_round_trips_in_fp32_and_fp16(tmp_path, kind):
    d = tiny_random_denoiser(kind)
    x, t, y = torch.randn(2, 1, 32, 32), torch.tensor([10, 900]), torch.tensor([3, 10])
    save_denoiser(d, tmp_path / "fp32", dtype=torch.float32)
    save_denoiser(d, tmp_path / "fp16")
    with torch.no_grad():
        expected = d(x, t, y)
        torch.testing.assert_close(load_denoiser(str(tmp_path / "fp32"))(x, t, y), expected)
        torch.testing.assert_close(load_denoiser(str(tmp_path / "fp16"))(x, t, y), expected, atol=2e-2, rtol=2e-2)
    loaded = load_denoiser(str(tmp_path / "fp32"))
    assert loaded.class_names == d.class_names and loaded.name == str(tmp_path / "fp32")
    assert not list(tmp_path.glob(".*tmp*"))  # no temp folders left behind


def test_pipeline_folder_with_transformer_subfolder(tmp_path):
    """A DiT pipeline folder as diffusers writes it: model_index.json, transformer/, scheduler/."""
    d = tiny_random_denoiser("dit")
    pipe = tmp_path / "pipe"
    d.model.save_pretrained(pipe / "transformer", safe_serialization=True)
    DDPMScheduler.from_config(d.scheduler_config).save_pretrained(pipe / "scheduler")
    id2label = {str(i): f"class{i}, alias" for i in range(10)}
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline", "id2label": id2label}))
    loaded = load_denoiser(str(pipe))
    assert loaded.kind == "dit" and loaded.num_classes == 10 and loaded.class_names[3] == "class3"
    assert loaded.scheduler_config["num_train_timesteps"] == 1000
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.tensor(5), torch.tensor([1, 2])), d(x, torch.tensor(5), torch.tensor([1, 2])))
    assert load_denoiser(str(pipe / "transformer")).kind == "dit"  # the model subfolder alone


def test_pipeline_unet_needs_a_class_encoder_or_prompts(tmp_path, monkeypatch):
    """A pipeline folder without a VAE entry is read as its bare network (pixel space): a UNet then
    needs class_encoder.safetensors; one that names a VAE is a latent pipeline and needs it."""
    d = tiny_random_denoiser("unet")
    pipe = tmp_path / "sd"
    d.model.save_pretrained(pipe / "unet", safe_serialization=True)
    DDPMScheduler.from_config(d.scheduler_config).save_pretrained(pipe / "scheduler")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(UnsupportedModelError, match="class_encoder.safetensors"):
        load_denoiser(str(pipe))
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(DataError, match="StableDiffusionPipeline needs its VAE"):
        load_denoiser(str(pipe))
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    d.class_encoder.save(pipe / "unet")
    loaded = load_denoiser(str(pipe))
    assert loaded.kind == "unet" and loaded.num_classes == 10 and loaded.class_names is None


def test_pickle_only_folder_is_refused(tmp_path, monkeypatch):
    d = tiny_random_denoiser("dit")
    monkeypatch.undo()  # saving a .bin pickles; only loading is forbidden
    d.model.save_pretrained(tmp_path / "m", safe_serialization=False)
    forbid_unpickling(monkeypatch)
    (tmp_path / "m" / "scheduler_config.json").write_text(json.dumps(d.scheduler_config))
    assert (tmp_path / "m" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(DataError, match="convert them to safetensors"):
        load_denoiser(str(tmp_path / "m"))


def test_v_prediction_is_rejected():
    d = tiny_random_denoiser("dit")
    with pytest.raises(UnsupportedModelError, match="v_prediction"):
        Denoiser(d.model, num_classes=10, sample_shape=(1, 32, 32), name="x",
                 scheduler_config={**d.scheduler_config, "prediction_type": "v_prediction"})


def test_class_token_encoder_round_trip(tmp_path):
    enc = ClassTokenEncoder(num_classes=10, num_tokens=4, dim=8)
    tokens = enc(torch.tensor([0, 10]))
    assert tokens.shape == (2, 4, 8) and enc.null_label == 10
    enc.save(tmp_path)
    torch.testing.assert_close(ClassTokenEncoder.load(tmp_path)(torch.tensor([0, 10])), tokens.half().float())
    table = torch.randn(3, 5, 6)
    torch.testing.assert_close(ClassTokenEncoder.from_table(table)(torch.tensor([2])), table[2:])


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_denoiser_exports_as_one_graph(kind):
    """The interface contract: torch.export traces forward with no graph breaks, same numbers."""
    d = tiny_random_denoiser(kind)
    args = (torch.randn(2, 1, 32, 32), torch.tensor(250), torch.tensor([4, 10]))
    program = torch.export.export(d, args)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args), d(*args))
