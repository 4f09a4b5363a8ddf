"""Time ONNX Runtime engine folders against the first one, in interleaved rounds (CPU or CUDA).

For comparing two builds of the same model (another function body, another ORT optimizer, another
bigain-export version): each engine is verified (``load_engine``), fed the same drift-check
inputs its build used, and timed in rounds that alternate their order; a round's ratio is the
first engine's median over this one's, so the machine's drift within a run cancels. fp32/fp16
ORT engines only (TensorRT plans run through ``bigain-export compare``).

    python scripts/paired_engines.py ENGINE_A ENGINE_B [...] --rounds 16 --out docs/bench/...
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bigain_export.engine.build import drift_feeds, load_engine  # noqa: E402
from bigain_export.errors import BigainError  # noqa: E402
from bigain_export.validate.atomic import atomic_write  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_binding import bind_on_device, median_bound_ms  # noqa: E402


def open_session(engine_dir: Path, device: str):
    import onnxruntime as ort

    try:
        engine = load_engine(engine_dir)  # refuses a tampered or incomplete folder
    except BigainError as exc:
        raise SystemExit(f"paired_engines.py: error: {exc}") from None
    if engine.manifest.backend not in ("ort-cpu", "ort-cuda"):
        raise SystemExit(f"{engine_dir}: a {engine.manifest.backend} engine; allowed here: ort-cpu | ort-cuda engines")
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(engine.path / "model.onnx"), providers=providers)
    feeds = drift_feeds(engine.spec, 1, engine.manifest.model_info["num_classes"])[0]
    return engine, session, bind_on_device(session, feeds, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="+", type=Path, help="engine folders; the first is the reference")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per engine and round")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="write paired_engines.json here")
    args = parser.parse_args()
    if len(args.engines) < 2 or args.rounds < 1 or args.calls < 1:
        parser.error("need two or more engines, --rounds >= 1 and --calls >= 1")
    opened = [open_session(path, args.device) for path in args.engines]
    for _, session, binding in opened:
        median_bound_ms(session, binding, warmup=3, iters=1)
    ms = [[] for _ in opened]
    for r in range(args.rounds):
        order = range(len(opened)) if r % 2 == 0 else reversed(range(len(opened)))
        for k in order:
            _, session, binding = opened[k]
            ms[k].append(median_bound_ms(session, binding, warmup=0, iters=args.calls))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m[-1]:.1f}" for m in ms) + " ms", flush=True)
    rows = []
    for k, (engine, _, _) in enumerate(opened):
        ratios = [ms[0][r] / ms[k][r] for r in range(args.rounds)]
        rows.append(dict(engine=str(args.engines[k]), config=engine.manifest.bigain_config.describe(),
                         backend=engine.manifest.backend, ms=statistics.median(ms[k]), round_ms=ms[k],
                         speedup=statistics.median(ratios), speedup_range=[min(ratios), max(ratios)]))
        print(f"{args.engines[k]}: {rows[-1]['ms']:.1f} ms, speedup over the first {rows[-1]['speedup']:.3f} "
              f"[{min(ratios):.2f}, {max(ratios):.2f}]")
    if args.out is not None:
        import onnxruntime as ort

        meta = dict(card=platform.processor() or platform.machine(), device=args.device, onnxruntime=ort.__version__,
                    python=platform.python_version(), date=time.strftime("%Y-%m-%d %H:%M:%S"), argv=sys.argv[1:])
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "paired_engines.json", json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
