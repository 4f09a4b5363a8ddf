"""BiGain, ToMe and ToDo token operators: the one reference implementation.

Everything here is a pure function of tensors and Python ints, with shapes fixed by the input
size and the config: the number of kept tokens is known before the call, nothing reads a tensor
value on the host (no ``.item()``, no ``nonzero``), so the same code runs eagerly, under
``torch.compile(fullgraph=True)``, and is what the ONNX function bodies and plugin kernels are
tested against.

A merge is described by a **slot map** ``slot [B, N]`` (int64): token ``n`` of sample ``b`` goes
to row ``slot[b, n]`` of the merged sequence of length ``N - r``.
Rows ``0 .. Ns-r-1`` hold the sources that stay unmerged, in token order; rows ``Ns-r .. N-r-1``
the anchors, in window order (see :func:`merge_plan`). Then

* ``merge(x)`` is a segment mean: row j = mean of the tokens with slot j (anchor and the sources
  merged into it, as ToMe's ``scatter_reduce(mean)`` with the anchor included);
* ``unmerge(y)`` is one gather: token n takes row ``slot[n]``, so merged sources receive a copy of
  their anchor's output.

Grid convention: tokens are row-major over a ``grid_h x grid_w`` grid (``N = grid_h * grid_w``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ANCHOR_MODES = ("window", "released", "fixed", "random")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sums of half-precision values accumulate in float32; float32/float64 in their own type."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def laplacian_score(x: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Per-token Laplacian magnitude, summed over channels.

    Args:
        x: tokens ``[B, N, C]`` with ``N = grid_h * grid_w`` (row-major grid).
    Returns:
        ``[B, N]`` float32: ``sum_c |lap(x_c)|`` with the 4-neighbour kernel
        ``[[0,1,0],[1,-4,1],[0,1,0]]`` and ZERO padding (as the released code: border tokens score
        higher, so they are less likely anchors). Computed with shifted slices of a zero-padded
        grid, channels last, which fuses into one kernel under torch.compile (a depthwise fp32
        convolution costs a layout transpose on GPU).
    """
    b, n, c = x.shape
    grid = F.pad(x.float().reshape(b, grid_h, grid_w, c), (0, 0, 1, 1, 1, 1))
    centre = grid[:, 1:-1, 1:-1]
    lap = grid[:, :-2, 1:-1] + grid[:, 2:, 1:-1] + grid[:, 1:-1, :-2] + grid[:, 1:-1, 2:] - 4.0 * centre
    return lap.abs().sum(dim=-1).reshape(b, n)


def score_windows(score: torch.Tensor, grid_h: int, grid_w: int, mode: str = "window") -> torch.Tensor:
    """``[B, N]`` scores -> ``[B, grid_h // 2, grid_w // 2, 4]``: the 4 scores each complete 2x2
    window chooses its anchor from, in the order of ``mode`` (see :func:`window_offsets`)."""
    hs, ws = grid_h // 2, grid_w // 2
    b = score.shape[0]
    cropped = score.reshape(b, grid_h, grid_w)[:, : 2 * hs, : 2 * ws]
    if mode == "window":
        return cropped.reshape(b, hs, 2, ws, 2).permute(0, 1, 3, 2, 4).reshape(b, hs, ws, 4)
    if mode == "released":
        return cropped.reshape(b, hs, ws, 4)
    raise ValueError(f"window_offsets mode={mode!r}; allowed: window | released")


def window_offsets(score: torch.Tensor, grid_h: int, grid_w: int, mode: str) -> torch.Tensor:
    """Anchor offset (0..3, row-major inside the 2x2 window) of every complete 2x2 window.

    Args:
        score: ``[B, N]`` Laplacian scores (lower = smoother = better anchor).
        mode: ``"window"``: argmin over the 4 tokens of each 2x2 window (the paper).
            ``"released"``: the official code's reshape without a permute: window (i, j) takes
            the argmin over the 4 row-major-consecutive tokens ``4k .. 4k+3`` of the cropped grid
            (``k = i * (grid_w // 2) + j``), and that offset is used inside window (i, j).
    Returns:
        ``[B, grid_h // 2, grid_w // 2]`` int64. Ties go to the first index.
    """
    return score_windows(score, grid_h, grid_w, mode).argmin(dim=-1)


def anchor_mask(offsets: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Boolean ``[B, N]``: True where a token is an anchor (destination).

    ``offsets [B or 1, grid_h//2, grid_w//2]`` picks one token per 2x2 window; tokens of the
    incomplete last row/column (odd grid sizes) are never anchors.
    """
    b, hs, ws = offsets.shape
    onehot = F.one_hot(offsets, 4).to(torch.bool)  # [B, hs, ws, 4]
    grid = onehot.reshape(b, hs, ws, 2, 2).permute(0, 1, 3, 2, 4).reshape(b, 2 * hs, 2 * ws)
    grid = F.pad(grid, (0, grid_w - 2 * ws, 0, grid_h - 2 * hs), value=False)
    return grid.reshape(b, grid_h * grid_w)


def choose_offsets(
    metric: torch.Tensor,
    grid_h: int,
    grid_w: int,
    anchor: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Anchor offsets ``[B or 1, grid_h//2, grid_w//2]`` (int64, 0..3) for an anchor mode.

    ``window`` / ``released``: BiGain's Laplacian gate, per sample. ``fixed``: ToMe with the
    top-left token of every window. ``random``: ToMe's random token per window, one pattern for
    the whole batch (drawn from ``generator`` when given).
    """
    hs, ws = grid_h // 2, grid_w // 2
    if anchor in ("window", "released"):
        return window_offsets(laplacian_score(metric, grid_h, grid_w), grid_h, grid_w, anchor)
    if anchor == "fixed":
        return torch.zeros(1, hs, ws, dtype=torch.long, device=metric.device)
    if anchor == "random":
        return torch.randint(4, (1, hs, ws), generator=generator, device=metric.device)
    raise ValueError(f"anchor={anchor!r}; allowed: {' | '.join(ANCHOR_MODES)}")


def choose_anchors(
    metric: torch.Tensor,
    grid_h: int,
    grid_w: int,
    anchor: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Anchor mask ``[B, N]`` (True = destination) for an anchor mode (see :func:`choose_offsets`)."""
    offsets = choose_offsets(metric, grid_h, grid_w, anchor, generator)
    return anchor_mask(offsets, grid_h, grid_w).expand(metric.shape[0], grid_h * grid_w)


def anchor_tokens(offsets: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Token index of every window's anchor, in WINDOW order: ``[B|1, (grid_h//2)*(grid_w//2)]``.

    Window ``k = i * (grid_w // 2) + j`` with offset ``o`` holds its anchor at token
    ``(2i + o // 2) * grid_w + 2j + o % 2``. Window order (not token order) is what a kernel can
    compute without sorting, so it is the order of the anchors in the merged sequence.
    """
    b, hs, ws = offsets.shape
    rows = torch.arange(hs, device=offsets.device).view(1, hs, 1) * 2 + offsets // 2
    cols = torch.arange(ws, device=offsets.device).view(1, 1, ws) * 2 + offsets % 2
    return (rows * grid_w + cols).reshape(b, hs * ws)


def unit_rows(metric: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity features: rows normalised in float32, rounded to the model's dtype.

    Products of these (half-precision) values are exact in float32, so a tensor-core dot with
    float32 accumulation equals a float32 matmul up to summation order.
    """
    m = metric.float()
    return (m / m.norm(dim=-1, keepdim=True)).to(metric.dtype)


def match_candidates(grid_h: int, grid_w: int, radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Windows each token may merge into under ``match_radius = radius``: ``[N, (2R+1)^2]`` int64.

    Token ``(i, j)`` lies in window ``(min(i // 2, H/2 - 1), min(j // 2, W/2 - 1))`` (a token of an
    odd grid's last row or column joins the window beside it); its candidates are the windows
    within ``radius`` of that one in both directions, clamped at the grid's edges, window rows
    then columns. Clamping repeats edge windows, but every window first appears in increasing
    index order, so "first maximum" over a row is "lowest window index" as in the global match.
    """
    hs, ws = grid_h // 2, grid_w // 2
    steps = torch.arange(-radius, radius + 1, device=device)
    win_rows = (torch.arange(grid_h, device=device) // 2).clamp(max=hs - 1)
    win_cols = (torch.arange(grid_w, device=device) // 2).clamp(max=ws - 1)
    rows = (win_rows[:, None] + steps).clamp(0, hs - 1)  # [H, 2R+1]
    cols = (win_cols[:, None] + steps).clamp(0, ws - 1)  # [W, 2R+1]
    windows = rows[:, None, :, None] * ws + cols[None, :, None, :]  # [H, W, 2R+1, 2R+1]
    return windows.reshape(grid_h * grid_w, -1)


def best_anchor(metric: torch.Tensor, src_idx: torch.Tensor, dst_idx: torch.Tensor,
                candidates: torch.Tensor | None = None):
    """For every source, its most similar anchor: ``(best_sim [B, Ns] float32, best_dst [B, Ns])``.

    Similarities are float32 dot products of :func:`unit_rows`; ties go to the lowest anchor
    (window) index. ``best_dst`` indexes ``dst_idx`` (window order). ``candidates [N, K]``
    (:func:`match_candidates`) limits each source to the anchors of those windows; ``None``
    compares it with every anchor (the paper).
    """
    m = unit_rows(metric)
    channels = m.shape[-1]
    src = torch.gather(m, 1, src_idx.unsqueeze(-1).expand(-1, -1, channels)).float()
    dst = torch.gather(m, 1, dst_idx.unsqueeze(-1).expand(-1, -1, channels)).float()
    if candidates is None:
        return (src @ dst.transpose(1, 2)).max(dim=-1)
    b, num_src = src_idx.shape
    windows = candidates[src_idx]  # [B, Ns, K]
    near = torch.gather(dst, 1, windows.reshape(b, -1, 1).expand(-1, -1, channels))
    sims = (near.reshape(b, num_src, -1, channels) @ src.unsqueeze(-1)).squeeze(-1)  # [B, Ns, K]
    best_sim, best_k = sims.max(dim=-1)
    return best_sim, torch.gather(windows, 2, best_k.unsqueeze(-1)).squeeze(-1)


def merge_plan(metric: torch.Tensor, dst_idx: torch.Tensor, r: int, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """ToMe's bipartite soft matching, as a slot map in the canonical order.

    Args:
        metric: ``[B, N, C]`` similarity features (cosine similarity is used).
        dst_idx: ``[B|1, Nd]`` anchor token of every 2x2 window, window order (:func:`anchor_tokens`).
        r: number of sources merged into anchors (static int, ``0 <= r <= N - Nd``).
        candidates: ``[N, K]`` windows each token may merge into (:func:`match_candidates`,
            ``BiGainConfig.match_radius``); ``None``: every anchor (the paper).
    Returns:
        slot ``[B, N]`` int64 in ``[0, N - r)``.

    Which r sources merge is ToMe's rule: the r with the highest best-anchor similarity (ties:
    lower token index first). Their ORDER does not matter (attention over the merged tokens is
    permutation-equivariant and unmerge restores every position), so the merged sequence is
    laid out in the order a sort-free kernel produces: the ``Ns - r`` kept sources in token order,
    then the anchors in window order. Every implementation (kernels, ONNX body, plugins) writes
    exactly this slot map.
    """
    b, n, _ = metric.shape
    num_dst = dst_idx.shape[1]
    num_src = n - num_dst
    assert 0 <= r <= num_src, (r, num_src)
    dst_idx = dst_idx.expand(b, num_dst)
    is_anchor = torch.zeros(b, n, dtype=torch.int8, device=metric.device).scatter_(1, dst_idx, 1)
    # Stable: sources first, in token order.
    src_idx = torch.argsort(is_anchor, dim=1, stable=True)[:, :num_src]
    merged = torch.zeros(b, num_src, dtype=torch.bool, device=metric.device)
    best_dst = torch.zeros(b, num_src, dtype=torch.long, device=metric.device)
    if r > 0:  # (r = 0 also covers grids without a 2x2 window: nothing to compare with)
        best_sim, best_dst = best_anchor(metric, src_idx, dst_idx, candidates)
        edge_order = torch.argsort(best_sim, dim=1, descending=True, stable=True)
        merged.scatter_(1, edge_order[:, :r], True)
    kept = num_src - r
    kept_pos = torch.cumsum((~merged).long(), dim=1) - 1
    src_slot = torch.where(merged, kept + best_dst, kept_pos)
    dst_slot = (kept + torch.arange(num_dst, device=metric.device)).expand(b, num_dst)
    slot = torch.empty(b, n, dtype=torch.long, device=metric.device)
    slot.scatter_(1, src_idx, src_slot)
    slot.scatter_(1, dst_idx, dst_slot)
    return slot


def token_merge_plan(
    metric: torch.Tensor,
    grid_h: int,
    grid_w: int,
    r: int,
    anchor: str = "window",
    generator: torch.Generator | None = None,
    match_radius: int = 0,
) -> torch.Tensor:
    """Slot map ``[B, N]`` of a whole gated (BiGain) or ToMe merge: anchors, then matching.

    ``metric [B, N, C]`` is both the Laplacian-gate input and the similarity feature, as in
    the released code. ``r`` comes from :meth:`BiGainConfig.merged_count`; ``match_radius > 0``
    matches each source within its neighbourhood of windows only (:func:`match_candidates`).
    """
    offsets = choose_offsets(metric, grid_h, grid_w, anchor, generator)
    return merge_plan(metric, anchor_tokens(offsets, grid_h, grid_w), r,
                      local_candidates(grid_h, grid_w, match_radius, metric.device))


def local_candidates(grid_h: int, grid_w: int, match_radius: int, device) -> torch.Tensor | None:
    """:func:`match_candidates` for ``match_radius > 0``; ``None`` (every anchor) for 0."""
    if match_radius == 0 or grid_h < 2 or grid_w < 2:
        return None
    return match_candidates(grid_h, grid_w, match_radius, device)


def merge(x: torch.Tensor, slot: torch.Tensor, num_out: int) -> torch.Tensor:
    """Segment mean of ``x [B, N, C]`` into ``[B, num_out, C]`` by ``slot [B, N]``.

    Accumulates in float32 for half-precision inputs; returns ``x.dtype``.
    """
    b, n, c = x.shape
    acc_dtype = accumulation_dtype(x.dtype)
    index = slot.unsqueeze(-1).expand(b, n, c)
    total = torch.zeros(b, num_out, c, dtype=acc_dtype, device=x.device)
    total = total.scatter_add(1, index, x.to(acc_dtype))
    count = torch.zeros(b, num_out, dtype=acc_dtype, device=x.device)
    count = count.scatter_add(1, slot, torch.ones(b, n, dtype=acc_dtype, device=x.device))
    return (total / count.unsqueeze(-1)).to(x.dtype)


def merge_groups(slot: torch.Tensor, num_out: int, num_dst: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of a canonical slot map as groups of tokens, for a merge that gathers instead of
    scattering (a plan that serves several merges builds them once).

    Returns ``members [B, N]`` int32, every token once, ordered by the row it goes to (token order
    within a row), and ``starts [B, num_dst + 1]`` int32: anchor row ``kept + a`` averages
    ``members[starts[a]:starts[a + 1]]``; kept row ``o < kept`` is ``members[o]`` alone
    (``kept = num_out - num_dst``; ``starts[num_dst] = N``).
    """
    b, n = slot.shape
    kept = num_out - num_dst
    members = torch.argsort(slot, dim=1, stable=True).to(torch.int32)
    counts = torch.zeros(b, num_out, dtype=torch.int64, device=slot.device)
    counts.scatter_add_(1, slot, torch.ones_like(slot))
    ends = kept + torch.cumsum(counts[:, kept:], dim=1)
    starts = torch.cat([torch.full((b, 1), kept, dtype=torch.int64, device=slot.device), ends], dim=1)
    return members, starts.to(torch.int32)


def unmerge(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`merge`: ``[B, N - r, C]`` -> ``[B, N, C]``, token n takes row slot[n]."""
    return torch.gather(y, 1, slot.unsqueeze(-1).expand(-1, -1, y.shape[-1]))


def kv_downsample(x: torch.Tensor, alpha: torch.Tensor | float, grid_h: int, grid_w: int, s: int) -> torch.Tensor:
    """Interpolate-extrapolate KV downsampling (IE-KVD).

    ``Z = alpha * NearestExact_s(x) + (1 - alpha) * AvgPool_s(x)`` on the token grid.
    alpha = 1 is ToDo's nearest-exact downsampling, alpha = 0 average pooling.

    Args:
        x: ``[B, N, C]`` with ``N = grid_h * grid_w``; ``s`` must divide both grid sides.
        alpha: scalar, or a tensor broadcastable to ``[B, 1, 1]`` (per-sample alpha(t)).
    Returns:
        ``[B, (grid_h // s) * (grid_w // s), C]`` in ``x.dtype``.
    """
    b, n, c = x.shape
    hs, ws = grid_h // s, grid_w // s
    grid = x.reshape(b, hs, s, ws, s, c)
    # nearest-exact picks source index floor((i + 0.5) * s) = i * s + s // 2
    nearest = grid[:, :, s // 2, :, s // 2, :].reshape(b, hs * ws, c)
    mean = grid.to(accumulation_dtype(x.dtype)).mean(dim=(2, 4)).to(x.dtype).reshape(b, hs * ws, c)
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(x.dtype)
    return mean + alpha * (nearest - mean)


def scheduled_alpha(
    timestep: torch.Tensor, alpha_start: float, alpha_end: float, num_train_timesteps: int = 1000
) -> torch.Tensor:
    """alpha(t), linear from ``alpha_start`` at t = T-1 to ``alpha_end`` at t = 0, as a tensor.

    Kept a tensor op (not a Python float) so one compiled graph / engine serves every step.
    """
    frac = timestep.float() / float(num_train_timesteps - 1)
    return alpha_start * frac + alpha_end * (1.0 - frac)
