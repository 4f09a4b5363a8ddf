#!/usr/bin/env python3
"""Train the built-in Fashion-MNIST diffusion models and write their model cards.

Subcommands::

    # train one model (GPU; stops itself at --minutes, or runs exactly --steps)
    python scripts/train_builtin.py train --model dit  --minutes 7 --out runs/fmnist-dit
    python scripts/train_builtin.py train --model unet --minutes 7 --out runs/fmnist-unet
    # one line per trained folder
    python scripts/train_builtin.py summary runs/fmnist-dit runs/fmnist-unet
    # loss curve, CPU sample grid from the shipped fp16 weights, MODEL_CARD.md
    python scripts/train_builtin.py card bigain_export/models/weights/fmnist-dit

Training: epsilon-prediction DDPM loss (T = 1000, the schedule in
``bigain_export.models.architectures.SCHEDULER_CONFIG``), 10% of labels replaced by the null label
so classifier-free guidance works, AdamW with linear warm-up then cosine decay, bf16 autocast on
CUDA, gradient clipping, and an EMA of the weights, which is what gets saved (fp16). With
``--minutes`` the step count is fixed after 300 steps from the measured speed, so the learning-rate
schedule ends when the time does; the count is recorded, and ``--steps N`` replays it
(``--steps N --max-steps M`` for a run that its clock stopped at step M).
Everything needed to reproduce a run (command, seed, config, data hash, versions, card, time) is
written to ``train_log.json`` and ``bigain_model.json`` beside the weights.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bigain_export.data.fashion_mnist import (  # noqa: E402
    CLASS_NAMES,
    dataset_sha256,
    load_fashion_mnist_uint8,
    resolve_root,
    to_model_range,
)
from bigain_export.data.png import save_png_grid, write_atomic  # noqa: E402
from bigain_export.models import architectures as arch  # noqa: E402
from bigain_export.models.denoiser import Denoiser  # noqa: E402
from bigain_export.models.registry import load_folder, random_denoiser  # noqa: E402
from bigain_export.models.sampling import sample  # noqa: E402
from bigain_export.models.storage import save_denoiser  # noqa: E402

MODEL_NAMES = {"dit": "fmnist-dit", "unet": "fmnist-unet"}
LOG_NAME = "train_log.json"
GRID_NAME = "samples.png"
CURVE_NAME = "loss_curve.png"
CARD_NAME = "MODEL_CARD.md"
MEASURE_FROM, MEASURE_TO = 50, 300  # steps between which the speed is measured (after warm-up)


# ----------------------------------------------------------------------------- model building


def dit_init_(model: torch.nn.Module) -> None:
    """DiT's adaLN-Zero initialisation (Peebles & Xie): every block starts as the identity and
    the output as zero; label tables N(0, 0.02). diffusers' constructor does not do this."""
    from diffusers.models.embeddings import LabelEmbedding

    for block in model.transformer_blocks:
        torch.nn.init.zeros_(block.norm1.linear.weight)
        torch.nn.init.zeros_(block.norm1.linear.bias)
    for layer in (model.proj_out_1, model.proj_out_2):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            torch.nn.init.normal_(module.embedding_table.weight, std=0.02)
            # Each block has its own label embedder that would drop labels independently in
            # train mode; we drop labels once, consistently, in the training loop instead.
            module.dropout_prob = 0.0


def build_denoiser(kind: str) -> Denoiser:
    """A freshly initialised built-in architecture (global RNG: seed before calling)."""
    denoiser = random_denoiser(kind, name=f"builtin:{MODEL_NAMES[kind]}")
    if kind == "dit":
        dit_init_(denoiser.model)
    return denoiser


# ----------------------------------------------------------------------------- training


def lr_at(step: int, total: int | None, peak: float, warmup: int, min_frac: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``min_frac * peak`` at step ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if total is None:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def versions() -> dict[str, str]:
    import diffusers
    import numpy

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": numpy.__version__,
        "cuda": str(torch.version.cuda),
    }


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def train(args: argparse.Namespace) -> int:
    if args.steps is None and args.minutes is None:
        raise SystemExit("give --steps or --minutes")
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda" and args.amp == "bf16"
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    started = dt.datetime.now(dt.timezone.utc)

    pixels, labels_np = load_fashion_mnist_uint8("train", args.data_dir)
    images = to_model_range(pixels).to(device)  # [60000, 1, 32, 32] in [-1, 1], all on the GPU
    labels_all = torch.from_numpy(labels_np.astype("int64")).to(device)
    data_hash = dataset_sha256(args.data_dir)
    n = images.shape[0]

    denoiser = build_denoiser(args.model).to(device).train()
    ema = copy.deepcopy(denoiser).eval().requires_grad_(False)
    params, ema_params = list(denoiser.parameters()), list(ema.parameters())
    n_params = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    from diffusers import DDPMScheduler

    alphas_cumprod = DDPMScheduler.from_config(arch.SCHEDULER_CONFIG).alphas_cumprod.to(device)
    T = int(arch.SCHEDULER_CONFIG["num_train_timesteps"])
    print(f"[{args.model}] {n_params / 1e6:.2f}M params on {card_name(device)}, batch {args.batch}, "
          f"lr {args.lr}, amp {amp}", flush=True)

    total = args.steps
    budget = args.minutes * 60 if args.minutes is not None else None
    history: list[list[float]] = []  # [step, mean loss over the last log_every steps, lr, seconds]
    loss_acc = torch.zeros((), device=device)
    perm, cursor, step, stopped_by_clock = torch.randperm(n, device=device), 0, 0, False
    t0 = time.perf_counter()
    t_measure = t0
    while (total is None or step < total) and (args.max_steps is None or step < args.max_steps):
        elapsed = time.perf_counter() - t0
        if budget is not None and elapsed >= budget:
            stopped_by_clock = True
            break
        if cursor + args.batch > n:  # a new epoch: fresh permutation, drop the ragged tail
            perm, cursor = torch.randperm(n, device=device), 0
        idx = perm[cursor : cursor + args.batch]
        cursor += args.batch
        x0, y = images[idx], labels_all[idx]
        y = torch.where(torch.rand(y.shape, device=device) < args.label_dropout, arch.NUM_CLASSES, y)
        t = torch.randint(0, T, (x0.shape[0],), device=device)
        noise = torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise

        lr = lr_at(step, total, args.lr, args.warmup, args.min_lr_frac)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            eps = denoiser(xt, t, y)
        loss = F.mse_loss(eps.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        optimizer.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        loss_acc += loss.detach()
        step += 1

        if total is None and step in (MEASURE_FROM, MEASURE_TO):
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if step == MEASURE_FROM:
                t_measure = now
            else:  # fix the step count so the cosine schedule ends with the time budget
                rate = (MEASURE_TO - MEASURE_FROM) / (now - t_measure)
                total = step + int(rate * (budget - (now - t0)) * 0.97)
                print(f"[{args.model}] {rate:.1f} steps/s -> {total} steps in {args.minutes} min", flush=True)
        if step % args.log_every == 0:
            history.append([step, loss_acc.item() / args.log_every, lr, round(time.perf_counter() - t0, 2)])
            loss_acc.zero_()
            if step % (args.log_every * 10) == 0:
                print(f"[{args.model}] step {step} loss {history[-1][1]:.4f} lr {lr:.2e} "
                      f"{history[-1][3]:.0f}s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    if history:  # mean of the last four logged windows
        final_loss = sum(h[1] for h in history[-4:]) / len(history[-4:])
    else:  # a run shorter than one log window
        final_loss = loss_acc.item() / max(1, step)

    # Sample grid from the EMA weights: one row per class, 10 samples each.
    grid_labels = torch.arange(arch.NUM_CLASSES).repeat_interleave(10)
    samples = sample(ema, grid_labels, num_inference_steps=args.grid_steps, guidance_scale=args.grid_guidance,
                     seed=args.seed)
    out = Path(args.out)
    record = {
        "model": f"builtin:{MODEL_NAMES[args.model]}",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items() if k != "run"},
        "seed": args.seed,
        "data": {"name": "Fashion-MNIST train (60000)", "root": str(resolve_root(args.data_dir)),
                 "sha256_idx_gz": data_hash},
        "architecture": arch.DIT_CONFIG if args.model == "dit" else {**arch.UNET_CONFIG, "class_tokens": arch.CLASS_TOKENS},
        "scheduler": arch.SCHEDULER_CONFIG,
        "parameters": n_params,
        "steps": step,
        "planned_steps": total,
        "stopped_by_clock": stopped_by_clock,
        "epochs": round(step * args.batch / n, 2),
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round(step / train_seconds, 2),
        "final_loss": round(final_loss, 5),
        "card": card_name(device),
        "started_utc": started.isoformat(timespec="seconds"),
        "versions": versions(),
        "ema_decay": args.ema,
        "weights": "EMA, fp16",
        "grid": {"steps": args.grid_steps, "guidance": args.grid_guidance, "seed": args.seed,
                 "drawn": f"at the end of training on {card_name(device)} from the fp32 EMA weights"},
    }
    summary = {k: record[k] for k in ("seed", "data", "steps", "train_seconds", "final_loss", "card",
                                      "started_utc", "versions", "command")}
    save_denoiser(ema, out, dtype=torch.float16, extra={"training": summary})
    write_atomic(out / LOG_NAME, (json.dumps({**record, "history": history}, indent=1) + "\n").encode())
    save_png_grid(samples.cpu(), out / GRID_NAME, nrow=10)
    print(f"[{args.model}] done: {step} steps in {train_seconds:.0f}s, final loss {final_loss:.4f} -> {out}", flush=True)
    return 0


# ----------------------------------------------------------------------------- reports


def summary(args: argparse.Namespace) -> int:
    print(f"{'model':22} {'params':>7} {'steps':>6} {'epochs':>6} {'sec':>6} {'it/s':>6} {'loss':>7}  card")
    for folder in args.folders:
        log = json.loads((Path(folder) / LOG_NAME).read_text())
        print(f"{log['model']:22} {log['parameters'] / 1e6:6.2f}M {log['steps']:6d} {log['epochs']:6.1f} "
              f"{log['train_seconds']:6.0f} {log['steps_per_second']:6.1f} {log['final_loss']:7.4f}  {log['card']}")
    return 0


def plot_loss(history: list[list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h[0] for h in history]
    losses = [h[1] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"MSE(eps), mean of {history[1][0] - history[0][0] if len(history) > 1 else 1} steps")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


CARD_TEMPLATE = """# {model}

A small class-conditional diffusion model trained from scratch on Fashion-MNIST, shipped inside
bigain-export so its tests, validation and benchmarks run on a real (trained) model with no
download. Load it with `load_denoiser("{model}")`.

| | |
|---|---|
| architecture | {arch_line} |
| parameters | {params:,} ({params_m:.2f}M), stored fp16 (EMA weights) |
| input | 1 x 32 x 32 pixels in [-1, 1] (Fashion-MNIST 28 x 28, padded 2 px), no VAE |
| conditioning | 10 classes, label 10 = null (unconditional) for classifier-free guidance |
| prediction | epsilon; DDPM, T = 1000, linear betas 1e-4 .. 0.02 (`scheduler_config.json`) |
| license | weights: Apache-2.0 (as the package); data: Fashion-MNIST, MIT |

## Data

Fashion-MNIST, official training split (60000 images, 6000 per class), from the Debian package
`dataset-fashion-mnist`. SHA-256 over the four idx.gz files: `{sha}`.
The 10000 test images were not used for training.

## Training

| | |
|---|---|
| command | `{command}` |
| steps | {steps} (batch {batch}, {epochs} epochs){steps_note} |
| time | {seconds:.0f} s of training on {card}{time_note} |
| final loss | {final_loss:.4f} (mean MSE of eps, last {last_n} steps) |
| optimiser | AdamW, lr {lr} (warm-up {warmup} steps, cosine to {min_frac} x), grad clip {clip}, EMA {ema} |
| label dropout | {label_dropout} (null label 10) |
| precision | bf16 autocast, fp32 master weights |
| seed | {seed} |
| date (UTC) | {date} |
| versions | {versions} |

![loss curve]({curve})

## Samples

One row per class ({classes}), DDIM {grid_steps} steps, guidance {guidance}, seed {grid_seed},
drawn {drawn}:

![samples]({grid})

Classifier-free guidance: these small pixel-space models give clean samples without guidance
(1.0); at 1.5 and above, samples drawn with DDIM 50 steps grow brighter and noisier (pixel-space
guidance saturates, and the models are short-trained), so use guidance 1.0 here, or a sampler
with dynamic thresholding, rather than the paper's latent-space 4.0 / 7.5.

## Measured quality

**TO BE FILLED** by the validation code (diffusion-classifier accuracy on the 10000 test images,
FID of generated vs. test images). Nothing below is measured yet.

| metric | protocol | value |
|---|---|---|
| classifier accuracy (top-1) | BiGain adaptive schedule, no guidance | not measured yet |
| FID | DDIM 50 steps with guidance, 10000 images vs. the test split | not measured yet |
"""


def card(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    log = json.loads((folder / LOG_NAME).read_text())
    a = log["args"]
    plot_loss(log["history"], folder / CURVE_NAME, f"{log['model']} training loss")
    grid = log["grid"]
    if args.resample or not (folder / GRID_NAME).is_file():
        denoiser = load_folder(folder, name=log["model"])
        labels = torch.arange(denoiser.num_classes).repeat_interleave(10)
        samples = sample(denoiser, labels, num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed)
        save_png_grid(samples, folder / GRID_NAME, nrow=10)
        grid = {"steps": args.steps, "guidance": args.guidance, "seed": args.seed,
                "drawn": "on the CPU from the shipped fp16 weights (computed in fp32)"}
        log["grid"] = grid  # the log describes the samples.png beside it
        write_atomic(folder / LOG_NAME, (json.dumps(log, indent=1) + "\n").encode())
    arch_cfg = log["architecture"]
    if a["model"] == "dit":
        arch_line = (f"diffusers DiTTransformer2DModel, {arch_cfg['num_layers']} blocks, "
                     f"{arch_cfg['num_attention_heads']} heads x {arch_cfg['attention_head_dim']}, patch "
                     f"{arch_cfg['patch_size']} (16 x 16 = 256 tokens)")
    else:
        arch_line = (f"diffusers UNet2DConditionModel (SD-style), channels {tuple(arch_cfg['block_out_channels'])}, "
                     f"{arch_cfg['layers_per_block']} layers per block, cross-attention at 32 x 32 = 1024 "
                     f"tokens to {arch_cfg['class_tokens']} class tokens of {arch_cfg['cross_attention_dim']} "
                     "(ClassTokenEncoder, `class_encoder.safetensors`)")
    text = CARD_TEMPLATE.format(
        model=log["model"], arch_line=arch_line, params=log["parameters"], params_m=log["parameters"] / 1e6,
        sha=log["data"]["sha256_idx_gz"], command=log["command"], steps=log["steps"], batch=a["batch"],
        epochs=log["epochs"], seconds=log["train_seconds"], card=log["card"], final_loss=log["final_loss"],
        last_n=4 * a["log_every"], lr=a["lr"], warmup=a["warmup"], min_frac=a["min_lr_frac"], clip=a["clip"],
        ema=a["ema"], label_dropout=a["label_dropout"], seed=log["seed"], date=log["started_utc"],
        versions=", ".join(f"{k} {v}" for k, v in log["versions"].items()), curve=CURVE_NAME, grid=GRID_NAME,
        classes=", ".join(CLASS_NAMES), grid_steps=grid["steps"], guidance=grid["guidance"], grid_seed=grid["seed"],
        drawn=grid["drawn"],
        steps_note=(f"; stopped by the time budget, {log['planned_steps']} were planned, so the learning rate "
                    "had not fully decayed" if log.get("stopped_by_clock") else ""),
        time_note=f" ({args.time_note})" if args.time_note else "",
    )
    write_atomic(folder / CARD_NAME, text.encode())
    print(f"wrote {folder / CARD_NAME}, {folder / CURVE_NAME}, {folder / GRID_NAME}")
    return 0


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one built-in model")
    p.add_argument("--model", choices=sorted(MODEL_NAMES), required=True)
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--minutes", type=float, help="wall-clock budget of the training loop")
    p.add_argument("--steps", type=int, help="exact number of steps (overrides the time-based count)")
    p.add_argument("--max-steps", type=int, help="stop early without changing the schedule of --steps "
                   "(replays a run that its clock stopped: --steps PLANNED --max-steps DONE)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["bf16", "none"], default="bf16")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST idx folder (default: $BIGAIN_FMNIST_DIR or Debian's)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--grid-guidance", type=float, default=1.0)
    p.add_argument("--grid-steps", type=int, default=50, help="DDIM steps of the end-of-training sample grid")
    p.set_defaults(run=train)
    p = sub.add_parser("summary", help="one line per trained folder")
    p.add_argument("folders", nargs="+")
    p.set_defaults(run=summary)
    p = sub.add_parser("card", help="loss curve, CPU sample grid and MODEL_CARD.md for a trained folder")
    p.add_argument("folder")
    p.add_argument("--time-note", default="", help="how the GPU was shared, for the card's time line")
    p.add_argument("--resample", action="store_true", help="redraw samples.png on the CPU from the fp16 weights")
    p.add_argument("--guidance", type=float, default=1.0, help="with --resample")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps, with --resample")
    p.add_argument("--seed", type=int, default=0, help="with --resample")
    p.set_defaults(run=card)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
