"""Hand-made validation reports with full provenance, for gate and loader tests (no model runs)."""

from __future__ import annotations

import copy
import json

from bigain_export.config import BiGainConfig
from bigain_export.validate.drift import drift_tolerances
from bigain_export.validate.provenance import method_facts
from bigain_export.validate.report import build_report
from bigain_export.validate.stats import wilson_interval

CONFIG = BiGainConfig.preset("bigain-merge")
NUM_IMAGES = 100

RUN = {
    "provenance_version": 1,
    "model": {"id": "builtin:fmnist-dit", "sha256": "a" * 64, "kind": "dit", "sample_shape": [1, 32, 32],
              "num_classes": 10, "null_label": 10},
    "data": {"source": "fmnist-test", "limit": NUM_IMAGES, "num_images": NUM_IMAGES, "image_shape": [1, 32, 32],
             "sha256": "d" * 64},
    "settings": {"num_classes": 10, "scheduler_config": {"num_train_timesteps": 1000},
                 "classifier": {"schedule": {"name": "bigain-adaptive"}, "seed": 0},
                 "sampling": {"sampler": "ddim", "num_steps": 50, "guidance_scale": 1.0, "seed": 0},
                 "fid_images": NUM_IMAGES, "drift": {"inputs": 16, "seed": 0}, "batch_size": 8},
    "device": {"type": "cpu", "name": "cpu"},
    "fid_reference": {"feature_key": "inception", "num_images": NUM_IMAGES, "sha256": "f" * 64},
    "packages": {"bigain_export": "0.1.0", "torch": "2.13.0"},
    "extra": {},
}

ENGINE = {"path": "/engines/e", "manifest_sha256": "e" * 64, "backend": "ort-cpu", "precision": "fp32", "batch": 8,
          "sample_shape": [1, 32, 32], "model_sha256": "a" * 64, "config": CONFIG.to_dict()}


def facts_for(name: str, config: BiGainConfig = CONFIG) -> dict:
    if name == "eager-none":
        return method_facts(None)
    if name.startswith("engine"):
        return method_facts(config, backend="ort-cpu", engine={**ENGINE, "config": config.to_dict()})
    return method_facts(config)


def method(correct: int = 72, n: int = NUM_IMAGES, fid: float | None = 12.3, drift=None,
           reference: str = "eager-same-config") -> dict:
    """A consistent method entry; ``drift`` = (max_abs, rel_l2, mean_abs) or None."""
    entry = {"accuracy": correct / n, "accuracy_ci95": list(wilson_interval(correct, n)), "correct": correct,
             "num_images": n, "fid": fid, "fid_num_images": None if fid is None else n, "drift": None}
    if drift is not None:
        entry["drift"] = {"max_abs": drift[0], "rel_l2": drift[1], "mean_abs": drift[2], "num_inputs": 16,
                          "reference": reference}
    return entry


def make_report(methods: dict, *, facts: dict | None = None, run: dict | None = None, limits=None,
                reference: str | None = None) -> dict:
    """A checked report of ``methods`` ({name: entry}); facts default by name (see facts_for)."""
    facts = {name: (facts or {}).get(name) or facts_for(name) for name in methods}
    reference = reference or ("eager-same-config" if "eager-same-config" in methods else next(iter(methods)))
    refs = {name: (entry.get("drift") or {}).get("reference", reference) for name, entry in methods.items()}
    refs = {name: ref if ref in methods else reference for name, ref in refs.items()}
    tolerances = drift_tolerances(limits, facts, refs)
    provenance = {"run": copy.deepcopy(run or RUN), "methods": facts, "fingerprints": {n: "0" * 64 for n in methods}}
    return build_report(methods, reference_method=reference, settings={}, tolerances=tolerances,
                        provenance=provenance)


def write(path, report: dict) -> str:
    path.write_text(json.dumps(report))
    return str(path)
