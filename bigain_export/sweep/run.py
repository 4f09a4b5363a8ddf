"""``run_sweep(...)``: every point of a grid measured with validate's machinery, then one report.

Per point, in parts (each checkpointed, see ``records.py``):

1. ``classify@<first image>``: diffusion-classifier predictions of a chunk of images
   (``classify_sharded``); the report merges the chunks into accuracy and its Wilson interval;
2. ``fid@<seed>`` for each sampling seed: samples (``sample_sharded``) and their FID against the
   reference statistics (rank 0), so FID gets error bars over seeds;
3. ``drift``: eps drift against the uncompressed eager model on fixed random inputs;
4. ``latency``: median ms per call at the sweep's batch (rank 0; ``latency.py``);
5. ``flops``: FLOPs per call of the eager patched model at that batch (rank 0).

Under ``torchrun`` images are sharded exactly as ``validate`` shards them (the same functions), so
the numbers equal a single-process run's; rank 0 decides which parts are reused, measures latency
and writes the report. Every point sees the same classifier noise, sampling seeds and drift inputs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..backends.precision import strict_fp32
from ..errors import ConfigError, ValidationError
from ..validate.atomic import check_writable
from ..validate.distributed import barrier, classify_sharded, gather, is_main_process, rank_and_world, sample_sharded
from ..validate.drift import DRIFT_STATS, DriftInputs, drift, eps_outputs
from ..validate.fid import FeatureFn, FIDStats, InceptionFeatures, compute_statistics, fid_against, reference_statistics
from ..validate.provenance import (Provenance, data_facts, fid_reference_facts, measured_facts, model_facts,
                                   run_facts, tensor_sha256)
from ..validate.run import ValidationSettings
from .grid import SweepPoint
from .latency import LatencySettings, device_name, flops_per_call, latency_inputs, measure_latency
from .methods import PointOpener
from .pareto import Budget
from .records import PointRecords
from .report import build_sweep_report, remove_report, write_sweep_report

logger = logging.getLogger(__name__)

CLASSIFY_CHUNK = 500  # images per classification part (500 x 125 denoiser rows with 10 classes)


@dataclass(frozen=True)
class SweepSettings:
    """What each point measures.

    Args:
        validation: classifier, sampling (``None``: no FID), ``fid_images``, drift inputs and the
            batch size, exactly as ``validate`` takes them; ``sampling.seed`` is ignored in favour
            of ``fid_seeds``.
        fid_seeds: sampling seeds; each gives one FID per point (mean and spread are reported).
        latency: how latency is measured (default: at ``validation.batch_size``).
        paper_alpha: BiGain KV downsampling with the paper's per-task alpha.
        classify_chunk: images per classification part: a part fits one time-limited call, and
            a run on more images (a larger ``--limit``) reuses the chunks it shares with a smaller one.
    """

    validation: ValidationSettings
    fid_seeds: tuple[int, ...] = (0,)
    latency: LatencySettings | None = None
    paper_alpha: bool = False
    classify_chunk: int = CLASSIFY_CHUNK

    def __post_init__(self) -> None:
        seeds = tuple(self.fid_seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
            raise ValidationError(f"--fid-seeds {' '.join(map(str, seeds)) or '(none)'} is not allowed; "
                                  "allowed: distinct integers")
        object.__setattr__(self, "fid_seeds", seeds)
        if isinstance(self.classify_chunk, bool) or not isinstance(self.classify_chunk, int) or self.classify_chunk < 1:
            raise ValidationError(f"classify_chunk={self.classify_chunk!r} is not allowed; allowed: an integer >= 1")
        if self.latency is None:
            object.__setattr__(self, "latency", LatencySettings(batch=self.validation.batch_size))

    def to_dict(self) -> dict[str, Any]:
        return {**self.validation.to_dict(), "fid_seeds": list(self.fid_seeds), "latency": self.latency.to_dict(),
                "paper_alpha": self.paper_alpha, "classify_chunk": self.classify_chunk}


class _Progress:
    """Work done and left, in eps-call rows, for an ETA that weights parts by their cost."""

    def __init__(self, total: float):
        self.total, self.done, self.measured, self.seconds = total, 0.0, 0.0, 0.0
        self.start = time.perf_counter()

    def advance(self, work: float, seconds: float | None) -> str:
        self.done += work
        if seconds is not None:
            self.measured += work
            self.seconds += seconds
        left = max(0.0, self.total - self.done)
        eta = "?" if not self.measured else _duration(left * self.seconds / self.measured)
        return f"{100 * self.done / max(self.total, 1e-9):.0f}% done, {_duration(time.perf_counter() - self.start)} so far, ETA {eta}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def network_copy(denoiser):
    """A copy of ``denoiser`` that runs the same calls: its network (and the small class encoder
    and conditioning tables) copied, the parts a call never touches shared (a pipeline folder's
    pipeline, whose text encoder and VAE are most of its memory, and the latent space), so the
    copy costs about the network's memory."""
    shared = (getattr(denoiser, "pipeline", None), getattr(denoiser, "space", None))
    return copy.deepcopy(denoiser, memo={id(part): part for part in shared if part is not None})


@torch.no_grad()
def preflight(opener: PointOpener, points: Sequence[SweepPoint], sample_shape: tuple[int, ...], device) -> None:
    """One batch-1 call of every point's eager patched model per task, before any long work: a
    config the model cannot take (blocks it lacks, a factor that does not divide its token grid)
    fails here with its one-line error."""
    x = torch.zeros((1, *sample_shape), device=device)
    t = torch.full((1,), 500, dtype=torch.long, device=device)
    y = torch.zeros((1,), dtype=torch.long, device=device)
    seen = set()
    for point in points:
        for task in ("classification", "generation"):
            key = (point.entry, repr(opener.config_for(point, task)))
            if key not in seen:
                seen.add(key)
                with opener.eager(point, task) as model:
                    model(x, t, y)


def run_sweep(
    denoiser,
    points: Sequence[SweepPoint],
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: SweepSettings,
    out_dir: str | os.PathLike | None,
    *,
    model_spec: str,
    fid_reference: torch.Tensor | FIDStats | None = None,
    feature_fn: FeatureFn | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fid_cache_dir: str | os.PathLike | None = None,
    engine_backend: str = "auto",
    engine_ort_optimize: str = "auto",
    compile_backend: str = "inductor",
    resume: bool = False,
    progress: bool = True,
    budget: Budget | None = None,
    skipped: Sequence[Mapping[str, str]] = (),
    metadata: Mapping[str, Any] | None = None,
    data_source: str | None = None,
    data_limit: int | None = None,
) -> dict[str, Any]:
    """Measure every point (reusing checkpointed parts when ``resume``) and write the report.

    Args:
        denoiser: the loaded model, on the device the sweep measures.
        points: from :func:`~bigain_export.sweep.grid.expand`; ``points[0]`` must be the
            uncompressed eager reference.
        images: ``[N, C, H, W]`` in [-1, 1] on the model's device; labels ``[N]`` long.
        out_dir: report folder (``points/`` checkpoints, ``engines/``, ``sweep.json`` ...).
        model_spec: what the user passed as the model (recorded; the weight hash identifies it).
        fid_reference: real images (default: ``images``) or precomputed statistics.
        feature_fn: FID features (default: the Inception network on the model's device).
        decode: model space -> images in [-1, 1] (``Denoiser.decode``: a latent pipeline's VAE),
            applied to the samples before FID; needs ``fid_reference`` (real images).
        engine_backend: engine runtime of ``engine`` points (``auto``: ORT CUDA when available).
        resume: reuse the finished parts of an earlier run with identical facts.
        budget: the ``--max-acc-drop`` / ``--max-fid-rise`` question to answer.
        skipped: points the grid could not include, with reasons (reported).
        data_source, data_limit: where the images came from and the ``--limit`` (recorded in the
            provenance, ``validate``'s ``Provenance`` fields).

    Returns:
        The sweep report dict (``report.py``), on every rank.
    """
    from ..engine.build import _resolve_backend

    points = list(points)
    if not points or points[0].mode != "eager" or not points[0].uncompressed:
        raise ValidationError("the first sweep point must be the uncompressed eager reference (grid.expand adds it)")
    if resume and out_dir is None:
        raise ValidationError("resume=True needs out_dir (checkpoints live in <out_dir>/points)")
    if any(p.mode == "cudagraphs" for p in points) and images.device.type != "cuda":
        raise ConfigError(f"--modes cudagraphs needs a CUDA device; got --device {images.device.type} "
                          "(allowed there: eager, compile, engine)")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if images.ndim != 4 or images.shape[0] != labels.shape[0] or tuple(images.shape[1:]) != tuple(denoiser.sample_shape):
        raise ValidationError(f"images {tuple(images.shape)} / labels {tuple(labels.shape)} do not fit the model; "
                              f"allowed: [N, {', '.join(map(str, denoiser.sample_shape))}] and [N]")
    val = settings.validation
    lat = settings.latency
    if decode is not None and val.sampling is not None and fid_reference is None:
        raise ValidationError("decode= (a latent model) needs fid_reference: statistics of real images, not latents")
    main = is_main_process()
    device = images.device
    out = Path(out_dir) if out_dir is not None else None
    if main and out is not None:
        check_writable(out, what="--out")
        remove_report(out)  # a killed run must not leave the previous report looking current
    records = PointRecords(out / "points") if out is not None else None
    has_engines = any(p.mode == "engine" for p in points)
    model = model_facts(denoiser, model_spec)
    opener = PointOpener(denoiser, model_hash=model["sha256"], paper_alpha=settings.paper_alpha,
                         engine_dir=None if out is None else out / "engines",
                         engine_backend=_resolve_backend(engine_backend) if has_engines else engine_backend,
                         batch=val.batch_size, device=str(device), compile_backend=compile_backend,
                         ort_optimize=engine_ort_optimize)
    if has_engines:  # an engine runtime this machine lacks fails now, not after the eager points
        opener.check_engine_runtime()
    with strict_fp32():
        preflight(opener, points, tuple(images.shape[1:]), device)

    # fp32 means fp32 (backends/precision.py): eager models without TF32, like fp32 engines.
    fp32 = denoiser.dtype == torch.float32

    def precision():
        return strict_fp32() if fp32 else contextlib.nullcontext()

    # -- facts (validate.provenance): everything a part's result depends on -----------------------
    world = rank_and_world()[1]
    methods = {p.name: opener.method_facts(p, sharding=world) for p in points}
    provenance = Provenance(model=model, methods=methods, data_source=data_source, data_limit=data_limit,
                            device=str(device), extra={"tf32": "off" if fp32 else "default"})
    validation_facts = val.to_dict()
    fid_count = min(val.fid_images or images.shape[0], images.shape[0])
    # Shared by every part; each part adds the settings it depends on (an added FID seed, say,
    # leaves the classification parts valid).
    run = run_facts(provenance, {k: validation_facts[k] for k in ("num_classes", "scheduler_config", "batch_size")},
                    images, labels)

    # The FID reference (rank 0, like validate): statistics first, their content is a fact.
    reference_stats = None
    if val.sampling is not None and main:
        if feature_fn is None:
            feature_fn = InceptionFeatures(device=device)
        reference_stats = fid_reference if isinstance(fid_reference, FIDStats) else reference_statistics(
            (images if fid_reference is None else fid_reference).cpu(), feature_fn, fid_cache_dir)
    fid_facts = fid_reference_facts(reference_stats, getattr(feature_fn, "key", None))

    # Classification in chunks of images: each its own part, keyed on its own images' bytes and
    # global offset (the noise seeds), so a larger --limit reuses the chunks already measured.
    n = images.shape[0]
    chunks = {f"classify@{a}": (a, min(a + settings.classify_chunk, n)) for a in range(0, n, settings.classify_chunk)}
    chunk_data = {part: {**data_facts(images[a:b], labels[a:b], source=data_source), "offset": a}
                  for part, (a, b) in chunks.items()}
    # Generation sees only the first fid_count labels (and the FID reference, a fact of its own).
    fid_data = {"source": data_source, "labels_sha256": tensor_sha256(labels[:fid_count]), "num_images": fid_count}

    # A compiled point's latency is paired with the uncompressed model compiled the same way, and
    # a compressed engine with the uncompressed engine (same backend, precision, graph optimizer),
    # so that its speedup says whether compression pays in that mode from the same minutes; the
    # uncompressed point of each mode and eager points are paired with the eager one.
    same_mode_reference = {p.mode: p.name for p in reversed(points) if p.uncompressed}
    by_name = {p.name: p for p in points}

    def paired_with(point: SweepPoint) -> str:
        if point.mode in ("compile", "cudagraphs", "engine") and not point.uncompressed:
            return same_mode_reference.get(point.mode, points[0].name)
        return points[0].name

    def part_facts(point: SweepPoint, part: str) -> dict[str, Any]:
        """The facts ``part`` of ``point`` depends on: the run's, narrowed to what the part uses."""
        part_settings, drift_reference, part_run = dict(run["settings"]), None, {**run, "data": None}
        if part in chunks:
            part_settings["classifier"] = validation_facts["classifier"]
            part_run["data"] = chunk_data[part]
        elif part.startswith("fid@"):
            part_settings.update(sampling=dataclasses.replace(val.sampling, seed=int(part[4:])).to_dict(),
                                 fid_images=fid_count)
            part_run.update(data=fid_data, fid_reference=fid_facts, decoded=decode is not None)
        elif part == "drift":  # drift, latency and FLOPs see no data
            part_settings["drift"] = validation_facts["drift"]
            drift_reference = methods[points[0].name]
        elif part == "latency":
            part_settings["latency"] = {**lat.to_dict(), "device": device_name(device)}
            if paired_with(point) != points[0].name:  # (eager-paired parts keep their facts)
                # (an engine's partner: the same recipe as its own engine facts, with config none)
                part_settings["latency"]["paired_with"] = f"the uncompressed model, {point.mode}"
        else:
            part_settings["flops"] = {"batch": lat.batch, "timestep": lat.timestep}
        part_run["settings"] = part_settings
        return {"part": part, **measured_facts(part_run, methods[point.name], drift_reference)}

    parts = list(chunks)
    if val.sampling is not None:
        parts += [f"fid@{s}" for s in settings.fid_seeds]
    if val.drift_inputs:
        parts.append("drift")
    parts += ["latency", "flops"]

    calls_per_image = val.schedule.calls_per_image(val.num_classes)
    steps_rows = 0 if val.sampling is None else val.sampling.num_steps * (2 if val.sampling.guided else 1)

    def work(part: str) -> float:
        if part in chunks:
            return (chunks[part][1] - chunks[part][0]) * calls_per_image
        if part.startswith("fid@"):
            return fid_count * steps_rows
        if part == "drift":
            return val.drift_inputs
        return 2 * (lat.warmup + lat.repeats) * lat.batch if part == "latency" else lat.batch  # and the reference's

    tracker = _Progress(len(points) * sum(work(p) for p in parts))

    # The uncompressed model every point's latency is interleaved with (latency.py, protocol 3): a
    # copy, since a point's patches live on the denoiser while it is timed. Made now, so that a
    # device without room for it fails before any measurement, not after the first point's.
    latency_reference = None
    if main:
        try:
            latency_reference = network_copy(denoiser)
        except torch.OutOfMemoryError as exc:
            raise ValidationError(
                f"the sweep times every point against a copy of the uncompressed model, which does not fit on "
                f"{device} ({str(exc).splitlines()[0]}); allowed: a device with room for two copies of the network"
            ) from None

    # -- lazily computed shared references -------------------------------------------------------
    cache: dict[str, Any] = {}

    def drift_reference() -> tuple[DriftInputs, torch.Tensor]:
        if "drift" not in cache:
            inputs = DriftInputs.random(val.drift_inputs, tuple(images.shape[1:]), val.num_classes,
                                        val.num_train_timesteps, val.drift_seed, device)
            with opener.open(points[0], "classification") as (ref, _):
                cache["drift"] = (inputs, eps_outputs(ref, inputs, val.batch_size))
        return cache["drift"]

    # -- one part of one point ---------------------------------------------------------------------
    def measure(point: SweepPoint, part: str) -> dict[str, Any]:
        start = time.perf_counter()
        if part in chunks:
            a, b = chunks[part]
            with opener.open(point, "classification") as (fn, info):
                cls = classify_sharded(fn, images[a:b], labels[a:b], num_classes=val.num_classes, offset=a,
                                       scheduler_config=val.scheduler_config, schedule=val.schedule,
                                       batch_size=val.batch_size, generator=val.classifier_seed, progress=progress and main)
            result = {"accuracy": cls.accuracy, "accuracy_ci95": list(cls.interval), "correct": cls.correct,
                      "num_images": cls.num_images, "eps_calls": cls.eps_calls,
                      "predictions": cls.predictions.tolist(), "engine": info or None}
        elif part.startswith("fid@"):
            sampling = dataclasses.replace(val.sampling, seed=int(part[4:]))
            with opener.open(point, "generation") as (fn, _):
                samples = sample_sharded(fn, labels[:fid_count], scheduler_config=val.scheduler_config,
                                         sample_shape=tuple(images.shape[1:]), config=sampling,
                                         batch_size=val.batch_size, device=device, progress=progress and main)
            result = {"fid": None, "fid_num_images": fid_count}
            if main:
                images_out = samples if decode is None else decode(samples)  # latents -> images
                result["fid"] = fid_against(compute_statistics(images_out, feature_fn), reference_stats)
        elif part == "drift":
            inputs, ref_out = drift_reference()
            with opener.open(point, "classification") as (fn, _):
                result = drift(eps_outputs(fn, inputs, val.batch_size), ref_out).to_dict()
            result["reference"] = points[0].name
        elif part == "latency":
            result = {}
            inputs = latency_inputs(tuple(images.shape[1:]), val.num_classes, lat, device)
            reference_name = paired_with(point)
            with contextlib.ExitStack() as stack:
                fn, _ = stack.enter_context(opener.open(point, "classification"))
                reference_fn = latency_reference
                if reference_name != points[0].name:
                    if point.mode == "engine":  # every rank opens it (opening waits for rank 0's build)
                        reference_fn, _ = stack.enter_context(opener.open(by_name[reference_name], "classification"))
                    elif main:
                        reference_fn = opener.compiled(latency_reference, point.mode)
                if main:  # one process times the device; the others wait
                    result = measure_latency(fn, inputs, lat, reference_fn=reference_fn,
                                             host_synchronous=point.mode == "engine")
                    result["paired_with"] = reference_name
            barrier()
        else:  # flops of the eager patched model: the same graph for every mode
            result = {}
            if main:
                inputs = latency_inputs(tuple(images.shape[1:]), val.num_classes, lat, device)
                with opener.eager(point, "classification") as model:
                    flops = flops_per_call(model, inputs)
                result = {"flops_per_call": flops, "flops_per_image": flops / lat.batch, "batch": lat.batch}
        result["seconds"] = time.perf_counter() - start
        return result

    # -- the sweep ---------------------------------------------------------------------------------
    measured: dict[str, dict[str, Any]] = {}
    for index, point in enumerate(points, 1):
        measured[point.name] = {}
        for part in parts:
            facts = part_facts(point, part)
            saved = records.load(point.name, part, facts) if (resume and main and records) else None
            if saved is not None:
                problem = _inconsistency(part, saved, labels[slice(*chunks[part])] if part in chunks else None,
                                         num_classes=val.num_classes, fid_count=fid_count,
                                         partner=paired_with(point), reference=points[0].name)
                if problem:
                    logger.warning("sweep point %s: the saved %s is inconsistent (%s): measuring it again",
                                   point.name, part, problem)
                    saved = None
            saved = gather(saved)[0]  # rank 0 decides: every rank skips the same parts
            if saved is not None:
                measured[point.name][part] = saved
                tracker.advance(work(part), None)
                continue
            with precision():
                result = measure(point, part)
            if main and records is not None:
                records.save(point.name, part, facts, result)
            measured[point.name][part] = result
            if main:
                logger.info("sweep [%d/%d] %s: %s %s in %.1f s; %s", index, len(points), point.name, part,
                            _summary(part, result), result["seconds"], tracker.advance(work(part), result["seconds"]))
            else:
                tracker.advance(work(part), result["seconds"])

    report = None
    if main:
        report = build_sweep_report(
            points, measured, settings=settings.to_dict(), budget=budget, skipped=skipped,
            labels=labels.tolist(), provenance={"run": run, "methods": methods, "fid_reference": fid_facts},
            run={"model": model, "device_name": device_name(device), "world_size": world, "metadata": dict(metadata or {})},
        )
        if out is not None:
            write_sweep_report(report, out)
    report = gather(report)[0]
    barrier()
    return report


def _finite(value: Any, low: float = 0.0) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low


def _inconsistency(part: str, result: Any, labels: torch.Tensor | None, *, num_classes: int,
                   fid_count: int, partner: str, reference: str) -> str | None:
    """Why a reused part's result cannot be what its part measured (a hand-edited or foreign
    checkpoint whose facts still match), else None. Classification is re-derived from its
    predictions and this run's labels; the other parts are checked for range and shape, and a
    latency for its ``paired_with`` being ``partner`` (absent in older checkpoints: ``reference``),
    since the report's ms_paired follows that point."""
    if not isinstance(result, Mapping):
        return "not a result"
    if part.startswith("classify@"):
        preds = result.get("predictions")
        if not isinstance(preds, list) or len(preds) != len(labels):
            return f"{len(preds) if isinstance(preds, list) else 'no'} predictions for {len(labels)} images"
        if not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < num_classes for p in preds):
            return f"a prediction outside 0..{num_classes - 1}"
        correct = sum(int(p == y) for p, y in zip(preds, labels.tolist()))
        if result.get("correct") != correct or result.get("num_images") != len(labels):
            return f"correct {result.get('correct')} of {result.get('num_images')} vs {correct} of {len(labels)} from its predictions"
        if not _finite(result.get("accuracy")) or abs(result["accuracy"] - correct / len(labels)) > 1e-12:
            return f"accuracy {result.get('accuracy')} vs {correct / len(labels)} from its predictions"
        return None
    if part.startswith("fid@"):
        if result.get("fid_num_images") != fid_count:
            return f"FID of {result.get('fid_num_images')} samples vs {fid_count}"
        return None if _finite(result.get("fid")) else f"FID {result.get('fid')!r}"
    if part == "drift":
        bad = [k for k in DRIFT_STATS if not _finite(result.get(k))]
        return f"drift {bad[0]} {result.get(bad[0])!r}" if bad else None
    if part == "latency":
        keys = ("ms_min", "ms_p10", "ms", "ms_p90")
        if not all(_finite(result.get(k)) for k in keys):
            return "a latency that is not a positive number"
        values = [result[k] for k in keys]
        if values != sorted(values):
            return "latency min <= p10 <= median <= p90 does not hold"
        paired = ("reference_ms", "speedup", "speedup_min", "speedup_max")
        if not all(_finite(result.get(k)) and result[k] > 0 for k in paired):
            return "a paired latency (reference ms, speedup and its range) that is not a positive number"
        if not math.isclose(result["speedup"], result["reference_ms"] / result["ms"], rel_tol=1e-9):
            return f"speedup {result['speedup']} vs {result['reference_ms'] / result['ms']} from its medians"
        if not result["speedup_min"] <= result["speedup_max"]:
            return "speedup range min > max"
        if result.get("paired_with", reference) != partner:
            return f"paired with {result.get('paired_with')!r}, not {partner!r}"
        return None
    if part == "flops":
        return None if _finite(result.get("flops_per_call"), 1) else f"FLOPs {result.get('flops_per_call')!r}"
    return None


def _summary(part: str, result: Mapping[str, Any]) -> str:
    """A few words of a part's result for the progress log."""
    if part.startswith("classify@"):
        return f"accuracy {100 * result['accuracy']:.1f}% of {result['num_images']} images"
    if part.startswith("fid@") and result.get("fid") is not None:
        return f"FID {result['fid']:.2f}"
    if part == "drift":
        return f"rel L2 {result['rel_l2']:.3g}"
    if part == "latency" and result.get("ms") is not None:
        return f"{result['ms']:.3g} ms/call"
    if part == "flops" and result.get("flops_per_call") is not None:
        return f"{result['flops_per_call'] / 1e9:.3g} GFLOP/call"
    return "done"

