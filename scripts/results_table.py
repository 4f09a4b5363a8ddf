"""The published results of a built-in model: ``bigain-export sweep`` with the protocol of docs/results.md.

A thin wrapper (issue 12): it only fills in the published settings and runs the sweep, which does
all the measuring (and resumes). Any other ``bigain-export sweep`` flag can be added and wins over
the defaults below (argparse keeps the last occurrence):

    python scripts/results_table.py --model builtin:fmnist-dit --limit 2000 --device cuda --out results/dit

Defaults: the grid of ``scripts/grids/published.json`` (none; ToMe with random and fixed anchors,
BiGain merging with window and released anchors, at 0.3/0.5/0.7; ToDo, BiGain KV and both at
s=2; plan reuse at 0.5/0.7), eager mode (add ``--modes eager engine`` for engines), the first 2,000
test images, fp16, ToMe's random anchors with seeds 0 1 2, FID of 1,000 samples per sampling seed
(0 1 2) against all 10k test images, the paper's sampler per family (DiT: DDIM, UNet: Euler),
guidance 1.0 (the built-ins saturate above ~1.5), the paper's per-task alpha, batch 250,
and the budget question of issue 12 (``--max-acc-drop 1.0 --max-fid-rise 5%``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bigain_export.cli.main import main as cli  # noqa: E402

GRID = ROOT / "scripts" / "grids" / "published.json"


def published_args(model: str, fid: bool = True, grid: bool = True) -> list[str]:
    """The published protocol for ``model`` as ``bigain-export sweep`` flags (``fid=False``: the
    FID-only ones left out, for ``--no-fid`` smoke runs; ``grid=False``: not the published grid,
    when the caller gives its own ``--grid`` / ``--grid-file``)."""
    sampler = "euler" if "unet" in model else "ddim"
    args = ["--grid-file", str(GRID)] if grid else []
    args += ["--modes", "eager", "--precision", "fp16", "--limit", "2000", "--seeds", "0", "1", "2",
             "--sampler", sampler, "--guidance", "1", "--alpha", "paper", "--batch-size", "250", "--max-acc-drop", "1.0", "--resume"]
    if fid:
        args += ["--fid-seeds", "0", "1", "2", "--fid-images", "1000", "--fid-reference", "fmnist-test", "--max-fid-rise", "5%"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--model", default="builtin:fmnist-dit")
    known, _ = parser.parse_known_args(argv)
    rest = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in rest):
        print(__doc__)
    defaults = published_args(known.model, fid="--no-fid" not in rest,
                              grid=not any(a in ("--grid", "--grid-file") for a in rest))
    return cli(["sweep", "--model", known.model, *defaults, *rest])


if __name__ == "__main__":
    sys.exit(main())
