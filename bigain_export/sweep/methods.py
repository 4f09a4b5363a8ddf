"""A sweep point as an eps function: the patched eager model, its ``torch.compile``, or an engine.

:class:`PointOpener` opens one point for one task (``classification`` or ``generation``) as a
context manager yielding ``eps_fn(sample [B,C,H,W], timestep [B], labels [B]) -> eps``; the patch
is removed and engine sessions are closed on exit, so one model serves every eager point and only
one engine is open at a time.

* The global RNG is seeded with the point's seed on every open: ToMe's random anchors then draw
  the same patterns in a rerun (two unseeded runs of DiT ToMe 0.7 gave 66.6% and 60.8%). They
  still depend on the call order, i.e. on batch size and sharding.
* ``paper_alpha``: BiGain KV downsampling uses the paper's alpha per task (fixed 0.9 for
  classification, scheduled 0.8 -> 1.2 for generation; ``BiGainConfig.for_task``), as
  ``validate --paper-alpha`` does; an engine point then has one engine per task.
* Engines are built under ``<engine_dir>`` from the loaded weights (rank 0 builds, the others
  wait) at the model's precision (an fp16 sweep builds fp16 engines) with ``ort_optimize``
  (``build --ort-optimize``), reused when an earlier run left one with the same config, weights,
  backend, batch, precision and graph optimization.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import torch

from ..config import BiGainConfig
from ..errors import EngineError
from ..export.spec import DTYPES
from ..patch import bigain_patched
from ..validate.checkpoint import _file_stem
from ..validate.distributed import barrier, is_main_process
from .grid import SweepPoint, is_random

logger = logging.getLogger(__name__)

TASKS = ("classification", "generation")
PRECISIONS = {dtype: name for name, dtype in DTYPES.items()}  # torch dtype -> an engine's --precision


def replayed(compiled):
    """A CUDA-graph model as an eps function: each call is a new step of the graph trees and its
    output a copy, since the next replay overwrites the graph's output buffer (the classifier and
    the drift check keep outputs across calls)."""

    def call(*inputs):
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*inputs).clone()

    return call


# Random feeds of the drift check of every engine a sweep builds (its accuracy is the real check).
ENGINE_DRIFT_FEEDS = 2


class PointOpener:
    """Opens sweep points of one model (see module docstring).

    Args:
        denoiser: the loaded :class:`~bigain_export.models.Denoiser` (eval mode, on ``device``).
        model_hash: ``engine.manifest.weights_sha256(denoiser)``, computed once.
        paper_alpha: per-task alpha for BiGain KV downsampling.
        engine_dir: where engines are built.
        engine_backend: ``ort-cpu`` | ``ort-cuda`` | ``trt`` (resolved, not ``auto``).
        batch: static batch of the engines.
        device: where the eager model runs and engine drift is measured at build time.
        compile_backend: ``torch.compile`` backend (``inductor``; tests use ``eager``).
        ort_optimize: ``build --ort-optimize`` for ONNX Runtime engines (``auto``: fusions in fp16 only).
    """

    def __init__(self, denoiser, *, model_hash: str, paper_alpha: bool, engine_dir: Path | None,
                 engine_backend: str, batch: int, device: str, compile_backend: str = "inductor",
                 ort_optimize: str = "auto"):
        from ..backends.ort_optimize import resolve_ort_optimize

        self.denoiser = denoiser
        self.model_hash = model_hash
        self.paper_alpha = paper_alpha
        self.engine_dir = engine_dir
        self.engine_backend = engine_backend
        self.batch = batch
        self.device = device
        self.compile_backend = compile_backend
        self._compiled: tuple[str, str] | None = None  # (point, task) whose compile Dynamo holds now
        self.precision = PRECISIONS[denoiser.dtype]
        # What the engines' graphs get (refused here, before any work, when it does not apply).
        self.graph_optimization = resolve_ort_optimize(ort_optimize, engine_backend, self.precision)

    def compile_options(self, mode: str) -> dict[str, Any]:
        """``torch.compile`` keywords of a ``compile`` / ``cudagraphs`` point: what runs is what its
        facts record (CUDA graphs are Inductor's ``reduce-overhead`` mode)."""
        if mode == "cudagraphs":
            return {"backend": "inductor", "mode": "reduce-overhead", "fullgraph": True}
        return {"backend": self.compile_backend, "fullgraph": True}

    def compiled(self, model: torch.nn.Module, mode: str):
        """``model`` compiled the way ``compile`` / ``cudagraphs`` points run, as an eps function
        (also the uncompressed reference a compiled point's latency is paired with)."""
        compiled = torch.compile(model, **self.compile_options(mode))
        return compiled if mode == "compile" else replayed(compiled)

    def config_for(self, point: SweepPoint, task: str) -> BiGainConfig:
        return point.config.for_task(task) if self.paper_alpha else point.config

    def method_facts(self, point: SweepPoint, sharding: int = 1) -> dict[str, Any]:
        """What the point runs (``provenance.method_facts``): config per task, backend, dtype, the
        engine it builds, and for ToMe's random anchors their seed and the process count (the
        draws follow the call order, which sharding changes)."""
        from ..validate.provenance import method_facts, planned_engine_facts

        configs = {"classify": self.config_for(point, "classification"), "generate": self.config_for(point, "generation")}
        dtype = str(self.denoiser.dtype).replace("torch.", "")
        extra: dict[str, Any] = {}
        if is_random(point.config):
            extra.update(anchor_seed=point.seed, processes=sharding)
        if point.mode == "engine":
            engines = {task: {**planned_engine_facts(self.model_hash, config, backend=self.engine_backend,
                                                     precision=self.precision, batch=self.batch,
                                                     sample_shape=self.denoiser.sample_shape),
                              "ort_optimize": self.graph_optimization}
                       for task, config in configs.items()}
            return method_facts(configs, backend=self.engine_backend, dtype=dtype, engine=engines, **extra)
        if point.mode in ("compile", "cudagraphs"):
            extra["compile"] = self.compile_options(point.mode)
        unpatched = {task: (config if config.enabled else None) for task, config in configs.items()}
        return method_facts(unpatched, backend=point.mode, dtype=dtype, **extra)

    @contextlib.contextmanager
    def eager(self, point: SweepPoint, task: str) -> Iterator[torch.nn.Module]:
        """The denoiser patched with the point's config for ``task`` (unpatched when uncompressed)."""
        config = self.config_for(point, task)
        torch.manual_seed(point.seed)
        if not config.enabled:
            yield self.denoiser
            return
        with bigain_patched(self.denoiser, config):
            yield self.denoiser

    @contextlib.contextmanager
    def open(self, point: SweepPoint, task: str) -> Iterator[tuple[Any, dict[str, Any]]]:
        """``(eps_fn, info)`` of ``point`` for ``task``; ``info`` describes an engine (else empty)."""
        if point.mode == "eager":
            with self.eager(point, task) as model:
                yield model, {}
        elif point.mode in ("compile", "cudagraphs"):
            # Every point compiles the same Denoiser.forward, and Dynamo keeps one cache entry per
            # patch on that code object: the 9th compiled point of a sweep hit its recompile limit
            # (8) and, under fullgraph=True, failed (session 7, on the GPU). A point done is never
            # called again, so its entries go when another point opens; the parts of one point
            # (chunks, drift, latency) still share one compile. The reset is process-wide: a library
            # caller's own compiled functions recompile after a sweep's compiled points.
            if self._compiled != (point.name, task):
                torch._dynamo.reset()
                self._compiled = (point.name, task)
            with self.eager(point, task) as model:
                yield self.compiled(model, point.mode), {}
        else:
            with self._engine(point, task) as opened:
                yield opened

    # -- engines -----------------------------------------------------------------------------------
    def engine_path(self, config: BiGainConfig, point: SweepPoint) -> Path:
        recipe = {"config": config.to_dict(), "backend": self.engine_backend, "batch": self.batch, "model": self.model_hash}
        if (self.precision, self.graph_optimization) != ("fp32", "none"):  # fp32 engines keep their folder names
            recipe.update(precision=self.precision, ort_optimize=self.graph_optimization)
        recipe = json.dumps(recipe, sort_keys=True)
        return self.engine_dir / f"{_file_stem(point.entry)}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"

    def check_engine_runtime(self) -> None:
        """The one-line refusal ``build`` gives for an engine runtime this machine lacks (ort-cuda
        without onnxruntime-gpu or a GPU, trt without a GPU), before a sweep measures anything."""
        from ..engine.build import check_build_args

        check_build_args(self.engine_backend, self.batch, self.precision, ENGINE_DRIFT_FEEDS, allow_unmeasured=False)

    def _load_or_build(self, config: BiGainConfig, path: Path):
        from ..backends.ort_optimize import recorded_choice
        from ..engine.build import build_engine, load_engine

        try:  # an engine left by an earlier (possibly interrupted) run of the same recipe
            engine = load_engine(path, config=config, model_hash=self.model_hash, denoiser=self.denoiser)
            optimized_with = recorded_choice(engine.manifest.ort_optimization)
            if (engine.spec.batch == self.batch and engine.manifest.backend == self.engine_backend
                    and engine.spec.precision == self.precision and optimized_with == self.graph_optimization):
                return engine
        except EngineError:
            pass
        logger.info("sweep: building the %s engine of %s in %s", self.engine_backend, config.describe(), path)
        engine, _ = build_engine(self.denoiser, config, path, backend=self.engine_backend, batch=self.batch,
                                 precision=self.precision, drift_feeds_count=ENGINE_DRIFT_FEEDS, device=self.device,
                                 ort_optimize=self.graph_optimization)
        return engine

    @contextlib.contextmanager
    def _engine(self, point: SweepPoint, task: str):
        from ..engine.build import EngineEpsFn, load_engine
        from ..engine.manifest import MANIFEST_NAME, file_sha256

        if self.engine_dir is None:
            raise EngineError("engine points need an engine folder (run_sweep(engine_dir=...))")
        config = self.config_for(point, task)
        path = self.engine_path(config, point)
        if is_main_process():
            self._load_or_build(config, path)
        barrier()  # the other ranks load what rank 0 built
        engine = load_engine(path, config=config, model_hash=self.model_hash, denoiser=self.denoiser)
        info = {"path": str(path), "backend": engine.manifest.backend,
                "manifest_sha256": file_sha256(path / MANIFEST_NAME), "build_drift": engine.manifest.drift}
        torch.manual_seed(point.seed)
        with EngineEpsFn(engine, condition=self.denoiser.condition) as eps_fn:
            yield eps_fn, info
