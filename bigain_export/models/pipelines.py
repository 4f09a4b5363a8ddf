"""Local diffusers *pipeline* folders (SD 2.x, SDXL, DiT) as denoisers that own their VAE and prompts.

``load_pipeline(folder)`` reads a folder with ``model_index.json`` the way diffusers does
(``DiffusionPipeline.from_pretrained(folder, use_safetensors=True)``: nothing is downloaded and
nothing unpickles) and wraps the pipeline's network as a :class:`~.denoiser.Denoiser`:

=============================  ===============  ==============================================
pipeline class                 network          conditioning (graph inputs)
=============================  ===============  ==============================================
``StableDiffusionPipeline``    ``unet``         ``encoder_hidden_states`` (CLIP, one text encoder)
``StableDiffusionXLPipeline``  ``unet``         ``encoder_hidden_states``, ``text_embeds``, ``time_ids``
``DiTPipeline``                ``transformer``  ``class_labels`` (names from ``id2label``)
=============================  ===============  ==============================================

Every one of them works in the VAE's latent space (:class:`~.space.LatentSpace`); the VAE and the
text encoders run eagerly, the network is what gets patched, exported and built. Prompts are
encoded by the pipeline's own ``encode_prompt`` (see :mod:`.conditioning`), so the denoiser sees
exactly the embeddings the pipeline would compute. The pipeline object stays available as
``denoiser.pipeline`` (its ``unet``/``transformer`` *is* ``denoiser.model``), for generation.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError, UnsupportedModelError
from .conditioning import LabelConditioning, TextConditioning
from .denoiser import Denoiser
from .prompts import DEFAULT_TEMPLATE
from .space import LatentSpace

log = logging.getLogger(__name__)

TEXT_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
LABEL_PIPELINES = ("DiTPipeline",)
SUPPORTED_PIPELINES = TEXT_PIPELINES + LABEL_PIPELINES
_NETWORK = {"StableDiffusionPipeline": "unet", "StableDiffusionXLPipeline": "unet", "DiTPipeline": "transformer"}
_NEEDS_TRANSFORMERS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


def read_index(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {root / 'model_index.json'}: {exc}") from exc


def is_latent_pipeline(root: Path) -> bool:
    """A pipeline folder whose model_index.json names a VAE (every real SD / SDXL / DiT pipeline)."""
    return (root / "model_index.json").is_file() and bool(_component(read_index(root), "vae"))


def _component(index: dict[str, Any], name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None


def _check_folder(root: Path, index: dict[str, Any]) -> str:
    """The pipeline class name, after checking every listed component has its folder."""
    cls = index.get("_class_name", "")
    if cls not in SUPPORTED_PIPELINES:
        raise UnsupportedModelError(f"{root}: pipeline class {cls!r} is not supported; allowed: {', '.join(SUPPORTED_PIPELINES)}")
    if not _component(index, "vae") or not (root / "vae" / "config.json").is_file():
        raise DataError(f"{root}: {cls} needs its VAE (vae/ with config.json and safetensors weights) to map images "
                        "to latents and back; none found")
    for name in [k for k in index if not k.startswith("_")]:
        if _component(index, name) and not (root / name).is_dir():
            raise DataError(f"{root}: model_index.json lists {name} but there is no {name}/ folder")
    if cls in TEXT_PIPELINES:
        try:
            import transformers  # noqa: F401
        except ImportError as exc:
            raise UnsupportedModelError(
                f"{root}: {cls} needs its text encoders, which need `transformers` (pip install 'bigain-export[pipelines]')"
            ) from exc
    return cls


def _variant(model_dir: Path) -> str | None:
    names = {p.name for p in model_dir.iterdir()} if model_dir.is_dir() else set()
    if any(n.endswith(".safetensors") and ".fp16." not in n for n in names):
        return None
    return "fp16" if any(n.endswith(".fp16.safetensors") for n in names) else None


@contextlib.contextmanager
def _quiet_loading():
    """No per-component progress bars while loading (they would interleave with our one-line output)."""
    from diffusers.utils import logging as diffusers_logging

    bars = [diffusers_logging]
    try:
        from transformers.utils import logging as transformers_logging

        bars.append(transformers_logging)
    except ImportError:
        pass
    enabled = [m.is_progress_bar_enabled() for m in bars]
    for m in bars:
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, on in zip(bars, enabled):
            if on:
                m.enable_progress_bar()


def _load(root: Path, cls: str):
    from diffusers import DiffusionPipeline

    try:
        with _quiet_loading():
            pipe = DiffusionPipeline.from_pretrained(
                root, use_safetensors=True, local_files_only=True, torch_dtype=torch.float32,
                variant=_variant(root / _NETWORK[cls]), low_cpu_mem_usage=False,
            )
    except (OSError, ValueError, EnvironmentError) as exc:  # diffusers' "no safetensors", bad configs, ...
        raise DataError(f"{root}: diffusers cannot load this {cls}: {str(exc).strip().splitlines()[0][:300]}") from exc
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return pipe


def sampling_defaults(pipe) -> dict[str, Any]:
    """The pipeline's own sampler (its scheduler class), steps and guidance (its ``__call__`` defaults)."""
    params = inspect.signature(type(pipe).__call__).parameters
    default = lambda name, fallback: params[name].default if name in params else fallback  # noqa: E731
    return {"sampler": type(pipe.scheduler).__name__, "steps": int(default("num_inference_steps", 50)),
            "guidance": float(default("guidance_scale", 1.0))}


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], resolution: int) -> TextConditioning:
    """The pipeline's embeddings of ``prompts`` plus its unconditional row (classifier-free guidance)."""
    batch = list(prompts) or [""]
    if type(pipe).__name__ == "StableDiffusionXLPipeline":
        embeds, null, pooled, null_pooled = pipe.encode_prompt(
            prompt=batch, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=True)
        time_ids = pipe._get_add_time_ids((resolution, resolution), (0, 0), (resolution, resolution), dtype=torch.float32,
                                          text_encoder_projection_dim=int(pipe.text_encoder_2.config.projection_dim))
        if not prompts:
            embeds, pooled = embeds[:0], pooled[:0]
        return TextConditioning(torch.cat([embeds, null[:1]]), torch.cat([pooled, null_pooled[:1]]), time_ids, prompts)
    embeds, null = pipe.encode_prompt(batch, torch.device("cpu"), 1, True)
    embeds = embeds if prompts else embeds[:0]
    return TextConditioning(torch.cat([embeds, null[:1]]), prompts=prompts)


def dit_label_names(pipe) -> dict[str, int]:
    """Every name and alias of ``id2label`` (lower case) -> its label id."""
    return {name.lower(): int(label) for name, label in getattr(pipe, "labels", {}).items()}


def _dit_class_names(index: dict[str, Any], num_labels: int) -> list[str] | None:
    id2label = index.get("id2label")
    if not isinstance(id2label, dict) or len(id2label) != num_labels:
        return None
    return [str(id2label[k]).split(",")[0].strip() for k in sorted(id2label, key=int)]


def load_pipeline(
    path: str | Path,
    *,
    class_names: list[str] | None = None,
    class_prompts: list[str] | None = None,
    prompt_template: str = DEFAULT_TEMPLATE,
    name: str | None = None,
) -> Denoiser:
    """A latent pipeline folder -> fp32 CPU :class:`Denoiser` (eval mode), conditioned on ``class_names``.

    Args:
        class_names: the candidate classes. Text pipelines encode one prompt per class
            (``class_prompts[k]`` or ``prompt_template.format(name)``); without names the denoiser
            has no classes (only the unconditional row), enough to export and build. DiT: names
            are looked up in ``id2label`` (any alias, any case); without names every label is a class.
        class_prompts: explicit prompts per class (a classes file), overriding the template.
    """
    root = Path(path).expanduser()
    index = read_index(root)
    cls = _check_folder(root, index)
    pipe = _load(root, cls)
    network = getattr(pipe, _NETWORK[cls])
    factor = getattr(pipe, "vae_scale_factor", None) or 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    resolution = int(network.config.sample_size) * int(factor)
    space = LatentSpace(pipe.vae, resolution)
    scheduler_config = {**dict(pipe.scheduler.config), "clip_sample": False}  # latents are not in [-1, 1]
    common = dict(sample_shape=space.sample_shape, scheduler_config=scheduler_config, name=name or str(path),
                  space=space, pipeline=pipe, sampling_defaults=sampling_defaults(pipe))
    if cls in TEXT_PIPELINES:
        names = list(class_names or [])
        prompts = list(class_prompts) if class_prompts else [prompt_template.format(n) for n in names]
        if len(prompts) != len(names):
            raise DataError(f"{len(prompts)} prompts for {len(names)} classes; allowed: one prompt per class")
        conditioning = encode_prompts(pipe, prompts, resolution)
        return Denoiser(network, num_classes=len(names), class_names=names or None, conditioning=conditioning,
                        **common).eval().requires_grad_(False)
    num_labels = int(network.config.num_embeds_ada_norm)
    denoiser = Denoiser(network, num_classes=num_labels, class_names=_dit_class_names(index, num_labels), **common)
    denoiser.label_names = dit_label_names(pipe)
    if class_names:
        denoiser = bind_labels(denoiser, class_names)
    return denoiser.eval().requires_grad_(False)


def _share_weights_identity(source: Denoiser, bound: Denoiser) -> None:
    from ..engine.manifest import record_weights_sha256, weights_sha256

    if source.weights_sha256 is not None:
        record_weights_sha256(bound, weights_sha256(source))


def bind_labels(denoiser: Denoiser, class_names: list[str]) -> Denoiser:
    """The same label-conditioned model with candidates ``class_names`` (a subset of its labels, any order).

    Names are matched case-insensitively against ``denoiser.label_names`` (every alias), else
    against ``denoiser.class_names``; an unknown name raises a one-line error listing a few allowed.
    """
    known = dict(getattr(denoiser, "label_names", None) or {})
    for k, known_name in enumerate(denoiser.class_names or []):
        known.setdefault(known_name.lower(), k)
    if not known:
        raise UnsupportedModelError(f"{denoiser.name}: the model has no label names to match class names against")
    ids = []
    for class_name in class_names:
        label = known.get(str(class_name).strip().lower())
        if label is None:
            examples = ", ".join(repr(n) for n in sorted(known)[:5])
            raise DataError(f"class {class_name!r} is not one of {denoiser.name}'s labels ({len(known)} names, e.g. "
                            f"{examples}); allowed: the model's label names")
        ids.append(label)
    network_labels = denoiser.conditioning.network_labels
    null = network_labels[1]
    bound = Denoiser(
        denoiser.model, num_classes=len(ids), sample_shape=denoiser.sample_shape, scheduler_config=denoiser.scheduler_config,
        name=denoiser.name, class_names=list(class_names), class_encoder=denoiser.class_encoder,
        conditioning=LabelConditioning(len(ids), torch.tensor(ids + [null]), network_labels), space=denoiser.space,
        pipeline=denoiser.pipeline, sampling_defaults=denoiser.sampling_defaults,
    ).eval().requires_grad_(False)
    bound.label_names = known
    _share_weights_identity(denoiser, bound)  # the same weights, other candidates
    return bound


def bind_classes(
    denoiser: Denoiser,
    class_names: list[str],
    *,
    prompts: list[str] | None = None,
    prompt_template: str = DEFAULT_TEMPLATE,
) -> Denoiser:
    """The same network with candidates ``class_names``: prompts re-encoded (text) or labels matched.

    Raises a one-line error for prompts given to a class-conditional model, or a text model
    without its pipeline (nothing to encode prompts with).
    """
    if denoiser.conditioning.kind == "labels":
        if prompts:
            raise DataError(f"{denoiser.name} is class-conditional (labels, not text): the classes file's prompts "
                            "cannot condition it; allowed: class names only")
        if denoiser.class_names is not None and list(class_names) == list(denoiser.class_names):
            return denoiser
        return bind_labels(denoiser, list(class_names))
    if denoiser.pipeline is None:
        raise UnsupportedModelError(f"{denoiser.name}: no pipeline to encode class prompts with")
    texts = list(prompts) if prompts else [prompt_template.format(name) for name in class_names]
    if len(texts) != len(class_names):
        raise DataError(f"{len(texts)} prompts for {len(class_names)} classes; allowed: one prompt per class")
    resolution = denoiser.image_shape[-1]
    bound = Denoiser(
        denoiser.model, num_classes=len(class_names), sample_shape=denoiser.sample_shape,
        scheduler_config=denoiser.scheduler_config, name=denoiser.name, class_names=list(class_names),
        conditioning=encode_prompts(denoiser.pipeline, texts, resolution), space=denoiser.space,
        pipeline=denoiser.pipeline, sampling_defaults=denoiser.sampling_defaults,
    ).eval().requires_grad_(False)
    _share_weights_identity(denoiser, bound)  # the same weights, other prompts
    return bound
