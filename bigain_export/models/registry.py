"""Resolve a model spec to a :class:`Denoiser`: built-in names, or a local diffusers folder.

Accepted specs (wherever the project takes a model path):

* ``builtin:fmnist-dit`` / ``builtin:fmnist-unet``: the small Fashion-MNIST models shipped inside
  the package (``bigain_export/models/weights/<name>/``, fp16 safetensors, see docs/models.md).
* a local **model folder** holding ``config.json`` of a ``DiTTransformer2DModel`` (also the older
  ``Transformer2DModel`` DiT configs) or a ``UNet2DConditionModel`` plus safetensors weights, e.g.
  one written by :func:`~bigain_export.models.storage.save_denoiser`;
* a local **pipeline folder** (``model_index.json`` naming a ``vae``): ``stable-diffusion-2-base``,
  ``stable-diffusion-xl-base-1.0``, ``DiT-XL-2-256`` as diffusers saves them. Loaded whole by
  :mod:`.pipelines` (VAE, text encoders, scheduler); the denoiser works in latent space.
* a pipeline folder without a VAE entry: its ``transformer/`` or ``unet/`` alone, in pixel space.

Loading never unpickles: diffusers' ``from_pretrained(..., use_safetensors=True)`` and
``safetensors.torch.load_file`` only. A folder with ``.bin``/``.pt`` weights alone is refused.
A bare UNet folder needs labels -> tokens: ``class_encoder.safetensors`` beside it; an SD/SDXL
pipeline encodes one prompt per class name with its own text encoders instead.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

from ..data.fashion_mnist import CLASS_NAMES
from ..errors import DataError, UnsupportedModelError
from . import architectures as arch
from .class_encoder import ClassTokenEncoder, has_class_encoder
from .denoiser import Denoiser
from .pipelines import bind_labels, is_latent_pipeline, load_pipeline
from .prompts import DEFAULT_TEMPLATE
from .storage import META_NAME, SCHEDULER_NAME

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS: tuple[str, ...] = ("builtin:fmnist-dit", "builtin:fmnist-unet")
DEFAULT_MODEL = "builtin:fmnist-dit"

_DIT_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")
_UNET_CLASSES = ("UNet2DConditionModel",)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def builtin_dir(spec: str) -> Path:
    """The weights folder of a built-in model name (``builtin:fmnist-dit`` -> .../weights/fmnist-dit)."""
    if spec not in BUILTIN_MODELS:
        raise DataError(f"unknown built-in model {spec!r}; allowed: {', '.join(BUILTIN_MODELS)}")
    return WEIGHTS_DIR / spec[len(BUILTIN_PREFIX) :]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _weights_variant(folder: Path) -> str | None:
    """Which safetensors file diffusers should read in ``folder``; refuse pickle-only folders."""
    if (folder / "diffusion_pytorch_model.safetensors").is_file() or (
        folder / "diffusion_pytorch_model.safetensors.index.json"
    ).is_file():
        return None
    if (folder / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    hint = f" (found only {pickles}: convert them to safetensors; pickles are never loaded)" if pickles else ""
    raise DataError(f"no diffusion_pytorch_model*.safetensors in {folder}{hint}")


def _model_class(folder: Path) -> type:
    config = _read_json(folder / "config.json")
    name = config.get("_class_name", "")
    if name in _DIT_CLASSES:
        if config.get("norm_type", "ada_norm_zero") != "ada_norm_zero" or not config.get("patch_size"):
            raise UnsupportedModelError(f"{folder}: {name} without patch_size/ada_norm_zero is not a DiT")
        return DiTTransformer2DModel
    if name in _UNET_CLASSES:
        return UNet2DConditionModel
    raise UnsupportedModelError(
        f"{folder}/config.json has _class_name={name!r}; allowed: {', '.join(_DIT_CLASSES + _UNET_CLASSES)}"
    )


def _find_model_folder(root: Path) -> tuple[Path, Path | None]:
    """(model folder, pipeline folder or None) for a model folder or a pipeline folder."""
    if (root / "config.json").is_file():
        parent = root.parent
        return root, parent if (parent / "model_index.json").is_file() else None
    if (root / "model_index.json").is_file():
        for sub in ("transformer", "unet"):
            if (root / sub / "config.json").is_file():
                return root / sub, root
        raise UnsupportedModelError(f"pipeline folder {root} has neither transformer/ nor unet/ with a config.json")
    raise DataError(
        f"{root} is not a diffusers folder (no config.json or model_index.json); allowed specs: "
        f"{', '.join(BUILTIN_MODELS)}, or a local diffusers model or pipeline folder"
    )


def _scheduler_config(model_dir: Path, pipeline_dir: Path | None) -> dict[str, Any]:
    candidates = [model_dir / SCHEDULER_NAME]
    if pipeline_dir is not None:
        candidates.append(pipeline_dir / "scheduler" / SCHEDULER_NAME)
    for path in candidates:
        if path.is_file():
            return _read_json(path)
    raise DataError(f"no scheduler config for {model_dir}: looked at {', '.join(map(str, candidates))}")


def _pipeline_class_names(pipeline_dir: Path | None) -> list[str] | None:
    """DiT pipelines store ImageNet names in model_index.json's id2label ({index: 'name, name2'})."""
    if pipeline_dir is None:
        return None
    id2label = _read_json(pipeline_dir / "model_index.json").get("id2label")
    if not isinstance(id2label, dict):
        return None
    return [str(id2label[k]).split(",")[0].strip() for k in sorted(id2label, key=int)]


def _key_list(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")


def _from_pretrained_strict(cls: type, model_dir: Path) -> torch.nn.Module:
    """``cls.from_pretrained`` that refuses weights not matching ``config.json``.

    diffusers only warns about missing weights and initialises those layers at random (a
    config with 14 blocks over 12 blocks of weights "loads"); here every missing, unexpected or
    mis-shaped key is an error naming the keys, and unreadable files are one-line errors.
    """
    try:
        model, info = cls.from_pretrained(
            model_dir,
            use_safetensors=True,
            variant=_weights_variant(model_dir),
            local_files_only=True,
            torch_dtype=torch.float32,
            low_cpu_mem_usage=False,  # the models are small; avoids needing `accelerate`
            output_loading_info=True,
        )
    except (DataError, UnsupportedModelError):
        raise
    except Exception as exc:  # noqa: BLE001  OSError, SafetensorError, ValueError, RuntimeError from diffusers
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{model_dir}: cannot load the weights ({detail}); allowed: a complete diffusers "
                        "folder whose safetensors weights match its config.json") from None
    problems = [f"{what} {_key_list(info.get(key) or [])}" for key, what in (
        ("missing_keys", "missing from the weights:"),
        ("unexpected_keys", "in the weights but not in the model of config.json:"),
        ("mismatched_keys", "of another shape:"),
    ) if info.get(key)]
    if info.get("error_msgs"):
        problems.append(str(info["error_msgs"][0]).splitlines()[0][:200])
    if problems:
        raise DataError(f"{model_dir}: config.json does not match the weights ({'; '.join(problems)})")
    return model


def load_folder(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    class_names: list[str] | None = None,
) -> Denoiser:
    """Load a local diffusers model folder (or a pipeline's network alone) as an fp32 CPU
    :class:`Denoiser` in eval mode, in pixel space.

    ``class_names`` are matched against the model's own names (any order, a subset allowed);
    a model without names takes them as its names when there is one per label.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"model {str(path)!r} is neither a built-in name nor a folder; allowed: "
            f"{', '.join(BUILTIN_MODELS)}, or a local diffusers model or pipeline folder"
        )
    model_dir, pipeline_dir = _find_model_folder(root)
    cls = _model_class(model_dir)
    model = _from_pretrained_strict(cls, model_dir)
    meta = _read_json(model_dir / META_NAME) if (model_dir / META_NAME).is_file() else {}
    config = model.config
    sample_shape = tuple(meta.get("sample_shape") or (config.in_channels, config.sample_size, config.sample_size))
    own_names = meta.get("class_names") or _pipeline_class_names(pipeline_dir)
    names = own_names or class_names

    class_encoder = None
    if cls is DiTTransformer2DModel:
        num_classes = int(config.num_embeds_ada_norm)
    elif has_class_encoder(model_dir):
        class_encoder = ClassTokenEncoder.load(model_dir)
        num_classes = class_encoder.num_classes
    else:
        raise UnsupportedModelError(
            f"{model_dir}: a UNet needs class_encoder.safetensors beside it, or a whole SD / SDXL pipeline "
            "folder (model_index.json with vae, text_encoder and tokenizer) to encode class prompts"
        )
    if names is not None and len(names) != num_classes:
        log.warning("%s: %d class names for %d classes; ignoring the names", model_dir, len(names), num_classes)
        names = None
    denoiser = Denoiser(
        model,
        num_classes=num_classes,
        null_label=meta.get("null_label"),
        sample_shape=sample_shape,
        scheduler_config=_scheduler_config(model_dir, pipeline_dir),
        name=name or str(path),
        class_names=list(names) if names else None,
        class_encoder=class_encoder,
    )
    if own_names and class_names and list(class_names) != list(own_names):
        denoiser = bind_labels(denoiser, list(class_names))
    return denoiser.eval().requires_grad_(False)


def load_denoiser(
    spec: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    class_names: list[str] | None = None,
    prompt_template: str = DEFAULT_TEMPLATE,
    class_prompts: list[str] | None = None,
) -> Denoiser:
    """Load ``spec`` (a built-in name or a local diffusers folder) as an eval-mode Denoiser.

    Args:
        spec: ``"builtin:fmnist-dit"``, ``"builtin:fmnist-unet"``, or a folder path.
        device, dtype: where and in which precision the weights end up (built-ins are stored fp16;
            a pipeline's VAE and text encoders stay float32).
        class_names: the candidate classes: names of the model's labels (built-ins, DiT's
            ``id2label``; a subset in any order), or for SD / SDXL pipelines the classes whose
            prompts ``prompt_template.format(name)`` (or ``class_prompts``) condition the UNet.

    Raises:
        DataError: unknown built-in name, missing folder or files, pickle-only weights.
        UnsupportedModelError: a model family or prediction type this package cannot handle.
    """
    if spec.startswith(BUILTIN_PREFIX):
        folder = builtin_dir(spec)
        if not (folder / "config.json").is_file():
            raise DataError(f"built-in model {spec} is missing its files in {folder}; reinstall bigain-export")
        denoiser = load_folder(folder, name=spec, class_names=class_names)
    elif is_latent_pipeline(Path(spec).expanduser()):
        denoiser = load_pipeline(spec, class_names=class_names, class_prompts=class_prompts,
                                 prompt_template=prompt_template)
    else:
        denoiser = load_folder(spec, class_names=class_names)
    if dtype == denoiser.dtype:  # nothing to cast: the weights hash as they are, when asked
        return denoiser.to(device=device)
    from ..engine.manifest import model_sha256, record_weights_sha256

    # Hashed as loaded (float32), before the precision cast: one identity at every --precision, so
    # the fp16 engine that `build` made from these weights matches a `validate --precision fp16`.
    sha256 = model_sha256(denoiser)
    denoiser = denoiser.to(device=device, dtype=dtype)
    record_weights_sha256(denoiser, sha256)
    return denoiser


def random_denoiser(kind: str, *, tiny: bool = False, name: str | None = None) -> Denoiser:
    """A randomly initialised Denoiser of the built-ins' families (global RNG: seed before calling).

    ``tiny=False`` is the built-in architecture (what ``scripts/train_builtin.py`` trains);
    ``tiny=True`` the small test models of :func:`tiny_random_denoiser`.
    """
    if kind not in ("dit", "unet"):
        raise UnsupportedModelError(f"model kind {kind!r} is not allowed; allowed: dit, unet")
    if kind == "dit":
        model, encoder = arch.build_dit(arch.TINY_DIT_CONFIG if tiny else None), None
    else:
        config = arch.TINY_UNET_CONFIG if tiny else arch.UNET_CONFIG
        model = arch.build_unet(config)
        encoder = ClassTokenEncoder(arch.NUM_CLASSES, arch.CLASS_TOKENS, config["cross_attention_dim"])
    return Denoiser(
        model,
        num_classes=arch.NUM_CLASSES,
        sample_shape=arch.SAMPLE_SHAPE,
        scheduler_config=arch.SCHEDULER_CONFIG,
        name=name or f"{'tiny-random' if tiny else 'random'}:{kind}",
        class_names=list(CLASS_NAMES),
        class_encoder=encoder,
    )


def tiny_random_denoiser(kind: str = "dit", seed: int = 0) -> Denoiser:
    """A very small randomly initialised Denoiser of the built-ins' families, for fast CPU tests.

    ``"dit"``: 12 blocks of width 32 (2 heads x 16), 16x16 tokens; ``"unet"``: SD-style, widths
    32/32/32, cross-attention at full resolution (32x32 = 1024 tokens), 4 class tokens of 32.
    Both take 1x32x32 samples, 10 classes + null label 10, the built-ins' DDPM schedule. The
    global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        denoiser = random_denoiser(kind, tiny=True)
    return denoiser.eval().requires_grad_(False)
