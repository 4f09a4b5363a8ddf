"""Class labels -> the conditioning inputs of the network, for class-conditional and text models.

A :class:`~bigain_export.models.denoiser.Denoiser` is class-conditional at its interface
(``denoiser(sample, timestep, class_labels)``, what the diffusion classifier and the samplers
call), whatever the network underneath takes. The conditioning module turns the *candidate*
labels ``0 .. num_classes - 1`` (plus ``null_label``, "unconditional") into the network's inputs:

* :class:`LabelConditioning` (DiT, the built-ins): ``{"class_labels": model_labels}``. The
  candidates may be a subset of the model's labels (a user's image folder with 3 ImageNet
  classes on DiT-XL/2): ``label_map[k]`` is candidate k's model label, its last entry the model's
  null label.
* :class:`TextConditioning` (SD 2.x, SDXL): one prompt per class, encoded once by the pipeline's
  own ``encode_prompt`` (so the embeddings are exactly what the pipeline computes):
  ``{"encoder_hidden_states": [B, L, D]}``, and for SDXL also ``text_embeds [B, P]`` (pooled) and
  ``time_ids [B, 6]`` (its ``added_cond_kwargs``). Row ``num_classes`` is the pipeline's
  unconditional branch (the empty prompt for SD; zeros for SDXL's ``force_zeros_for_empty_prompt``).

Neither holds weights: the tables depend on the class names, and the engine hash covers the
network only. Text tables stay float32 whatever the model's dtype (an fp16 export round trip
would round them) and are copied once per device they are used on.
"""

from __future__ import annotations

import torch
from torch import nn

from ..export.spec import LABEL_CONDITIONS, ConditionSpec


class LabelConditioning(nn.Module):
    """candidate labels [B] long -> ``{"class_labels": [B] long}`` model labels.

    Args:
        num_classes: candidates ``0 .. num_classes - 1``; ``num_classes`` itself is "unconditional".
        label_map: ``[num_classes + 1]`` model label of each candidate, the last one the model's null
            label; ``None`` when candidates are the model's labels themselves.
    """

    kind = "labels"

    def __init__(self, num_classes: int, label_map: torch.Tensor | None = None,
                 network_labels: tuple[int, int] | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.register_buffer("label_map", None if label_map is None else torch.as_tensor(label_map).long(),
                             persistent=False)
        # (labels, null label) of the network itself: what an engine's class_labels input may hold
        self.network_labels = tuple(network_labels) if network_labels else (self.num_classes, self.num_classes)

    @property
    def conditions(self) -> tuple[ConditionSpec, ...]:
        return LABEL_CONDITIONS

    def forward(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = torch.as_tensor(labels).long()
        if self.label_map is not None:
            labels = self.label_map.to(labels.device)[labels]
        return {"class_labels": labels}


class TextConditioning(nn.Module):
    """candidate labels [B] long -> the text embeddings of their prompts (tables indexed by label).

    Args:
        prompt_embeds: ``[K + 1, L, D]`` per-class ``encoder_hidden_states``, last row unconditional.
        pooled_embeds: ``[K + 1, P]`` SDXL pooled embeddings (``text_embeds``), or None.
        time_ids: ``[6]`` SDXL micro-conditioning (original size, crop, target size), or None.
        prompts: the K prompts encoded (recorded for reports).
    """

    kind = "text"
    network_labels = (0, 0)  # the network takes embeddings, no labels

    def __init__(self, prompt_embeds: torch.Tensor, pooled_embeds: torch.Tensor | None = None,
                 time_ids: torch.Tensor | None = None, prompts: list[str] | None = None):
        super().__init__()
        if (pooled_embeds is None) != (time_ids is None):
            raise ValueError("SDXL conditioning needs both pooled_embeds and time_ids")
        self.num_classes = int(prompt_embeds.shape[0]) - 1
        self.prompts = list(prompts) if prompts is not None else None
        self.prompt_embeds = prompt_embeds.detach().float().cpu()
        self.pooled_embeds = None if pooled_embeds is None else pooled_embeds.detach().float().cpu()
        self.time_ids = None if time_ids is None else time_ids.detach().float().cpu().reshape(-1)
        self._on_device: dict[torch.device, tuple] = {}

    def _tables(self, device: torch.device) -> tuple:
        if device not in self._on_device:
            self._on_device[device] = tuple(None if t is None else t.to(device)
                                            for t in (self.prompt_embeds, self.pooled_embeds, self.time_ids))
        return self._on_device[device]

    @property
    def conditions(self) -> tuple[ConditionSpec, ...]:
        specs = [ConditionSpec("encoder_hidden_states", tuple(self.prompt_embeds.shape[1:]))]
        if self.pooled_embeds is not None:
            specs += [ConditionSpec("text_embeds", tuple(self.pooled_embeds.shape[1:])),
                      ConditionSpec("time_ids", tuple(self.time_ids.shape), kind="size")]
        return tuple(specs)

    def forward(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = torch.as_tensor(labels).long()
        prompt_embeds, pooled_embeds, time_ids = self._tables(labels.device)
        cond = {"encoder_hidden_states": prompt_embeds[labels]}
        if pooled_embeds is not None:
            cond["text_embeds"] = pooled_embeds[labels]
            cond["time_ids"] = time_ids.expand(labels.shape[0], -1)
        return cond
