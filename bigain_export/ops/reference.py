"""BiGain, ToMe and ToDo token operators: the one reference implementation.

Everything here is a pure function of tensors and Python ints, with shapes fixed by the input
size and the config: the number of kept tokens is known before the call, nothing reads a tensor
value on the host (no ``.item()``, no ``nonzero``), so the same code runs eagerly, under
``torch.compile(fullgraph=True)``, and is what the ONNX function bodies and plugin kernels are
tested against.

A merge is described by a **slot map** ``slot [B, N]`` (int64): token ``n`` of sample ``b`` goes
to row ``slot[b, n]`` of the merged sequence of length ``N - r``. Rows ``0 .. Ns-r-1`` are the
sources that stay unmerged (in ToMe's order), rows ``Ns-r .. N-r-1`` are the anchors
(destinations). Then

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
    hs, ws = grid_h // 2, grid_w // 2
    b = score.shape[0]
    cropped = score.reshape(b, grid_h, grid_w)[:, : 2 * hs, : 2 * ws]
    if mode == "window":
        windows = cropped.reshape(b, hs, 2, ws, 2).permute(0, 1, 3, 2, 4).reshape(b, hs, ws, 4)
    elif mode == "released":
        windows = cropped.reshape(b, hs, ws, 4)
    else:
        raise ValueError(f"window_offsets mode={mode!r}; allowed: window | released")
    return windows.argmin(dim=-1)


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


def choose_anchors(
    metric: torch.Tensor,
    grid_h: int,
    grid_w: int,
    anchor: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Anchor mask ``[B, N]`` for an anchor mode.

    ``window`` / ``released``: BiGain's Laplacian gate, per sample. ``fixed``: ToMe with the
    top-left token of every window. ``random``: ToMe's random token per window, one pattern for
    the whole batch (drawn from ``generator`` when given).
    """
    b = metric.shape[0]
    hs, ws = grid_h // 2, grid_w // 2
    if anchor in ("window", "released"):
        offsets = window_offsets(laplacian_score(metric, grid_h, grid_w), grid_h, grid_w, anchor)
    elif anchor == "fixed":
        offsets = torch.zeros(1, hs, ws, dtype=torch.long, device=metric.device)
    elif anchor == "random":
        offsets = torch.randint(4, (1, hs, ws), generator=generator, device=metric.device)
    else:
        raise ValueError(f"anchor={anchor!r}; allowed: {' | '.join(ANCHOR_MODES)}")
    return anchor_mask(offsets, grid_h, grid_w).expand(b, grid_h * grid_w)


def merge_plan(metric: torch.Tensor, is_anchor: torch.Tensor, num_dst: int, r: int) -> torch.Tensor:
    """ToMe's bipartite soft matching, as a slot map.

    Args:
        metric: ``[B, N, C]`` similarity features (cosine similarity is used).
        is_anchor: ``[B, N]`` bool with exactly ``num_dst`` anchors in every row.
        num_dst: the anchor count (a static int: one per complete 2x2 window).
        r: number of sources merged into anchors (static int, ``0 <= r <= N - num_dst``).
    Returns:
        slot ``[B, N]`` int64 in ``[0, N - r)``.
    """
    b, n, _ = metric.shape
    # Stable sort puts anchors first, each group in token order (matches ONNX TopK tie-breaking).
    order = torch.argsort((~is_anchor).to(torch.int8), dim=1, stable=True)
    dst_idx, src_idx = order[:, :num_dst], order[:, num_dst:]
    num_src = n - num_dst
    assert 0 <= r <= num_src, (r, num_src)

    # Normalise in float32, multiply in the model's dtype: an fp32 matmul of [Ns, C] x [C, Nd]
    # was the largest single cost of the merge path on an H200 (no tensor cores in fp32).
    m = metric.float()
    m = (m / m.norm(dim=-1, keepdim=True)).to(metric.dtype)
    src = torch.gather(m, 1, src_idx.unsqueeze(-1).expand(-1, -1, m.shape[-1]))
    dst = torch.gather(m, 1, dst_idx.unsqueeze(-1).expand(-1, -1, m.shape[-1]))
    best_sim, best_dst = (src @ dst.transpose(1, 2)).max(dim=-1)  # [B, Ns]
    edge_order = torch.argsort(best_sim, dim=1, descending=True, stable=True)
    # rank[i]: position of source i in the descending order; the first r merge.
    ranks = torch.arange(num_src, device=metric.device).expand(b, num_src)
    rank = torch.empty_like(edge_order).scatter_(1, edge_order, ranks)
    kept = num_src - r
    src_slot = torch.where(rank >= r, rank - r, kept + best_dst)
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
) -> torch.Tensor:
    """Slot map ``[B, N]`` of a whole gated (BiGain) or ToMe merge: anchors, then matching.

    ``metric [B, N, C]`` is both the Laplacian-gate input and the similarity feature, as in
    the released code. ``r`` comes from :meth:`BiGainConfig.merged_count`.
    """
    is_anchor = choose_anchors(metric, grid_h, grid_w, anchor, generator)
    return merge_plan(metric, is_anchor, (grid_h // 2) * (grid_w // 2), r)


def merge(x: torch.Tensor, slot: torch.Tensor, num_out: int) -> torch.Tensor:
    """Segment mean of ``x [B, N, C]`` into ``[B, num_out, C]`` by ``slot [B, N]``.

    Accumulates in float32 for half-precision inputs; returns ``x.dtype``.
    """
    b, n, c = x.shape
    acc_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    index = slot.unsqueeze(-1).expand(b, n, c)
    total = torch.zeros(b, num_out, c, dtype=acc_dtype, device=x.device)
    total = total.scatter_add(1, index, x.to(acc_dtype))
    count = torch.zeros(b, num_out, dtype=acc_dtype, device=x.device)
    count = count.scatter_add(1, slot, torch.ones(b, n, dtype=acc_dtype, device=x.device))
    return (total / count.unsqueeze(-1)).to(x.dtype)


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
    mean = grid.float().mean(dim=(2, 4)).to(x.dtype).reshape(b, hs * ws, c)
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
