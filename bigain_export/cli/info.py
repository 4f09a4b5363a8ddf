"""``bigain-export info ENGINE``: what an engine is (engine folder names are opaque hashes).

Prints the model it was built from, its BiGain config, backend, precision, shapes, drift at build
time, and each file with whether its hash was verified. Exit 0 when every check of
``load_engine`` passes, 1 when the engine is readable but fails verification (the output says
which check), 2 when there is no readable manifest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("info", help="what an engine is: model, config, backend, shapes, drift, verified files")
    parser.add_argument("engine", type=Path, help="engine directory")
    parser.add_argument("--json", action="store_true", help="print the manifest and the verification as JSON")
    return parser


def _drift_text(drift) -> str:
    if not drift:
        return "not recorded"
    if drift.get("measured") is False:
        return f"NOT measured ({drift.get('reason', '?')})"
    outputs = drift.get("outputs") or []
    stats = ", ".join(f"{o.get('name')}: mean abs {o.get('mean_abs', float('nan')):.3g}, max abs "
                      f"{o.get('max_abs', float('nan')):.3g}" for o in outputs if isinstance(o, dict))
    verdict = "PASS" if drift.get("passed") else "FAIL"
    return f"{verdict} vs eager at {drift.get('precision', '?')} (tolerance {drift.get('tolerance', '?')}, " \
           f"{drift.get('num_feeds', '?')} feeds): {stats}"


def _patched_text(patched) -> str:
    if not patched:
        return "not recorded"
    levels = patched.get("unet_levels")
    where = f" at UNet level(s) {levels}" if levels is not None else ""
    return f"{len(patched.get('blocks') or [])} blocks{where}"


def run(args: argparse.Namespace) -> int:
    from ..backends.ort_optimize import describe
    from ..engine.build import load_engine
    from ..engine.manifest import Manifest, file_sha256, plain_file_name
    from ..errors import EngineError

    if not args.engine.is_dir():
        raise EngineError(f"{args.engine}: no such engine directory")
    manifest = Manifest.read(args.engine)  # unreadable: EngineError -> exit 2
    problem = None
    try:
        load_engine(args.engine)
    except EngineError as exc:
        problem = str(exc)
    files = {}
    for name, expected in manifest.files.items():
        path = args.engine / name
        # a name outside the folder is never opened, let alone hashed
        ok = plain_file_name(name) and path.is_file() and not path.is_symlink() and file_sha256(path) == expected
        files[name] = {"sha256": expected, "verified": ok}
    if args.json:
        print(json.dumps({"engine": str(args.engine), "manifest": json.loads(manifest.to_json()), "files": files,
                          "verified": problem is None, "problem": problem}, indent=2))
        return 0 if problem is None else 1
    spec, info = manifest.denoiser_spec, manifest.model_info
    lines = [
        f"engine:     {args.engine}",
        f"model:      {manifest.model} (weights sha256 {manifest.model_sha256[:16]}…, {info['kind']}, "
        f"{info['num_classes']} classes + null label {info['null_label']}, {info['num_train_timesteps']} timesteps)",
        f"config:     {manifest.bigain_config.describe()}  {json.dumps(manifest.config, sort_keys=True)}",
        f"backend:    {manifest.backend}, precision {spec.precision}, opset {manifest.opset}",
        "inputs:     " + ", ".join(f"{t.name} {list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in spec.inputs),
        "outputs:    " + ", ".join(f"{t.name} {list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in spec.outputs),
        f"bigain.ai:  {manifest.custom_nodes or 'no custom nodes'}",
        f"patched:    {_patched_text(manifest.patched)}",
        f"ort optim:  {describe(manifest.ort_optimization)}",
        f"drift:      {_drift_text(manifest.drift)}",
        "built with: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items())),
        "files:",
    ]
    lines += [f"  {name:<22} sha256 {f['sha256'][:16]}…  {'verified' if f['verified'] else 'NOT VERIFIED'}"
              for name, f in files.items()]
    lines.append("verified:   yes (files, hashes, graph I/O, build record)" if problem is None else f"verified:   NO: {problem}")
    print("\n".join(lines))
    return 0 if problem is None else 1
