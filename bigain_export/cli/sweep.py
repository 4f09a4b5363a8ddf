"""``bigain-export sweep``: accuracy, FID, drift, latency and FLOPs of a grid of methods, and the
fastest configuration within a quality budget (docs/sweep.md).

Takes the model, data and protocol flags of ``validate`` (same names, same defaults), plus the
grid (``--grid``, ``--grid-file``; default: issue 12's), the modes each entry is measured in
(``--modes eager compile engine``), the seeds of ToMe's random anchors (``--seeds``), the
sampling seeds of FID (``--fid-seeds``) and the budget (``--max-acc-drop``, ``--max-fid-rise``).
Under ``torchrun`` images are sharded as ``validate`` shards them; rank 0 writes the report.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .validate import DATA_CHOICES, _cache_dir, _load_data, _maybe_init_distributed

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..sweep.grid import DEFAULT_DOWNSAMPLE, DEFAULT_RATIOS, MODES

    parser = subparsers.add_parser(
        "sweep",
        help="accuracy / FID / latency of a grid of methods; the fastest one within a quality budget",
        description="Measure every grid point (classifier accuracy with its interval, FID over sampling seeds, "
        "eps drift vs uncompressed, ms per denoiser call on this device, FLOPs per call); write sweep.json/.md "
        "and accuracy/FID-vs-latency plots with the Pareto front; answer --max-acc-drop/--max-fid-rise.",
    )
    grid = parser.add_argument_group("grid")
    grid.add_argument("--grid", nargs="+", default=None, metavar="ENTRY",
                      help="entries [NAME=]PRESET[:FIELD=VALUE,...], e.g. tome:ratio=0.7,anchor=fixed "
                      "(default: none, ToMe and BiGain merging at --ratios, ToDo, BiGain KV and both at --downsample)")
    grid.add_argument("--grid-file", default=None, metavar="JSON",
                      help="a JSON list of entries (strings or {preset, name, fields, vary}); added after --grid")
    grid.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS),
                      help="merge ratios of the default grid (default 0.3 0.5 0.7)")
    grid.add_argument("--downsample", type=int, default=DEFAULT_DOWNSAMPLE,
                      help=f"KV downsampling factor of the default grid (default {DEFAULT_DOWNSAMPLE})")
    grid.add_argument("--modes", nargs="+", default=["eager"], choices=MODES,
                      help="measure each entry eager, torch.compile'd and/or as an engine (default eager)")
    grid.add_argument("--seeds", type=int, nargs="+", default=[0],
                      help="global RNG seeds of ToMe's random anchors: one point per seed (default 0)")
    grid.add_argument("--backend", default="auto", choices=("auto", "ort-cpu", "ort-cuda", "trt"),
                      help="engine runtime of --modes engine (auto: ONNX Runtime CUDA when available, else CPU)")

    data = parser.add_argument_group("model, data and protocol (as validate)")
    data.add_argument("--model", default="builtin:fmnist-dit", help="built-in name or diffusers folder")
    data.add_argument("--data", default="fmnist-test", metavar="NAME|NPZ",
                      help=f"{' | '.join(DATA_CHOICES)}, or an .npz with 'images' [N,C,H,W] in [-1,1] (or uint8) "
                      "and 'labels' [N]")
    data.add_argument("--limit", type=int, default=100, metavar="N", help="first N images (default 100)")
    data.add_argument("--out", required=True, metavar="DIR", help="sweep folder")
    data.add_argument("--resume", action="store_true",
                      help="reuse the finished parts of points checkpointed in DIR/points by an earlier run with "
                      "the same settings (rerun after a timeout to continue)")
    data.add_argument("--device", default="cpu")
    data.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    data.add_argument("--batch-size", type=int, default=32, help="rows per eps call, also of latency and engines (default 32)")
    data.add_argument("--schedule", default="bigain-adaptive", metavar="NAME",
                      help="classifier schedule: bigain-adaptive (default) | uniform | uniform-N")
    data.add_argument("--seed", type=int, default=0, help="seed of classifier noise (and sampling, without --fid-seeds)")
    data.add_argument("--paper-alpha", action="store_true",
                      help="BiGain KV downsampling: alpha 0.9 for classification, scheduled for generation")
    data.add_argument("--sampler", default="ddim", choices=("ddim", "euler"))
    data.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    data.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (default 4.0)")
    data.add_argument("--fid-images", type=int, default=None, metavar="N", help="images generated per point (default: --limit)")
    data.add_argument("--fid-seeds", type=int, nargs="+", default=None, metavar="SEED",
                      help="sampling seeds; one FID per seed, reported as mean and sd (default: --seed)")
    data.add_argument("--fid-reference", default=None, metavar="NAME|NPZ",
                      help="real images of the FID reference, all of them (default: the --data images used)")
    data.add_argument("--no-fid", action="store_true", help="skip generation and FID")
    data.add_argument("--fid-cache", default=None, metavar="DIR",
                      help="reference-statistics cache (default: $XDG_CACHE_HOME/bigain-export/fid)")
    data.add_argument("--drift-inputs", type=int, default=16, metavar="N", help="random inputs for eps drift")
    data.add_argument("--latency-warmup", type=int, default=5, metavar="N", help="untimed calls first (default 5)")
    data.add_argument("--latency-repeats", type=int, default=20, metavar="N", help="timed calls; median (default 20)")
    data.add_argument("--no-progress", action="store_true", help="no progress bars")

    budget = parser.add_argument_group("budget (answered from the sweep)")
    budget.add_argument("--max-acc-drop", type=float, default=None, metavar="POINTS",
                        help="accuracy points a configuration may lose against uncompressed, e.g. 1.0")
    budget.add_argument("--max-fid-rise", default=None, metavar="X|X%",
                        help="FID it may gain: in FID units (2.5) or percent of the uncompressed FID (5%%)")
    return parser


def _grid(args):
    from ..sweep.grid import default_grid, expand, load_grid_file, parse_entry

    entries = [parse_entry(text) for text in args.grid or []]
    if args.grid_file:
        entries += load_grid_file(args.grid_file)
    if not entries:
        entries = default_grid(args.ratios, args.downsample)
    return expand(entries, args.modes, args.seeds)


def _settings(args, denoiser):
    from ..errors import ConfigError
    from ..sweep.latency import LatencySettings
    from ..sweep.run import SweepSettings
    from ..validate.run import ValidationSettings
    from ..validate.sampling import SamplingConfig
    from ..validate.schedule import ClassifierSchedule

    if args.no_fid and (args.fid_seeds or args.max_fid_rise is not None):
        raise ConfigError("--no-fid cannot be combined with --fid-seeds or --max-fid-rise (they need FID)")
    fid_seeds = tuple(args.fid_seeds or [args.seed])
    sampling = None
    if not args.no_fid:
        guided = args.guidance != 1
        sampling = SamplingConfig(sampler=args.sampler, num_steps=args.steps, guidance_scale=args.guidance,
                                  null_label=denoiser.null_label if guided else None, seed=fid_seeds[0])
    validation = ValidationSettings(
        num_classes=denoiser.num_classes, scheduler_config=denoiser.scheduler_config,
        schedule=ClassifierSchedule.named(args.schedule), classifier_seed=args.seed, sampling=sampling,
        fid_images=args.fid_images, drift_inputs=args.drift_inputs, drift_seed=args.seed, batch_size=args.batch_size,
    )
    latency = LatencySettings(batch=args.batch_size, warmup=args.latency_warmup, repeats=args.latency_repeats)
    return SweepSettings(validation, fid_seeds=fid_seeds, latency=latency, paper_alpha=args.paper_alpha)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models.registry import load_denoiser
    from ..sweep.pareto import Budget
    from ..sweep.report import render_markdown
    from ..sweep.run import run_sweep

    # Everything that can be wrong with the arguments is found before the model loads.
    budget = Budget.parse(args.max_acc_drop, args.max_fid_rise)
    points, skipped = _grid(args)
    device = _maybe_init_distributed(args.device)
    images, labels = _load_data(args.data, args.limit)
    fid_reference = None
    if args.fid_reference and not args.no_fid:
        fid_reference = _load_data(args.fid_reference, 1 << 62)[0]
    denoiser = load_denoiser(args.model, device, getattr(torch, args.dtype))
    settings = _settings(args, denoiser)
    for s in skipped:
        logger.warning("sweep: skipping %s: %s", s["point"], s["reason"])
    report = run_sweep(
        denoiser, points, images.to(device), labels, settings, args.out, model_spec=args.model,
        fid_reference=fid_reference, fid_cache_dir=_cache_dir(args.fid_cache), engine_backend=args.backend,
        resume=args.resume, progress=not args.no_progress, budget=budget, skipped=skipped,
        metadata={"fid_reference": args.fid_reference or "the --data images"},
        data_source=args.data, data_limit=args.limit,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        table = render_markdown(report).split("\n## ")[0]  # the table and the answer
        print(table.split("\n![")[0].rstrip())
        print(f"report: {Path(args.out) / 'sweep.json'}")
    return 0
