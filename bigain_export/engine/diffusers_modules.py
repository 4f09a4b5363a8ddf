"""Engines as drop-in diffusers modules: ``pipe.unet = EngineUNet("engines/...")`` then ``pipe(prompt)``.

:class:`EngineUNet` has the call signature and output type of ``UNet2DConditionModel`` (SD 2.x,
SDXL with ``added_cond_kwargs``), :class:`EngineTransformer` those of ``DiTTransformer2DModel``;
both run a built engine (ONNX Runtime or TensorRT, whatever ``build`` made) instead of PyTorch.
A stock diffusers pipeline then works unchanged: its text encoders, scheduler, guidance and VAE
stay as they are, and every denoising step goes through the engine.

What a pipeline reads from its network is served from the engine: ``config`` (the network's
diffusers config, saved as ``config.json`` in the engine directory at build time), ``dtype``
(float32: engine I/O is float32 at every precision), ``device`` (where outputs are returned,
follows ``.to()``) and, for SDXL, ``add_embedding.linear_1.in_features``.

Engines have a static batch: calls with more rows are split, fewer are padded (the last row
repeated), so any ``num_images_per_prompt`` and guidance setting works. Timesteps become the
engine's int64 timesteps (DDIM, PNDM and SDXL's Euler with "leading" spacing use integer ones;
fractional ones are rounded). Inputs of another model (another width, length, resolution)
fail with one line naming the input and the shape this engine takes.

``cuda_graph=True`` (``ort-cuda`` engines): the session captures its first call as a CUDA graph
and replays it at every later call, on inputs and outputs bound to fixed device buffers
(``backends/ort_bound_runner.py``). That saves the per-kernel launch cost of each step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ..errors import EngineError

CONFIG_NAME = "config.json"


def write_network_config(denoiser, engine_dir: Path) -> Path:
    """Save ``denoiser.model``'s diffusers config as ``config.json`` in ``engine_dir`` (the
    manifest hashes it with the engine's other files)."""
    path = Path(engine_dir) / CONFIG_NAME
    path.write_text(json.dumps(dict(denoiser.model.config), indent=2, sort_keys=True, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


class _EngineModule(torch.nn.Module):
    """Shared part: open the engine, hold one runtime session, run it in engine-sized chunks."""

    network_classes: tuple[str, ...] = ()
    needs_text: bool = False

    def __init__(self, engine: str | os.PathLike | Any, *, model: torch.nn.Module | None = None,
                 cuda_graph: bool = False):
        super().__init__()
        from .build import Engine, load_engine
        from .manifest import model_sha256

        if isinstance(engine, Engine):
            engine = load_engine(engine.path)
        else:
            engine = load_engine(engine)
        if model is not None:  # the network this engine should stand in for: same weights?
            load_engine(engine.path, model_hash=model_sha256(_as_denoiser_state(model)))
        self.engine, self.spec = engine, engine.spec
        path = engine.path / CONFIG_NAME
        if not path.is_file():
            raise EngineError(f"{engine.path}: no {CONFIG_NAME} (built before engines saved their network config); rebuild it")
        raw = json.loads(path.read_text())
        cls = raw.get("_class_name")
        if cls not in self.network_classes:
            raise EngineError(f"{engine.path}: an engine of a {cls}; {type(self).__name__} serves "
                              f"{' | '.join(self.network_classes)}")
        has_text = "encoder_hidden_states" in self.spec.condition_names
        if has_text != self.needs_text:
            takes = ", ".join(self.spec.condition_names)
            raise EngineError(f"{engine.path}: this engine takes {takes}; {type(self).__name__} needs "
                              f"{'text embeddings (an SD / SDXL pipeline engine)' if self.needs_text else 'class_labels'}")
        from diffusers.configuration_utils import FrozenDict

        self.config = FrozenDict(self._config_view(raw))
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries .device through .to()
        self._runner = engine.runner(cuda_graph=cuda_graph)
        self._runner.activate()

    def _config_view(self, raw: dict[str, Any]) -> dict[str, Any]:
        return raw

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def close(self) -> None:
        """Release the runtime session (also done when the module is garbage collected)."""
        runner, self._runner = getattr(self, "_runner", None), None
        if runner is not None and runner.is_active:
            runner.deactivate()

    def __del__(self):  # noqa: D105
        try:
            self.close()
        except Exception:  # noqa: BLE001  interpreter shutdown
            pass

    def _run(self, sample: torch.Tensor, timestep: Any, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """sample [M, C, H, W] and per-row conditions -> the engine's output [M, C, H, W] (chunked, padded)."""
        if self._runner is None:
            raise EngineError(f"{self.engine.path}: this {type(self).__name__} was closed")
        total = sample.shape[0]
        t = torch.as_tensor(timestep).reshape(-1).to("cpu")
        t = t.expand(total) if t.numel() == 1 else t
        if t.shape != (total,):
            raise EngineError(f"{self.engine.path}: timestep of shape {list(t.shape)} for {total} samples")
        t = t.round().long() if t.is_floating_point() else t.long()
        rows = {"sample": sample.detach().float().cpu(), "timestep": t}
        dtypes = {c.name: c.torch_dtype for c in self.spec.conditions}
        rows.update({k: v.detach().to("cpu", dtypes.get(k, v.dtype)) for k, v in conditions.items()})
        batch, outputs = self.spec.batch, []
        for start in range(0, total, batch):
            feed = {k: _pad(v[start:start + batch], batch).numpy() for k, v in rows.items()}
            if self.spec.timestep == "scalar":
                feed["timestep"] = feed["timestep"][:1].reshape(())
            self.spec.check_feed(feed, str(self.engine.path))
            out = self._runner.infer(feed)[self.spec.output]
            outputs.append(torch.from_numpy(np.asarray(out))[: min(batch, total - start)])
        return torch.cat(outputs).to(device=sample.device, dtype=sample.dtype)


def _pad(rows: torch.Tensor, size: int) -> torch.Tensor:
    missing = size - rows.shape[0]
    return rows if missing <= 0 else torch.cat([rows, rows[-1:].expand(missing, *rows.shape[1:])])


def _as_denoiser_state(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose state_dict the manifest hashed: a Denoiser wraps the network as ``model``."""
    wrapper = torch.nn.Module()
    wrapper.model = model
    return wrapper


class EngineUNet(_EngineModule):
    """A text-conditioned ``UNet2DConditionModel`` (SD 2.x, SDXL) backed by an engine.

    ``EngineUNet(path, model=pipe.unet)`` also checks that the engine was built from these weights.
    """

    network_classes = ("UNet2DConditionModel",)
    needs_text = True

    def __init__(self, engine, *, model: torch.nn.Module | None = None, cuda_graph: bool = False):
        super().__init__(engine, model=model, cuda_graph=cuda_graph)
        if "text_embeds" in self.spec.condition_names:  # SDXL's pipeline checks the added embedding width
            width = int(self.config["projection_class_embeddings_input_dim"])
            self.add_embedding = SimpleNamespace(linear_1=SimpleNamespace(in_features=width))

    def forward(self, sample, timestep, encoder_hidden_states, class_labels=None, timestep_cond=None,
                attention_mask=None, cross_attention_kwargs=None, added_cond_kwargs=None, return_dict: bool = True,
                **unused):
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        if timestep_cond is not None or attention_mask is not None or class_labels is not None:
            raise EngineError(f"{self.engine.path}: timestep_cond, attention_mask and class_labels are not inputs of "
                              "this engine (LCM and ControlNet-style UNets are not supported)")
        conditions = {"encoder_hidden_states": encoder_hidden_states}
        if "text_embeds" in self.spec.condition_names:
            if not added_cond_kwargs or "text_embeds" not in added_cond_kwargs or "time_ids" not in added_cond_kwargs:
                raise EngineError(f"{self.engine.path}: an SDXL engine needs added_cond_kwargs text_embeds and time_ids")
            conditions.update(text_embeds=added_cond_kwargs["text_embeds"], time_ids=added_cond_kwargs["time_ids"])
        out = self._run(sample, timestep, conditions)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


class EngineTransformer(_EngineModule):
    """A class-conditional ``DiTTransformer2DModel`` (DiT-XL/2) backed by an engine.

    The engine returns eps only (the learned variance is dropped at export), so its ``config``
    says ``out_channels == in_channels`` and ``DiTPipeline`` uses the output as eps directly.
    """

    network_classes = ("DiTTransformer2DModel", "Transformer2DModel")
    needs_text = False

    def _config_view(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {**raw, "out_channels": raw.get("in_channels")}

    def forward(self, hidden_states, timestep=None, class_labels=None, cross_attention_kwargs=None,
                return_dict: bool = True, **unused):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        if class_labels is None:
            raise EngineError(f"{self.engine.path}: a DiT engine needs class_labels")
        out = self._run(hidden_states, timestep, {"class_labels": torch.as_tensor(class_labels).long()})
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)
