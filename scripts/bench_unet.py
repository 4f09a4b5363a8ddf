"""Milliseconds per denoiser call, each ratio beside the attention-time ceiling measured in the same run.

    python scripts/bench_unet.py --model sd2 --res 512 768 1024 --modes compile --out results/
    python scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --modes compile --out results/

SD2-base UNet or DiT-XL/2 architecture (random weights, bf16, SDPA), plain vs tomesd vs BiGain,
eager and/or torch.compile, CUDA events (median after warm-up). Needs a CUDA GPU and diffusers.

**Ceiling** (what merging/pooling only the patched self-attention can at best give): for every
patched layer, its attention (q/k/v/out projections + SDPA, the layer's own module) is timed at
full length and at the reduced lengths of the method; ceiling = plain / (plain - sum of savings).
``gain_share`` = (plain / ms - 1) / (ceiling - 1): 1.0 means the merge itself is free.

**Two timings** of every method: ``ms``, one call's latency (each call waited for, so the host's
per-call work, ~2 ms a call with CUDA graphs, is in it, and its jitter is in every ratio), with
the ceiling from eager attention timed the same way; and ``loop_ms``, per call of calls issued
back to back as a sampling loop issues them (the host prepares the next call while the GPU runs),
with the ceiling from the attention's kernels alone (captured in a CUDA graph). The ``loop_``
fields are what a sampler sees; a CUDA-graph model is GPU-bound there.
FLOPs per call come from ``torch.utils.flop_counter.FlopCounterMode`` (eager, same inputs).

``--rounds R`` (R > 1) keeps every method of a mode compiled on its own copy of the model and
times them R - 1 more times, interleaved and rotated: each ratio is then the median of ratios of
timings seconds apart, with its spread (whole-model times drift ~5% between runs on the lent
machine, more than some of the effects measured).

``--variant NAME=VALUE`` times every BiGain method a second time with a launch constant set
(labelled ``METHOD @NAME=VALUE``) in the same group and rounds: a kernel setting's A/B against
one plain, where ``--kernel-setting`` (the whole run) needs two runs whose plain drift apart.

Writes ``bench_unet.json`` (rows with ``res``, ``method``, ``mode``, ``ms``, ``ceiling``, ...)
and ``bench_unet.md`` (table with card and versions) to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export import BiGainConfig, apply_bigain, remove_bigain  # noqa: E402
from bigain_export.patch import patch_info  # noqa: E402
from bigain_export.validate.atomic import atomic_write  # noqa: E402

SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
    norm_num_groups=32,
)
DIT_XL2 = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
               sample_size=64, patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_zero")

merge = lambda ratio, **kw: BiGainConfig.preset("bigain-merge", ratio=ratio, **kw)  # noqa: E731
# a second compiled copy of plain in the same rounds, compiled in a fresh Inductor cache (so its
# kernels are generated and autotuned anew, not reloaded from plain's): its speedup over plain
# (ideally 1.0) is the spread between two compiles of one model, the floor under the run's ratios
CONTROL = "plain-copy"
METHODS = {
    "plain": None,
    CONTROL: None,
    "tomesd r=0.5": ("tomesd", 0.5),
    "tomesd r=0.7": ("tomesd", 0.7),
    "bigain-merge r=0.5": merge(0.5),
    "bigain-merge r=0.7": merge(0.7),
    "bigain-merge r=0.7 plan-reuse": merge(0.7, plan_reuse=True),
    # opt-in local matching: each source against the anchors of the windows around its own
    "bigain-merge r=0.7 radius=1": merge(0.7, match_radius=1),
    "bigain-merge r=0.7 radius=2": merge(0.7, match_radius=2),
    "bigain-merge r=0.7 radius=1 plan-reuse": merge(0.7, match_radius=1, plan_reuse=True),
    "bigain-merge r=0.7 +crossattn+mlp": merge(0.7, merge_crossattn=True, merge_mlp=True),
    # opt-in: layers under 8,192 tokens stay uncompressed (at 512 px the SD2 UNet's level 0 has
    # 4,096 tokens and its measured ceiling is 0.99x; 768 px has 9,216)
    "bigain-merge r=0.7 min-tokens=8192": merge(0.7, min_tokens=8192),
    "bigain-kv s=2": BiGainConfig.preset("bigain-kv", downsample=2),
    "bigain-both r=0.7 s=2": BiGainConfig.preset("bigain-both", ratio=0.7, downsample=2),
}


def cuda_median_ms(fn, warmup: int, iters: int) -> float:
    """Latency of one call: each call between two events and waited for (median), so the GPU
    also sits through the host's work before the call's first kernel (Dynamo's guards, CUDA-graph
    bookkeeping: ~2 ms a UNet call with CUDA graphs, H100, session 19)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


LOOP_REPEATS = 5


def loop_length(iters: int, calls: int = 0) -> int:
    """Calls per loop of :func:`cuda_loop_ms`: ``calls``, or with 0 iters / LOOP_REPEATS (at
    least 3), the only rule before ``--loop-calls`` (recorded results without ``loop_calls``)."""
    return calls or max(3, iters // LOOP_REPEATS)


def cuda_loop_ms(fn, warmup: int, iters: int, calls: int = 0) -> float:
    """Time per call of calls issued back to back, as a sampling loop issues its denoiser calls
    (nothing waits for the GPU between steps): the host prepares a call while the GPU runs the one
    before, so this is max(host, GPU) per call. Median over LOOP_REPEATS loops of ``calls`` calls
    (0: iters / LOOP_REPEATS, at least 3). A loop starts on an idle GPU, so the first call's host
    time is in it, shared by the loop's calls: a short loop charges a model's host time more
    than a sampler's 25-50 steps do."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    calls = loop_length(iters, calls)
    times = []
    for _ in range(LOOP_REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def capture_graph(fn) -> torch.cuda.CUDAGraph:
    """``fn`` warmed up on a side stream (Triton compiles, cuBLAS/cuDNN choose their kernels) and
    captured once in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def graph_ms(fn, warmup: int, iters: int) -> float:
    """GPU time per call of ``fn`` captured in a CUDA graph and replayed back to back: its kernels
    alone, without the host's launch cost (the attention inside a compiled CUDA-graph model)."""
    return cuda_loop_ms(capture_graph(fn).replay, warmup, iters)


def patch(model, method):
    """Remove any patch (ours, tomesd's), then apply ``method`` (None: plain)."""
    remove_bigain(model)
    if getattr(model, "_tome_info", None) is not None:
        import tomesd

        tomesd.remove_patch(model)
    if isinstance(method, tuple):
        import tomesd

        tomesd.apply_patch(model, ratio=method[1], max_downsample=1)
    elif method is not None:
        apply_bigain(model, method)


def use_sdpa(model: torch.nn.Module, processor_cls) -> int:
    """Every diffusers ``Attention`` of ``model`` on ``processor_cls`` (SDPA); per module, since
    DiTTransformer2DModel (diffusers 0.42) has no ``set_attn_processor``. Returns the count."""
    from diffusers.models.attention_processor import Attention

    modules = [m for m in model.modules() if isinstance(m, Attention)]
    for module in modules:
        module.set_processor(processor_cls())
    return len(modules)


class Bench:
    """The model and its inputs at one resolution."""

    def __init__(self, kind: str, res: int, batch: int):
        from diffusers import DiTTransformer2DModel, UNet2DConditionModel
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.kind, self.res, self.batch = kind, res, batch
        device, dtype = "cuda", torch.bfloat16
        torch.manual_seed(0)
        side = res // 8
        if kind == "sd2":
            self.model = UNet2DConditionModel(**SD2_BASE_UNET).to(device, dtype).eval()
            self.inputs = (torch.randn(batch, 4, side, side, device=device, dtype=dtype), torch.full((batch,), 500, device=device),
                           torch.randn(batch, 77, 1024, device=device, dtype=dtype))
        else:
            self.model = DiTTransformer2DModel(**DIT_XL2).to(device, dtype).eval()
            self.inputs = (torch.randn(batch, 4, side, side, device=device, dtype=dtype), torch.full((batch,), 500, device=device),
                           torch.randint(1000, (batch,), device=device))
        use_sdpa(self.model, AttnProcessor2_0)

    def call(self, model):
        if self.kind == "sd2":
            sample, t, context = self.inputs
            return model(sample, t, context).sample
        sample, t, labels = self.inputs
        return model(sample, timestep=t, class_labels=labels).sample

    def patched_layers(self, config: BiGainConfig):
        """(attn module, tokens, grid) of every self-attention the config patches."""
        apply_bigain(self.model, config)
        names = patch_info(self.model).target_names
        remove_bigain(self.model)
        modules = dict(self.model.named_modules())
        side = self.res // 8 // (1 if self.kind == "sd2" else 2)
        return [(modules[f"{name}.attn1"], side) for name in names]


def attention_savings(bench: Bench, config: BiGainConfig, warmup: int, iters: int, cache: dict,
                      timer=None) -> float:
    """Sum over the patched layers of (attention ms at full length - at the method's lengths),
    each timed by ``timer`` (default :func:`cuda_median_ms`, one eager call at a time;
    :func:`graph_ms` for the kernels alone, as they run inside a CUDA-graph model)."""
    timer = timer or cuda_median_ms
    total = 0.0
    for attn, side in bench.patched_layers(config):
        n = side * side
        channels = attn.to_q.in_features
        q_len = n - config.merged_count(n, side, side)
        kv_len = (side // config.downsample) ** 2 if config.pools_kv else None
        key = (id(attn), n, q_len, kv_len, timer.__name__)
        if key not in cache:
            x = torch.randn(bench.batch, n, channels, device="cuda", dtype=torch.bfloat16)
            with torch.inference_mode():
                full = timer(lambda: attn(x), warmup, iters)
                kv = None if kv_len is None else x[:, :kv_len].contiguous()
                q = x[:, :q_len].contiguous()
                reduced = timer(lambda: attn(q, kv), warmup, iters)
            cache[key] = full - reduced
        total += cache[key]
    return total


def flops_per_call(bench: Bench) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        bench.call(bench.model)
    return counter.get_total_flops()


def round_orders(names: list[str], rounds: int) -> list[list[str]]:
    """The order of each interleaved round: rotated by one per round, so that no method always
    runs right after plain (or first, on a cooler card)."""
    return [names[r % len(names):] + names[: r % len(names)] for r in range(rounds)] if names else []


def paired_speedups(times: dict[str, list[float]], base: str = "plain") -> dict[str, list[float]]:
    """Per method, ``base / method`` of each round: ratios of timings taken seconds apart."""
    if base not in times:
        return {}
    return {name: [b / t for b, t in zip(times[base], ms)] for name, ms in times.items() if name != base}


def timing_groups(methods: list[str], modes: list[str], eager_only: list[str]) -> list[tuple[str, list[str]]]:
    """``(mode, methods)`` in run order: every mode of --modes with the methods not eager-only,
    then eager with the eager-only ones (merged into eager when --modes has it). Within a group
    plain comes first: the ceiling needs its time."""
    groups = {mode: [name for name in methods if name not in eager_only] for mode in modes}
    extra = [name for name in methods if name in eager_only]
    if extra:
        groups["eager"] = groups.get("eager", []) + [name for name in extra if name not in groups.get("eager", [])]
    order = lambda names: sorted(names, key=lambda name: name != "plain")  # noqa: E731 - stable: plain first
    return [(mode, order(names)) for mode, names in groups.items() if names]


def apply_kernel_settings(pairs: list[str]) -> dict:
    """``NAME=VALUE`` pairs set on :mod:`bigain_export.kernels.launch` (:func:`parse_kernel_settings`)."""
    from bigain_export.kernels import launch

    settings = parse_kernel_settings(pairs)
    for name, value in settings.items():
        setattr(launch, name, value)
    return settings


def add_loop_calls(parser: argparse.ArgumentParser) -> None:
    """``--loop-calls``, the same flag in both GPU benchmarks; check it with :func:`check_loop_calls`."""
    parser.add_argument("--loop-calls", type=int, default=0,
                        help="calls per loop of the loop timing (0: iters / 5, at least 3); a loop starts on an "
                        "idle GPU, so its first call's host time is shared by these calls (a sampler: 25-50)")


def check_loop_calls(parser: argparse.ArgumentParser, calls: int) -> None:
    if calls < 0:
        parser.error(f"--loop-calls {calls}: must be 0 (iters / 5) or a number of calls")


def require_cuda(parser: argparse.ArgumentParser) -> None:
    """The GPU benchmarks' one-line refusal on a machine without CUDA: call it after the flags'
    own checks, before any model is built or folder written."""
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU and none is visible (torch.cuda.is_available() is False)")


class OwnFrame(torch.nn.Module):
    """A model behind a wrapper class of its own. Dynamo guards a compiled graph on the model's
    structure and class, not its identity: a second copy of one model compiled as it is reuses the
    first copy's graph and kernels, so a control copy must come in as a class Dynamo has not seen."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    @classmethod
    def around(cls, inner: torch.nn.Module, tag: str) -> torch.nn.Module:
        return type(f"{cls.__name__}[{tag}]", (cls,), {})(inner)


def compile_cache(fresh: bool):
    """Inductor's caches as they are, or (``fresh``) an empty cache directory and cleared in-memory
    caches, so that a compile generates and autotunes its kernels anew: Inductor benchmarks several
    configurations of some reduction kernels at their first call, and two compiles of one model can
    pick differently. The directory is kept (not deleted) so that nothing loaded from it goes away."""
    if not fresh:
        return contextlib.nullcontext()
    from torch._inductor import utils
    fresh_cache = getattr(utils, "fresh_cache", None) or utils.fresh_inductor_cache  # the older name
    return fresh_cache(delete=False)


def inductor_cache_state() -> str:
    """``"empty"`` when Inductor's cache directory holds nothing as the process starts (so every
    kernel is generated and autotuned anew: the process is an independent draw of the picks that
    move whole-model times), else ``"warm"`` (an earlier process's kernels and picks may be
    reloaded, as session 28's p2 reloaded p1's); ``"unknown"`` where torch has no such helper.
    Read before anything compiles."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # a torch that moved it: the provenance field must not stop a benchmark
        return "unknown"
    folder = Path(cache_dir())
    return "warm" if folder.is_dir() and any(folder.iterdir()) else "empty"


def code_digest(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """sha256 (12 hex digits) of the package's Python files and this script under ``root``, by
    path order: which code a process timed, since the GPU machine gets a copy of the working tree
    without git. A checkout's own: ``python -c "import sys; sys.path[:0] = ['scripts'];
    import bench_unet as b; print(b.code_digest())"``."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((root / "bigain_export").rglob("*.py")) + [root / "scripts" / "bench_unet.py"]:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def provenance() -> dict:
    """What a result was timed with, for the meta: ``code`` (:func:`code_digest`) and
    ``inductor_cache`` (:func:`inductor_cache_state`). Call it before anything compiles."""
    return dict(code=code_digest(), inductor_cache=inductor_cache_state())


def inductor_settings() -> dict:
    """The Inductor settings a timing depends on, for the meta, read after compiling.
    ``filter_reduction_configs`` (``TORCHINDUCTOR_FORCE_FILTER_REDUCTION_CONFIGS=1``) picks each
    reduction's configuration by heuristic instead of benchmarking several at its first call, so
    two compiles of one kernel choose alike. ``deterministic`` does that and more, but
    ``TORCHINDUCTOR_DETERMINISTIC=1`` does not survive torch.compile: Dynamo restores
    ``torch.use_deterministic_algorithms`` after tracing, which resets it (torch 2.11-2.13)."""
    from torch._inductor import config

    return {"deterministic": bool(getattr(config, "deterministic", False)),
            "filter_reduction_configs": bool(getattr(config.test_configs, "force_filter_reduction_configs", False))}


@contextlib.contextmanager
def launch_settings(**values):
    """The launch module's constants set to ``values`` inside the block, restored after (also
    when a variant fails)."""
    from bigain_export.kernels import launch

    saved = {name: getattr(launch, name) for name in values}
    for name, value in values.items():
        setattr(launch, name, value)
    try:
        with inductor_heuristics(launch.PERSISTENT_GATHER_NORMS):
            yield
    finally:
        for name, value in saved.items():
            setattr(launch, name, value)


@contextlib.contextmanager
def inductor_heuristics(persistent_gather_norms: bool):
    """Inductor's own heuristics, or (``persistent_gather_norms``) with norms over the unmerge's
    gathered rows made persistent (bigain_export/kernels/inductor_choices.py), for the compiles
    inside the block; says how many reductions the rule changed."""
    if not persistent_gather_norms:
        yield
        return
    from bigain_export.kernels import inductor_choices

    before = inductor_choices.decisions_changed
    with inductor_choices.installed() as took:
        if not took:
            raise RuntimeError("PERSISTENT_GATHER_NORMS: another package's Inductor choices are in place")
        yield
    changed = inductor_choices.decisions_changed - before
    if changed:
        print(f"PERSISTENT_GATHER_NORMS: {changed} reduction(s) made persistent", flush=True)


VARIANT_MARK = " @"  # "bigain-merge r=0.7 @MERGE_PATH=groups": a method timed under --variant
# launch settings that act only in Inductor: Dynamo has no guard on them, so before variants compiled
# alone (session 33) a compiled variant of them reused its default's graph and timed the default
UNGUARDED_SETTINGS = ("PERSISTENT_GATHER_NORMS",)


def with_variants(names: list[str], variants: list[list[str]]) -> list[str]:
    """``names`` plus, for each ``--variant`` (a list of pairs), every BiGain method again as a
    labelled variant (plain, tomesd and the variants share one group and its rounds: A/B ratios
    from one run)."""
    marks = [VARIANT_MARK + ",".join(pairs) for pairs in variants]
    return names + [name + mark for mark in marks for name in names if isinstance(METHODS[name], BiGainConfig)]


def base_name(label: str) -> str:
    """The METHODS name of a label, variant or not."""
    return label.split(VARIANT_MARK)[0]


def method_of(label: str):
    """The method (config, tomesd pair or None) of a label, variant or not."""
    return METHODS[base_name(label)]


def variant_pairs(label: str) -> list[str]:
    """A label's ``NAME=VALUE`` pairs as written, unchecked ([] for a method without ``@``)."""
    _, mark, pairs = label.partition(VARIANT_MARK)
    return pairs.split(",") if mark else []


def variant_of(label: str) -> dict:
    """The launch settings a label runs under ({} for a method without ``@``)."""
    pairs = variant_pairs(label)
    return parse_kernel_settings(pairs) if pairs else {}


def compiles_alone(name: str, mode: str) -> bool:
    """Whether a compiled copy goes behind its own frame (:class:`OwnFrame`): else Dynamo reuses an
    earlier copy's graph, plain's for the control, the default method's for a variant of an
    ``UNGUARDED_SETTINGS`` constant."""
    return mode in ("compile", "cudagraphs") and (name == CONTROL or bool(variant_pairs(name)))


def parse_kernel_settings(pairs: list[str]) -> dict:
    """``NAME=VALUE`` pairs for :mod:`bigain_export.kernels.launch`; each name must be one of
    its upper-case constants and each value parse as that constant's type (checked before any
    work, so a typo is one line up front)."""
    from bigain_export.kernels import launch

    constants = {name: value for name, value in vars(launch).items() if name.isupper() and
                 isinstance(value, (bool, int, str))}
    settings = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in constants:
            raise ValueError(f"--kernel-setting {pair!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(constants))}")
        current = constants[name]
        if isinstance(current, bool):
            if text not in ("True", "False"):
                raise ValueError(f"--kernel-setting {pair!r}: {name} takes True or False")
            value = text == "True"
        elif isinstance(current, int):
            value = int(text) if text.isdigit() else None  # every integer constant there is a size or bound
            if value is None:
                raise ValueError(f"--kernel-setting {pair!r}: {name} takes an integer >= 0")
            allowed = getattr(launch, name + "_ALLOWED", None)  # RADIX_BITS -> RADIX_BITS_ALLOWED
            if allowed is not None and value not in allowed:
                raise ValueError(f"--kernel-setting {pair!r}: {name} takes one of {', '.join(map(str, allowed))}")
        else:
            allowed = getattr(launch, name + "S", None)  # SPLIT_RULE -> SPLIT_RULES
            if allowed is not None and text not in allowed:
                raise ValueError(f"--kernel-setting {pair!r}: {name} takes one of {', '.join(allowed)}")
            value = text
        settings[name] = value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd2", choices=("sd2", "dit-xl2"))
    parser.add_argument("--res", type=int, nargs="+", default=[512, 768, 1024])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--modes", nargs="+", default=["compile"], choices=["eager", "compile", "cudagraphs"],
                        help="compile = torch.compile default mode; cudagraphs = mode='reduce-overhead' "
                        "(CUDA graphs: no CPU launch cost, as in a deployed engine)")
    parser.add_argument("--eager-only", nargs="*", default=["tomesd r=0.5", "tomesd r=0.7"], metavar="METHOD",
                        help="methods timed eagerly only (tomesd's Python-side plan breaks compiled graphs)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    add_loop_calls(parser)
    parser.add_argument("--rounds", type=int, default=1,
                        help="with R > 1, every method of a mode stays compiled (its own copy of the model) and "
                        "is timed R times more, interleaved; ms and speedup are the medians of those rounds "
                        "and speedup_min/max their spread (the first timing, right after each compile, is "
                        "then a warm-up)")
    parser.add_argument("--kernel-setting", nargs="+", default=[], metavar="NAME=VALUE",
                        help="set a tuning constant of bigain_export.kernels.launch for this run, e.g. "
                        "SPLIT_RULE=fill RES_BLOCK_N=32 (recorded in the meta): whole-model runs of a "
                        "kernel variant without a code change")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME=VALUE",
                        help="also time every BiGain method with these launch constants set (labelled "
                        "'METHOD @NAME=VALUE'), in the same rounds as the rest: an A/B of a kernel setting "
                        "from one run, where --kernel-setting needs two runs whose plain differ; repeat "
                        "--variant for several variants in one run")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: must be at least 1")
    check_loop_calls(parser, args.loop_calls)
    if args.iters < 1 or args.warmup < 0:
        parser.error(f"--iters {args.iters} --warmup {args.warmup}: need iters >= 1 and warmup >= 0")
    try:
        settings = apply_kernel_settings(args.kernel_setting)
        for pairs in args.variant:
            parse_kernel_settings(pairs)
        twice = next((pairs for i, pairs in enumerate(args.variant) if pairs in args.variant[:i]), None)
        if twice:  # two copies would share one label and one compiled model
            raise ValueError(f"--variant {' '.join(twice)!r} is given twice; give each variant once")
    except ValueError as exc:
        parser.error(str(exc).replace("--kernel-setting", "--kernel-setting/--variant"))
    unknown = [name for name in args.eager_only if name not in METHODS]
    if unknown:
        parser.error(f"--eager-only {unknown[0]!r} is not a method; allowed: {', '.join(METHODS)}")
    require_cuda(parser)
    timed_with = provenance()  # before any compile
    args.out.mkdir(parents=True, exist_ok=True)
    # one compiled copy per method of a group: more cache entries of one forward than Dynamo's default 8
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(args.methods))
    rows: list[dict] = []
    for res in args.res:
        bench = Bench(args.model, res, args.batch)
        with torch.inference_mode():
            for _ in range(10):  # first-call costs (cuDNN heuristics, allocator) out of the table
                bench.call(bench.model)
        cache: dict = {}
        flops = {}
        for name in args.methods:
            patch(bench.model, METHODS[name])
            flops[name] = flops_per_call(bench)  # eager; the custom ops' own matmuls are not counted
        patch(bench.model, None)
        for mode, names in timing_groups(args.methods, args.modes, args.eager_only):
            labels = with_variants(names, args.variant)
            flops.update({label: flops[base_name(label)] for label in labels})
            rows.extend(time_group(bench, res, mode, labels, args, flops, cache))
            atomic_write(args.out / "bench_unet.partial.json", json.dumps(rows, indent=1))  # survives a timeout
        del bench
        torch.cuda.empty_cache()
    meta = dict(
        card=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
        triton=__import__("triton").__version__, diffusers=__import__("diffusers").__version__,
        python=platform.python_version(), date=time.strftime("%Y-%m-%d"), model=args.model, batch=args.batch,
        dtype="bf16", attention="SDPA (AttnProcessor2_0)", iters=args.iters, warmup=args.warmup, rounds=args.rounds,
        loop_calls=loop_length(args.iters, args.loop_calls),
        kernel_settings=settings, variant=args.variant, inductor=inductor_settings(), **timed_with,
    )
    atomic_write(args.out / "bench_unet.json", json.dumps(dict(meta=meta, rows=rows), indent=1))
    table = markdown_table(rows)
    atomic_write(args.out / "bench_unet.md", f"{json.dumps(meta)}\n\n{table}\n")
    print(json.dumps(meta))
    print(table)


def _timings(bench: Bench, model, args) -> tuple[float, float]:
    """(per-call latency, per-call time in a loop) of ``model``, in ms."""
    with torch.inference_mode():
        call = cuda_median_ms(lambda: bench.call(model), args.warmup, args.iters)
        loop = cuda_loop_ms(lambda: bench.call(model), args.warmup, args.iters, args.loop_calls)
    return call, loop


def speedup_range(row: dict, prefix: str) -> str | None:
    """``"min-max"`` of a row's speedups over rounds for one timing (prefix "" or "loop_"), or
    None with a single round."""
    if prefix + "speedup_min" not in row:
        return None
    return f"{row[prefix + 'speedup_min']:g}-{row[prefix + 'speedup_max']:g}"


def _ratio_fields(prefix: str, ratios: list[float], plain_ms: float, saved: float | None) -> dict:
    """speedup (median over rounds, with its range), and beside it the ceiling and the share of
    its gain, for one timing; ``prefix`` "" (per call) or "loop_"."""
    speedup = statistics.median(ratios)
    fields = {f"{prefix}speedup": round(speedup, 3)}
    if len(ratios) > 1:
        fields.update({f"{prefix}speedup_min": round(min(ratios), 3), f"{prefix}speedup_max": round(max(ratios), 3)})
    if saved is not None:
        ceiling = plain_ms / (plain_ms - saved)
        fields.update({f"{prefix}attention_saved_ms": round(saved, 3), f"{prefix}ceiling": round(ceiling, 3),
                       f"{prefix}gain_share": round((speedup - 1) / (ceiling - 1), 3) if ceiling > 1 else None})
    return fields


def time_group(bench: Bench, res: int, mode: str, names: list[str], args, flops: dict, cache: dict) -> list[dict]:
    """Compile (or not) one copy of the model per method, time each once, then ``args.rounds - 1``
    interleaved rounds; rows with each ratio against plain of this group beside the ceiling.

    Two timings each time: ``ms`` is one call's latency (every call waited for: the host's
    per-call work is in it) with the ceiling from eager attention timed the same way; ``loop_ms``
    is the time per call of calls issued back to back, as a sampler runs them, with the ceiling
    from the attention's kernels alone (:func:`graph_ms`)."""
    import copy

    torch._dynamo.reset()
    models, times, loops, errors, setup = {}, {}, {}, {}, {}
    for name in names:
        model = copy.deepcopy(bench.model)
        patch(model, method_of(name))
        if mode in ("compile", "cudagraphs"):
            if compiles_alone(name, mode):
                model = OwnFrame.around(model, name)
            model = torch.compile(model, mode="reduce-overhead" if mode == "cudagraphs" else None)
        t0 = time.time()
        try:
            with launch_settings(**variant_of(name)), compile_cache(fresh=name == CONTROL):
                call, loop = _timings(bench, model, args)  # traced, compiled, captured and timed once
            times[name], loops[name] = [call], [loop]
            models[name] = model
        except Exception as exc:  # record, keep benchmarking the rest
            errors[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        setup[name] = round(time.time() - t0, 1)
        print(f"[{res}px] {name:34s} {mode:10s} set up and timed once in {setup[name]} s"
              f"{'  ' + errors[name] if name in errors else ''}", flush=True)
    if args.rounds > 1:
        timed = [name for name in names if name in models]
        times, loops = {name: [] for name in timed}, {name: [] for name in timed}
        for order in round_orders(timed, args.rounds - 1):
            for name in order:
                with launch_settings(**variant_of(name)):
                    call, loop = _timings(bench, models[name], args)
                times[name].append(call)
                loops[name].append(loop)
    ratios, loop_ratios = paired_speedups(times), paired_speedups(loops)
    rows = []
    plain_ms = statistics.median(times["plain"]) if "plain" in times else None
    plain_loop = statistics.median(loops["plain"]) if "plain" in loops else None
    for name in names:
        method = method_of(name)
        ms = statistics.median(times[name]) if name in times else float("nan")
        loop_ms = statistics.median(loops[name]) if name in loops else float("nan")
        row = dict(res=res, method=name, mode=mode, ms=round(ms, 3), loop_ms=round(loop_ms, 3), error=errors.get(name),
                   setup_s=setup[name], flops=flops[name], rounds=len(times.get(name, [])),
                   compiled_alone=compiles_alone(name, mode))
        if name in ratios:
            compresses = isinstance(method, BiGainConfig)
            saved = attention_savings(bench, method, args.warmup, args.iters, cache) if compresses else None
            row.update(_ratio_fields("", ratios[name], plain_ms, saved))
            saved = attention_savings(bench, method, args.warmup, args.iters, cache, graph_ms) if compresses else None
            row.update(_ratio_fields("loop_", loop_ratios[name], plain_loop, saved))
        rows.append(row)
        spread = lambda p: f" [{speedup_range(row, p)}]" if speedup_range(row, p) else ""  # noqa: E731
        print(f"[{res}px] {name:34s} {mode:10s} call {ms:8.2f} ms  ceiling {row.get('ceiling', '-')}  "
              f"speedup {row.get('speedup', '-')}{spread('')}  share {row.get('gain_share', '-')} | loop {loop_ms:8.2f} ms"
              f"  ceiling {row.get('loop_ceiling', '-')}  speedup {row.get('loop_speedup', '-')}{spread('loop_')}  "
              f"share {row.get('loop_gain_share', '-')}", flush=True)
    del models
    torch.cuda.empty_cache()
    return rows


def markdown_table(rows) -> str:
    """Both timings: one call's latency (``ms``) and per call in a loop (``loop ms``)."""
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    spread = lambda r, p: speedup_range(r, p) or "-"  # noqa: E731
    lines = ["| px | method | mode | ms (one call) | speedup [range] | ceiling | share | loop ms | loop speedup [range] "
             "| loop ceiling | loop share | GFLOP |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['res']} | {r['method']} | {r['mode']} | {r['ms']:.2f} | {fmt(r.get('speedup'))} "
                     f"[{spread(r, '')}] | {fmt(r.get('ceiling'))} | {fmt(r.get('gain_share'))} | "
                     f"{r.get('loop_ms', float('nan')):.2f} | {fmt(r.get('loop_speedup'))} [{spread(r, 'loop_')}] | "
                     f"{fmt(r.get('loop_ceiling'))} | {fmt(r.get('loop_gain_share'))} | "
                     f"{'-' if r.get('flops') is None else round(r['flops'] / 1e9)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
