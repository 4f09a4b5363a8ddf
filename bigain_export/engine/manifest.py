"""The manifest beside every engine: what was built, from what, and how far it drifts from eager.

An engine directory holds ``model.onnx`` (and for TensorRT ``model.plan``) and ``manifest.json``.
Loading checks that the files exist, parse, and hash to what the manifest says, and (when asked)
that the engine was built from the expected model weights and BiGain config, so a stale or
swapped engine fails with one line naming the file and the mismatch.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import BiGainConfig
from ..errors import BigainError, EngineError
from ..export.spec import DenoiserSpec

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_sha256(module: torch.nn.Module) -> str:
    """Hash of the weights (names, shapes, dtypes, bytes), independent of the file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "diffusers", "polygraphy", "tensorrt", "tensorrt_rtx"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001  absent or broken optional dependency
            continue
    from .. import __version__

    found["bigain_export"] = __version__
    return found


@dataclass
class Manifest:
    model: str
    model_sha256: str
    config: dict[str, Any]
    spec: dict[str, Any]
    backend: str
    opset: int
    files: dict[str, str]  # file name -> sha256
    custom_nodes: dict[str, int]
    versions: dict[str, str] = field(default_factory=versions)
    drift: dict[str, Any] | None = None
    patched: dict[str, Any] | None = None  # blocks and UNet levels patched (unet_levels=None resolved)
    manifest_version: int = MANIFEST_VERSION

    @property
    def bigain_config(self) -> BiGainConfig:
        return BiGainConfig.from_dict(self.config)

    @property
    def denoiser_spec(self) -> DenoiserSpec:
        return DenoiserSpec.from_dict(self.spec)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, engine_dir: Path) -> "Manifest":
        path = Path(engine_dir) / MANIFEST_NAME
        if not path.is_file():
            raise EngineError(f"{path}: missing; an engine directory needs {MANIFEST_NAME} (build it with 'bigain-export build')")
        try:
            data = json.loads(path.read_text())
            if data.get("manifest_version") != MANIFEST_VERSION:
                raise EngineError(f"{path}: manifest_version={data.get('manifest_version')!r}; this tool reads {MANIFEST_VERSION}")
            manifest = cls(**data)
            manifest.bigain_config, manifest.denoiser_spec  # noqa: B018  validate both
            return manifest
        except BigainError as exc:
            raise EngineError(f"{path}: {exc}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise EngineError(f"{path}: not a valid manifest ({type(exc).__name__}: {str(exc)[:200]})") from None

    def verify_files(self, engine_dir: Path) -> None:
        for name, expected in self.files.items():
            path = Path(engine_dir) / name
            if not path.is_file():
                raise EngineError(f"{path}: missing (listed in {MANIFEST_NAME})")
            if file_sha256(path) != expected:
                raise EngineError(f"{path}: corrupted or replaced (sha256 differs from {MANIFEST_NAME})")

    def verify_matches(self, engine_dir: Path, *, config: BiGainConfig | None = None, model_hash: str | None = None) -> None:
        where = Path(engine_dir) / MANIFEST_NAME
        if config is not None and self.bigain_config != config:
            raise EngineError(f"{where}: built with config '{self.bigain_config.describe()}', expected '{config.describe()}'")
        if model_hash is not None and model_hash != self.model_sha256:
            raise EngineError(f"{where}: built from other weights (model sha256 {self.model_sha256[:12]}…, expected {model_hash[:12]}…)")
