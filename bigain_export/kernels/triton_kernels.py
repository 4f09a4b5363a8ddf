"""Triton kernels of the BiGain operators (``@triton.jit`` only; launchers in :mod:`.launch`).

The plan of a gated merge never sorts and never materialises the ``[Ns, Nd]`` similarity matrix:

1. ``laplacian_score_kernel``: ``sum_c |4-neighbour Laplacian|`` per token (zero padding);
2. ``anchor_rows_kernel`` (one window row per program): each window's anchor offset (``window`` /
   ``released`` argmin, or given for ToMe) and a prefix count of top-row anchors, from which
   every token's position among the sources follows arithmetically (no scan over the sequence);
3. ``unit_rows_kernel``: rows normalised in float32, rounded to the model dtype, written into a
   ``[sources | anchors]`` buffer so that the similarity kernel reads contiguous rows;
4. ``best_anchor_resident_kernel`` (16-bit inputs, up to 384 channels) or ``best_anchor_kernel``:
   tiles of ``src @ dst^T`` on tensor cores, reduced on the fly to each source's best similarity
   and anchor (ties: lowest anchor index), split over anchor ranges; the resident one keeps its
   source tile on chip across the anchor tiles (the nested one reloads it per tile and spills);
   with ``match_radius = R > 0`` the same kernels scan only the window rows within R of a tile's
   sources and mask every anchor outside a source's (2R+1)^2 windows (O(N R) work);
5. ``radix_hist_kernel`` x 4, ``tie_count_kernel``, ``source_slots_kernel``: a radix select (8-bit
   digits of the float's order-preserving bits, or 11-bit in 3 passes; histograms over all
   programs) of the r-th largest similarity; sources above it, and the first ties by token index,
   merge (a stable descending sort's choice); per-chunk counts give every kept source its rank
   without a global scan. With one similarity split the similarity kernel adds the first
   digit's histogram itself, and ``unit_rows_kernel`` zeroes the histograms (``launch.PLAN_FUSION``);
   a plan that builds its merge groups has the select count them.
   Up to ``launch.SMALL_SELECT`` sources ``small_select_kernel`` does all of step 5 in one program
   per sample (a sort of (similarity, index) keys in registers): one launch instead of six and a
   memset, which is what a plan of few tokens costs on the host (DiT-XL/2 at 512 px: 0.12 ms of GPU
   work took 0.30 ms, docs/benchmarks.md). Above it, outside CUDA-graph captures,
   ``one_program_select_kernel`` walks the same radix select with one program per sample (one
   launch; ``launch.select_path``).

``merge_kernel`` + ``finish_merge_kernel`` are the segment mean (kept sources copied, anchors
accumulated in float32 with atomics); ``group_*_kernel`` build a plan's token groups once (the
select's counts, or ``group_count_kernel`` from a slot map) and ``grouped_merge_kernel`` is the
mean as one gather launch (the default); ``gather_rows_kernel`` the unmerge
and ``kv_pool_kernel`` IE-KVD in one pass. Everything agrees with :mod:`bigain_export.ops.reference` up to float
summation order (the CPU tests run these kernels under Triton's interpreter).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def laplacian_score_kernel(x_ptr, score_ptr, N, C, H, W, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_t, b = tl.program_id(0), tl.program_id(1)
    tok = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    valid = tok < N
    y, xcol = tok // W, tok % W
    base = x_ptr + b.to(tl.int64) * N * C
    acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        cmask = ch[None, :] < C
        rows = tok[:, None] * C + ch[None, :]
        centre = tl.load(base + rows, mask=valid[:, None] & cmask, other=0.0).to(tl.float32)
        up = tl.load(base + rows - W * C, mask=(valid & (y > 0))[:, None] & cmask, other=0.0).to(tl.float32)
        down = tl.load(base + rows + W * C, mask=(valid & (y < H - 1))[:, None] & cmask, other=0.0).to(tl.float32)
        left = tl.load(base + rows - C, mask=(valid & (xcol > 0))[:, None] & cmask, other=0.0).to(tl.float32)
        right = tl.load(base + rows + C, mask=(valid & (xcol < W - 1))[:, None] & cmask, other=0.0).to(tl.float32)
        lap = up + down + left + right - 4.0 * centre
        acc += tl.sum(tl.abs(lap), axis=1)
    tl.store(score_ptr + b * N + tok, acc, mask=valid)


@triton.jit
def anchor_rows_kernel(score_ptr, given_ptr, given_batch_stride, offsets_ptr, top_ptr, N, W, HS, WS,
                       MODE: tl.constexpr, BLOCK_W: tl.constexpr):
    """One window row per program: each window's anchor offset (0..3) and, for the sources'
    positions, the exclusive prefix count of windows whose anchor sits in the TOP row
    (``top[b, i, j]`` for j = 0..WS; ``top[b, i, WS]`` is the row's total).

    MODE 0: argmin of the 4 scores of the 2x2 window (the paper); 1: the released code's 4
    row-major-consecutive tokens of the cropped grid; 2: offsets given (ToMe fixed / random).
    """
    i, b = tl.program_id(0), tl.program_id(1)
    j = tl.arange(0, BLOCK_W)
    valid = j < WS
    k = i * WS + j
    if MODE == 2:
        best_off = tl.load(given_ptr + b * given_batch_stride + k, mask=valid, other=0).to(tl.int32)
    else:
        best = tl.full([BLOCK_W], float("inf"), tl.float32)
        best_off = tl.zeros([BLOCK_W], dtype=tl.int32)
        for o in tl.static_range(4):
            if MODE == 1:
                p = 4 * k + o
                tok = (p // (2 * WS)) * W + p % (2 * WS)
            else:
                tok = (2 * i + o // 2) * W + 2 * j + o % 2
            sc = tl.load(score_ptr + b * N + tok, mask=valid, other=float("inf"))
            better = sc < best  # strict: ties keep the first offset
            best = tl.where(better, sc, best)
            best_off = tl.where(better, o, best_off)
    tl.store(offsets_ptr + b * HS * WS + k, best_off, mask=valid)
    is_top = (valid & (best_off < 2)).to(tl.int32)
    inclusive = tl.cumsum(is_top, axis=0)
    tl.store(top_ptr + (b * HS + i) * (WS + 1) + j, inclusive - is_top, mask=valid)
    tl.store(top_ptr + (b * HS + i) * (WS + 1) + WS, tl.sum(is_top, axis=0))


@triton.jit
def _token_rows(tok, offsets_ptr, top_ptr, b, W, HS, WS):
    """Per token: (is_anchor, window, source position in token order) from the anchor rows."""
    y, xcol = tok // W, tok % W
    pair = y // 2
    in_pairs = y < 2 * HS
    complete = in_pairs & (xcol < 2 * WS)
    j = tl.minimum(xcol // 2, WS)
    window = pair * WS + tl.minimum(j, WS - 1)
    off = tl.load(offsets_ptr + b * HS * WS + window, mask=complete, other=-1)
    is_anchor = complete & (off == (y % 2) * 2 + xcol % 2)
    row_base = top_ptr + (b * HS + pair) * (WS + 1)
    top_before = tl.load(row_base + j, mask=in_pairs, other=0)
    top_total = tl.load(row_base + WS, mask=in_pairs, other=0)
    odd_col = complete & (xcol % 2 == 1)
    in_top_row = (y % 2) == 0
    # anchors before this token within its pair of rows (top row first, then bottom row)
    within = tl.where(in_top_row, top_before + (odd_col & (off == 0)).to(tl.int32),
                      top_total + (j - top_before) + (odd_col & (off == 2)).to(tl.int32))
    anchors_before = tl.where(in_pairs, pair * WS + within, HS * WS)
    return is_anchor, window, tok - anchors_before


@triton.jit
def unit_rows_kernel(x_ptr, offsets_ptr, top_ptr, out_ptr, src_tok_ptr, slot_ptr, zero_ptr, ZERO_N, N, C, W, HS,
                     WS, KEPT, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, ZERO_BLOCK: tl.constexpr):
    """Rows normalised in float32 (rounded to the model dtype) into ``[sources | anchors]`` order;
    each source's token; each anchor's slot (``KEPT + window``). Also zeroes the plan's
    ``ZERO_N`` int32 counters at ``zero_ptr`` (radix histograms, group counts), which later
    launches of the plan add to: a memset launch fewer."""
    pid_t, b = tl.program_id(0), tl.program_id(1)
    programs = tl.num_programs(0) * tl.num_programs(1)
    for z0 in range((b * tl.num_programs(0) + pid_t) * ZERO_BLOCK, ZERO_N, programs * ZERO_BLOCK):
        z = z0 + tl.arange(0, ZERO_BLOCK)
        tl.store(zero_ptr + z, 0, mask=z < ZERO_N)
    tok = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    valid = tok < N
    num_src = N - HS * WS
    is_anchor, window, src_pos = _token_rows(tok, offsets_ptr, top_ptr, b, W, HS, WS)
    row = tl.where(is_anchor, num_src + window, src_pos)
    tl.store(src_tok_ptr + b * num_src + src_pos, tok, mask=valid & (~is_anchor))
    tl.store(slot_ptr + b * N + tok, (KEPT + window).to(tl.int64), mask=valid & is_anchor)
    base = x_ptr + b.to(tl.int64) * N * C
    sq = tl.zeros([BLOCK_T], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        m = valid[:, None] & (ch[None, :] < C)
        v = tl.load(base + tok[:, None] * C + ch[None, :], mask=m, other=0.0).to(tl.float32)
        sq += tl.sum(v * v, axis=1)
    inv = 1.0 / tl.sqrt(tl.where(valid, sq, 1.0))  # a zero row gives inf/NaN, as the reference
    out = out_ptr + b.to(tl.int64) * N * C
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        m = valid[:, None] & (ch[None, :] < C)
        v = tl.load(base + tok[:, None] * C + ch[None, :], mask=m, other=0.0).to(tl.float32)
        tl.store(out + row[:, None].to(tl.int64) * C + ch[None, :], (v * inv[:, None]).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _dot(a, b, acc, IEEE: tl.constexpr):
    """``acc + a @ b`` on tensor cores; exact float32 products where IEEE (float32 inputs)."""
    if IEEE:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _anchor_range(src_tok_ptr, b, pid_m, split, NUM_SRC, NUM_DST, DST_PER_SPLIT, W, HS, WS,
                  R: tl.constexpr, BLOCK_M: tl.constexpr):
    """Anchors ``[start, stop)`` this program compares its sources with: its split of all anchors
    (R = 0), or the window rows within R of its sources' own windows (``match_radius = R``;
    sources are in token order, so their window rows run from the first source's to the last's)."""
    d_start = split * DST_PER_SPLIT
    d_stop = tl.minimum(d_start + DST_PER_SPLIT, NUM_DST)
    if R > 0:
        first = tl.load(src_tok_ptr + b * NUM_SRC + pid_m * BLOCK_M)
        last = tl.load(src_tok_ptr + b * NUM_SRC + tl.minimum(pid_m * BLOCK_M + BLOCK_M, NUM_SRC) - 1)
        d_start = tl.maximum(tl.minimum((first // W) // 2, HS - 1) - R, 0) * WS
        d_stop = (tl.minimum(tl.minimum((last // W) // 2, HS - 1) + R, HS - 1) + 1) * WS
    return d_start, d_stop


@triton.jit
def _own_windows(src_tok_ptr, b, NUM_SRC, rows, row_ok, W, HS, WS, R: tl.constexpr):
    """Each source's own window (row, column); an odd grid's last row or column joins the window
    beside it. Not loaded (zeros) for R = 0."""
    own_y = rows * 0
    own_x = rows * 0
    if R > 0:
        tok = tl.load(src_tok_ptr + b * NUM_SRC + rows, mask=row_ok, other=0)
        own_y = tl.minimum((tok // W) // 2, HS - 1)
        own_x = tl.minimum((tok % W) // 2, WS - 1)
    return own_y, own_x


@triton.jit
def _candidates(own_y, own_x, cols, col_ok, WS, R: tl.constexpr):
    """``[BLOCK_M, BLOCK_N]``: which anchors (window indices ``cols``) each source may merge into:
    every valid one (R = 0), or the windows within R rows and columns of the source's own window
    (``reference.match_candidates``: its clamped candidates are exactly these windows)."""
    ok = col_ok[None, :] & (own_y[:, None] >= 0)  # (always true: broadcasts to [BLOCK_M, BLOCK_N])
    if R > 0:
        dy = cols[None, :] // WS - own_y[:, None]
        dx = cols[None, :] % WS - own_x[:, None]
        ok = ok & (dy <= R) & (dy >= -R) & (dx <= R) & (dx >= -R)
    return ok


@triton.jit
def _fold_anchor_tile(acc, ok, d0, best, best_idx):
    """Each source's running best (similarity, anchor) after the tile of anchors from ``d0``, over
    the pairs ``ok`` allows (ties: the lowest anchor index, within the tile and against earlier
    tiles)."""
    acc = tl.where(ok, acc, float("-inf"))
    tile_best, tile_idx = tl.max(acc, axis=1, return_indices=True, return_indices_tie_break_left=True)
    better = tile_best > best  # strict: an earlier tile (lower anchor index) wins ties
    return tl.where(better, tile_best, best), tl.where(better, d0 + tile_idx, best_idx)


@triton.jit
def _store_best(sim_ptr, idx_ptr, hist_ptr, b, split, NUM_SRC, rows, row_ok, best, best_idx, HIST: tl.constexpr,
                BITS: tl.constexpr, PASSES: tl.constexpr):
    """Each source's best (similarity, anchor) of this split; with HIST (one split: these are the
    final similarities) also the radix select's first digit histogram (``radix_hist_kernel``'s
    pass 0, a launch fewer)."""
    out = (b * tl.num_programs(1) + split) * NUM_SRC + rows
    best = best + 0.0  # turns -0.0 into +0.0 (one key for zero)
    tl.store(sim_ptr + out, best, mask=row_ok)
    tl.store(idx_ptr + out, best_idx, mask=row_ok)
    if HIST:
        _add_digit_histogram(hist_ptr, b, _order_key(best), row_ok, 0, BITS, PASSES)


@triton.jit
def best_anchor_kernel(units_ptr, src_tok_ptr, sim_ptr, idx_ptr, hist_ptr, N, C, NUM_SRC, NUM_DST, DST_PER_SPLIT, W,
                       HS, WS, R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       IEEE: tl.constexpr, HIST: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr):
    """Partial best anchor of BLOCK_M sources over anchors [split * DST_PER_SPLIT, ...), or with
    ``match_radius = R > 0`` over the candidate windows of each source (:func:`_anchor_range`)."""
    pid_m, split, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < NUM_SRC
    base = units_ptr + b.to(tl.int64) * N * C
    dst_base = base + NUM_SRC * C
    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
    own_y, own_x = _own_windows(src_tok_ptr, b, NUM_SRC, rows, row_ok, W, HS, WS, R)
    d_start, d_stop = _anchor_range(src_tok_ptr, b, pid_m, split, NUM_SRC, NUM_DST, DST_PER_SPLIT, W, HS, WS,
                                    R, BLOCK_M)
    for d0 in range(d_start, d_stop, BLOCK_N):
        cols = d0 + tl.arange(0, BLOCK_N)
        col_ok = cols < d_stop
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < C
            a = tl.load(base + rows[:, None] * C + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            bt = tl.load(dst_base + cols[None, :] * C + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0.0)
            acc = _dot(a, bt, acc, IEEE)
        best, best_idx = _fold_anchor_tile(acc, _candidates(own_y, own_x, cols, col_ok, WS, R), d0, best, best_idx)
    _store_best(sim_ptr, idx_ptr, hist_ptr, b, split, NUM_SRC, rows, row_ok, best, best_idx, HIST, BITS, PASSES)


@triton.jit
def best_anchor_resident_kernel(units_ptr, src_tok_ptr, sim_ptr, idx_ptr, hist_ptr, N, NUM_SRC, NUM_DST,
                                DST_PER_SPLIT, W, HS, WS, C: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr,
                                R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
                                HIST: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr):
    """:func:`best_anchor_kernel` with the BLOCK_M source rows loaded once and kept on chip across
    the anchor tiles (as flash attention keeps its queries): one loop over anchor tiles, whose
    next tile the pipeliner prefetches, instead of a channel loop nested in it that reloads the
    sources for every tile. The channels are ``K0 + K1`` (powers of two; ``K1`` may be 0), so
    that a ``C`` of 320 needs no padding to 512."""
    pid_m, split, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < NUM_SRC
    base = units_ptr + b.to(tl.int64) * N * C
    dst_base = base + NUM_SRC * C
    k0 = tl.arange(0, K0)
    a0 = tl.load(base + rows[:, None] * C + k0[None, :], mask=row_ok[:, None], other=0.0)
    if K1 > 0:
        k1 = K0 + tl.arange(0, K1)
        a1 = tl.load(base + rows[:, None] * C + k1[None, :], mask=row_ok[:, None], other=0.0)
    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
    own_y, own_x = _own_windows(src_tok_ptr, b, NUM_SRC, rows, row_ok, W, HS, WS, R)
    d_start, d_stop = _anchor_range(src_tok_ptr, b, pid_m, split, NUM_SRC, NUM_DST, DST_PER_SPLIT, W, HS, WS,
                                    R, BLOCK_M)
    for d0 in range(d_start, d_stop, BLOCK_N):
        cols = d0 + tl.arange(0, BLOCK_N)
        col_ok = cols < d_stop
        b0 = tl.load(dst_base + cols[None, :] * C + k0[:, None], mask=col_ok[None, :], other=0.0)
        acc = _dot(a0, b0, tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), IEEE)
        if K1 > 0:
            b1 = tl.load(dst_base + cols[None, :] * C + k1[:, None], mask=col_ok[None, :], other=0.0)
            acc = _dot(a1, b1, acc, IEEE)
        best, best_idx = _fold_anchor_tile(acc, _candidates(own_y, own_x, cols, col_ok, WS, R), d0, best, best_idx)
    _store_best(sim_ptr, idx_ptr, hist_ptr, b, split, NUM_SRC, rows, row_ok, best, best_idx, HIST, BITS, PASSES)


@triton.jit
def _order_key(sim):
    """float32 -> int64 in [0, 2^32) with the same order (non-NaN)."""
    bits = sim.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, (~bits).to(tl.int64), bits.to(tl.int64) + 2147483648)


# The radix select reads a key as PASSES digits of BITS bits from the top (PASSES * BITS >= 32:
# 4 x 8, or 3 x 11 over a 33-bit key whose top bit is 0); the histograms are [B, PASSES, 2^BITS].
@triton.jit
def _digit(key, p: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr):
    return (key >> (PASSES * BITS - BITS * (p + 1))) & ((1 << BITS) - 1)


@triton.jit
def _has_prefix(key, prefix, p: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr):
    """Whether the first p digits of ``key`` are ``prefix``."""
    return (key >> (PASSES * BITS - BITS * p)) == prefix


@triton.jit
def _digit_histogram(key, match, p: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr):
    """``[2^(BITS+1)]``: the histogram of digit p of the keys ``match`` selects in its first
    2^BITS bins (the others count the keys left out)."""
    digit = tl.where(match, _digit(key, p, BITS, PASSES), 1 << BITS).to(tl.int32)
    return tl.histogram(digit, 2 << BITS)


@triton.jit
def _add_digit_histogram(hist_ptr, b, key, match, p: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr):
    """Adds the histogram of digit p of the keys ``match`` selects to pass p's global one."""
    hist = _digit_histogram(key, match, p, BITS, PASSES)
    bins = tl.arange(0, 2 << BITS)
    tl.atomic_add(hist_ptr + (b * PASSES + p) * (1 << BITS) + bins, hist, mask=(bins < (1 << BITS)) & (hist > 0),
                  sem="relaxed")


@triton.jit
def _choose_digit(hist, bins, need):
    """The digit whose bin holds the need-th largest key (bins past the digit range must be
    empty), and that key's rank among the keys in the bin."""
    from_top = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0) + hist  # keys with digit >= bin
    chosen = tl.maximum(tl.sum((from_top >= need).to(tl.int32), axis=0) - 1, 0)
    need = need - tl.sum(tl.where(bins == chosen, from_top - hist, 0), axis=0)
    return chosen, need


@triton.jit
def _select_state(hist_ptr, b, R, DONE: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr):
    """(prefix, need) after DONE radix digits: the key prefix of the R-th largest key, and its
    rank among the keys sharing that prefix."""
    bins = tl.arange(0, 1 << BITS)
    prefix = tl.zeros([], dtype=tl.int64)
    need = tl.zeros([], dtype=tl.int32) + R
    for p in tl.static_range(DONE):
        chosen, need = _choose_digit(tl.load(hist_ptr + (b * PASSES + p) * (1 << BITS) + bins), bins, need)
        prefix = prefix * (1 << BITS) + chosen.to(tl.int64)
    return prefix, need


@triton.jit
def _join_splits(sims, idxs, s, ok, NUM_SRC, NUM_SPLITS):
    """Each source's best over the similarity splits (a lower split holds lower anchors: it wins
    ties), written back over split 0."""
    best = tl.full(s.shape, float("-inf"), tl.float32)
    best_idx = tl.zeros(s.shape, dtype=tl.int32)
    for split in range(0, NUM_SPLITS):
        v = tl.load(sims + split * NUM_SRC + s, mask=ok, other=float("-inf"))
        i = tl.load(idxs + split * NUM_SRC + s, mask=ok, other=0)
        better = v > best
        best = tl.where(better, v, best)
        best_idx = tl.where(better, i, best_idx)
    tl.store(sims + s, best, mask=ok)
    tl.store(idxs + s, best_idx, mask=ok)
    return best


@triton.jit
def _count_groups(counts_ptr, b, NUM_DST, dst, merged, COUNT: tl.constexpr):
    """With COUNT: each merged source adds 1 to its anchor's group count (``counts [B, NUM_DST + 1]``,
    zeroed beforehand; ``group_starts_kernel(SELF=True)`` adds the anchor itself)."""
    if COUNT:
        take = tl.where(merged, 1, 0) != 0  # a fresh int1: Triton's interpreter (3.9) refused `merged` itself
        # as an atomic's mask ("mask has unsupported dtype")
        tl.atomic_add(counts_ptr + b * (NUM_DST + 1) + dst, 1, mask=take, sem="relaxed")


@triton.jit
def radix_hist_kernel(sim_ptr, idx_ptr, hist_ptr, NUM_SRC, NUM_SPLITS, R, PASS: tl.constexpr, BLOCK: tl.constexpr,
                      BITS: tl.constexpr, PASSES: tl.constexpr):
    """Histogram of digit PASS of the keys matching the prefix so far. Pass 0 also joins the
    similarity splits (a lower split holds lower anchors: it wins ties)."""
    pid, b = tl.program_id(0), tl.program_id(1)
    s = pid * BLOCK + tl.arange(0, BLOCK)
    ok = s < NUM_SRC
    sims = sim_ptr + b * NUM_SPLITS * NUM_SRC
    if PASS == 0:
        key = _order_key(_join_splits(sims, idx_ptr + b * NUM_SPLITS * NUM_SRC, s, ok, NUM_SRC, NUM_SPLITS))
        match = ok
    else:
        prefix, need = _select_state(hist_ptr, b, R, PASS, BITS, PASSES)
        key = _order_key(tl.load(sims + s, mask=ok, other=0.0))
        match = ok & _has_prefix(key, prefix, PASS, BITS, PASSES)
    _add_digit_histogram(hist_ptr, b, key, match, PASS, BITS, PASSES)


@triton.jit
def tie_count_kernel(sim_ptr, hist_ptr, counts_ptr, NUM_SRC, NUM_SPLITS, R, NUM_CHUNKS, BLOCK: tl.constexpr,
                     BITS: tl.constexpr, PASSES: tl.constexpr):
    """Per chunk of sources: how many keys are above the threshold T and how many equal it."""
    pid, b = tl.program_id(0), tl.program_id(1)
    s = pid * BLOCK + tl.arange(0, BLOCK)
    ok = s < NUM_SRC
    prefix, need = _select_state(hist_ptr, b, R, PASSES, BITS, PASSES)
    key = _order_key(tl.load(sim_ptr + b * NUM_SPLITS * NUM_SRC + s, mask=ok, other=0.0))
    tl.store(counts_ptr + (b * 2) * NUM_CHUNKS + pid, tl.sum((ok & (key > prefix)).to(tl.int32), axis=0))
    tl.store(counts_ptr + (b * 2 + 1) * NUM_CHUNKS + pid, tl.sum((ok & (key == prefix)).to(tl.int32), axis=0))


@triton.jit
def source_slots_kernel(sim_ptr, idx_ptr, hist_ptr, counts_ptr, src_tok_ptr, slot_ptr, groups_ptr, N, NUM_SRC,
                        NUM_SPLITS, R, NUM_CHUNKS, NUM_DST, BLOCK: tl.constexpr, MAX_CHUNKS: tl.constexpr,
                        BITS: tl.constexpr, PASSES: tl.constexpr, COUNT: tl.constexpr):
    """Merged = key > T, or key == T among the first `need` ties (lower index first); slots of
    the sources: merged -> KEPT + best anchor, kept -> their rank in token order."""
    pid, b = tl.program_id(0), tl.program_id(1)
    s = pid * BLOCK + tl.arange(0, BLOCK)
    ok = s < NUM_SRC
    prefix, need = _select_state(hist_ptr, b, R, PASSES, BITS, PASSES)
    chunks = tl.arange(0, MAX_CHUNKS)
    before = chunks < pid
    gt_before = tl.sum(tl.load(counts_ptr + (b * 2) * NUM_CHUNKS + chunks, mask=before, other=0), axis=0)
    eq_before = tl.sum(tl.load(counts_ptr + (b * 2 + 1) * NUM_CHUNKS + chunks, mask=before, other=0), axis=0)
    merged_before = gt_before + tl.minimum(eq_before, need)
    key = _order_key(tl.load(sim_ptr + b * NUM_SPLITS * NUM_SRC + s, mask=ok, other=0.0))
    eq = ok & (key == prefix)
    eq_rank = eq_before + tl.cumsum(eq.to(tl.int32), axis=0)
    merged = ok & ((key > prefix) | (eq & (eq_rank <= need))) & (R > 0)
    kept = ok & (~merged)
    kept_pos = (pid * BLOCK - merged_before) + tl.cumsum(kept.to(tl.int32), axis=0) - 1
    dst = tl.load(idx_ptr + b * NUM_SPLITS * NUM_SRC + s, mask=ok, other=0)
    slot = tl.where(merged, (NUM_SRC - R) + dst, kept_pos).to(tl.int64)
    tok = tl.load(src_tok_ptr + b * NUM_SRC + s, mask=ok, other=0)
    tl.store(slot_ptr + b * N + tok, slot, mask=ok)
    _count_groups(groups_ptr, b, NUM_DST, dst, merged, COUNT)


@triton.jit
def one_program_select_kernel(sim_ptr, idx_ptr, src_tok_ptr, slot_ptr, groups_ptr, N, NUM_SRC, NUM_SPLITS, R,
                              NUM_DST, BLOCK: tl.constexpr, BITS: tl.constexpr, PASSES: tl.constexpr,
                              COUNT: tl.constexpr):
    """Step 5 for one sample in ONE launch at any size: the radix select's digit passes
    (histograms in registers, chunk by chunk), then the slots in token order with the merged and
    tie counts carried from chunk to chunk. The same choice as the radix select's launches
    (and a stable descending sort): on the host, one launch instead of several and a memset."""
    b = tl.program_id(0)
    sims = sim_ptr + b * NUM_SPLITS * NUM_SRC
    idxs = idx_ptr + b * NUM_SPLITS * NUM_SRC
    bins = tl.arange(0, 2 << BITS)
    prefix = tl.zeros([], dtype=tl.int64)
    need = tl.zeros([], dtype=tl.int32) + R
    for p in tl.static_range(PASSES):
        hist = tl.zeros([2 << BITS], dtype=tl.int32)
        for c0 in range(0, NUM_SRC, BLOCK):
            s = c0 + tl.arange(0, BLOCK)
            ok = s < NUM_SRC
            if p == 0:
                key = _order_key(_join_splits(sims, idxs, s, ok, NUM_SRC, NUM_SPLITS))
                match = ok
            else:
                key = _order_key(tl.load(sims + s, mask=ok, other=0.0))
                match = ok & _has_prefix(key, prefix, p, BITS, PASSES)
            hist += _digit_histogram(key, match, p, BITS, PASSES)
        if p == 0:
            tl.debug_barrier()  # the joined splits, written above, are read back by other threads
        chosen, need = _choose_digit(tl.where(bins < (1 << BITS), hist, 0), bins, need)
        prefix = prefix * (1 << BITS) + chosen.to(tl.int64)
    merged_before = tl.zeros([], dtype=tl.int32)
    eq_before = tl.zeros([], dtype=tl.int32)
    for c0 in range(0, NUM_SRC, BLOCK):
        s = c0 + tl.arange(0, BLOCK)
        ok = s < NUM_SRC
        key = _order_key(tl.load(sims + s, mask=ok, other=0.0))
        eq = ok & (key == prefix)
        eq_rank = eq_before + tl.cumsum(eq.to(tl.int32), axis=0)
        merged = ok & ((key > prefix) | (eq & (eq_rank <= need))) & (R > 0)
        kept = ok & (~merged)
        kept_pos = (c0 - merged_before) + tl.cumsum(kept.to(tl.int32), axis=0) - 1
        dst = tl.load(idxs + s, mask=ok, other=0)
        slot = tl.where(merged, (NUM_SRC - R) + dst, kept_pos).to(tl.int64)
        tok = tl.load(src_tok_ptr + b * NUM_SRC + s, mask=ok, other=0)
        tl.store(slot_ptr + b * N + tok, slot, mask=ok)
        _count_groups(groups_ptr, b, NUM_DST, dst, merged, COUNT)
        merged_before += tl.sum(merged.to(tl.int32), axis=0)
        eq_before += tl.sum(eq.to(tl.int32), axis=0)


@triton.jit
def small_select_kernel(sim_ptr, idx_ptr, src_tok_ptr, slot_ptr, groups_ptr, N, NUM_SRC, NUM_SPLITS, R, NUM_DST,
                        BLOCK: tl.constexpr, COUNT: tl.constexpr):
    """Step 5 for one sample in one program: join the similarity splits (a lower split holds lower
    anchors: it wins ties), merge the R sources first in a stable descending sort of their best
    similarity (ties: lower source index first), give kept sources their rank in token order."""
    b = tl.program_id(0)
    s = tl.arange(0, BLOCK)
    ok = s < NUM_SRC
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK], dtype=tl.int32)
    for split in range(0, NUM_SPLITS):
        v = tl.load(sim_ptr + (b * NUM_SPLITS + split) * NUM_SRC + s, mask=ok, other=float("-inf"))
        i = tl.load(idx_ptr + (b * NUM_SPLITS + split) * NUM_SRC + s, mask=ok, other=0)
        better = v > best
        best = tl.where(better, v, best)
        best_idx = tl.where(better, i, best_idx)
    # One distinct int64 per source, ordered as the stable descending sort wants: the order key
    # (shifted into int32 range) in the high half, 2^32 - 1 - index (lower index = larger) below.
    ranked = (_order_key(best) - 2147483648) * 4294967296 + (4294967295 - s.to(tl.int64))
    ranked = tl.where(ok, ranked, -9223372036854775807 - 1)  # padding sorts last
    ordered = tl.sort(ranked, descending=True)
    threshold = tl.max(tl.where(s == R - 1, ordered, -9223372036854775807 - 1), axis=0)  # the R-th largest
    merged = ok & (ranked >= threshold) & (R > 0)
    kept = ok & (~merged)
    kept_pos = tl.cumsum(kept.to(tl.int32), axis=0) - 1
    slot = tl.where(merged, (NUM_SRC - R) + best_idx, kept_pos).to(tl.int64)
    tok = tl.load(src_tok_ptr + b * NUM_SRC + s, mask=ok, other=0)
    tl.store(slot_ptr + b * N + tok, slot, mask=ok)
    _count_groups(groups_ptr, b, NUM_DST, best_idx, merged, COUNT)


@triton.jit
def _row_tile(ROWS, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile of a ``[B, ROWS, C]`` tensor (grid: row blocks, channel blocks, batch):
    ``(b, rows [BLOCK_T], channels [BLOCK_C], row mask, tile mask)``."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < ROWS
    return tl.program_id(2), rows, ch, row_ok, row_ok[:, None] & (ch[None, :] < C)


@triton.jit
def gather_rows_kernel(y_ptr, slot_ptr, out_ptr, N, C, NUM_IN, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Unmerge: ``out[b, n] = y[b, slot[b, n]]``."""
    b, tok, ch, valid, m = _row_tile(N, C, BLOCK_T, BLOCK_C)
    slot = tl.load(slot_ptr + b * N + tok, mask=valid, other=0)
    v = tl.load(y_ptr + b.to(tl.int64) * NUM_IN * C + slot[:, None] * C + ch[None, :], mask=m, other=0.0)
    tl.store(out_ptr + b.to(tl.int64) * N * C + tok[:, None] * C + ch[None, :], v, mask=m)


@triton.jit
def merge_kernel(x_ptr, slot_ptr, out_ptr, acc_ptr, N, C, NUM_OUT, KEPT, NUM_DST, COUNTS_AT,
                 BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Kept sources are copied to their row; anchors and merged sources are summed in float32
    (atomics) and counted, for :func:`finish_merge_kernel` to divide. ``acc`` holds the sums
    ``[B, NUM_DST, C]`` and, from ``COUNTS_AT`` on, the counts ``[B, NUM_DST]`` (one zeroed buffer:
    one memset)."""
    b, tok, ch, valid, m = _row_tile(N, C, BLOCK_T, BLOCK_C)
    count_ptr = acc_ptr + COUNTS_AT
    slot = tl.load(slot_ptr + b * N + tok, mask=valid, other=0)
    v = tl.load(x_ptr + b.to(tl.int64) * N * C + tok[:, None] * C + ch[None, :], mask=m, other=0.0)
    is_kept = slot < KEPT
    out_rows = out_ptr + b.to(tl.int64) * NUM_OUT * C + slot[:, None] * C + ch[None, :]
    tl.store(out_rows, v, mask=m & is_kept[:, None])
    anchor = tl.where(is_kept, 0, slot - KEPT)
    acc_rows = acc_ptr + b.to(tl.int64) * NUM_DST * C + anchor[:, None] * C + ch[None, :]
    # relaxed: the sums need no ordering among themselves (the default, acq_rel, fences every
    # atomic); the kernel boundary orders them before finish_merge_kernel reads
    tl.atomic_add(acc_rows, v.to(tl.float32), mask=m & (~is_kept)[:, None], sem="relaxed")
    if tl.program_id(1) == 0:  # one channel block counts
        tl.atomic_add(count_ptr + b * NUM_DST + anchor, 1.0, mask=valid & (~is_kept), sem="relaxed")


@triton.jit
def finish_merge_kernel(acc_ptr, out_ptr, C, NUM_OUT, KEPT, NUM_DST, COUNTS_AT,
                        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    b, k, ch, k_ok, m = _row_tile(NUM_DST, C, BLOCK_T, BLOCK_C)
    count_ptr = acc_ptr + COUNTS_AT
    count = tl.load(count_ptr + b * NUM_DST + k, mask=k_ok, other=1.0)
    v = tl.load(acc_ptr + b.to(tl.int64) * NUM_DST * C + k[:, None] * C + ch[None, :], mask=m, other=0.0)
    v = v / count[:, None]
    out_rows = out_ptr + b.to(tl.int64) * NUM_OUT * C + (KEPT + k)[:, None] * C + ch[None, :]
    tl.store(out_rows, v.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def group_count_kernel(slot_ptr, counts_ptr, N, KEPT, NUM_DST, BLOCK_T: tl.constexpr):
    """Tokens per anchor row (``counts [B, NUM_DST + 1]``, zeroed by the launcher)."""
    pid, b = tl.program_id(0), tl.program_id(1)
    tok = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    ok = tok < N
    s = tl.load(slot_ptr + b * N + tok, mask=ok, other=0)
    to_anchor = ok & (s >= KEPT)
    tl.atomic_add(counts_ptr + b * (NUM_DST + 1) + (s - KEPT), 1, mask=to_anchor, sem="relaxed")


@triton.jit
def group_starts_kernel(counts_ptr, starts_ptr, N, KEPT, NUM_DST, BLOCK: tl.constexpr, SELF: tl.constexpr):
    """One program per sample: ``starts[a] = KEPT + tokens of the anchor rows before a`` and
    ``starts[NUM_DST] = N``; the counts become each group's fill cursor (its start). SELF: the
    counts are of merged sources only (counted by the select), each group's anchor adds 1."""
    b = tl.program_id(0)
    row = b * (NUM_DST + 1)
    carry = tl.zeros([], dtype=tl.int32) + KEPT
    for a0 in range(0, NUM_DST, BLOCK):
        a = a0 + tl.arange(0, BLOCK)
        ok = a < NUM_DST
        count = tl.load(counts_ptr + row + a, mask=ok, other=0)
        if SELF:
            count += ok.to(tl.int32)
        start = carry + tl.cumsum(count, axis=0) - count
        tl.store(starts_ptr + row + a, start, mask=ok)
        tl.store(counts_ptr + row + a, start, mask=ok)
        carry += tl.sum(count, axis=0)
    tl.store(starts_ptr + row + NUM_DST, N)


@triton.jit
def group_fill_kernel(slot_ptr, cursor_ptr, members_ptr, N, KEPT, NUM_DST, BLOCK_T: tl.constexpr):
    """Every token into its row's group: a kept source at its row, a token of an anchor row at
    the next free place of that row's group (in any order: a merge sums in float32)."""
    pid, b = tl.program_id(0), tl.program_id(1)
    tok = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    ok = tok < N
    s = tl.load(slot_ptr + b * N + tok, mask=ok, other=0)
    to_anchor = ok & (s >= KEPT)
    place = tl.atomic_add(cursor_ptr + b * (NUM_DST + 1) + (s - KEPT), 1, mask=to_anchor, sem="relaxed")
    place = tl.where(to_anchor, place, s)
    tl.store(members_ptr + b * N + place, tok, mask=ok)


@triton.jit
def grouped_merge_kernel(x_ptr, members_ptr, starts_ptr, out_ptr, N, C, NUM_OUT, KEPT, NUM_DST,
                         BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """The segment mean of :func:`merge_kernel` as one gather per output row, from groups built
    once per plan (``group_*_kernel``): no zeroed buffer, atomics or second launch."""
    b, o, ch, o_ok, m = _row_tile(NUM_OUT, C, BLOCK_T, BLOCK_C)
    to_anchor = o_ok & (o >= KEPT)
    bounds = starts_ptr + b * (NUM_DST + 1) + (o - KEPT)
    begin = tl.where(to_anchor, tl.load(bounds, mask=to_anchor, other=0), o)
    end = tl.where(to_anchor, tl.load(bounds + 1, mask=to_anchor, other=0), o + 1)
    count = tl.where(o_ok, end - begin, 0)
    x_base = x_ptr + b.to(tl.int64) * N * C
    total = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for j in range(0, tl.max(count, axis=0)):
        take = j < count
        tok = tl.load(members_ptr + b * N + begin + j, mask=take, other=0)
        total += tl.load(x_base + tok[:, None] * C + ch[None, :], mask=take[:, None] & m, other=0.0).to(tl.float32)
    mean = total / tl.maximum(count, 1).to(tl.float32)[:, None]
    tl.store(out_ptr + b.to(tl.int64) * NUM_OUT * C + o[:, None] * C + ch[None, :],
             mean.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def kv_pool_kernel(x_ptr, alpha_ptr, alpha_batch_stride, out_ptr, N, C, W, OUT_W, NUM_OUT,
                   S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = mean + alpha * (nearest - mean) over each s x s window (nearest-exact: offset s // 2)."""
    b, o, ch, _, m = _row_tile(NUM_OUT, C, BLOCK_T, BLOCK_C)
    i, j = o // OUT_W, o % OUT_W
    base = x_ptr + b.to(tl.int64) * N * C
    total = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for dy in tl.static_range(S):
        for dx in tl.static_range(S):
            tok = (i * S + dy) * W + j * S + dx
            total += tl.load(base + tok[:, None] * C + ch[None, :], mask=m, other=0.0).to(tl.float32)
    mean = (total / (S * S)).to(x_ptr.dtype.element_ty).to(tl.float32)  # the reference rounds the mean
    near_tok = (i * S + S // 2) * W + j * S + S // 2
    near = tl.load(base + near_tok[:, None] * C + ch[None, :], mask=m, other=0.0).to(tl.float32)
    alpha = tl.load(alpha_ptr + b * alpha_batch_stride).to(x_ptr.dtype.element_ty).to(tl.float32)
    out = mean + alpha * (near - mean)
    tl.store(out_ptr + b.to(tl.int64) * NUM_OUT * C + o[:, None] * C + ch[None, :],
             out.to(out_ptr.dtype.element_ty), mask=m)
