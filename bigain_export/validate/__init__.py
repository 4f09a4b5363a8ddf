"""Validation: does an engine classify and generate like the eager model? (docs/validation.md)

Everything takes an **eps function** ``eps_fn(sample [B,C,H,W], timestep [B] long,
class_labels [B] long) -> eps [B,C,H,W]``: an eager ``Denoiser``, a ``torch.compile`` wrapper or
an engine (``bigain_export.engine.build.EngineEpsFn``).

* :func:`classify`: diffusion classifier (BiGain's adaptive schedule by default);
* :func:`sample`: DDIM / Euler with classifier-free guidance and per-image seeds;
* :mod:`.fid`: Inception features, statistics cache, Frechet distance;
* :func:`validate`: all of it for several methods, written as a report;
* :func:`check_against_baseline`: the regression gate behind ``bigain-export check``.
"""

from .batching import EpsFn, call_batched
from .classifier import ClassificationResult, classify
from .distributed import classify_sharded, sample_sharded
from .drift import DriftInputs, DriftResult, drift
# ``fid`` stays the module (``validate.fid.fid(images, reference)``): re-exporting the function
# of the same name would shadow it.
from .fid import FIDStats, InceptionFeatures, compute_statistics, frechet_distance, reference_statistics
from .gate import GateResult, Tolerances, check_against_baseline
from .report import build_report, load_report, write_report
from .run import TaskEps, ValidationSettings, validate
from .sampling import SamplingConfig, sample
from .schedule import ClassifierSchedule, alphas_cumprod

__all__ = [
    "ClassificationResult",
    "ClassifierSchedule",
    "DriftInputs",
    "DriftResult",
    "EpsFn",
    "FIDStats",
    "GateResult",
    "InceptionFeatures",
    "SamplingConfig",
    "TaskEps",
    "Tolerances",
    "ValidationSettings",
    "alphas_cumprod",
    "build_report",
    "call_batched",
    "check_against_baseline",
    "classify",
    "classify_sharded",
    "compute_statistics",
    "drift",
    "frechet_distance",
    "load_report",
    "reference_statistics",
    "sample",
    "sample_sharded",
    "validate",
    "write_report",
]
