"""``bigain-export sweep``: accuracy, FID, drift, latency and FLOPs of a grid of methods, and the
fastest configuration within a quality budget (docs/sweep.md).

Takes the model, data and protocol flags of ``validate`` (same names, same defaults), plus the
grid (``--grid``, ``--grid-file``; default: issue 12's), the modes each entry is measured in
(``--modes eager compile cudagraphs engine``), the seeds of ToMe's random anchors (``--seeds``), the
sampling seeds of FID (``--fid-seeds``) and the budget (``--max-acc-drop``, ``--max-fid-rise``).
Under ``torchrun`` images are sharded as ``validate`` shards them; rank 0 writes the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from .args import (DEFAULT_BATCH_SIZE, PRECISION_DTYPES, add_batch_args, add_data_args, add_device_args,
                   add_engine_args, add_model_args, add_ort_optimize_args, add_precision_args, alpha_value,
                   check_device, count, finite_float, positive_int)
from .validate import _cache_dir, _maybe_init_distributed

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
    grid.add_argument("--ratios", type=finite_float, nargs="+", default=list(DEFAULT_RATIOS),
                      help="merge ratios of the default grid (default 0.3 0.5 0.7)")
    grid.add_argument("--downsample", type=positive_int, default=DEFAULT_DOWNSAMPLE,
                      help=f"KV downsampling factor s of the default grid (default {DEFAULT_DOWNSAMPLE})")
    grid.add_argument("--alpha", type=alpha_value, default=None, metavar="X|scheduled|paper",
                      help="IE-KVD alpha of every BiGain KV entry: a fixed number, 'scheduled', or 'paper' "
                      "(0.9 when classifying, scheduled when generating); default: each entry's")
    grid.add_argument("--modes", nargs="+", default=["eager"], choices=MODES,
                      help="measure each entry eager, torch.compile'd, torch.compile'd with CUDA graphs "
                           "(cudagraphs: needs --device cuda) and/or as an engine (default eager)")
    grid.add_argument("--seeds", type=count, nargs="+", default=[0],
                      help="global RNG seeds of ToMe's random anchors: one point per seed (default 0)")
    add_engine_args(parser)
    add_ort_optimize_args(parser)

    add_model_args(parser)
    add_data_args(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="sweep folder")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished parts of points checkpointed in DIR/points, measured on the same "
                        "model, config, engine, settings and data (rerun after a timeout to continue)")
    add_device_args(parser)
    add_precision_args(parser)
    add_batch_args(parser)
    parser.add_argument("--schedule", default="bigain-adaptive", metavar="NAME",
                        help="classifier schedule: bigain-adaptive (default) | uniform | uniform-N")
    parser.add_argument("--seed", type=count, default=0,
                        help="seed of classifier noise and drift inputs (and sampling, without --fid-seeds)")
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "euler"))
    parser.add_argument("--steps", type=positive_int, default=50, help="sampling steps (default 50)")
    parser.add_argument("--guidance", type=finite_float, default=4.0, help="classifier-free guidance scale (default 4.0)")
    parser.add_argument("--fid-images", type=positive_int, default=None, metavar="N",
                        help="images generated per point (default: --limit)")
    parser.add_argument("--fid-seeds", type=count, nargs="+", default=None, metavar="SEED",
                        help="sampling seeds; one FID per seed, reported as mean and sd (default: --seed)")
    parser.add_argument("--fid-ref", "--fid-reference", dest="fid_reference", default=None, metavar="NAME|NPZ",
                        help="real images of the FID reference, all of them (default: the --data images used)")
    parser.add_argument("--no-fid", action="store_true", help="skip generation and FID")
    parser.add_argument("--fid-cache", default=None, metavar="DIR",
                        help="reference-statistics cache (default: $XDG_CACHE_HOME/bigain-export/fid)")
    parser.add_argument("--drift-inputs", type=count, default=16, metavar="N",
                        help="random inputs of the drift check (default 16; 0 skips drift)")
    parser.add_argument("--latency-warmup", type=positive_int, default=5, metavar="N",
                        help="untimed calls first (default 5)")
    parser.add_argument("--latency-repeats", type=positive_int, default=50, metavar="N",
                        help="timed calls of each point, and as many of the reference; the median is "
                             "reported (default 50)")
    parser.add_argument("--latency-rounds", type=positive_int, default=10, metavar="N",
                        help="alternating blocks the point's calls and the reference's are split into; the "
                             "speedup is the reference's median over the point's (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Renamed flags answer with their new names (cli/args.py RENAMED).
    parser.add_argument("--paper-alpha", dest="_renamed_paper_alpha", action="store_true", help=argparse.SUPPRESS)

    budget = parser.add_argument_group("budget (answered from the sweep)")
    budget.add_argument("--max-acc-drop", type=finite_float, default=None, metavar="POINTS",
                        help="accuracy points a configuration may lose against uncompressed, e.g. 1.0")
    budget.add_argument("--max-fid-rise", default=None, metavar="X|X%",
                        help="FID it may gain: in FID units (2.5) or percent of the uncompressed FID (5%%)")
    return parser


def _grid(args):
    from ..sweep.grid import GridEntry, default_grid, expand, load_grid_file, parse_entry

    entries = [parse_entry(text) for text in args.grid or []]
    if args.grid_file:
        entries += load_grid_file(args.grid_file)
    if not entries:
        entries = default_grid(args.ratios, args.downsample)
    if args.alpha not in (None, "paper"):  # a fixed or scheduled alpha for every BiGain KV entry
        alpha = None if args.alpha == "scheduled" else args.alpha
        entries = [GridEntry(e.name, dataclasses.replace(e.config, alpha=alpha)) if e.config.kv == "bigain" else e
                   for e in entries]
    return expand(entries, args.modes, args.seeds)


def _settings(args, denoiser, batch_size: int):
    from ..sweep.latency import LatencySettings
    from ..sweep.run import SweepSettings
    from ..validate.run import ValidationSettings
    from ..validate.sampling import SamplingConfig
    from ..validate.schedule import ClassifierSchedule

    fid_seeds = tuple(args.fid_seeds or [args.seed])
    sampling = None
    if not args.no_fid:
        guided = args.guidance != 1
        sampling = SamplingConfig(sampler=args.sampler, num_steps=args.steps, guidance_scale=args.guidance,
                                  null_label=denoiser.null_label if guided else None, seed=fid_seeds[0])
    validation = ValidationSettings(
        num_classes=denoiser.num_classes, scheduler_config=denoiser.scheduler_config,
        schedule=ClassifierSchedule.named(args.schedule), classifier_seed=args.seed, sampling=sampling,
        fid_images=args.fid_images, drift_inputs=args.drift_inputs, drift_seed=args.seed, batch_size=batch_size,
    )
    latency = LatencySettings(batch=batch_size, warmup=args.latency_warmup, repeats=args.latency_repeats,
                              rounds=args.latency_rounds)
    return SweepSettings(validation, fid_seeds=fid_seeds, latency=latency, paper_alpha=args.alpha == "paper")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.image_folder import scan_image_folder
    from ..errors import ConfigError
    from ..models.prompts import check_template
    from ..models.registry import DEFAULT_MODEL, load_denoiser
    from ..validate.inputs import prepare_inputs
    from ..sweep.pareto import Budget
    from ..sweep.report import render_markdown
    from ..sweep.run import run_sweep
    from ..validate.atomic import check_writable

    # Everything that can be wrong with the arguments is found before the model loads.
    budget = Budget.parse(args.max_acc_drop, args.max_fid_rise)
    if args.no_fid and (args.fid_seeds or args.max_fid_rise is not None):
        raise ConfigError("--no-fid cannot be combined with --fid-seeds or --max-fid-rise (they need FID)")
    if args.fid_images is not None and args.fid_images < 2:
        raise ConfigError(f"--fid-images {args.fid_images} is not allowed; allowed: an integer >= 2")
    points, skipped = _grid(args)
    from ..backends.ort_optimize import resolve_ort_optimize

    resolve_ort_optimize(args.ort_optimize, args.backend, args.precision)  # one line, before any work
    device = _maybe_init_distributed(check_device(args.device))
    if int(os.environ.get("RANK", "0")) == 0:
        check_writable(args.out, what="--out")
        if not args.no_fid:
            check_writable(_cache_dir(args.fid_cache), what="--fid-cache")
    model = args.model or DEFAULT_MODEL
    check_template(args.prompt_template)
    if Path(args.data).is_dir():  # the folder's layout is checked before the model loads
        scan_image_folder(args.data)
    denoiser = load_denoiser(model, device, getattr(torch, PRECISION_DTYPES[args.precision]))
    # As validate: the data's classes become the candidates, pixels go to the model's space
    # (the VAE of a latent pipeline), FID compares decoded samples with real pixels.
    inputs = prepare_inputs(denoiser, args.data, limit=args.limit, prompt_template=args.prompt_template,
                            fid_ref=args.fid_reference, progress=not args.no_progress)
    denoiser, images, labels = inputs.denoiser, inputs.images, inputs.labels
    decode = None if denoiser.space.kind == "pixels" else denoiser.decode
    fid_reference = None
    if not args.no_fid and (decode is not None or args.fid_reference):
        if inputs.fid_images is None:
            raise ConfigError(f"--data {args.data} holds latents: FID needs real images; allowed: --fid-ref DIR or --no-fid")
        fid_reference = inputs.fid_images
    settings = _settings(args, denoiser, args.batch_size or DEFAULT_BATCH_SIZE)
    for s in skipped:
        logger.warning("sweep: skipping %s: %s", s["point"], s["reason"])
    report = run_sweep(
        denoiser, points, images.to(device), labels, settings, args.out, model_spec=model,
        fid_reference=fid_reference, decode=decode, fid_cache_dir=_cache_dir(args.fid_cache), engine_backend=args.backend,
        engine_ort_optimize=args.ort_optimize,
        resume=args.resume, progress=not args.no_progress, budget=budget, skipped=skipped,
        metadata={"fid_reference": args.fid_reference or "the --data images"},
        data_source=args.data, data_limit=args.limit,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        table = render_markdown(report).split("\n## ")[0]  # the table and the answer
        print(table.split("\n![")[0].rstrip())
        print(f"report: {Path(args.out) / 'sweep.json'}")
    return 0
