"""How much a method's output moves when its input moves a little: why a compiled or fp16 engine of
a merging method can disagree with its eager model on single images while their accuracies agree.

Merging makes discrete decisions (which tokens are anchors, which source goes to which anchor).
A perturbation far below fp16's resolution leaves an uncompressed model's output where it was,
but can flip near-tied decisions, and each flip moves the output by a whole token's worth. This
script puts a relative perturbation ``--eps`` on random inputs and reports, per method,
``rel L2(out(x + delta) - out(x))``; with ``--compile`` also the distance of ``torch.compile``'s
output from eager's at the same inputs. Ratios far above ``--eps`` mean decisions flipped.

    python scripts/merge_sensitivity.py --model builtin:fmnist-dit --out docs/bench/<date>-merge-sensitivity
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bigain_export.validate.atomic import atomic_write  # noqa: E402
from bigain_export.errors import ConfigError  # noqa: E402
from bigain_export.models.registry import load_denoiser  # noqa: E402
from bigain_export.patch import bigain_patched  # noqa: E402
from bigain_export.sweep.grid import parse_entry  # noqa: E402
from bigain_export.sweep.latency import device_name  # noqa: E402
from bigain_export.validate.drift import drift  # noqa: E402

METHODS = ["none", "bigain-merge-0.7=bigain-merge:ratio=0.7", "bigain-merge-released-0.7=bigain-merge:ratio=0.7,anchor=released",
           "tome-fixed-0.7=tome:ratio=0.7,anchor=fixed", "bigain-kv-s2=bigain-kv:downsample=2"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@torch.no_grad()
def measure(denoiser, entry, x, xp, t, y, compile_too: bool) -> dict:
    config = entry.config if entry.config.enabled else None
    with bigain_patched(denoiser, config) if config else contextlib.nullcontext():
        out = denoiser(x, t, y)
        row = {"method": entry.name, "perturbed_rel_l2": drift(denoiser(xp, t, y), out).rel_l2}
        if compile_too:
            torch._dynamo.reset()  # one compile per method (the same forward is compiled each time)
            row["compiled_rel_l2"] = drift(torch.compile(denoiser, fullgraph=True)(x, t, y), out).rel_l2
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:fmnist-dit", help="built-in name or diffusers folder")
    parser.add_argument("--methods", nargs="+", default=METHODS, help="grid entries (NAME=PRESET:k=v,...)")
    parser.add_argument("--eps", type=float, default=1e-4, help="relative size of the input perturbation")
    parser.add_argument("--batch", type=int, default=16, help="random inputs (timesteps and labels random too)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--compile", action="store_true", help="also compare torch.compile (inductor) with eager")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="folder for sensitivity.json and sensitivity.md")
    args = parser.parse_args(argv)
    if not args.eps > 0:
        parser.error(f"--eps {args.eps} is not allowed; allowed: a positive number")
    try:  # bad entries fail here, in one line, before the model loads
        entries = [parse_entry(m) for m in args.methods]
    except ConfigError as exc:
        parser.error(str(exc))

    dtype = DTYPES[args.precision]
    denoiser = load_denoiser(args.model, device=args.device, dtype=dtype)
    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, *denoiser.sample_shape)
    x = torch.randn(shape, generator=gen)
    xp = x + args.eps * x.std() * torch.randn(shape, generator=gen)
    t = torch.randint(0, denoiser.scheduler_config["num_train_timesteps"], (args.batch,), generator=gen)
    y = torch.randint(0, denoiser.num_classes, (args.batch,), generator=gen)
    x, xp, t, y = x.to(args.device, dtype), xp.to(args.device, dtype), t.to(args.device), y.to(args.device)

    rows = []
    for entry in entries:
        rows.append(measure(denoiser, entry, x, xp, t, y, args.compile))
        print(json.dumps(rows[-1]), flush=True)
    meta = {"model": args.model, "device": device_name(args.device),
            "precision": args.precision, "eps": args.eps, "batch": args.batch, "seed": args.seed,
            "torch": torch.__version__, "date": date.today().isoformat(), "command": " ".join(sys.argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "sensitivity.json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [json.dumps(meta), "", "| method | output change / input change | compiled vs eager (rel L2) |", "|---|---:|---:|"]
    for r in rows:
        compiled = f"{r['compiled_rel_l2']:.1e}" if "compiled_rel_l2" in r else "not run"
        lines.append(f"| {r['method']} | {r['perturbed_rel_l2'] / args.eps:.0f}x ({r['perturbed_rel_l2']:.1e}) | {compiled} |")
    atomic_write(args.out / "sensitivity.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out}/sensitivity.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
