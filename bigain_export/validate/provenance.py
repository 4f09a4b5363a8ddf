"""What a result was measured on: ONE definition, used by checkpoints, reports and the gate.

A number in a report (an accuracy, a FID, a drift) is only meaningful together with the facts it
was measured on. This module collects those facts as plain JSON-ready dicts, fingerprints them,
and says which of them two results must share to be compared. Checkpoints are reused only when
their fingerprint matches, reports carry the facts under ``"provenance"``, and
``bigain-export check`` refuses to compare results whose facts differ.

Stable API (other modules, e.g. the sweep, key their checkpoints on it)::

    model = model_facts(denoiser, "builtin:fmnist-dit")        # id + weight sha256 + shapes
    method = method_facts(config, backend="eager", dtype="float32")   # or engine=engine_facts(engine),
                                    # or engine=planned_engine_facts(...) for an engine built when measured
    prov = Provenance(model=model, methods={"eager-same-config": method}, data_source="fmnist-test",
                      data_limit=100, device="cpu")
    run = run_facts(prov, settings, images, labels, fid_reference=stats, feature_key="...")
    facts = measured_facts(run, prov.methods["eager-same-config"], reference=prov.methods[ref])
    key = fingerprint(facts)                                     # sha256 hex of canonical JSON
    problems = incomparable(report_prov, baseline_prov, "engine", "engine")  # [] when comparable

The facts of one measured method (``measured_facts``) are:

* ``run.model``: ``id`` (spec), ``sha256`` of the weights (``engine.manifest.model_sha256``),
  ``kind``, ``sample_shape``, ``num_classes``, ``null_label``;
* ``method.config``: the full BiGain config per task (``classify`` / ``generate``; ``null`` =
  unpatched), ``method.backend`` (``eager``, ``compile``, ``ort-cpu``, ``ort-cuda``, ``trt``),
  ``method.dtype`` (compute dtype), ``method.engine`` (``engine_facts``: manifest sha256, backend,
  precision, batch, shapes, model sha256, config) or ``null``;
* ``run.device`` (type and name), ``run.settings`` (classifier schedule and seed, sampler, steps,
  guidance, sampling seed, null label, FID image count, drift inputs and seed, batch size,
  scheduler config, number of classes), ``run.data`` (source, limit, count, shape, sha256 of the
  exact image and label bytes), ``run.fid_reference`` (feature network key, image count, sha256 of
  the statistics), ``run.packages`` (bigain_export, torch, diffusers, onnxruntime, ... versions);
* ``drift_reference``: the facts of the method its drift is measured against.

Everything above is fingerprinted (a resumed run re-measures a method when any of it changed).
The gate compares a subset, :data:`COMPARED_RUN_FACTS` plus the method's config (and, when the
same method name is paired, its backend, dtype and engine build); package versions, device and
batch size are reported as notes only, since a CI gate exists to compare a new build against an
old one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..config import BiGainConfig
from ..errors import ConfigError

PROVENANCE_VERSION = 1
TASKS = ("classify", "generate")

# (path, label) of the run facts two comparable results must share.
COMPARED_RUN_FACTS: tuple[tuple[str, ...], ...] = (
    ("model", "sha256"),
    ("model", "sample_shape"),
    ("model", "num_classes"),
    ("model", "prompts"),
    ("data", "sha256"),
    ("data", "num_images"),
    ("settings", "num_classes"),
    ("settings", "scheduler_config"),
    ("settings", "classifier"),
    ("settings", "sampling"),
    ("settings", "fid_images"),
    ("settings", "drift"),
    ("fid_reference",),
)
# Facts that may differ between a new run and its baseline; shown as notes when they do.
NOTED_RUN_FACTS: tuple[tuple[str, ...], ...] = (("packages",), ("device",), ("settings", "batch_size"), ("model", "id"))
# Engine facts compared when the same method name is paired (not the files: a rebuilt engine is
# what a gate judges).
COMPARED_ENGINE_FACTS = ("backend", "precision", "sample_shape", "model_sha256", "config")


def _canonical(value: Any) -> Any:
    """JSON-ready copy: tuples -> lists, numpy scalars -> Python, non-finite floats refused."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"a measured-on fact is {value!r}; allowed: finite numbers")
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ConfigError(f"a measured-on fact has type {type(value).__name__}; allowed: JSON values")


def fingerprint(facts: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``facts`` (key order does not matter)."""
    text = json.dumps(_canonical(facts), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# -- the facts, one collector each ----------------------------------------------------------------


def package_facts() -> dict[str, str]:
    """Versions of the packages that compute a result (python, torch, diffusers, runtimes, ours)."""
    from ..engine.manifest import versions

    return versions()


def model_facts(denoiser, spec: str | None = None) -> dict[str, Any]:
    """``id`` (the spec it was loaded from), weight ``sha256`` and shapes of a ``Denoiser``."""
    from ..engine.manifest import weights_sha256

    return {
        "id": spec or denoiser.name,
        "sha256": weights_sha256(denoiser),
        "kind": denoiser.kind,
        "sample_shape": list(denoiser.sample_shape),
        "num_classes": int(denoiser.num_classes),
        "null_label": int(denoiser.null_label),
        # text pipelines: the class prompts are the conditioning (another template, another model)
        "prompts": getattr(getattr(denoiser, "conditioning", None), "prompts", None),
    }


def engine_facts(engine) -> dict[str, Any]:
    """What an engine (``engine.build.Engine``) is: its manifest's sha256 and build facts."""
    from ..engine.manifest import MANIFEST_NAME, file_sha256

    manifest = engine.manifest
    return {
        "path": str(Path(engine.path).resolve()),
        "manifest_sha256": file_sha256(Path(engine.path) / MANIFEST_NAME),
        "backend": manifest.backend,
        "precision": manifest.spec["precision"],
        "batch": manifest.spec["batch"],
        "sample_shape": list(manifest.spec["sample_shape"]),
        "model_sha256": manifest.model_sha256,
        "config": manifest.bigain_config.to_dict(),
    }


def planned_engine_facts(model_sha256: str, config: BiGainConfig, *, backend: str, precision: str, batch: int,
                         sample_shape: Sequence[int]) -> dict[str, Any]:
    """:func:`engine_facts` of an engine that a :class:`~bigain_export.validate.run.Deferred`
    method will build from these inputs (no files yet: ``path`` and ``manifest_sha256`` are null;
    the package versions in the run facts cover the builder)."""
    return {"path": None, "manifest_sha256": None, "backend": backend, "precision": precision, "batch": int(batch),
            "sample_shape": [int(s) for s in sample_shape], "model_sha256": model_sha256, "config": config.to_dict()}


def _config_dict(config: BiGainConfig | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    if isinstance(config, BiGainConfig):
        return config.to_dict()
    return BiGainConfig.from_dict(dict(config)).to_dict()


def method_facts(
    config: BiGainConfig | None | Mapping[str, BiGainConfig | None],
    *,
    backend: str = "eager",
    dtype: str = "float32",
    engine: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What one method runs.

    Args:
        config: the BiGain config (``None``: unpatched), or one per task
            ``{"classify": c1, "generate": c2}`` (a :class:`~bigain_export.validate.run.TaskEps`).
        backend: ``eager``, ``compile``, ``ort-cpu``, ``ort-cuda``, ``trt`` (engines: the engine's).
        dtype: the compute dtype (``float32``, ``float16``, ``bfloat16``).
        engine: :func:`engine_facts` of the engine, ``{"classify": facts, "generate": facts}`` when
            each task has its own engine, or ``None``.
        extra: anything else that changes the result (e.g. ``seed`` of ToMe's random anchors).
    """
    if isinstance(config, Mapping) and set(config) == set(TASKS):
        per_task = {task: _config_dict(config[task]) for task in TASKS}
    elif config is None or isinstance(config, BiGainConfig):
        per_task = {task: _config_dict(config) for task in TASKS}
    else:
        raise ConfigError(f"method config {config!r} is not allowed; allowed: a BiGainConfig, None, "
                          f"or {{'classify': ..., 'generate': ...}}")
    if isinstance(engine, Mapping) and set(engine) == set(TASKS) and engine["classify"] == engine["generate"]:
        engine = engine["classify"]  # one engine serves both tasks
    facts = {"config": per_task, "backend": str(backend), "dtype": str(dtype),
             "engine": None if engine is None else dict(engine)}
    facts.update(extra)
    return _canonical(facts)


def engine_of(facts: Mapping[str, Any] | None, task: str = "classify") -> Mapping[str, Any] | None:
    """The engine facts a method (``method_facts``) runs for ``task``, or None for eager methods.
    Drift is measured on the ``classify`` function."""
    engine = facts.get("engine") if isinstance(facts, Mapping) else None
    if isinstance(engine, Mapping) and set(engine) == set(TASKS):
        engine = engine[task]
    return engine if isinstance(engine, Mapping) else None


def tensor_sha256(*tensors: torch.Tensor) -> str:
    """sha256 over the shapes, dtypes and exact bytes of ``tensors``."""
    digest = hashlib.sha256()
    for tensor in tensors:
        data = torch.as_tensor(tensor).detach().cpu().contiguous()
        digest.update(f"{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def data_facts(images: torch.Tensor, labels: torch.Tensor, *, source: str | None = None,
               limit: int | None = None) -> dict[str, Any]:
    """Identity of the validation set: where it came from, how many, and the bytes' sha256."""
    return {
        "source": source,
        "limit": limit,
        "num_images": int(images.shape[0]),
        "image_shape": [int(s) for s in images.shape[1:]],
        "sha256": tensor_sha256(images.to(torch.float32), torch.as_tensor(labels, dtype=torch.long)),
    }


def fid_reference_facts(reference, feature_key: str | None) -> dict[str, Any] | None:
    """The FID reference statistics (``validate.fid.FIDStats``) by content, or ``None``."""
    if reference is None:
        return None
    digest = hashlib.sha256()
    for array in (reference.mu, reference.sigma):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return {"feature_key": feature_key, "num_images": int(reference.num_images), "sha256": digest.hexdigest()}


def device_facts(device: str | torch.device) -> dict[str, Any]:
    """``{"type": "cuda", "name": "NVIDIA H200"}`` or ``{"type": "cpu", "name": "cpu"}``."""
    device = torch.device(device)
    name = "cpu"
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
    elif device.type != "cpu":
        name = device.type
    return {"type": device.type, "name": name}


@dataclass(frozen=True)
class Provenance:
    """What the caller of ``validate()`` knows about a run, beyond the settings and the images.

    Args:
        model: :func:`model_facts` of the model every method derives from.
        methods: method name -> :func:`method_facts`; one entry per method of the run.
        data_source: where the images came from (``fmnist-test``, a file path), recorded.
        data_limit: the ``--limit`` that cut them, recorded.
        device: where the eager model runs.
    """

    model: Mapping[str, Any]
    methods: Mapping[str, Mapping[str, Any]]
    data_source: str | None = None
    data_limit: int | None = None
    device: str = "cpu"
    extra: Mapping[str, Any] = field(default_factory=dict)


def run_facts(
    provenance: Provenance | None,
    settings: Mapping[str, Any],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    fid_reference=None,
    feature_key: str | None = None,
) -> dict[str, Any]:
    """The facts shared by every method of one run (see module docstring).

    ``settings`` is ``ValidationSettings.to_dict()`` with ``fid_images`` set to the effective count.
    Without ``provenance`` the model is unknown (``null``): such a run can neither resume nor be
    judged by the gate.
    """
    return _canonical({
        "provenance_version": PROVENANCE_VERSION,
        "model": None if provenance is None else dict(provenance.model),
        "data": data_facts(images, labels, source=None if provenance is None else provenance.data_source,
                           limit=None if provenance is None else provenance.data_limit),
        "settings": dict(settings),
        "device": device_facts(images.device if provenance is None else provenance.device),
        "fid_reference": fid_reference_facts(fid_reference, feature_key),
        "packages": package_facts(),
        "extra": {} if provenance is None else dict(provenance.extra),
    })


def measured_facts(run: Mapping[str, Any], method: Mapping[str, Any],
                   reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything one method's result depends on: the run, the method, its drift reference."""
    return {"run": dict(run), "method": dict(method), "drift_reference": None if reference is None else dict(reference)}


# -- comparing ------------------------------------------------------------------------------------


def _get(facts: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(facts, Mapping) or key not in facts:
            return _MISSING
        facts = facts[key]
    return facts


class _Missing:
    def __repr__(self) -> str:
        return "missing"


_MISSING = _Missing()


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"  # a sha256
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


def _diff_line(label: str, a: Any, b: Any) -> str:
    return f"{label} {_short(a)} vs {_short(b)}"


def _differing_leaf(a: Any, b: Any, prefix: str) -> tuple[str, Any, Any]:
    """The first (sorted) leaf where ``a`` and ``b`` differ, to name it precisely."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
            if va != vb:
                return _differing_leaf(va, vb, f"{prefix}.{key}")
    return prefix, a, b


def compare_paths(a: Mapping[str, Any], b: Mapping[str, Any], paths: Sequence[Sequence[str]],
                  prefix: str = "") -> list[str]:
    """One ``'path a vs b'`` line per path whose values differ between ``a`` and ``b``."""
    lines = []
    for path in paths:
        va, vb = _get(a, path), _get(b, path)
        if va != vb:
            lines.append(_diff_line(*_differing_leaf(va, vb, prefix + ".".join(path))))
    return lines


def incomparable(report: Mapping[str, Any], baseline: Mapping[str, Any], method: str, baseline_method: str) -> list[str]:
    """Why ``report``'s ``method`` cannot be compared with ``baseline``'s ``baseline_method``.

    Both arguments are report ``provenance`` objects (``{"run": ..., "methods": {...}}``). Returns
    ``[]`` when they were measured on the same model, data, settings and FID reference and the
    methods run the same BiGain config (and, for the same method name, the same backend, dtype
    and engine build).
    """
    problems = []
    for side, prov, name in (("report", report, method), ("baseline", baseline, baseline_method)):
        if not isinstance(_get(prov, ("run", "model")), Mapping):
            problems.append(f"{side} does not say which model it measured (no provenance.run.model)")
        if not isinstance(_get(prov, ("methods", name)), Mapping):
            problems.append(f"{side} does not say what method {name!r} ran (no provenance.methods.{name})")
    if problems:
        return problems
    problems += compare_paths(report["run"], baseline["run"], COMPARED_RUN_FACTS)
    ours, theirs = report["methods"][method], baseline["methods"][baseline_method]
    problems += compare_paths(ours, theirs, [("config",)], prefix=f"method {method}: ")
    if method == baseline_method:
        problems += compare_paths(ours, theirs, [("backend",), ("dtype",)], prefix=f"method {method}: ")
        for task in TASKS:
            engines = (engine_of(ours, task), engine_of(theirs, task))
            where = f"method {method}: engine." if task == "classify" else f"method {method}: {task} engine."
            if engines[0] is not None and engines[1] is not None:
                problems += compare_paths(engines[0], engines[1], [(k,) for k in COMPARED_ENGINE_FACTS], prefix=where)
            elif (engines[0] is None) != (engines[1] is None) or (ours.get("engine") is None) != (theirs.get("engine") is None):
                problems.append(_diff_line(where.rstrip("."), "an engine" if engines[0] is not None else "none",
                                           "an engine" if engines[1] is not None else "none"))
        problems = list(dict.fromkeys(problems))
    return problems


def notes(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """Facts that differ but do not make two runs incomparable (package versions, device, ...)."""
    return compare_paths(_get(report, ("run",)) or {}, _get(baseline, ("run",)) or {}, NOTED_RUN_FACTS)
