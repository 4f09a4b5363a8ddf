"""Build and load engines: export, pick a runtime, measure drift against eager, write atomically.

An engine is a directory::

    <engine>/model.onnx        bigain.ai nodes + local functions (any ONNX runtime runs it)
    <engine>/model.onnx.data   external weights, above 2 GB only
    <engine>/model.plan        TensorRT only: the serialized engine
    <engine>/config.json       the network's diffusers config (EngineUNet / EngineTransformer read it)
    <engine>/manifest.json     config, model id and hash, shapes, precision, opset, versions, drift,
                               and the sha256 of every other file (``manifest.py``)

It is assembled in a temporary sibling directory ``.<name>.building-<pid>-*`` and moved into
place only when complete, so a failed build leaves nothing half-written and never damages an
existing engine. A build killed outright (SIGKILL) leaves its staging folder behind; the next
build in the same parent folder removes the ones whose process is gone.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import BiGainConfig
from ..errors import ConfigError, EngineError
from ..export.onnx_export import export_onnx
from ..export.spec import DenoiserSpec
from .manifest import (MANIFEST_NAME, ONNX_NAME, PLAN_NAME, Manifest, file_sha256, model_info, stamp_build_record,
                       weights_sha256)

log = logging.getLogger(__name__)

BACKENDS = ("auto", "ort-cpu", "ort-cuda", "trt")
_STAGING = re.compile(r"^\..+\.(?:building|old)-(?P<pid>\d+)(?:-.*)?$")


@dataclass
class Engine:
    """A loaded (verified) engine directory."""

    path: Path
    manifest: Manifest

    @property
    def spec(self) -> DenoiserSpec:
        return self.manifest.denoiser_spec

    def runner(self, name: str | None = None, *, cuda_graph: bool = False):
        """A Polygraphy runner (feed: sample/timestep/class_labels, output: eps). ``cuda_graph``:
        an ``ort-cuda`` engine replays one CUDA graph a call (``make_ort_runner``)."""
        from ..backends.ort import check_cuda_graph

        backend = self.manifest.backend
        check_cuda_graph(backend, cuda_graph)
        name = name or f"engine:{backend}" + ("+cuda-graph" if cuda_graph else "")
        if backend == "trt":
            from ..backends.trt import make_trt_runner

            return make_trt_runner(self.path / PLAN_NAME, name=name)
        from ..backends.ort import make_ort_runner

        return make_ort_runner(self.path / ONNX_NAME, backend, name=name, precision=self.spec.precision,
                               cuda_graph=cuda_graph)


def load_engine(path: str | os.PathLike, *, config: BiGainConfig | None = None, model_hash: str | None = None,
                denoiser=None) -> Engine:
    """Open an engine directory, verifying its files and (optionally) what it was built from:
    ``config``, weights ``model_hash``, or a ``denoiser`` (its weights, sample shape and classes)."""
    path = Path(path)
    if not path.is_dir():
        raise EngineError(f"{path}: no such engine directory")
    manifest = Manifest.read(path)
    manifest.verify_files(path)
    if denoiser is not None:
        # the network's labels (a DiT bound to a few classes still takes all of them)
        labels = getattr(denoiser.conditioning, "network_labels", (denoiser.num_classes,))[0]
        manifest.verify_matches(path, sample_shape=denoiser.sample_shape, num_classes=labels,
                                model_hash=model_hash or weights_sha256(denoiser))
    manifest.verify_matches(path, config=config, model_hash=model_hash)
    return Engine(path, manifest)


def drift_feeds(spec: DenoiserSpec, count: int, num_classes: int) -> list[dict[str, Any]]:
    """``count`` fresh random feeds; each spreads its batch over timesteps and classes."""
    return [{k: v.numpy() for k, v in spec.sample_inputs(seed=1000 + i, num_classes=num_classes).items()} for i in range(count)]


def measure_drift(denoiser, config: BiGainConfig, engine: Engine, *, feeds: int = 3, device: str = "cpu",
                  cuda_graph: bool = False):
    """Eager patched model (fp32) vs the engine on the same random feeds (Polygraphy); with
    ``cuda_graph``, the engine as ``EngineUNet(cuda_graph=True)`` runs it."""
    from ..backends.compare import compare_runners
    from ..backends.torch_runner import TorchRunner

    if isinstance(feeds, bool) or not isinstance(feeds, int) or feeds < 1:
        raise ConfigError(f"drift feeds={feeds!r} is not allowed; allowed: an integer >= 1")
    spec = engine.spec
    eager = TorchRunner(denoiser, config, spec, device=device, name="eager")
    return compare_runners(eager, engine.runner(cuda_graph=cuda_graph), drift_feeds(spec, feeds, denoiser.num_classes),
                           spec.precision)


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise EngineError(f"backend={backend!r} is not allowed; allowed: {' | '.join(BACKENDS)}")
    if backend == "auto":
        from ..backends.ort import best_backend

        return best_backend()
    return backend


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_staging(parent: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.building-<pid>-*`` / ``.<name>.old-<pid>`` folders of builds whose process
    is gone (killed outright); returns what was removed."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = _STAGING.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by a killed build", entry)
            removed.append(entry)
    return removed


def check_engine_target(out_dir: Path) -> None:
    """Refuse an ``--out`` that is a file, or an existing folder that is not an engine (a build
    replaces its target as a whole: it must never replace a folder of the user's)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ConfigError(f"--out {str(out_dir)!r} is not a folder; allowed: a new folder or an existing engine folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ConfigError(f"--out {str(out_dir)!r} is a folder that is not an engine (no {MANIFEST_NAME}); "
                          "allowed: a new folder or an existing engine folder (it is replaced)")


def check_build_args(backend: str, batch: int, precision: str, drift_feeds_count: int, allow_unmeasured: bool) -> None:
    """One-line errors for what would otherwise fail deep inside export or a runtime."""
    DenoiserSpec(batch, (1, 1, 1), precision)  # batch and precision checks
    if isinstance(drift_feeds_count, bool) or not isinstance(drift_feeds_count, int) or drift_feeds_count < 1:
        raise ConfigError(f"drift feeds={drift_feeds_count!r} is not allowed; allowed: an integer >= 1")
    if backend == "trt" and not allow_unmeasured and not _cuda_visible():
        raise EngineError("backend 'trt' runs its plan on an NVIDIA GPU, and no CUDA device is visible here, so "
                          "its drift could not be measured; allowed here: --backend ort-cpu (or build on a GPU machine)")
    if backend == "ort-cuda":
        from ..backends.ort import cuda_available

        if not cuda_available():
            raise EngineError("backend 'ort-cuda' needs onnxruntime-gpu and a CUDA device, and none is usable here; "
                              "allowed here: --backend ort-cpu")


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
    allow_unmeasured: bool = False,
    ort_optimize: str = "auto",
) -> tuple[Engine, Any]:
    """Export ``denoiser`` with ``config``, build the engine, measure drift; returns (engine, drift report).

    ``ort_optimize`` (ONNX Runtime backends): ``auto`` applies ONNX Runtime's transformers-optimizer
    fusions to fp16 builds only, ``fusions`` to any fp32/fp16 build, ``none`` never
    (``backends/ort_optimize.py``); the manifest's ``ort_optimization`` records what was applied.

    The report is None only for a TensorRT plan that this machine built but cannot run (the
    manifest says why). Without ``allow_unmeasured``, ``backend="trt"`` is refused up front on a
    machine without a CUDA device, where that is certain.
    """
    out_dir = Path(out_dir)
    backend = _resolve_backend(backend)
    from ..backends.ort_optimize import resolve_ort_optimize

    optimize = resolve_ort_optimize(ort_optimize, backend, precision)
    check_build_args(backend, batch, precision, drift_feeds_count, allow_unmeasured)
    check_engine_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out_dir.parent)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.building-{os.getpid()}-"))
    try:
        steps = 3 if backend == "trt" or optimize != "none" else 2
        log.info("[1/%d] exporting %s (%s) to ONNX ...", steps, denoiser.name, config.describe())
        exported = export_onnx(denoiser, config, staging / ONNX_NAME, batch=batch, precision=precision, inline_copy=inline_copy)
        ort_optimization = None
        if optimize != "none":
            from ..backends.ort_optimize import OPTIMIZER_OF, optimize_onnx

            optimizer = OPTIMIZER_OF[optimize]
            log.info("[2/3] ONNX Runtime graph optimizations (%s) ...", optimizer)
            ort_optimization = optimize_onnx(exported.path, backend=backend, precision=precision, optimizer=optimizer)
            if exported.inlined_path is not None:  # the function-free copy is of the graph that ships
                import onnx

                from ..export.onnx_export import save_inlined_copy

                save_inlined_copy(onnx.load(str(exported.path)), exported.inlined_path)
        from .diffusers_modules import write_network_config

        write_network_config(denoiser, staging)
        if backend == "trt":
            from ..backends.trt import build_plan

            log.info("[2/3] building the TensorRT plan ...")
            build_plan(exported.path, staging / PLAN_NAME)
        manifest = Manifest(
            model=_model_spec(denoiser.name), model_sha256=weights_sha256(denoiser), config=config.to_dict(),
            spec=DenoiserSpec.for_denoiser(denoiser, batch, precision).to_dict(), backend=backend,
            opset=exported.opset, files={}, custom_nodes=exported.custom_nodes, model_info=model_info(denoiser),
            patched=exported.patched, ort_optimization=ort_optimization,
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
            reason = str(exc).replace(str(staging), str(out_dir))  # the staging folder is gone after the move
            log.warning("drift not measured: %s", reason)
            report, manifest.drift = None, {"measured": False, "reason": reason}
        # The graph carries what it was built as and how far it drifted, so a manifest edited later
        # disagrees with it (manifest.py); the plan, built before, does not read ONNX metadata.
        stamp_build_record(exported.path, manifest)
        # Every file the engine folder holds (model.onnx.data above 2 GB, the inlined copy) is hashed.
        manifest.files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Engine(out_dir, manifest), report


def _model_spec(name: str) -> str:
    """The model as a later ``--model`` can find it: built-in names as they are, folders absolute."""
    if name.startswith("builtin:") or not Path(name).exists():
        return name
    return str(Path(name).resolve())


def drift_feed_count(drift_inputs: int, batch: int) -> int:
    """Feeds of ``batch`` rows that hold at least ``drift_inputs`` random inputs."""
    return max(1, math.ceil(drift_inputs / batch))


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
        self._check_values(feed)
        eps = self._runner.infer(feed)["eps"]
        return torch.from_numpy(np.asarray(eps)).to(sample.device)

    def _check_values(self, feed) -> None:
        """Labels and timesteps the model was trained on; a runtime would index out of range or
        silently extrapolate."""
        info = self.engine.manifest.model_info
        labels, steps = feed.get("class_labels"), feed["timestep"]  # text engines take embeddings
        allowed = set(range(info["num_classes"])) | {info["null_label"]}
        bad = sorted({int(v) for v in labels.tolist()} - allowed) if labels is not None else []
        if bad:
            raise EngineError(f"{self.engine.path}: class label {bad[0]} is not allowed; allowed: 0 .. "
                              f"{info['num_classes'] - 1}, or the null label {info['null_label']}")
        bad = [int(v) for v in steps.tolist() if not 0 <= v < info["num_train_timesteps"]]
        if bad:
            raise EngineError(f"{self.engine.path}: timestep {bad[0]} is not allowed; allowed: 0 .. "
                              f"{info['num_train_timesteps'] - 1}")
