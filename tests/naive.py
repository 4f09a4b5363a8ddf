"""Straightforward loop implementations of the operators, written independently of
``bigain_export.ops.reference`` (per sample, per window, per token), used as the oracle in tests."""

from __future__ import annotations

import torch


def laplacian_score(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, n, c = x.shape
    g = x.double().reshape(b, h, w, c)
    out = torch.zeros(b, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            acc = -4 * g[:, i, j]
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= i + di < h and 0 <= j + dj < w:  # zero padding outside
                    acc = acc + g[:, i + di, j + dj]
            out[:, i, j] = acc.abs().sum(-1)
    return out.reshape(b, n)


def anchors_window(score: torch.Tensor, h: int, w: int) -> list[set[int]]:
    """Per sample, the set of anchor token indices: lowest score in each 2x2 window."""
    result = []
    for s in score:
        anchors = set()
        for wi in range(h // 2):
            for wj in range(w // 2):
                cells = [(2 * wi + a) * w + (2 * wj + bb) for a in (0, 1) for bb in (0, 1)]
                best = min(cells, key=lambda k: (float(s[k]), cells.index(k)))
                anchors.add(best)
        result.append(anchors)
    return result


def anchors_released(score: torch.Tensor, h: int, w: int) -> list[set[int]]:
    """The released code: argmin over 4 consecutive row-major tokens of the cropped grid,
    offset placed in the window of the same index."""
    hs, ws = h // 2, w // 2
    result = []
    for s in score:
        cropped = [float(s[i * w + j]) for i in range(2 * hs) for j in range(2 * ws)]
        anchors = set()
        for k in range(hs * ws):
            group = cropped[4 * k : 4 * k + 4]
            off = group.index(min(group))
            wi, wj = divmod(k, ws)
            anchors.add((2 * wi + off // 2) * w + 2 * wj + off % 2)
        result.append(anchors)
    return result


def merge_unmerge(x: torch.Tensor, metric: torch.Tensor, anchors: list[set[int]], r: int, w: int, radius: int = 0):
    """ToMe matching with given anchors, per sample. Returns (merged lists, unmerged tensor).

    ``radius > 0``: a source compares only with the anchors of windows at most ``radius`` windows
    away in rows and in columns from its own (the last row/column of an odd grid belongs to the
    window before it).

    Merged rows in the project's canonical order: kept sources in token order, then the anchors
    in window order (window k = (row // 2) * (w // 2) + col // 2 of the grid ``w`` wide)."""
    b, n, c = x.shape
    merged_out, full_out = [], torch.zeros(b, n, c, dtype=torch.float64)
    for bi in range(b):
        dst = sorted(anchors[bi], key=lambda t: ((t // w) // 2, (t % w) // 2))
        src = [k for k in range(n) if k not in anchors[bi]]
        m = metric[bi].double()
        m = m / m.norm(dim=-1, keepdim=True)
        best = []
        hs, ws = (n // w) // 2, w // 2
        window_of = lambda t: (min((t // w) // 2, hs - 1), min((t % w) // 2, ws - 1))  # noqa: E731
        for k in src:
            (si, sj) = window_of(k)
            near = lambda d: max(abs(window_of(d)[0] - si), abs(window_of(d)[1] - sj)) <= radius  # noqa: E731
            sims = [float(m[k] @ m[d]) if radius == 0 or near(d) else float("-inf") for d in dst]
            j = max(range(len(dst)), key=lambda q: (sims[q], -q))
            best.append((sims[j], k, dst[j]))
        order = sorted(range(len(src)), key=lambda q: (-best[q][0], q))
        merged_src = {best[q][1]: best[q][2] for q in order[:r]}
        groups = {d: [d] for d in dst}
        for s_tok, d in merged_src.items():
            groups[d].append(s_tok)
        rows = [x[bi, best[q][1]].double() for q in sorted(order[r:])]
        rows += [torch.stack([x[bi, k].double() for k in groups[d]]).mean(0) for d in dst]
        merged_out.append(torch.stack(rows))
        for d in dst:
            for k in groups[d]:
                full_out[bi, k] = torch.stack([x[bi, q].double() for q in groups[d]]).mean(0)
        for q in order[r:]:
            full_out[bi, best[q][1]] = x[bi, best[q][1]].double()
    return merged_out, full_out


def kv_downsample(x: torch.Tensor, alpha: float, h: int, w: int, s: int) -> torch.Tensor:
    b, n, c = x.shape
    g = x.double().reshape(b, h, w, c)
    out = torch.zeros(b, (h // s) * (w // s), c, dtype=torch.float64)
    for i in range(h // s):
        for j in range(w // s):
            window = g[:, i * s : (i + 1) * s, j * s : (j + 1) * s]
            near = g[:, int((i + 0.5) * s), int((j + 0.5) * s)]
            out[:, i * (w // s) + j] = alpha * near + (1 - alpha) * window.mean(dim=(1, 2))
    return out
