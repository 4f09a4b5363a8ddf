"""One epsilon-prediction interface over the diffusers models this project patches and exports.

Everything downstream (patching, ONNX export, the diffusion classifier, samplers, validation)
talks to a :class:`Denoiser`, never to a DiT or UNet directly::

    eps = denoiser(sample [B, C, H, W], timestep [B] or [], class_labels [B] long)  # -> [B, C, H, W]

The forward is written to trace: no Python branching on tensor values, no ``.item()``; the only
branches are on attributes fixed at construction (the model family), so ``torch.onnx.export`` and
``torch.compile(fullgraph=True)`` see one straight graph.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

from ..errors import UnsupportedModelError
from .class_encoder import ClassTokenEncoder


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
    """Uniform epsilon-prediction interface over a diffusers model.

    ``forward(sample [B,C,H,W] float, timestep [B] or [] tensor (int or float), class_labels [B]
    long) -> eps [B,C,H,W]`` (same dtype as ``sample``). A scalar timestep is expanded to the batch.
    Label ``null_label`` means "unconditional" (classifier-free guidance).

    * DiT: ``eps = model(sample, timestep=t, class_labels=labels).sample[:, :C]`` (the first C
      channels, in case the model also predicts a learned variance).
    * UNet: ``eps = model(sample, t, encoder_hidden_states=class_encoder(labels)).sample``.

    Attributes:
        model: the diffusers model (DiTTransformer2DModel or UNet2DConditionModel); patch this.
        class_encoder: labels -> cross-attention tokens (UNet only, else None).
        kind: ``"dit"`` or ``"unet"``.
        num_classes: number of real classes (10 for the built-ins).
        null_label: label index meaning "unconditional" (``num_classes``).
        sample_shape: (C, H, W) of one sample, e.g. (1, 32, 32).
        scheduler_config: the DDPM training-scheduler config (num_train_timesteps, betas, ...),
            a plain dict that ``diffusers.DDIMScheduler.from_config`` etc. accept.
        name: ``"builtin:fmnist-dit"``, ``"tiny-random:unet"``, or the folder path loaded.
        class_names: names indexed by label, or None when unknown.
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
    ):
        super().__init__()
        self.kind = model_family(model)
        if self.kind == "unet" and class_encoder is None:
            raise UnsupportedModelError(f"{name}: a UNet denoiser needs a class_encoder (labels -> tokens)")
        prediction = scheduler_config.get("prediction_type", "epsilon")
        if prediction != "epsilon":
            raise UnsupportedModelError(
                f"{name}: prediction_type={prediction!r} is not supported; allowed: 'epsilon'"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise UnsupportedModelError(f"{name}: {len(class_names)} class names for {num_classes} classes")
        self.model = model
        self.class_encoder = class_encoder
        self.num_classes = int(num_classes)
        self.null_label = int(num_classes if null_label is None else null_label)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.scheduler_config = dict(scheduler_config)
        self.name = name
        self.class_names = list(class_names) if class_names is not None else None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (its first parameter's)."""
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """sample [B, C, H, W], timestep [B] or [] (int or float), class_labels [B] long -> eps [B, C, H, W]."""
        model_dtype = next(self.model.parameters()).dtype
        x = sample.to(model_dtype)
        # reshape(-1).expand(B) serves both [] and [B] without looking at values (ONNX/compile-safe).
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        if self.kind == "dit":
            out = self.model(x, timestep=t, class_labels=class_labels, return_dict=False)[0]
            eps = out[:, : self.sample_shape[0]]
        else:
            context = self.class_encoder(class_labels).to(model_dtype)
            eps = self.model(x, t, encoder_hidden_states=context, return_dict=False)[0]
        return eps.to(sample.dtype)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, kind={self.kind}, num_classes={self.num_classes}, "
            f"null_label={self.null_label}, sample_shape={self.sample_shape}"
        )
