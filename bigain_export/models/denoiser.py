"""One epsilon-prediction interface over the diffusers models this project patches and exports.

Everything downstream (patching, ONNX export, the diffusion classifier, samplers, validation)
talks to a :class:`Denoiser`, never to a DiT or UNet directly::

    eps = denoiser(sample [B, C, H, W], timestep [B] or [], class_labels [B] long)  # -> [B, C, H, W]

A denoiser also owns its space (``encode_images`` / ``decode``: identity for the pixel-space
built-ins, the VAE for latent pipelines) and its conditioning (labels, or a text pipeline's
prompt embeddings), so callers never branch on the model family.

The forward is written to trace: no Python branching on tensor values, no ``.item()``; the only
branches are on attributes fixed at construction (the model family), so ``torch.onnx.export`` and
``torch.compile(fullgraph=True)`` see one straight graph.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

from ..errors import UnsupportedModelError
from ..export.spec import ConditionSpec
from .class_encoder import ClassTokenEncoder
from .conditioning import LabelConditioning, TextConditioning
from .space import LatentSpace, PixelSpace


def model_family(model: torch.nn.Module) -> str:
    """``"dit"`` or ``"unet"`` for a supported diffusers model, else UnsupportedModelError."""
    if isinstance(model, DiTTransformer2DModel):
        return "dit"
    if isinstance(model, UNet2DConditionModel):
        return "unet"
    raise UnsupportedModelError(
        f"model class {type(model).__name__!r} is not supported; allowed: DiTTransformer2DModel, "
        "UNet2DConditionModel"
    )


class Denoiser(torch.nn.Module):
    """Uniform epsilon-prediction interface over a diffusers model (and the pipeline around it).

    ``forward(sample [B,C,H,W] float, timestep [B] or [] tensor (int or float), class_labels [B]
    long) -> eps [B,C,H,W]`` (same dtype as ``sample``). A scalar timestep is expanded to the batch.
    Label ``null_label`` means "unconditional" (classifier-free guidance).

    The forward is ``network(sample, timestep, **condition(class_labels))``: :attr:`conditioning`
    turns labels into what the network takes (``class_labels``, or a text pipeline's prompt
    embeddings and SDXL's added conditions), and :meth:`network` is what gets exported: its
    inputs are ``sample``, ``timestep`` and :attr:`conditions`, declared in ``export/spec.py``.

    * DiT: ``eps = model(sample, timestep=t, class_labels=labels).sample[:, :C]`` (the first C
      channels, in case the model also predicts a learned variance).
    * UNet: ``eps = model(sample, t, encoder_hidden_states=class_encoder(labels) or the prompt
      embeddings, added_cond_kwargs={text_embeds, time_ids} (SDXL)).sample``.

    Attributes:
        model: the diffusers model (DiTTransformer2DModel or UNet2DConditionModel); patch this.
        class_encoder: labels -> cross-attention tokens (the built-in UNet only, else None).
        conditioning: :class:`~.conditioning.LabelConditioning` or :class:`~.conditioning.TextConditioning`.
        space: :class:`~.space.PixelSpace` or :class:`~.space.LatentSpace` (the VAE), see
            :meth:`encode_images` and :meth:`decode`.
        pipeline: the diffusers pipeline the model came from (its ``unet``/``transformer`` is
            :attr:`model`), or None.
        kind: ``"dit"`` or ``"unet"``.
        num_classes: number of candidate classes (10 for the built-ins).
        null_label: label index meaning "unconditional" (``num_classes``).
        sample_shape: (C, H, W) of one sample in model space, e.g. (1, 32, 32) or (4, 64, 64).
        scheduler_config: the DDPM training-scheduler config (num_train_timesteps, betas, ...),
            a plain dict that ``diffusers.DDIMScheduler.from_config`` etc. accept.
        name: ``"builtin:fmnist-dit"``, ``"tiny-random:unet"``, or the folder path loaded.
        class_names: names indexed by label, or None when unknown.
        sampling_defaults: ``{"sampler", "steps", "guidance"}`` the model is meant to be sampled
            with (the built-ins' cards; a pipeline's scheduler and call defaults).
        weights_sha256: the weights' hash taken by ``load_denoiser`` before a precision cast, or
            None (no cast, or a Denoiser built directly); read it through
            ``engine.manifest.weights_sha256``, which hashes the weights where it is None and
            ignores it once the weights were changed in place.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        num_classes: int,
        sample_shape: tuple[int, int, int],
        scheduler_config: dict[str, Any],
        name: str,
        class_names: list[str] | None = None,
        class_encoder: ClassTokenEncoder | None = None,
        null_label: int | None = None,
        conditioning: LabelConditioning | TextConditioning | None = None,
        space: PixelSpace | LatentSpace | None = None,
        pipeline: Any = None,
        sampling_defaults: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.kind = model_family(model)
        conditioning = conditioning if conditioning is not None else LabelConditioning(num_classes)
        if self.kind == "unet" and conditioning.kind == "labels" and class_encoder is None:
            raise UnsupportedModelError(f"{name}: a UNet denoiser needs a class_encoder (labels -> tokens) or prompts")
        if self.kind == "dit" and conditioning.kind != "labels":
            raise UnsupportedModelError(f"{name}: a DiT is class-conditional; text conditioning is not allowed")
        prediction = scheduler_config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise UnsupportedModelError(
                f"{name}: prediction_type={prediction!r} is not supported; allowed: 'epsilon'"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise UnsupportedModelError(f"{name}: {len(class_names)} class names for {num_classes} classes")
        if conditioning.num_classes != num_classes:
            raise UnsupportedModelError(f"{name}: conditioning for {conditioning.num_classes} classes, not {num_classes}")
        self.model = model
        self.class_encoder = class_encoder
        self.conditioning = conditioning
        self.space = space if space is not None else PixelSpace(sample_shape)
        self.pipeline = pipeline
        self.num_classes = int(num_classes)
        self.null_label = int(num_classes if null_label is None else null_label)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        if tuple(self.space.sample_shape) != self.sample_shape:
            raise UnsupportedModelError(f"{name}: the VAE gives latents {self.space.sample_shape}, the model takes {self.sample_shape}")
        self.scheduler_config = dict(scheduler_config)
        self.name = name
        self.class_names = list(class_names) if class_names is not None else None
        self.sampling_defaults = dict(sampling_defaults or {"sampler": "ddim", "steps": 50, "guidance": 1.0})
        self.weights_sha256: str | None = None  # set by load_denoiser

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (its first parameter's)."""
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def conditions(self) -> tuple[ConditionSpec, ...]:
        """The network's conditioning inputs (after ``sample`` and ``timestep``), per batch row."""
        return self.conditioning.conditions

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this model reads and writes (== sample_shape in pixel space)."""
        return tuple(self.space.image_shape)

    def condition(self, class_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """candidate labels [B] -> the network's conditioning inputs (see :attr:`conditions`)."""
        return self.conditioning(class_labels)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[N, *image_shape]`` in [-1, 1] -> ``[N, *sample_shape]`` model-space inputs."""
        return self.space.encode_images(images)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """``[N, *sample_shape]`` model-space samples -> images ``[N, *image_shape]`` in [-1, 1]."""
        return self.space.decode(samples)

    def network(self, sample: torch.Tensor, timestep: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        """The exported computation: ``sample``, ``timestep`` and the conditioning inputs -> eps."""
        model_dtype = next(self.model.parameters()).dtype
        x = sample.to(model_dtype)
        # reshape(-1).expand(B) serves both [] and [B] without looking at values (ONNX/compile-safe).
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        if self.kind == "dit":
            out = self.model(x, timestep=t, class_labels=cond["class_labels"], return_dict=False)[0]
            eps = out[:, : self.sample_shape[0]]
        else:
            if self.class_encoder is not None:
                context = self.class_encoder(cond["class_labels"])
            else:
                context = cond["encoder_hidden_states"]
            added = None
            if "text_embeds" in cond:  # SDXL's added_cond_kwargs
                added = {"text_embeds": cond["text_embeds"].to(model_dtype), "time_ids": cond["time_ids"].to(model_dtype)}
            eps = self.model(x, t, encoder_hidden_states=context.to(model_dtype), added_cond_kwargs=added,
                             return_dict=False)[0]
        return eps.to(sample.dtype)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """sample [B, C, H, W], timestep [B] or [] (int or float), class_labels [B] long -> eps [B, C, H, W]."""
        return self.network(sample, timestep, **self.condition(class_labels))

    def network_module(self) -> "NetworkModule":
        """:meth:`network` as a module taking the spec's inputs positionally (export, runners)."""
        return NetworkModule(self).train(self.training)  # a new module starts in training mode

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, kind={self.kind}, conditioning={self.conditioning.kind}, space={self.space.kind}, "
            f"num_classes={self.num_classes}, null_label={self.null_label}, sample_shape={self.sample_shape}"
        )


class NetworkModule(torch.nn.Module):
    """``forward(sample, timestep, *conditions)`` in the order of ``DenoiserSpec.inputs`` -> eps."""

    def __init__(self, denoiser: Denoiser):
        super().__init__()
        self.denoiser = denoiser
        self.condition_names = tuple(c.name for c in denoiser.conditions)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, *conditions: torch.Tensor) -> torch.Tensor:
        return self.denoiser.network(sample, timestep, **dict(zip(self.condition_names, conditions)))
