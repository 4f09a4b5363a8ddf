"""Engine vs eager on the diffusion classifier: per-image agreement with a validation report.

Builds an ONNX Runtime engine of a built-in model for one method, classifies the first N test
images with it (same classifier noise seed as ``validate``), and compares its predictions and
per-class errors with the eager run recorded in REPORT (e.g. measured on a GPU machine).

    python scripts/engine_agreement.py --report docs/results/dit/report.json --method bigain-merge-0.5 --limit 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bigain_export import BiGainConfig  # noqa: E402
from bigain_export.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from bigain_export.engine.build import EngineEpsFn, build_engine  # noqa: E402
from bigain_export.models.registry import load_denoiser  # noqa: E402
from bigain_export.sweep.grid import default_grid  # noqa: E402
from bigain_export.validate.classifier import classify  # noqa: E402


def exportable(config):
    """ToMe's random anchors cannot be baked into an engine: its engine uses fixed anchors."""
    return BiGainConfig.from_dict({**config.to_dict(), "anchor": "fixed"}) if config.merge == "tome" else config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--model", default="builtin:fmnist-dit")
    parser.add_argument("--method", required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--backend", default="ort-cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    report = json.loads(args.report.read_text())
    eager = report["methods"][f"eager:{args.method}"]["classification"]
    config = {e.name: e.config for e in default_grid()}[args.method].for_task("classification")
    denoiser = load_denoiser(args.model)
    test = load_fashion_mnist("test")
    images, labels = test.images[: args.limit], test.labels[: args.limit]
    t0 = time.time()
    engine, drift = build_engine(denoiser, exportable(config), args.out / "engine", backend=args.backend,
                                 batch=args.batch, drift_feeds_count=1)
    with EngineEpsFn(engine) as eps_fn:
        result = classify(eps_fn, images, labels, num_classes=denoiser.num_classes,
                          scheduler_config=denoiser.scheduler_config, batch_size=args.batch,
                          generator=eager["seed"], progress=True)
    eager_pred = np.asarray(eager["predictions"][: args.limit])
    engine_pred = result.predictions.numpy()
    eager_err = np.asarray(eager["errors"][: args.limit], dtype=float)
    engine_err = result.errors.numpy()
    both = np.isfinite(eager_err) & np.isfinite(engine_err)
    summary = dict(
        model=args.model, method=args.method, engine_config=exportable(config).describe(), backend=args.backend,
        images=args.limit, engine_accuracy=float(result.accuracy), eager_accuracy_same_images=float((eager_pred == labels.numpy()).mean()),
        prediction_agreement=float((eager_pred == engine_pred).mean()),
        class_error_max_abs_diff=float(np.abs(eager_err[both] - engine_err[both]).max()),
        engine_drift=drift.to_dict() if drift else None, seconds=round(time.time() - t0, 1),
        eager_source=str(args.report), date=time.strftime("%Y-%m-%d"), torch=torch.__version__,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"agreement-{args.method}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
