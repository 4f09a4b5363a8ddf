"""The exported denoiser's tensors, declared once: names, shapes, dtypes, sample inputs.

Every engine (ONNX Runtime, TensorRT) and every runner feeds and reads these names; shapes are
static (a fixed batch and resolution per engine).
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
class DenoiserSpec:
    """I/O of ``Denoiser.forward(sample, timestep, class_labels) -> eps`` at a fixed batch size."""

    batch: int
    sample_shape: tuple[int, int, int]  # (C, H, W)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError(f"batch={self.batch!r} is not allowed; allowed: an integer >= 1")
        if self.precision not in DTYPES:
            raise ConfigError(f"precision={self.precision!r} is not allowed; allowed: {' | '.join(DTYPES)}")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        # I/O stays float32 at every precision: the engine casts inside, callers never convert.
        return (
            TensorSpec("sample", (self.batch, *self.sample_shape), torch.float32),
            TensorSpec("timestep", (self.batch,), torch.int64),
            TensorSpec("class_labels", (self.batch,), torch.int64),
        )

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("eps", (self.batch, *self.sample_shape), torch.float32),)

    def sample_inputs(self, seed: int = 0, num_classes: int = 10) -> dict[str, torch.Tensor]:
        """Fresh random inputs: noise, timesteps spread over [0, 999], labels in [0, num_classes)."""
        g = torch.Generator().manual_seed(seed)
        return {
            "sample": torch.randn(self.inputs[0].shape, generator=g),
            "timestep": torch.randint(0, 1000, (self.batch,), generator=g),
            "class_labels": torch.randint(0, num_classes, (self.batch,), generator=g),
        }

    def check_feed(self, feed: dict[str, np.ndarray | torch.Tensor], where: str) -> None:
        """Raise a one-line error naming the tensor whose shape or name is wrong."""
        from ..errors import EngineError

        expected = {spec.name: spec.shape for spec in self.inputs}
        missing = sorted(set(expected) - set(feed))
        extra = sorted(set(feed) - set(expected))
        if missing or extra:
            raise EngineError(f"{where}: inputs {sorted(feed)} do not match {sorted(expected)}")
        for name, shape in expected.items():
            got = tuple(feed[name].shape)
            if got != shape:
                raise EngineError(f"{where}: input {name!r} has shape {list(got)}; this engine takes {list(shape)}")

    def to_dict(self) -> dict:
        return dict(batch=self.batch, sample_shape=list(self.sample_shape), precision=self.precision)
