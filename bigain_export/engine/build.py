"""Build and load engines: export, pick a runtime, measure drift against eager, write atomically.

An engine is a directory::

    <engine>/model.onnx        bigain.ai nodes + local functions (any ONNX runtime runs it)
    <engine>/model.plan        TensorRT only: the serialized engine
    <engine>/manifest.json     config, model id and hash, shapes, precision, opset, versions, drift
    <engine>/config.json       the network's diffusers config (EngineUNet / EngineTransformer read it)

It is assembled in a temporary sibling directory and moved into place only when complete, so a
failed build leaves nothing half-written and never damages an existing engine.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import BiGainConfig
from ..errors import EngineError
from ..export.onnx_export import export_onnx
from ..export.spec import DenoiserSpec
from .manifest import MANIFEST_NAME, Manifest, file_sha256, model_sha256

log = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
PLAN_NAME = "model.plan"
BACKENDS = ("auto", "ort-cpu", "ort-cuda", "trt")


@dataclass
class Engine:
    """A loaded (verified) engine directory."""

    path: Path
    manifest: Manifest

    @property
    def spec(self) -> DenoiserSpec:
        return self.manifest.denoiser_spec

    def runner(self, name: str | None = None):
        """A Polygraphy runner (feed: sample/timestep/class_labels, output: eps)."""
        backend = self.manifest.backend
        if backend == "trt":
            from ..backends.trt import make_trt_runner

            return make_trt_runner(self.path / PLAN_NAME, name=name or f"engine:{backend}")
        from ..backends.ort import make_ort_runner

        return make_ort_runner(self.path / ONNX_NAME, backend, name=name or f"engine:{backend}",
                               precision=self.spec.precision)


def load_engine(path: str | os.PathLike, *, config: BiGainConfig | None = None, model_hash: str | None = None) -> Engine:
    """Open an engine directory, verifying files and (optionally) what it was built from."""
    path = Path(path)
    if not path.is_dir():
        raise EngineError(f"{path}: no such engine directory")
    manifest = Manifest.read(path)
    manifest.verify_files(path)
    manifest.verify_matches(path, config=config, model_hash=model_hash)
    return Engine(path, manifest)


def drift_feeds(spec: DenoiserSpec, count: int, num_classes: int) -> list[dict[str, Any]]:
    """``count`` fresh random feeds; each spreads its batch over timesteps and classes."""
    return [{k: v.numpy() for k, v in spec.sample_inputs(seed=1000 + i, num_classes=num_classes).items()} for i in range(count)]


def measure_drift(denoiser, config: BiGainConfig, engine: Engine, *, feeds: int = 3, device: str = "cpu"):
    """Eager patched model (fp32) vs the engine on the same random feeds (Polygraphy)."""
    from ..backends.compare import compare_runners
    from ..backends.torch_runner import TorchRunner

    spec = engine.spec
    eager = TorchRunner(denoiser, config, spec, device=device, name="eager")
    return compare_runners(eager, engine.runner(), drift_feeds(spec, feeds, denoiser.num_classes), spec.precision)


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise EngineError(f"backend={backend!r} is not allowed; allowed: {' | '.join(BACKENDS)}")
    if backend == "auto":
        from ..backends.ort import best_backend

        return best_backend()
    return backend


def build_engine(
    denoiser,
    config: BiGainConfig,
    out_dir: str | os.PathLike,
    *,
    backend: str = "auto",
    batch: int = 2,
    precision: str = "fp32",
    drift_feeds_count: int = 3,
    inline_copy: bool = False,
    device: str = "cpu",
) -> tuple[Engine, Any]:
    """Export ``denoiser`` with ``config``, build the engine, measure drift; returns (engine, drift report).

    The report is None only for a TensorRT plan that this machine cannot run (the manifest says why).
    """
    out_dir = Path(out_dir)
    backend = _resolve_backend(backend)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.building-"))
    try:
        steps = 3 if backend == "trt" else 2
        log.info("[1/%d] exporting %s (%s) to ONNX ...", steps, denoiser.name, config.describe())
        exported = export_onnx(denoiser, config, staging / ONNX_NAME, batch=batch, precision=precision, inline_copy=inline_copy)
        files = {ONNX_NAME: file_sha256(exported.path)}
        from .diffusers_modules import write_network_config

        files.update(write_network_config(denoiser, staging, exported))
        if backend == "trt":
            from ..backends.trt import build_plan

            log.info("[2/3] building the TensorRT plan ...")
            build_plan(exported.path, staging / PLAN_NAME)
            files[PLAN_NAME] = file_sha256(staging / PLAN_NAME)
        manifest = Manifest(
            model=denoiser.name, model_sha256=model_sha256(denoiser), config=config.to_dict(),
            spec=DenoiserSpec.for_denoiser(denoiser, batch, precision).to_dict(), backend=backend,
            opset=exported.opset, files=files, custom_nodes=exported.custom_nodes, patched=exported.patched,
        )
        engine = Engine(staging, manifest)
        log.info("[%d/%d] measuring drift against the eager model on %s ...", steps, steps, backend)
        try:
            report = measure_drift(denoiser, config, engine, feeds=drift_feeds_count, device=device)
            manifest.drift = report.to_dict()
        except EngineError as exc:
            if backend != "trt":
                raise
            # A TensorRT plan can be built where it cannot run (CPU machines, TensorRT-RTX on a
            # GPU it does not support): keep the engine, record that drift was not measured.
            log.warning("drift not measured: %s", exc)
            report, manifest.drift = None, {"measured": False, "reason": str(exc)}
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Engine(out_dir, manifest), report


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``staging``; the old engine survives until the new one is in."""
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, backup)
    os.replace(staging, out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


class EngineEpsFn:
    """An engine as an eps function ``(sample, timestep, class_labels) -> eps`` (torch tensors).

    The engine's batch is static: callers chunk and pad (``validate.batching.call_batched`` does).
    Use as a context manager to keep one runtime session open::

        with EngineEpsFn(load_engine(path)) as eps_fn:
            eps = eps_fn(sample, timestep, labels)
    """

    def __init__(self, engine: Engine, condition=None):
        self.engine = engine
        self.batch = engine.spec.batch
        # labels -> the engine's conditioning inputs (Denoiser.condition); default: labels as they are
        self.condition = condition or (lambda labels: {"class_labels": labels})
        self._runner = None

    def __enter__(self) -> "EngineEpsFn":
        self._runner = self.engine.runner()
        self._runner.activate()
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None

    def __call__(self, sample, timestep, class_labels):
        import numpy as np
        import torch

        if self._runner is None:
            raise EngineError(f"{self.engine.path}: use EngineEpsFn as a context manager (with ...:)")
        batch = sample.shape[0]
        timestep = torch.as_tensor(timestep).reshape(-1).expand(batch)
        feed = {
            "sample": sample.detach().float().cpu().numpy(),
            "timestep": timestep.detach().long().cpu().numpy(),
        }
        dtypes = {c.name: c.torch_dtype for c in self.engine.spec.conditions}
        for name, value in self.condition(torch.as_tensor(class_labels)).items():
            feed[name] = value.detach().to(dtypes.get(name, value.dtype)).cpu().numpy()
        self.engine.spec.check_feed(feed, str(self.engine.path))
        eps = self._runner.infer(feed)["eps"]
        return torch.from_numpy(np.asarray(eps)).to(sample.device)
