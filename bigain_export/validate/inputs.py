"""What a validation run measures on: model-space images, labels, FID reference pixels, the engine.

``prepare_inputs`` ties a :class:`~bigain_export.models.denoiser.Denoiser` to a ``--data``
source: the data's class names become the denoiser's candidate classes (prompts for text
pipelines, matched labels for class-conditional models), pixels are encoded to the model's space
(the VAE for latent pipelines) for the diffusion classifier, and the FID reference is real
pixels (the same images, or ``--fid-ref DIR``). ``open_engine_eps`` opens an engine checked
against the config and the weights, fed through the denoiser's conditioning.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.image_folder import LabeledImages, load_images
from ..data.sources import load_data
from ..errors import DataError
from ..models.pipelines import bind_classes
from ..models.prompts import DEFAULT_TEMPLATE


@dataclass
class ValidationInputs:
    """``images`` ``[N, *sample_shape]`` (model space) and ``labels`` ``[N]`` for the classifier;
    ``fid_images`` ``[M, *image_shape]`` pixels in [-1, 1] or None; ``denoiser`` bound to the data's classes."""

    denoiser: torch.nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    fid_images: torch.Tensor | None
    data: LabeledImages


def prepare_inputs(
    denoiser,
    data_spec: str,
    *,
    limit: int | None = None,
    prompt_template: str = DEFAULT_TEMPLATE,
    fid_ref: str | None = None,
    progress: bool = True,
) -> ValidationInputs:
    data = load_data(data_spec, denoiser.image_shape, limit=limit, progress=progress)
    want = tuple(denoiser.image_shape if data.pixels else denoiser.sample_shape)
    images, labels = data.images, data.labels.long()
    if images.ndim != 4 or tuple(images.shape[1:]) != want or labels.shape != images.shape[:1]:
        raise DataError(f"--data {data_spec!r} holds images {list(images.shape)} and labels {list(labels.shape)}; "
                        f"allowed for this model: images [N, {', '.join(map(str, want))}] and labels [N]")
    if data.class_names is not None:
        denoiser = bind_classes(denoiser, data.class_names, prompts=data.prompts, prompt_template=prompt_template)
    elif denoiser.conditioning.kind == "text":
        raise DataError(f"--data {data_spec}: {denoiser.name} is text-conditioned and needs class names to build "
                        "prompts from; allowed: an image folder (class sub-folders) or an .npz with 'class_names'")
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < denoiser.num_classes):
        bad = int(labels.max()) if labels.max() >= denoiser.num_classes else int(labels.min())
        raise DataError(f"--data {data_spec!r} has label {bad}; allowed for this model: 0 .. {denoiser.num_classes - 1}")
    device = denoiser.device
    images = denoiser.encode_images(images.to(device)) if data.pixels else images.to(device)
    channels, height, _ = denoiser.image_shape
    if fid_ref and Path(fid_ref).is_dir():
        fid_images = load_images(fid_ref, height, channels=channels, progress=progress)
    elif fid_ref:  # a data spec (fmnist split, .npz of pixels), as sweep's --fid-reference takes
        reference = load_data(fid_ref, denoiser.image_shape, progress=progress)
        if not reference.pixels and denoiser.space.kind != "pixels":
            raise DataError(f"--fid-ref {fid_ref!r} holds model-space samples; allowed: real images (a folder)")
        fid_images = reference.images
    elif data.pixels or denoiser.space.kind == "pixels":
        fid_images = data.images
    else:
        fid_images = None  # latents without pixels: the caller needs --fid-ref (or --no-fid)
    return ValidationInputs(denoiser, images, labels, fid_images, data)


def open_engine_eps(path: str, denoiser, config, stack: contextlib.ExitStack):
    """(eps function, static batch) of the engine in ``path``, built with ``config`` from
    ``denoiser``'s weights (else a one-line error), fed through ``denoiser.condition``; its
    runtime session stays open until ``stack`` closes."""
    from ..engine.build import EngineEpsFn, load_engine

    engine = load_engine(path, config=config, denoiser=denoiser)
    eps_fn = stack.enter_context(EngineEpsFn(engine, condition=denoiser.condition))
    return eps_fn, eps_fn.batch
