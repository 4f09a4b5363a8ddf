"""Launchers of the Triton kernels: shapes, buffers and grids; same signatures as the reference.

:func:`available` says whether a tensor can take the kernel path: Triton importable, the tensor on
a CUDA device (or Triton's CPU interpreter switched on with ``TRITON_INTERPRET=1``, which the CPU
tests use) and a dtype the kernels handle (float16, bfloat16, float32; float64 stays on the
reference; ``BIGAIN_KERNELS=reference`` forces the reference). Nothing here is called directly
by models: :mod:`bigain_export.ops.library` picks.
"""

from __future__ import annotations

import os

import torch

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


_UNRESOLVED = object()
_triton_kernels = _UNRESOLVED


def _triton():
    """The kernels' module, or None without Triton; imported once. A module global rather than
    ``functools.lru_cache``: Dynamo traces through a cache wrapper and warns at every compile of a
    patched model (seen in the GPU benchmarks' logs), while a global it reads is one guard."""
    global _triton_kernels
    if _triton_kernels is _UNRESOLVED:
        try:
            from . import triton_kernels
        except ImportError:  # no triton on this machine: the reference path serves
            triton_kernels = None
        _triton_kernels = triton_kernels
    return _triton_kernels


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


KERNEL_SWITCHES = ("", "reference")


def kernel_switch() -> str:
    """``BIGAIN_KERNELS``, checked (the CLI calls this before any work, so a typo is one line up
    front, not an error deep in a run or a silently ignored switch)."""
    switch = os.environ.get("BIGAIN_KERNELS", "")
    if switch not in KERNEL_SWITCHES:
        from ..errors import ConfigError

        raise ConfigError(f"BIGAIN_KERNELS={switch!r} is not a switch; allowed: unset or 'reference'")
    return switch


def available(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` takes the kernels; ``BIGAIN_KERNELS=reference`` forces the reference
    ops everywhere (to compare, or to rule the kernels out when debugging)."""
    return tensor.dtype in KERNEL_DTYPES and runs_on(tensor.device)


def runs_on(device: torch.device) -> bool:
    """Whether the kernels run on ``device`` (any dtype they take): a CUDA device, or the CPU
    under Triton's interpreter; Triton installed; not switched off by ``BIGAIN_KERNELS``."""
    if kernel_switch() == "reference":
        return False
    if not (device.type == "cuda" or interpreting()):
        return False
    return _triton() is not None


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


# Tile shape of the similarity kernel: what the recorded whole-UNet runs used (H200,
# docs/benchmarks.md). In the tile sweep of bench_kernels.py, M=256 x N=128 made the 1024 px plan
# 9% faster (0.346 vs 0.381 ms); not adopted until a whole-model run confirms it.
SIM_BLOCK_M, SIM_BLOCK_N, SIM_BLOCK_K = 128, 128, 64
SIM_WARPS, SIM_STAGES = 8, 3
# best_anchor_resident_kernel (the source rows stay on chip) wherever a tile of them fits in
# RESIDENT_BYTES and the channels split into two powers of two (320 = 256 + 64; 64; 128); the
# nested-loop kernel above spills registers on sm_90 (255 registers + stack, cuobjdump) while
# this one does not (176 at N=64). SIM_RESIDENT = False forces the nested one (benchmarks).
SIM_RESIDENT = True
RES_BLOCK_M, RES_BLOCK_N, RES_WARPS, RES_STAGES = 128, 64, 8, 3
RESIDENT_BYTES = 96 * 1024


def _gpu_options(device: torch.device, **options) -> dict:
    """Launch options (warps, stages) for a GPU; Triton's interpreter takes none. The sm_90 compile
    check (scripts/check_sm90.py) patches this to see the GPU's options from CPU tensors."""
    return options if device.type == "cuda" else {}


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def resident_channels(c: int, itemsize: int) -> tuple[int, int, int, int] | None:
    """``(block_m, K0, K1, stages)`` for best_anchor_resident_kernel (``c == K0 + K1``, powers of
    two of at least 16, ``K1`` may be 0), or None where the nested-loop kernel serves: float32
    (whose exact dot spills thousands of bytes of registers when resident, cuobjdump), channels
    that do not split so, or source tiles above RESIDENT_BYTES."""
    if not SIM_RESIDENT or itemsize != 2 or c < 16:
        return None
    k0 = 1 << (c.bit_length() - 1)
    k1 = c - k0
    if k1 and (k1 < 16 or k1 & (k1 - 1)):
        return None
    if RES_BLOCK_M * c * itemsize > RESIDENT_BYTES:
        return None
    # the anchor tiles in flight share the shared memory (228 KiB on sm_90; keep headroom)
    stages = RES_STAGES
    while stages > 2 and stages * RES_BLOCK_N * c * itemsize > 200 * 1024:
        stages -= 1
    return RES_BLOCK_M, k0, k1, stages


SELECT_BLOCK = 1024  # sources per program of the radix select
# Up to this many sources the selection is one program per sample (small_select_kernel: a sort in
# registers), above it the radix select spreads the work. 1024 covers DiT-XL/2 at 512 px and the
# built-ins, where the radix select's six launches do almost no GPU work; the GPU tests also run
# 4096 (correct, but one program sorting 4096 keys vs the radix select's GPU time is not measured).
SMALL_SELECT = 1024
# Above SMALL_SELECT: one_program_select_kernel (the same radix select in one launch per sample,
# one program walking all sources) unless a CUDA graph is being captured, where the host cost of
# launches is gone and the radix select's 7 launches spread the GPU work over chunks instead.
# Measured (H200, session 10, bench_kernels "plan 0.7, ... select"): eagerly the one program
# wins at SD2 768 px (6,912 sources: 0.269 vs 0.292 ms a plan) and loses at 1024 px (12,288:
# 0.422 vs 0.334; its kernel alone is 0.118 ms there), though it saves host time at both
# (0.168 vs 0.280 ms at 1024). The bound sits between the two.
ONE_PROGRAM_SELECT = 8192
RADIX_WHEN_CAPTURING = True  # False: the one program in CUDA graphs too (bench_kernels times both)
SELECT_PATHS = ("small", "one-program", "radix")


def select_path(num_src: int, device: torch.device) -> str:
    """Which selection a plan of ``num_src`` sources takes (see the constants above)."""
    if num_src <= SMALL_SELECT:
        return "small"
    capturing = RADIX_WHEN_CAPTURING and device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if num_src <= ONE_PROGRAM_SELECT and not capturing:
        return "one-program"
    return "radix"


# How the anchors are split among programs of the similarity kernel: "waves" (default): the
# split count that minimises (waves of programs) x (anchor tiles per program + 1 for loading the
# source tile), at one program per SM (both similarity kernels hold one SM's registers), e.g. 2
# splits instead of 3 at SD2 1024 px (99 vs 115 tile-times), 1 instead of 5 at 768 px (37 vs 45);
# "fill": at least 4 programs per SM, each split keeping >= 4 anchor tiles. Measured (H200,
# session 10, plan 0.7 in a CUDA graph): waves 0.2075 vs fill 0.2232 ms at 1024 px, 0.1051 vs
# 0.1061 at 768.
SPLIT_RULES = ("fill", "waves")
SPLIT_RULE = "waves"


# Tiles of the row-wise kernels that read every channel of every token (Laplacian score, unit
# rows): channel blocks that divide C where they can (no masked lanes), ROW_TILE elements a load,
# so that large-C layers still get many programs. Measured (H100, session 20, DiT-XL/2 512 px,
# batch 16, C = 1152, per plan): the former 64 x 32 / 32 x 32 tiles with 4 warps (256 / 512
# programs for 132 SMs) took 41.6 / 50.7 us, these 20.7 / 32.0; SD2 unchanged within 1 us.
ROW_TILE = 2048
ROW_WARPS = 8  # 4 spill the unit rows' registers at 2048 elements (cuobjdump)


def row_blocks(c: int) -> tuple[int, int]:
    """``(BLOCK_T, BLOCK_C)`` of the row-wise kernels for ``c`` channels."""
    if ROW_TILE < 128 or ROW_TILE & (ROW_TILE - 1):
        raise ValueError(f"ROW_TILE={ROW_TILE}; allowed: a power of two of at least 128")
    block_c = next((size for size in (128, 64) if c % size == 0), 32 if c <= 32 else 64)
    return ROW_TILE // block_c, block_c


def similarity_splits(num_dst: int, block_n: int, programs_per_split: int, sm_count: int) -> tuple[int, int]:
    """``(splits, anchors per split)``: a multiple of ``block_n`` per split; every split non-empty."""
    if SPLIT_RULE not in SPLIT_RULES:
        raise ValueError(f"SPLIT_RULE={SPLIT_RULE!r}; allowed: {', '.join(SPLIT_RULES)}")
    tiles = _cdiv(num_dst, block_n)
    most = max(1, _cdiv(num_dst, 4 * block_n))
    if SPLIT_RULE == "fill":
        wanted = max(1, min(most, _cdiv(4 * sm_count, programs_per_split)))
    else:
        def cost(splits: int) -> int:
            per = _cdiv(tiles, splits)
            return _cdiv(programs_per_split * _cdiv(tiles, per), sm_count) * (per + 1)

        wanted = min(range(1, most + 1), key=lambda s: (cost(s), s))
    per_split = _cdiv(tiles, wanted) * block_n
    return _cdiv(num_dst, per_split), per_split


# Fewer launches a plan (issue 11: at SD2 768 px the merge path's ~24 small kernels cost about
# their GPU time again in gaps). True: the plan's counters come from torch.empty and
# unit_rows_kernel zeroes them (no memset launch); with one similarity split the best-anchor
# kernel adds the radix select's first digit histogram (a radix_hist launch fewer); a plan that
# builds its groups has the select count them (no group count launch, no memset). False: the
# launches as before (one memset, every histogram pass, group_count_kernel).
PLAN_FUSION = True
# Bits of a radix digit: 8 (4 histogram passes over the 32-bit key) or 11 (3 passes).
RADIX_BITS = 8
RADIX_BITS_ALLOWED = (8, 11)


def radix_digits() -> tuple[int, int]:
    """``(BITS, PASSES)`` of the radix select, :data:`RADIX_BITS` checked."""
    if RADIX_BITS not in RADIX_BITS_ALLOWED:
        raise ValueError(f"RADIX_BITS={RADIX_BITS!r}; allowed: {', '.join(map(str, RADIX_BITS_ALLOWED))}")
    return RADIX_BITS, _cdiv(32, RADIX_BITS)


def merge_plan(metric: torch.Tensor, offsets: torch.Tensor | None, grid_h: int, grid_w: int, r: int,
               released: bool = False, match_radius: int = 0, groups: bool = False):
    """Slot map ``[B, N]`` int64, equal to :func:`~bigain_export.ops.reference.merge_plan` of the
    same anchors. ``offsets [B|1, grid_h//2, grid_w//2]`` gives the anchors (ToMe ``fixed`` /
    ``random``); ``None`` computes BiGain's Laplacian gate (``released`` picks the grouping).
    ``match_radius > 0`` matches each source with the anchors around it only
    (:attr:`~bigain_export.config.BiGainConfig.match_radius`). ``groups``: returns
    ``(slot, members, starts)``, the slot map with its :func:`merge_groups`, counted by the select."""
    k = _triton()
    metric = metric.contiguous()
    b, n, c = metric.shape
    device = metric.device
    hs, ws = grid_h // 2, grid_w // 2
    num_dst = hs * ws
    num_src = n - num_dst
    kept = num_src - r
    path = select_path(num_src, device)
    bits, passes = radix_digits()
    # the plan's int32 counters: radix histograms [B, passes, 2^bits], group counts [B, num_dst + 1]
    hist_len = b * passes * (1 << bits) if path == "radix" else 0
    counters_len = hist_len + (b * (num_dst + 1) if groups else 0)
    fused = PLAN_FUSION
    zero_now = not fused and counters_len > 0  # a memset launch (fused: unit_rows_kernel zeroes them)
    counters = (torch.zeros if zero_now else torch.empty)(max(counters_len, 1), dtype=torch.int32, device=device)
    # 1. anchors per window and the top-row prefix counts that place every source without a scan
    window_offsets = torch.empty(b, num_dst, dtype=torch.int32, device=device)
    top = torch.empty(b, hs, ws + 1, dtype=torch.int32, device=device)
    block_t, block_c = row_blocks(c)  # the Laplacian's and the unit rows' tiles
    if offsets is None:
        score = torch.empty(b, n, dtype=torch.float32, device=device)
        k.laplacian_score_kernel[(_cdiv(n, block_t), b)](metric, score, n, c, grid_h, grid_w, BLOCK_T=block_t,
                                                         BLOCK_C=block_c, **_gpu_options(device, num_warps=ROW_WARPS))
        given, given_stride, mode = score, 0, 1 if released else 0
    else:
        given = offsets.reshape(offsets.shape[0], num_dst).to(torch.int32).contiguous()
        score, given_stride, mode = given, (0 if given.shape[0] == 1 else num_dst), 2
    k.anchor_rows_kernel[(hs, b)](score, given, given_stride, window_offsets, top, n, grid_w, hs, ws,
                                  MODE=mode, BLOCK_W=_pow2(ws))
    # 2. unit rows in [sources | anchors] order, each source's token, the anchors' slots
    units = torch.empty_like(metric)
    src_tok = torch.empty(b, num_src, dtype=torch.int32, device=device)
    slot = torch.empty(b, n, dtype=torch.int64, device=device)
    k.unit_rows_kernel[(_cdiv(n, block_t), b)](metric, window_offsets, top, units, src_tok, slot, counters,
                                               counters_len if fused else 0, n, c, grid_w, hs, ws, kept,
                                               BLOCK_T=block_t, BLOCK_C=block_c, ZERO_BLOCK=256,
                                               **_gpu_options(device, num_warps=ROW_WARPS))
    # 3. best anchor of every source on tensor cores: among all anchors, split so that the grid
    # fills the GPU; or with match_radius among its neighbourhood's, each program scanning only the
    # window rows its sources can reach (no split)
    resident = resident_channels(c, metric.element_size())
    block_m, block_n = (resident[0], RES_BLOCK_N) if resident else (SIM_BLOCK_M, SIM_BLOCK_N)
    m_tiles = _cdiv(num_src, block_m)
    if match_radius > 0:
        splits, per_split = 1, num_dst
    else:
        splits, per_split = similarity_splits(num_dst, block_n, m_tiles * b, _sm_count(device))
    sim = torch.empty(b, splits, num_src, dtype=torch.float32, device=device)
    idx = torch.empty(b, splits, num_src, dtype=torch.int32, device=device)
    ieee = metric.dtype == torch.float32
    grid = (m_tiles, splits, b)
    # one split: the similarities are final, so the kernel can count the first radix digit
    first_digit = fused and path == "radix" and splits == 1
    digits = dict(HIST=first_digit, BITS=bits, PASSES=passes)
    if resident:
        tuning = _gpu_options(device, num_warps=RES_WARPS, num_stages=resident[3])
        k.best_anchor_resident_kernel[grid](units, src_tok, sim, idx, counters, n, num_src, num_dst, per_split,
                                            grid_w, hs, ws, C=c, K0=resident[1], K1=resident[2], R=match_radius,
                                            BLOCK_M=block_m, BLOCK_N=block_n, IEEE=ieee, **digits, **tuning)
    else:
        tuning = _gpu_options(device, num_warps=SIM_WARPS, num_stages=SIM_STAGES)
        k.best_anchor_kernel[grid](units, src_tok, sim, idx, counters, n, c, num_src, num_dst, per_split, grid_w, hs,
                                   ws, R=match_radius, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=SIM_BLOCK_K,
                                   IEEE=ieee, **digits, **tuning)
    group_counts = counters[hist_len:hist_len + b * (num_dst + 1)] if groups else counters
    count_in_select = groups and fused
    _select(k, path, sim, idx, src_tok, slot, counters, 1 if first_digit else 0, group_counts, count_in_select,
            n, num_src, num_dst, splits, r, device)
    if not groups:
        return slot
    if not count_in_select:
        k.group_count_kernel[(_cdiv(n, GROUP_BLOCK_T), b)](slot, group_counts, n, kept, num_dst, BLOCK_T=GROUP_BLOCK_T)
    return (slot, *_place_groups(k, slot, group_counts, kept, num_dst, anchors_counted=not count_in_select))


def _select(k, path: str, sim, idx, src_tok, slot, hist, first_pass: int, group_counts, count_groups: bool,
            n: int, num_src: int, num_dst: int, splits: int, r: int, device) -> None:
    """4. the r most similar sources and every source's slot (written into ``slot``): one program
    per sample (a sort in registers, or the radix select walked by one program), or the radix
    select over chunks of sources from digit pass ``first_pass`` on (``hist``: zeroed, with the
    passes before it done). ``count_groups``: also each anchor's merged sources into
    ``group_counts`` (zeroed)."""
    b = sim.shape[0]
    bits, passes = radix_digits()
    counting = dict(COUNT=count_groups)
    if path == "small":
        block = _pow2(num_src)
        warps = _gpu_options(device, num_warps=4 if block <= 1024 else 8)
        k.small_select_kernel[(b,)](sim, idx, src_tok, slot, group_counts, n, num_src, splits, r, num_dst, BLOCK=block,
                                    **counting, **warps)
        return
    if path == "one-program":
        k.one_program_select_kernel[(b,)](sim, idx, src_tok, slot, group_counts, n, num_src, splits, r, num_dst,
                                          BLOCK=SELECT_BLOCK, BITS=bits, PASSES=passes, **counting,
                                          **_gpu_options(device, num_warps=8))
        return
    chunks = _cdiv(num_src, SELECT_BLOCK)
    for p in range(first_pass, passes):
        k.radix_hist_kernel[(chunks, b)](sim, idx, hist, num_src, splits, r, PASS=p, BLOCK=SELECT_BLOCK, BITS=bits,
                                         PASSES=passes)
    counts = torch.empty(b, 2, chunks, dtype=torch.int32, device=device)
    k.tie_count_kernel[(chunks, b)](sim, hist, counts, num_src, splits, r, chunks, BLOCK=SELECT_BLOCK, BITS=bits,
                                    PASSES=passes)
    k.source_slots_kernel[(chunks, b)](sim, idx, hist, counts, src_tok, slot, group_counts, n, num_src, splits, r,
                                       chunks, num_dst, BLOCK=SELECT_BLOCK, MAX_CHUNKS=_pow2(chunks), BITS=bits,
                                       PASSES=passes, **counting)


def unmerge(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """``[B, N - r, C]`` -> ``[B, N, C]``: token n takes row ``slot[n]``."""
    k = _triton()
    y, slot = y.contiguous(), slot.contiguous()
    b, num_in, c = y.shape
    n = slot.shape[1]
    out = torch.empty(b, n, c, dtype=y.dtype, device=y.device)
    block_c = merge_channels(c)  # as the merges: 320 channels as 5 x 64, no half-masked block
    k.gather_rows_kernel[(_cdiv(n, 32), _cdiv(c, block_c), b)](y, slot, out, n, c, num_in, BLOCK_T=32, BLOCK_C=block_c)
    return out


# Under torch.compile the unmerge is left to Inductor (a plain gather, reference.unmerge), which
# fuses it into its consumers (the residual add and the next norm) instead of paying a launch, a
# [B, N, C] write and read and a kernel that materialises the opaque op's input. Measured (H200,
# session 18, SD2 768 px, CUDA graphs, 5 layers): 10 kernels and ~40 us of GPU time fewer a call.
# False keeps the custom op in graphs too (benchmarks: --kernel-setting UNMERGE_IN_GRAPH=False).
UNMERGE_IN_GRAPH = True

# The norm that reads the in-graph unmerge's rows sees a gathered (indirect) read, so Inductor gives
# its reduction the hint DEFAULT and, for more than 64 channels, a looped three-pass kernel that
# gathers three times (session 28, SD2 768 px: 24.9 vs 11.3 us a launch, +68 us a call). True
# realises the gathered rows with their own strides (prims.inductor_force_stride_order): in the
# code generated on the CPU, Inductor writes them once from inside a persistent norm kernel
# (docs/bench/2026-12-07-gpu-session28/codegen_probe.py). On the H100 the norm stayed looped (24.8 us
# a launch) and the whole model took what the default does (session 30: 11.93 vs 11.88 ms a call,
# 768 px), so it stays off (benchmarks: --variant UNMERGE_REALIZE=True).
UNMERGE_REALIZE = False

# True makes such a norm persistent instead (kernels/inductor_choices.py, an Inductor heuristic):
# apply_bigain holds it in place while a model is patched to merge (read at patch time), and the
# benchmarks install it around the compiles of --variant PERSISTENT_GATHER_NORMS=True. Off until a
# GPU benchmark shows it pays.
PERSISTENT_GATHER_NORMS = False


# How a merge without prebuilt groups runs. "groups" (default): the slot map's token groups
# (merge_groups: a count, a scan and a fill over the int slot map) and one gather per output row,
# as a plan that serves several merges does for all of them; "atomic": kept sources copied, the
# rest summed with float32 atomics into a zeroed buffer and divided by a second launch.
# Measured: the grouped form's kernels take less GPU time per plan (H100, session 20, CUDA graph:
# DiT-XL/2 512 px batch 16 35 vs 52 us; SD2 1024 px 24 vs 28; 768 px 18 vs 18), and in the same
# rounds of one run (bench_unet.py --variant, H100, session 22) the whole DiT-XL/2 with the
# per-block plan ran 35.17 vs 35.33 ms and 35.83 vs 35.95 ms with groups vs atomics (two
# processes; session 20's opposite result came from two runs whose plain moved 1.5%).
# library.gated_merge reads it (while Dynamo traces, so a compiled model is guarded on it): with
# "groups" the plan builds its groups itself (bigain::merge_plan_groups, counted by the select);
# a plan that serves several merges (serves_more) always does. :func:`merge` reads it for a merge
# handed a bare slot map.
MERGE_PATHS = ("atomic", "groups")
MERGE_PATH = "groups"


# Channels per program of the merges: 0 picks the block that divides C (128, else 64: SD2's 320
# channels as 5 x 64, not 3 x 128 with half of the last block masked); another value is used as
# it is (the earlier rule: 128 above 64 channels). Measured (H100, session 20, CUDA graph): the
# grouped merge at SD2 768 px 10.5 us with 64 vs 17.0 with 128, at 1024 px 14.8 vs 19.7; the
# atomic merge unchanged (12.0 / 19.4).
MERGE_BLOCK_C = 0


def merge_channels(c: int) -> int:
    """Channels per program of :func:`atomic_merge` and :func:`grouped_merge` for ``c``."""
    if MERGE_BLOCK_C:
        return MERGE_BLOCK_C
    return 128 if c % 128 == 0 else 64


def merge_path() -> str:
    """:data:`MERGE_PATH`, checked (a benchmark may set it)."""
    if MERGE_PATH not in MERGE_PATHS:
        raise ValueError(f"MERGE_PATH={MERGE_PATH!r}; allowed: {', '.join(MERGE_PATHS)}")
    return MERGE_PATH


def merge(x: torch.Tensor, slot: torch.Tensor, num_out: int, num_dst: int) -> torch.Tensor:
    """Segment mean ``[B, N, C]`` -> ``[B, num_out, C]`` by a canonical slot map whose last
    ``num_dst`` rows are the anchors (rows before them are single kept sources), by
    :data:`MERGE_PATH`."""
    if merge_path() == "groups":
        return grouped_merge(x, *merge_groups(slot, num_out, num_dst), num_out, num_dst)
    return atomic_merge(x, slot, num_out, num_dst)


def atomic_merge(x: torch.Tensor, slot: torch.Tensor, num_out: int, num_dst: int) -> torch.Tensor:
    """:func:`merge` by float32 atomics (``MERGE_PATH = "atomic"``)."""
    k = _triton()
    x, slot = x.contiguous(), slot.contiguous()
    b, n, c = x.shape
    kept = num_out - num_dst
    out = torch.empty(b, num_out, c, dtype=x.dtype, device=x.device)
    # sums, then counts, in one zeroed buffer: one memset launch, not two
    acc = torch.zeros(b * num_dst * (c + 1), dtype=torch.float32, device=x.device)
    block_c = merge_channels(c)
    grid = (_cdiv(n, 32), _cdiv(c, block_c), b)
    k.merge_kernel[grid](x, slot, out, acc, n, c, num_out, kept, num_dst, b * num_dst * c, BLOCK_T=32, BLOCK_C=block_c)
    k.finish_merge_kernel[(_cdiv(num_dst, 32), _cdiv(c, block_c), b)](
        acc, out, c, num_out, kept, num_dst, b * num_dst * c, BLOCK_T=32, BLOCK_C=block_c)
    return out


GROUP_BLOCK_T = 256  # tokens per program of the group count and fill
GROUP_SCAN_BLOCK = 4096  # anchors per step of the one program per sample that places the groups


def merge_groups(slot: torch.Tensor, num_out: int, num_dst: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(members, starts)`` of :func:`~bigain_export.ops.reference.merge_groups` (each group's
    members in any order)."""
    k = _triton()
    slot = slot.contiguous()
    b, n = slot.shape
    kept = num_out - num_dst
    counts = torch.zeros(b, num_dst + 1, dtype=torch.int32, device=slot.device)
    k.group_count_kernel[(_cdiv(n, GROUP_BLOCK_T), b)](slot, counts, n, kept, num_dst, BLOCK_T=GROUP_BLOCK_T)
    return _place_groups(k, slot, counts, kept, num_dst, anchors_counted=True)


def _place_groups(k, slot: torch.Tensor, counts: torch.Tensor, kept: int, num_dst: int,
                  anchors_counted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(members, starts)`` from each anchor row's token count (``counts``, flat
    ``[B * (num_dst + 1)]``; ``anchors_counted`` False: merged sources only, the select's count):
    a scan, then every token to its place."""
    b, n = slot.shape
    starts = torch.empty(b, num_dst + 1, dtype=torch.int32, device=slot.device)
    members = torch.empty(b, n, dtype=torch.int32, device=slot.device)
    k.group_starts_kernel[(b,)](counts, starts, n, kept, num_dst, BLOCK=min(_pow2(num_dst), GROUP_SCAN_BLOCK),
                                SELF=not anchors_counted)
    k.group_fill_kernel[(_cdiv(n, GROUP_BLOCK_T), b)](slot, counts, members, n, kept, num_dst, BLOCK_T=GROUP_BLOCK_T)
    return members, starts


def grouped_merge(x: torch.Tensor, members: torch.Tensor, starts: torch.Tensor, num_out: int,
                  num_dst: int) -> torch.Tensor:
    """:func:`merge` from the groups of :func:`merge_groups`: one launch."""
    k = _triton()
    x = x.contiguous()
    b, n, c = x.shape
    out = torch.empty(b, num_out, c, dtype=x.dtype, device=x.device)
    block_c = merge_channels(c)
    k.grouped_merge_kernel[(_cdiv(num_out, 32), _cdiv(c, block_c), b)](
        x, members, starts, out, n, c, num_out, num_out - num_dst, num_dst, BLOCK_T=32, BLOCK_C=block_c)
    return out


def kv_pool(x: torch.Tensor, alpha: torch.Tensor, grid_h: int, grid_w: int, s: int) -> torch.Tensor:
    """IE-KVD ``[B, N, C]`` -> ``[B, (grid_h/s)*(grid_w/s), C]``; ``alpha`` float32 ``[B|1]``."""
    k = _triton()
    x = x.contiguous()
    b, n, c = x.shape
    out_h, out_w = grid_h // s, grid_w // s
    num_out = out_h * out_w
    alpha = alpha.reshape(-1).to(device=x.device, dtype=torch.float32).contiguous()
    out = torch.empty(b, num_out, c, dtype=x.dtype, device=x.device)
    block_c = 128 if c > 64 else 64
    grid = (_cdiv(num_out, 32), _cdiv(c, block_c), b)
    k.kv_pool_kernel[grid](x, alpha, 0 if alpha.numel() == 1 else 1, out, n, c, grid_w, out_w, num_out,
                           S=s, BLOCK_T=32, BLOCK_C=block_c)
    return out
