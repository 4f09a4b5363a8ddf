"""Triton kernels of the three BiGain operators (``@triton.jit`` only; launchers in :mod:`.launch`).

The plan of a gated merge is five small kernels and never sorts nor materialises the
``[Ns, Nd]`` similarity matrix:

1. ``laplacian_score_kernel``: ``sum_c |4-neighbour Laplacian|`` per token (zero padding);
2. ``window_offsets_kernel``: per 2x2 window, the argmin offset (``window`` or ``released`` grouping);
3. ``bipartite_rows_kernel`` (one program per sample): which tokens are anchors, the position of
   every source in token order (a running prefix sum) and the anchors' slots;
4. ``unit_rows_kernel``: rows normalised in float32, rounded to the model dtype, scattered into a
   ``[sources | anchors]`` buffer so the similarity kernel reads contiguous rows;
5. ``best_anchor_kernel``: tiles of ``src @ dst^T`` on tensor cores, reduced on the fly to each
   source's best similarity and anchor (ties: lowest anchor index), split over anchor ranges;
6. ``select_kernel`` (one program per sample): joins the splits, finds the r-th largest similarity
   by a 4-pass radix select on the float's order-preserving bits, marks the r merged sources
   (ties: lower token index first, as a stable descending sort), and writes the slot map.

Then ``merge_kernel`` + ``finish_merge_kernel`` are the segment mean (kept sources copied, anchors
accumulated in float32 with atomics), and ``kv_pool_kernel`` is IE-KVD in one pass.
Everything agrees with :mod:`bigain_export.ops.reference` up to float summation order.
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
def window_offsets_kernel(score_ptr, offsets_ptr, N, W, HS, WS, RELEASED: tl.constexpr, BLOCK: tl.constexpr):
    pid, b = tl.program_id(0), tl.program_id(1)
    k = pid * BLOCK + tl.arange(0, BLOCK)
    valid = k < HS * WS
    i, j = k // WS, k % WS
    best = tl.full([BLOCK], float("inf"), tl.float32)
    best_off = tl.zeros([BLOCK], dtype=tl.int32)
    for o in tl.static_range(4):
        if RELEASED:  # the released code: 4 row-major-consecutive tokens of the cropped grid
            p = 4 * k + o
            tok = (p // (2 * WS)) * W + p % (2 * WS)
        else:  # the paper: the 4 tokens of the 2x2 window
            tok = (2 * i + o // 2) * W + 2 * j + o % 2
        s = tl.load(score_ptr + b * N + tok, mask=valid, other=float("inf"))
        better = s < best  # strict: ties keep the first offset
        best = tl.where(better, s, best)
        best_off = tl.where(better, o, best_off)
    tl.store(offsets_ptr + b * HS * WS + k, best_off, mask=valid)


@triton.jit
def bipartite_rows_kernel(offsets_ptr, offsets_batch_stride, row_ptr, src_tok_ptr, slot_ptr,
                          N, W, HS, WS, KEPT, BLOCK: tl.constexpr):
    """Per token: its row in the ``[sources | anchors]`` buffer; per source its token; anchors' slots."""
    b = tl.program_id(0)
    num_src = N - HS * WS
    carry = tl.zeros([], dtype=tl.int32)
    for t0 in range(0, N, BLOCK):
        tok = t0 + tl.arange(0, BLOCK)
        valid = tok < N
        y, xcol = tok // W, tok % W
        complete = valid & (y < 2 * HS) & (xcol < 2 * WS)
        window = (y // 2) * WS + xcol // 2
        off = tl.load(offsets_ptr + b * offsets_batch_stride + window, mask=complete, other=-1)
        is_anchor = complete & (off == (y % 2) * 2 + xcol % 2)
        is_src = valid & (~is_anchor)
        src_pos = carry + tl.cumsum(is_src.to(tl.int32), axis=0) - 1
        row = tl.where(is_anchor, num_src + window, src_pos)
        tl.store(row_ptr + b * N + tok, row, mask=valid)
        tl.store(src_tok_ptr + b * num_src + src_pos, tok, mask=is_src)
        tl.store(slot_ptr + b * N + tok, (KEPT + window).to(tl.int64), mask=is_anchor)
        carry += tl.sum(is_src.to(tl.int32), axis=0)


@triton.jit
def unit_rows_kernel(x_ptr, row_ptr, out_ptr, N, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_t, b = tl.program_id(0), tl.program_id(1)
    tok = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    valid = tok < N
    base = x_ptr + b.to(tl.int64) * N * C
    sq = tl.zeros([BLOCK_T], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        m = valid[:, None] & (ch[None, :] < C)
        v = tl.load(base + tok[:, None] * C + ch[None, :], mask=m, other=0.0).to(tl.float32)
        sq += tl.sum(v * v, axis=1)
    inv = 1.0 / tl.sqrt(tl.where(valid, sq, 1.0))  # a zero row gives inf/NaN, as the reference
    row = tl.load(row_ptr + b * N + tok, mask=valid, other=0)
    out = out_ptr + b.to(tl.int64) * N * C
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        m = valid[:, None] & (ch[None, :] < C)
        v = tl.load(base + tok[:, None] * C + ch[None, :], mask=m, other=0.0).to(tl.float32)
        tl.store(out + row[:, None].to(tl.int64) * C + ch[None, :], (v * inv[:, None]).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def best_anchor_kernel(units_ptr, sim_ptr, idx_ptr, N, C, NUM_SRC, NUM_DST, DST_PER_SPLIT,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       IEEE: tl.constexpr):
    """Partial best anchor of BLOCK_M sources over anchors [split * DST_PER_SPLIT, ...)."""
    pid_m, split, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    num_splits = tl.num_programs(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < NUM_SRC
    base = units_ptr + b.to(tl.int64) * N * C
    dst_base = base + NUM_SRC * C
    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
    d_start = split * DST_PER_SPLIT
    d_stop = tl.minimum(d_start + DST_PER_SPLIT, NUM_DST)
    for d0 in range(d_start, d_stop, BLOCK_N):
        cols = d0 + tl.arange(0, BLOCK_N)
        col_ok = cols < d_stop
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < C
            a = tl.load(base + rows[:, None] * C + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            bt = tl.load(dst_base + cols[None, :] * C + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0.0)
            if IEEE:
                acc = tl.dot(a, bt, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, bt, acc)
        acc = tl.where(col_ok[None, :], acc, float("-inf"))
        tile_best, tile_idx = tl.max(acc, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_best > best  # strict: an earlier tile (lower anchor index) wins ties
        best = tl.where(better, tile_best, best)
        best_idx = tl.where(better, d0 + tile_idx, best_idx)
    out = (b * num_splits + split) * NUM_SRC + rows
    tl.store(sim_ptr + out, best + 0.0, mask=row_ok)  # + 0.0 turns -0.0 into +0.0 (one key for zero)
    tl.store(idx_ptr + out, best_idx, mask=row_ok)


@triton.jit
def _order_key(sim):
    """float32 -> int64 in [0, 2^32) with the same order (non-NaN)."""
    bits = sim.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, (~bits).to(tl.int64), bits.to(tl.int64) + 2147483648)


@triton.jit
def select_kernel(sim_ptr, idx_ptr, src_tok_ptr, slot_ptr, N, NUM_SRC, NUM_SPLITS, R, BLOCK: tl.constexpr):
    """Join the splits, mark the R most similar sources and write the sources' slots."""
    b = tl.program_id(0)
    kept_total = NUM_SRC - R
    # 1. the best anchor over all splits (a lower split holds lower anchor indices: it wins ties)
    for s0 in range(0, NUM_SRC, BLOCK):
        s = s0 + tl.arange(0, BLOCK)
        ok = s < NUM_SRC
        best = tl.full([BLOCK], float("-inf"), tl.float32)
        best_idx = tl.zeros([BLOCK], dtype=tl.int32)
        for split in range(0, NUM_SPLITS):
            off = (b * NUM_SPLITS + split) * NUM_SRC + s
            v = tl.load(sim_ptr + off, mask=ok, other=float("-inf"))
            i = tl.load(idx_ptr + off, mask=ok, other=0)
            better = v > best
            best = tl.where(better, v, best)
            best_idx = tl.where(better, i, best_idx)
        tl.store(sim_ptr + b * NUM_SPLITS * NUM_SRC + s, best, mask=ok)
        tl.store(idx_ptr + b * NUM_SPLITS * NUM_SRC + s, best_idx, mask=ok)
    tl.debug_barrier()
    sims = sim_ptr + b * NUM_SPLITS * NUM_SRC
    dsts = idx_ptr + b * NUM_SPLITS * NUM_SRC
    # 2. radix select (4 digits of 8 bits) of the R-th largest key
    prefix = tl.zeros([], dtype=tl.int64)
    need = tl.zeros([], dtype=tl.int32) + R  # rank still to find among keys sharing the prefix
    bins = tl.arange(0, 512)
    for p in tl.static_range(4):
        shift = 24 - 8 * p
        hist = tl.zeros([512], dtype=tl.int32)
        for s0 in range(0, NUM_SRC, BLOCK):
            s = s0 + tl.arange(0, BLOCK)
            ok = s < NUM_SRC
            key = _order_key(tl.load(sims + s, mask=ok, other=0.0))
            match = ok & ((key >> (shift + 8)) == prefix)
            digit = tl.where(match, (key >> shift) & 255, 256).to(tl.int32)
            hist += tl.histogram(digit, 512)
        hist = tl.where(bins < 256, hist, 0)  # bin 256 collected the non-matching keys
        from_top = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0) + hist  # keys with digit >= bin
        chosen = tl.sum((from_top >= need).to(tl.int32), axis=0) - 1
        chosen = tl.maximum(chosen, 0)
        above = tl.sum(tl.where(bins == chosen, from_top - hist, 0), axis=0)
        need = need - above
        prefix = prefix * 256 + chosen.to(tl.int64)
    # 3. merged = key > T, or key == T among the first `need` ties; then the slots
    carry_eq = tl.zeros([], dtype=tl.int32)
    carry_kept = tl.zeros([], dtype=tl.int32)
    for s0 in range(0, NUM_SRC, BLOCK):
        s = s0 + tl.arange(0, BLOCK)
        ok = s < NUM_SRC
        key = _order_key(tl.load(sims + s, mask=ok, other=0.0))
        eq = ok & (key == prefix)
        eq_rank = carry_eq + tl.cumsum(eq.to(tl.int32), axis=0)
        merged = ok & ((key > prefix) | (eq & (eq_rank <= need))) & (R > 0)
        kept = ok & (~merged)
        kept_pos = carry_kept + tl.cumsum(kept.to(tl.int32), axis=0) - 1
        dst = tl.load(dsts + s, mask=ok, other=0)
        slot = tl.where(merged, kept_total + dst, kept_pos).to(tl.int64)
        tok = tl.load(src_tok_ptr + b * NUM_SRC + s, mask=ok, other=0)
        tl.store(slot_ptr + b * N + tok, slot, mask=ok)
        carry_eq += tl.sum(eq.to(tl.int32), axis=0)
        carry_kept += tl.sum(kept.to(tl.int32), axis=0)


@triton.jit
def merge_kernel(x_ptr, slot_ptr, count_ptr, out_ptr, acc_ptr, N, C, NUM_OUT, KEPT, NUM_DST,
                 BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Kept sources are copied to their row; anchors and merged sources are summed in float32
    (atomics) and counted, for :func:`finish_merge_kernel` to divide."""
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    valid = tok < N
    m = valid[:, None] & (ch[None, :] < C)
    slot = tl.load(slot_ptr + b * N + tok, mask=valid, other=0)
    v = tl.load(x_ptr + b.to(tl.int64) * N * C + tok[:, None] * C + ch[None, :], mask=m, other=0.0)
    is_kept = slot < KEPT
    out_rows = out_ptr + b.to(tl.int64) * NUM_OUT * C + slot[:, None] * C + ch[None, :]
    tl.store(out_rows, v, mask=m & is_kept[:, None])
    anchor = tl.where(is_kept, 0, slot - KEPT)
    acc_rows = acc_ptr + b.to(tl.int64) * NUM_DST * C + anchor[:, None] * C + ch[None, :]
    tl.atomic_add(acc_rows, v.to(tl.float32), mask=m & (~is_kept)[:, None])
    if pid_c == 0:
        tl.atomic_add(count_ptr + b * NUM_DST + anchor, 1.0, mask=valid & (~is_kept))


@triton.jit
def finish_merge_kernel(acc_ptr, count_ptr, out_ptr, C, NUM_OUT, KEPT, NUM_DST,
                        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    k = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (k < NUM_DST)[:, None] & (ch[None, :] < C)
    count = tl.load(count_ptr + b * NUM_DST + k, mask=k < NUM_DST, other=1.0)
    v = tl.load(acc_ptr + b.to(tl.int64) * NUM_DST * C + k[:, None] * C + ch[None, :], mask=m, other=0.0)
    v = v / count[:, None]
    out_rows = out_ptr + b.to(tl.int64) * NUM_OUT * C + (KEPT + k)[:, None] * C + ch[None, :]
    tl.store(out_rows, v.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def kv_pool_kernel(x_ptr, alpha_ptr, alpha_batch_stride, out_ptr, N, C, W, OUT_W, NUM_OUT,
                   S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = mean + alpha * (nearest - mean) over each s x s window (nearest-exact: offset s // 2)."""
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (o < NUM_OUT)[:, None] & (ch[None, :] < C)
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
