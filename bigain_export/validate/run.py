"""``validate(...)``: accuracy, FID and eps drift of several eps functions, written as one report.

Each method is an eps function (eager model, BiGain-patched eager model, torch.compile, ONNX
Runtime or TensorRT engine). All methods see exactly the same classifier noise, the same sampling
seeds and the same drift inputs, so their differences are the methods' own. Works single-process
or under ``torchrun`` (images are sharded, rank 0 computes FID and writes the report).

Methods are measured one at a time (drift, classifier, generation, FID), so a method can be
:class:`Deferred`: built (an engine exported and loaded, say) only when its turn comes and
released right after. With ``resume=True`` each finished method is checkpointed in
``<out_dir>/methods/`` and a rerun skips it when everything it was measured on is unchanged
(``provenance.py`` defines what that is; ``checkpoint.py`` stores it).

A report folder never holds a stale report: the run checks that ``out_dir`` is writable and
removes the previous ``report.json`` (then its Markdown and PNG files) before measuring anything,
and writes the new ones at the end, ``report.json`` last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, ValidationError
from .batching import EpsFn, check_batch_size
from .atomic import check_writable
from .checkpoint import MethodCheckpoints
from .distributed import barrier, classify_sharded, gather, is_main_process, rank_and_world, sample_sharded
from .drift import DriftInputs, check_drift_limits, drift, drift_tolerances, eps_outputs
from .fid import FeatureFn, FIDStats, InceptionFeatures, compute_statistics, fid_against, reference_statistics
from .provenance import Provenance, fingerprint, measured_facts, run_facts
from .report import SAMPLES_PER_METHOD, build_report, invalidate_report, write_report
from .sampling import SamplingConfig
from .schedule import ClassifierSchedule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskEps:
    """A method whose eps function depends on the task.

    BiGain's KV downsampling uses a fixed alpha = 0.9 for classification and an alpha scheduled in
    the timestep for generation (``BiGainConfig.for_task``), so one method may need two functions.
    Drift is measured on ``classify``.
    """

    classify: EpsFn
    generate: EpsFn


@dataclass(frozen=True)
class Deferred:
    """A method built only when it is measured: ``open()`` returns a context manager yielding an
    eps function or :class:`TaskEps` (e.g. build an engine, open its session, close it after).

    A resumed run never opens the methods it has checkpoints for.
    """

    open: Callable[[], ContextManager["EpsFn | TaskEps"]]


Method = EpsFn | TaskEps | Deferred


def _opened(method: Method) -> ContextManager[EpsFn | TaskEps]:
    return method.open() if isinstance(method, Deferred) else contextlib.nullcontext(method)


def _for_task(method: Method, task: str) -> EpsFn:
    if isinstance(method, TaskEps):
        return method.classify if task == "classify" else method.generate
    return method


@dataclass(frozen=True)
class ValidationSettings:
    """What to measure and how.

    Args:
        num_classes: classes ``0 .. num_classes-1`` compete in the classifier.
        scheduler_config: the model's diffusers scheduler config dict.
        schedule: classifier schedule (default: BiGain's adaptive one).
        classifier_seed: seed of the classifier noise.
        sampling: generation settings, or ``None`` to skip generation and FID.
        fid_images: images generated per method (one per validation image, in order, with its
            label); ``None`` = all validation images. At least 2.
        drift_inputs: number of fixed random inputs for eps drift (0 skips drift).
        drift_seed: seed of those inputs.
        batch_size: rows per eps call (engines: their static batch size).
        tolerances: drift limits recorded in the report for ``bigain-export check``:
            ``drift_max_abs``, ``drift_rel_l2``, ``drift_mean_abs`` and optionally ``drift_methods``
            (the methods they apply to). By default drift is judged for the engine methods whose
            drift reference is the eager model with the same config, with ``mean_abs`` bounded
            by the engine precision's tolerance (``drift.ENGINE_TOLERANCES``); see
            :func:`~bigain_export.validate.drift.drift_tolerances`.
    """

    num_classes: int
    scheduler_config: Mapping[str, Any]
    schedule: ClassifierSchedule = field(default_factory=ClassifierSchedule.bigain_adaptive)
    classifier_seed: int = 0
    sampling: SamplingConfig | None = field(default_factory=SamplingConfig)
    fid_images: int | None = None
    drift_inputs: int = 16
    drift_seed: int = 0
    batch_size: int = 32
    tolerances: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigError(f"num_classes={self.num_classes!r} is not allowed; allowed: an integer >= 2")
        if self.fid_images is not None and (not isinstance(self.fid_images, int) or self.fid_images < 2):
            raise ConfigError(f"fid_images={self.fid_images!r} is not allowed; allowed: None or an integer >= 2")
        if isinstance(self.drift_inputs, bool) or not isinstance(self.drift_inputs, int) or self.drift_inputs < 0:
            raise ConfigError(f"drift_inputs={self.drift_inputs!r} is not allowed; allowed: an integer >= 0")
        check_drift_limits(self.tolerances)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "scheduler_config": {k: v for k, v in dict(self.scheduler_config).items() if not k.startswith("_")},
            "classifier": {"schedule": self.schedule.to_dict(), "seed": self.classifier_seed},
            "sampling": None if self.sampling is None else self.sampling.to_dict(),
            "fid_images": self.fid_images,
            "drift": {"inputs": self.drift_inputs, "seed": self.drift_seed},
            "batch_size": self.batch_size,
        }


def validate(
    methods: Mapping[str, Method],
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: ValidationSettings,
    out_dir: str | os.PathLike | None = None,
    *,
    reference_method: str | None = None,
    fid_reference: FIDStats | None = None,
    feature_fn: FeatureFn | None = None,
    fid_cache_dir: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
    provenance: Provenance | None = None,
    drift_references: Mapping[str, str] | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Measure every method and (on rank 0) write the report into ``out_dir``.

    Args:
        methods: name -> eps function, :class:`TaskEps` or :class:`Deferred`, e.g.
            ``{"eager-none": f0, "eager-same-config": f1, "engine": Deferred(open_engine)}``.
        images: ``[N, C, H, W]`` validation images in [-1, 1] (also the FID reference set unless
            ``fid_reference`` is given).
        labels: ``[N]`` long true classes.
        settings: see :class:`ValidationSettings`.
        out_dir: report folder (``None``: do not write).
        reference_method: drift reference (default: the first method).
        fid_reference: precomputed reference statistics (default: from ``images``, cached in
            ``fid_cache_dir`` when given).
        feature_fn: FID features (default: the Inception network); injectable for tests.
        metadata: free-form facts recorded under ``settings.run`` (model spec, config, engine path).
        progress: tqdm bars.
        resume: checkpoint each finished method in ``<out_dir>/methods/`` and reuse a checkpoint
            only when everything the method was measured on is unchanged (needs ``out_dir`` and
            ``provenance``).
        provenance: what the methods are (model, config, engine, backend, dtype per method; see
            :mod:`.provenance`); recorded in the report, where ``bigain-export check`` compares it.
            Without it the report cannot be judged by the gate.
        drift_references: method -> the method its drift is measured against (default: every
            method against ``reference_method``).
        decode: model space -> images in [-1, 1] (``Denoiser.decode``: the VAE of a latent model),
            applied to generated samples before FID and the sample grids. With it, ``images`` are
            latents and ``fid_reference`` (statistics of real pixels) is required.

    Returns:
        The report dict (see ``report.py``), on every rank.
    """
    if not methods:
        raise ValidationError("validate needs at least one method; got none")
    names = list(methods)
    reference_method = reference_method or names[0]
    if reference_method not in methods:
        raise ValidationError(f"reference_method={reference_method!r} is not a method; allowed: {', '.join(names)}")
    if images.ndim != 4 or images.shape[0] != torch.as_tensor(labels).shape[0]:
        raise ValidationError(
            f"images {tuple(images.shape)} and labels {tuple(torch.as_tensor(labels).shape)} do not match; "
            "allowed: [N, C, H, W] and [N]"
        )
    if resume and out_dir is None:
        raise ValidationError("resume=True needs out_dir (checkpoints live in <out_dir>/methods)")
    if decode is not None and fid_reference is None and settings.sampling is not None:
        raise ValidationError("decode= (a latent model) needs fid_reference: statistics of real images, not latents")
    if provenance is not None:
        missing = [n for n in names if n not in provenance.methods]
        if missing:
            raise ValidationError(f"provenance has no facts for method(s) {', '.join(missing)}; "
                                  "allowed: one method_facts(...) entry per method")
    elif resume:
        raise ValidationError("resume=True needs provenance=Provenance(...): a checkpoint is reused only "
                              "for the same model, config and engine, so validate must know them")
    drift_refs = {name: reference_method for name in names}
    for name, ref in dict(drift_references or {}).items():
        if name not in methods or ref not in methods:
            raise ValidationError(f"drift_references {name!r} -> {ref!r}: both must be methods; "
                                  f"allowed: {', '.join(names)}")
        drift_refs[name] = ref
    labels = torch.as_tensor(labels, dtype=torch.long)
    sample_shape = tuple(images.shape[1:])
    device = images.device
    main = is_main_process()
    fid_count = min(settings.fid_images or images.shape[0], images.shape[0])
    if out_dir is not None and main:
        # Before any long work: a read-only or full folder fails now, and the old report of this
        # folder stops vouching for anything the moment this run starts.
        check_writable(out_dir, what="output folder")
        invalidate_report(out_dir)

    # FID reference first (rank 0): every method's FID is computed as soon as its samples exist.
    reference, reference_seconds = None, None
    if main and settings.sampling is not None:
        if feature_fn is None:
            feature_fn = InceptionFeatures(device=device)  # on the model's device: ~10x faster on a GPU
        start = time.perf_counter()
        reference = fid_reference or reference_statistics(images.cpu(), feature_fn, fid_cache_dir)
        reference_seconds = time.perf_counter() - start

    settings_facts = {**settings.to_dict(), "fid_images": fid_count if settings.sampling is not None else None}
    run = run_facts(provenance, settings_facts, images, labels, fid_reference=reference,
                    feature_key=getattr(feature_fn, "key", None))
    method_facts = {name: None if provenance is None else dict(provenance.methods[name]) for name in names}
    fingerprints: dict[str, str | None] = {name: None for name in names}
    if provenance is not None:
        # Rank 0 decides (only it knows the FID reference): every rank must skip the same methods.
        fingerprints = gather({
            name: fingerprint(measured_facts(run, method_facts[name], method_facts[drift_refs[name]]))
            for name in names
        })[0]
    checkpoints = MethodCheckpoints(Path(out_dir) / "methods") if resume else None

    # Drift inputs: fixed random inputs, through each method and its drift reference.
    inputs = None
    ref_outputs: dict[str, torch.Tensor] = {}
    if settings.drift_inputs:
        inputs = DriftInputs.random(settings.drift_inputs, sample_shape, settings.num_classes,
                                    settings.num_train_timesteps, settings.drift_seed, device)

    results: dict[str, dict[str, Any]] = {}
    grids: dict[str, torch.Tensor] = {}
    for name in tqdm(names, desc="methods", disable=not (progress and main), leave=False):
        saved = checkpoints.load(name, fingerprints[name]) if checkpoints is not None else None
        if gather(saved is not None)[0]:  # rank 0's view decides; only rank 0's results are reported
            logger.info("validate %s: from checkpoint", name)
            results[name], grid = saved or ({}, None)
            if grid is not None:
                grids[name] = grid
            continue
        ref_name = drift_refs[name]
        if inputs is not None and ref_name not in ref_outputs:
            with _opened(methods[ref_name]) as ref:
                ref_outputs[ref_name] = eps_outputs(_for_task(ref, "classify"), inputs, settings.batch_size)
        with _opened(methods[name]) as method:
            # Every key present for every method (null when not measured): one shape for readers.
            entry: dict[str, Any] = {"fid": None, "fid_num_images": None, "drift": None, "seconds": {}}
            # 1. eps drift. The reference is called again too: a nonzero self-drift exposes a
            # non-deterministic model.
            if inputs is not None:
                result = drift(eps_outputs(_for_task(method, "classify"), inputs, settings.batch_size),
                               ref_outputs[ref_name])
                entry["drift"] = {**result.to_dict(), "reference": ref_name}
            # 2. diffusion classifier.
            logger.info("validate %s: diffusion classifier on %d images", name, images.shape[0])
            start = time.perf_counter()
            cls = classify_sharded(
                _for_task(method, "classify"), images, labels, num_classes=settings.num_classes,
                scheduler_config=settings.scheduler_config, schedule=settings.schedule,
                batch_size=settings.batch_size, generator=settings.classifier_seed, progress=progress and main,
            )
            entry["seconds"]["classify"] = time.perf_counter() - start
            entry.update(
                accuracy=cls.accuracy, accuracy_ci95=list(cls.interval), correct=cls.correct,
                num_images=cls.num_images, eps_calls=cls.eps_calls, classification=cls.to_dict(per_image=True),
            )
            # 3. generation, 4. FID (rank 0: the Inception network needs no sharding here).
            if settings.sampling is not None:
                logger.info("validate %s: sampling %d images (%s)", name, fid_count, settings.sampling.sampler)
                start = time.perf_counter()
                samples = sample_sharded(
                    _for_task(method, "generate"), labels[:fid_count], scheduler_config=settings.scheduler_config,
                    sample_shape=sample_shape, config=settings.sampling, batch_size=settings.batch_size,
                    device=device, progress=progress and main,
                )
                if decode is not None:
                    samples = decode(samples)  # latents -> images for FID and grids
                entry["seconds"]["sample"] = time.perf_counter() - start
                grids[name] = samples[:SAMPLES_PER_METHOD].cpu()
                if main:
                    start = time.perf_counter()
                    stats = compute_statistics(samples, feature_fn)
                    entry["fid"] = fid_against(stats, reference)  # the reference's sqrt is computed once
                    entry["fid_num_images"] = stats.num_images
                    entry["seconds"]["fid"] = time.perf_counter() - start
        results[name] = entry
        if checkpoints is not None and main:
            checkpoints.save(name, fingerprints[name], entry, grids.get(name))

    report = None
    if main:
        run_settings = {
            **settings.to_dict(),
            "data": {"num_images": int(images.shape[0]), "image_shape": list(sample_shape)},
            "fid": None if settings.sampling is None else {
                "feature_key": getattr(feature_fn, "key", None),
                "reference_images": reference.num_images,
                "reference_seconds": reference_seconds,
                "generated_per_method": fid_count,
            },
            "distributed": dict(zip(("rank", "world_size"), rank_and_world())),
            "run": dict(metadata or {}),
        }
        report_provenance = {"run": run, "methods": method_facts, "fingerprints": fingerprints}
        tolerances = drift_tolerances(settings.tolerances, method_facts, drift_refs)
        report = build_report(results, reference_method=reference_method, settings=run_settings,
                              tolerances=tolerances, provenance=report_provenance)
        if out_dir is not None:
            write_report(report, out_dir, grids)
    report = gather(report)[0]
    barrier()
    return report
