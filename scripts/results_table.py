"""Accuracy and FID of every method on a built-in model, eager and as an engine (issue 5, item 6).

For each method (none, ToMe, BiGain merging at several ratios, ToDo, BiGain KV downsampling) it
measures the eager patched model and its engine (ONNX Runtime CUDA when available), through
``bigain_export.validate.validate`` with the same classifier noise, sampling seeds and drift
inputs, and writes the report (JSON, Markdown, PNG) plus ``summary.json``/``summary.md``: the
table, eager-vs-engine agreement per method and paired McNemar tests between methods.

    python scripts/results_table.py --model builtin:fmnist-dit --limit 1000 --device cuda --out results/dit

Each method is built only when its turn comes (engines too) and checkpointed when done
(``--out``/report/methods): rerun the same command after a timeout and it continues.
Everything runs in true fp32 (TF32 off in PyTorch and ONNX Runtime; ``backends/precision.py``).

ToMe's eager baseline uses random anchors (as tomesd); its engine uses fixed anchors, since a
random pattern per call cannot be baked into an engine. BiGain KV downsampling uses the paper's
alpha per task: fixed 0.9 for classification, scheduled 0.8 -> 1.2 for generation (two engines).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export import BiGainConfig, apply_bigain  # noqa: E402
from bigain_export.backends.precision import strict_fp32  # noqa: E402
from bigain_export.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from bigain_export.errors import EngineError  # noqa: E402
from bigain_export.models.registry import load_denoiser  # noqa: E402
from bigain_export.engine.build import _resolve_backend  # noqa: E402
from bigain_export.validate import provenance  # noqa: E402
from bigain_export.validate import run as validation  # noqa: E402
from bigain_export.validate.fid import InceptionFeatures, reference_statistics  # noqa: E402
from bigain_export.validate.sampling import SamplingConfig  # noqa: E402
from bigain_export.validate.stats import paired_comparison  # noqa: E402


def method_configs(ratios, downsample):
    methods = {"none": BiGainConfig.preset("none")}
    for r in ratios:
        methods[f"tome-{r:g}"] = BiGainConfig.preset("tome", ratio=r)
    for r in ratios:
        methods[f"bigain-merge-{r:g}"] = BiGainConfig.preset("bigain-merge", ratio=r)
    methods[f"todo-s{downsample}"] = BiGainConfig.preset("todo", downsample=downsample)
    methods[f"bigain-kv-s{downsample}"] = BiGainConfig.preset("bigain-kv", downsample=downsample)
    return methods


def eager_method(denoiser, config: BiGainConfig) -> validation.Deferred:
    """The patched eager model (a copy), per task when the config's alpha depends on it."""

    @contextlib.contextmanager
    def open_():
        # ToMe's random anchors draw from the global RNG: seed it so a rerun draws the same anchors
        # (two unseeded runs of DiT ToMe 0.7 gave 66.6% and 60.8%: docs/results.md).
        torch.manual_seed(0)
        fns = {task: copy.deepcopy(denoiser) for task in ("classification", "generation")
               if task == "classification" or config.for_task(task) != config.for_task("classification")}
        for task, model in fns.items():
            apply_bigain(model, config.for_task(task))
        yield fns["classification"] if len(fns) == 1 else validation.TaskEps(fns["classification"], fns["generation"])

    return validation.Deferred(open_)


def drift_file(args) -> Path:
    """Build-time drift of every engine, kept across resumed runs."""
    return args.out / "engine_drift.json"


def exportable(config: BiGainConfig) -> BiGainConfig:
    return BiGainConfig.from_dict({**config.to_dict(), "anchor": "fixed"}) if config.merge == "tome" else config


def engine_method(denoiser, name: str, config: BiGainConfig, args, engine_drift: dict) -> validation.Deferred:
    """The method's engine(s), built (or reused from ``--engine-dir``) when measured; sessions closed after."""
    from bigain_export.engine.build import EngineEpsFn, build_engine, load_engine
    from bigain_export.engine.manifest import model_sha256

    @contextlib.contextmanager
    def open_():
        tasks = {"cls": exportable(config.for_task("classification")), "gen": exportable(config.for_task("generation"))}
        if tasks["gen"] == tasks["cls"]:
            del tasks["gen"]
        with contextlib.ExitStack() as stack:
            fns = {}
            for task, task_config in tasks.items():
                path = args.engine_dir / f"{name}-{task}"
                try:  # an engine left by an interrupted run of the same config and weights
                    engine = load_engine(path, config=task_config, model_hash=model_sha256(denoiser))
                    drift = engine.manifest.drift
                except EngineError:
                    engine, report = build_engine(denoiser, task_config, path, backend=args.backend, batch=args.batch,
                                                  drift_feeds_count=2, device=args.device)
                    drift = report.to_dict()
                engine_drift[f"engine:{name}/{task}"] = drift
                # Written at once: a run killed by a time limit skips `finally` blocks.
                drift_file(args).write_text(json.dumps(engine_drift, indent=1))
                fns[task] = stack.enter_context(EngineEpsFn(engine))
                errors = [o["mean_abs"] for o in (drift or {}).get("outputs", [])]
                print(f"[engine {name}/{task}] drift vs eager same config: mean abs {errors or drift}", flush=True)
            yield fns["cls"] if len(fns) == 1 else validation.TaskEps(fns["cls"], fns["gen"])

    return validation.Deferred(open_)


def summarise(report: dict, names: list[str]) -> dict:
    """Table rows per method (eager and engine side by side) and paired tests between methods."""
    methods = report["methods"]

    def correct(key):
        c = methods[key]["classification"]
        return [p == y for p, y in zip(c["predictions"], c["labels"])]

    rows = []
    for name in names:
        row = {"method": name}
        for kind in ("eager", "engine"):
            entry = methods.get(f"{kind}:{name}")
            if entry:
                row[kind] = {k: entry.get(k) for k in ("accuracy", "accuracy_ci95", "fid", "drift")}
        if "eager" in row and "engine" in row:
            e, g = methods[f"eager:{name}"]["classification"], methods[f"engine:{name}"]["classification"]
            row["prediction_agreement"] = sum(a == b for a, b in zip(e["predictions"], g["predictions"])) / len(e["predictions"])
            row["engine_vs_eager"] = paired_comparison(correct(f"engine:{name}"), correct(f"eager:{name}"))
        rows.append(row)
    pairs = {}
    for kind in ("eager", "engine"):
        for a, b in (("bigain-merge-0.7", "tome-0.7"), ("bigain-merge-0.5", "tome-0.5"), ("bigain-merge-0.3", "tome-0.3"),
                     ("bigain-kv-s2", "todo-s2")):
            if f"{kind}:{a}" in methods and f"{kind}:{b}" in methods:
                pairs[f"{kind}:{a} vs {kind}:{b}"] = paired_comparison(correct(f"{kind}:{a}"), correct(f"{kind}:{b}"))
    return {"rows": rows, "paired": pairs}


def summary_markdown(summary: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    ci = lambda c: "-" if not c else f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"  # noqa: E731
    fid = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| method | eager acc % (95% CI) | engine acc % (95% CI) | same prediction % | eager FID | engine FID |",
             "|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        e, g = row.get("eager", {}), row.get("engine", {})
        lines.append(f"| {row['method']} | {pct(e.get('accuracy'))} {ci(e.get('accuracy_ci95'))} | "
                     f"{pct(g.get('accuracy'))} {ci(g.get('accuracy_ci95'))} | {pct(row.get('prediction_agreement'))} | "
                     f"{fid(e.get('fid'))} | {fid(g.get('fid'))} |")
    lines += ["", "| paired comparison (A vs B) | images right only under A | only under B | McNemar p |", "|---|---|---|---|"]
    for label, p in summary["paired"].items():
        lines.append(f"| {label} | {p['only_a']} | {p['only_b']} | {p['mcnemar_p']:.2g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:fmnist-dit")
    parser.add_argument("--limit", type=int, default=1000, help="test images (the first N of the 10k)")
    parser.add_argument("--fid-images", type=int, default=None)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--no-engines", action="store_true")
    parser.add_argument("--no-fid", action="store_true", help="skip generation and FID (smoke runs)")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of method names, measured in this order")
    parser.add_argument("--engine-methods", nargs="+", default=None, help="engines only for these methods (default: all)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--sampler", default=None, help="default: ddim for DiT, euler for UNet (the paper's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="default: 1.0 for the built-in models (they saturate above ~1.5, docs/models.md); "
                        "the paper's 4.0 (DiT) / 7.5 (SD) otherwise")
    parser.add_argument("--engine-dir", type=Path, default=None, help="where engines are built (default: OUT/engines)")
    parser.add_argument("--fid-cache", type=Path, default=Path("/tmp/bigain-fid-cache"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.engine_dir = args.engine_dir or args.out / "engines"

    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    denoiser = load_denoiser(args.model, device=args.device)
    is_dit = denoiser.kind == "dit"
    sampler = args.sampler or ("ddim" if is_dit else "euler")
    builtin = args.model.startswith("builtin:")
    guidance = args.guidance if args.guidance is not None else (1.0 if builtin else 4.0 if is_dit else 7.5)
    test = load_fashion_mnist("test")
    images, labels = test.images[: args.limit], test.labels[: args.limit]
    features = InceptionFeatures(device=args.device)
    fid_ref = None if args.no_fid else reference_statistics(test.images, features, cache_dir=args.fid_cache)
    print(f"[{time.time() - t0:.0f}s] reference statistics of the 10k test images ready", flush=True)

    engine_drift = json.loads(drift_file(args).read_text()) if drift_file(args).is_file() else {}
    configs = method_configs(args.ratios, args.downsample)
    for name in (args.methods or []) + (args.engine_methods or []):
        if name not in configs:
            parser.error(f"method {name!r} is not known; allowed: {', '.join(configs)}")
    names = args.methods or list(configs)  # in the order given: what matters most can go first
    methods, facts = {}, {}
    model = provenance.model_facts(denoiser, args.model)
    backend = _resolve_backend(args.backend)
    for name in names:  # eager and engine of one method next to each other: a resumed run has whole pairs
        config = configs[name]
        per_task = {"classify": config.for_task("classification"), "generate": config.for_task("generation")}
        methods[f"eager:{name}"] = eager_method(denoiser, config)
        facts[f"eager:{name}"] = provenance.method_facts(per_task, anchor_seed=0)
        if not args.no_engines and (args.engine_methods is None or name in args.engine_methods):
            methods[f"engine:{name}"] = engine_method(denoiser, name, config, args, engine_drift)
            planned = {task: provenance.planned_engine_facts(model["sha256"], exportable(c), backend=backend,
                                                             precision="fp32", batch=args.batch,
                                                             sample_shape=denoiser.sample_shape)
                       for task, c in per_task.items()}
            facts[f"engine:{name}"] = provenance.method_facts(
                {task: exportable(c) for task, c in per_task.items()}, backend=backend, engine=planned)

    settings = validation.ValidationSettings(
        num_classes=denoiser.num_classes, scheduler_config=denoiser.scheduler_config,
        sampling=None if args.no_fid else SamplingConfig(sampler=sampler, num_steps=50, guidance_scale=guidance,
                                                         null_label=denoiser.null_label, seed=0),
        fid_images=args.fid_images, drift_inputs=16, batch_size=args.batch,
    )
    metadata = dict(model=args.model, card=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    torch=torch.__version__, date=time.strftime("%Y-%m-%d"), limit=args.limit,
                    sampler=sampler, guidance=guidance, precision="fp32 (TF32 off)", engine_drift=engine_drift)
    with strict_fp32():
        report = validation.validate(
            methods, images.to(args.device), labels.to(args.device), settings, args.out / "report",
            reference_method=next(iter(methods)), fid_reference=fid_ref, feature_fn=features,
            fid_cache_dir=args.fid_cache, metadata=metadata, resume=True,
            provenance=provenance.Provenance(model=model, methods=facts, data_source="fmnist-test",
                                             data_limit=args.limit, device=args.device),
        )
    summary = summarise(report, names)
    summary["settings"] = {k: metadata[k] for k in ("model", "card", "torch", "date", "limit", "sampler", "guidance", "precision")}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text(summary_markdown(summary))
    print(f"[{time.time() - t0:.0f}s] done; report in {args.out / 'report'}")
    print(summary_markdown(summary))


if __name__ == "__main__":
    main()
