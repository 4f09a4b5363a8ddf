"""The exported denoiser's tensors, declared once: names, shapes, dtypes, sample inputs.

Every engine (ONNX Runtime, TensorRT) and every runner feeds and reads these names; shapes are
static (a fixed batch and resolution per engine). The conditioning inputs come from the model
(``Denoiser.conditions``): class labels, or a text pipeline's embeddings and added conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numpy_dtype(self) -> np.dtype:
        return torch.empty((), dtype=self.dtype).numpy().dtype if self.dtype != torch.bfloat16 else np.dtype("float32")


@dataclass(frozen=True)
class ConditionSpec:
    """One conditioning input of the exported network, per batch row: ``shape`` excludes the batch.

    ``kind`` says how random drift inputs are drawn: ``label`` (integers in [0, num_classes)),
    ``normal`` (N(0, 1) embeddings) or ``size`` (SDXL ``time_ids``: pixel sizes in [0, 1024]).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # "float32" | "int64"
    kind: str = "normal"

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "int64") or self.kind not in ("label", "normal", "size"):
            raise ConfigError(f"condition {self.name!r}: dtype={self.dtype!r}, kind={self.kind!r}; allowed: "
                              "float32 | int64 and label | normal | size")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.int64 if self.dtype == "int64" else torch.float32

    def to_dict(self) -> dict:
        return dict(name=self.name, shape=list(self.shape), dtype=self.dtype, kind=self.kind)

    @classmethod
    def from_dict(cls, data: dict) -> "ConditionSpec":
        return cls(data["name"], tuple(data["shape"]), data.get("dtype", "float32"), data.get("kind", "normal"))


# Class-conditional models (DiT, the built-ins): the class label is the one condition.
LABEL_CONDITIONS = (ConditionSpec("class_labels", (), "int64", "label"),)
TIMESTEP_LAYOUTS = ("batch", "scalar")


@dataclass(frozen=True)
class DenoiserSpec:
    """I/O of the exported denoiser network at a fixed batch size.

    ``(sample [B, C, H, W], timestep [B] (or [] with timestep="scalar"), *conditions) -> output``.
    Class-conditional models take ``class_labels [B]``; text-conditioned ones the embeddings the
    pipeline computes: ``encoder_hidden_states [B, L, D]`` (SD), plus ``text_embeds [B, P]`` and
    ``time_ids [B, 6]`` (SDXL's ``added_cond_kwargs``).
    """

    batch: int
    sample_shape: tuple[int, int, int]  # (C, H, W)
    precision: str = "fp32"
    conditions: tuple[ConditionSpec, ...] = LABEL_CONDITIONS
    timestep: str = "batch"
    output: str = "eps"

    def __post_init__(self) -> None:
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError(f"batch={self.batch!r} is not allowed; allowed: an integer >= 1")
        if self.precision not in DTYPES:
            raise ConfigError(f"precision={self.precision!r} is not allowed; allowed: {' | '.join(DTYPES)}")
        if self.timestep not in TIMESTEP_LAYOUTS:
            raise ConfigError(f"timestep={self.timestep!r} is not allowed; allowed: {' | '.join(TIMESTEP_LAYOUTS)}")

    @classmethod
    def for_denoiser(cls, denoiser, batch: int, precision: str = "fp32", **overrides) -> "DenoiserSpec":
        """The spec of ``denoiser``'s network (its sample shape and conditioning inputs)."""
        return cls(batch, tuple(denoiser.sample_shape), precision, tuple(denoiser.conditions), **overrides)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @property
    def condition_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        # I/O stays float32 at every precision: the engine casts inside, callers never convert.
        timestep_shape = (self.batch,) if self.timestep == "batch" else ()
        return (
            TensorSpec("sample", (self.batch, *self.sample_shape), torch.float32),
            TensorSpec("timestep", timestep_shape, torch.int64),
            *(TensorSpec(c.name, (self.batch, *c.shape), c.torch_dtype) for c in self.conditions),
        )

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(self.output, (self.batch, *self.sample_shape), torch.float32),)

    def sample_inputs(self, seed: int = 0, num_classes: int = 10) -> dict[str, torch.Tensor]:
        """Fresh random inputs: noise, timesteps spread over [0, 999], labels in [0, num_classes),
        N(0, 1) embeddings, time_ids in [0, 1024]."""
        g = torch.Generator().manual_seed(seed)
        feed = {
            "sample": torch.randn(self.inputs[0].shape, generator=g),
            "timestep": torch.randint(0, 1000, self.inputs[1].shape, generator=g),
        }
        for c in self.conditions:
            shape = (self.batch, *c.shape)
            if c.kind == "label":
                feed[c.name] = torch.randint(0, num_classes, shape, generator=g)
            elif c.kind == "size":
                feed[c.name] = torch.randint(0, 1025, shape, generator=g).to(c.torch_dtype)
            else:
                feed[c.name] = torch.randn(shape, generator=g).to(c.torch_dtype)
        return feed

    def check_feed(self, feed: dict[str, np.ndarray | torch.Tensor], where: str) -> None:
        """Raise a one-line error naming the tensor whose shape or name is wrong."""
        from ..errors import EngineError

        expected = {spec.name: spec.shape for spec in self.inputs}
        missing = sorted(set(expected) - set(feed))
        extra = sorted(set(feed) - set(expected))
        if missing or extra:
            raise EngineError(f"{where}: inputs {sorted(feed)} do not match {sorted(expected)} (an engine of "
                              "another model?)")
        for name, shape in expected.items():
            got = tuple(feed[name].shape)
            if got != shape:
                raise EngineError(f"{where}: input {name!r} has shape {list(got)}; this engine takes {list(shape)}")

    def to_dict(self) -> dict:
        data = dict(batch=self.batch, sample_shape=list(self.sample_shape), precision=self.precision)
        if self.conditions != LABEL_CONDITIONS:  # older manifests (class labels only) stay byte-identical
            data["conditions"] = [c.to_dict() for c in self.conditions]
        if self.timestep != "batch":
            data["timestep"] = self.timestep
        if self.output != "eps":
            data["output"] = self.output
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DenoiserSpec":
        conditions = tuple(ConditionSpec.from_dict(c) for c in data["conditions"]) if "conditions" in data else LABEL_CONDITIONS
        return cls(data["batch"], tuple(data["sample_shape"]), data.get("precision", "fp32"), conditions,
                   data.get("timestep", "batch"), data.get("output", "eps"))
