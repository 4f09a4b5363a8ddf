"""The operators as the patched models call them, and their ``bigain::`` torch custom ops.

* ``gated_merge(x, metric, ...) -> (merged, slot, groups)``: the plan (anchors + matching) and the merge;
* ``token_merge(x, slot, ...)``: the merge alone, with a plan computed earlier (plan reuse);
* ``token_unmerge(y, slot)``: one gather;
* ``kv_pool(x, alpha, ...)``: IE-KVD.

Five custom ops (``torch.library``, one schema each, with fake implementations so
``torch.compile(fullgraph=True)`` traces them as opaque nodes with static shapes) hold the work:
``bigain::merge_plan``, ``bigain::token_merge``, ``bigain::token_unmerge``, ``bigain::kv_pool``,
and ``bigain::merge_plan_groups`` (the plan with its rows as token groups, which the plan's
select counts, for merges by gathering: the kernel path of :func:`gated_merge`).
Each runs the Triton kernels of :mod:`bigain_export.kernels` when the tensor can take them (CUDA,
Triton installed) and :mod:`bigain_export.ops.reference` otherwise; both write the same canonical
slot map.

During ``torch.onnx.export`` each operator becomes ONE node of the ``bigain.ai`` domain (see
:mod:`bigain_export.export.onnx_ops`), whose attributes carry the static configuration and which a
TensorRT plugin or the model-local function body implements.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from . import reference

DOMAIN = "bigain.ai"
ANCHOR_CODES = {"window": 0, "released": 1, "fixed": 2, "random": 3}
GATED_ANCHORS = ("window", "released")  # anchors computed inside the plan (Laplacian gate)


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def _kernels():
    from ..kernels import launch

    return launch


def _plans_on_kernels(metric: torch.Tensor, grid_h: int, grid_w: int) -> bool:
    """Whether a plan of ``metric`` runs the kernels (they need at least one 2x2 window)."""
    return _kernels().available(metric) and grid_h >= 2 and grid_w >= 2


# --------------------------------------------------------------------------- custom ops
@torch.library.custom_op("bigain::merge_plan", mutates_args=())
def merge_plan_op(
    metric: torch.Tensor, offsets: Optional[torch.Tensor], grid_h: int, grid_w: int, r: int, released: bool,
    match_radius: int = 0,
) -> torch.Tensor:
    """Slot map ``[B, N]`` int64. ``offsets [B|1, H/2, W/2]``: given anchors (ToMe); ``None``: the
    Laplacian gate (``released`` picks the official code's grouping). ``match_radius``: see
    :attr:`BiGainConfig.match_radius` (0: every anchor)."""
    if _plans_on_kernels(metric, grid_h, grid_w):
        return _kernels().merge_plan(metric, offsets, grid_h, grid_w, r, released, match_radius)
    if offsets is None:
        score = reference.laplacian_score(metric, grid_h, grid_w)
        offsets = reference.window_offsets(score, grid_h, grid_w, "released" if released else "window")
    candidates = reference.local_candidates(grid_h, grid_w, match_radius, metric.device)
    return reference.merge_plan(metric, reference.anchor_tokens(offsets, grid_h, grid_w), r, candidates)


@merge_plan_op.register_fake
def _(metric, offsets, grid_h, grid_w, r, released, match_radius=0):
    return metric.new_empty(metric.shape[:2], dtype=torch.int64)


@torch.library.custom_op("bigain::merge_plan_groups", mutates_args=())
def merge_plan_groups_op(
    metric: torch.Tensor, offsets: Optional[torch.Tensor], grid_h: int, grid_w: int, r: int, released: bool,
    match_radius: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(slot, members, starts)``: :func:`merge_plan_op` with the slot map's rows as token groups
    (``members [B, N]``, ``starts [B, num_dst + 1]`` int32, :func:`reference.merge_groups`; the
    kernels count them inside the plan: fewer launches)."""
    if _plans_on_kernels(metric, grid_h, grid_w):
        return _kernels().merge_plan(metric, offsets, grid_h, grid_w, r, released, match_radius, groups=True)
    slot = merge_plan_op(metric, offsets, grid_h, grid_w, r, released, match_radius)
    return (slot, *reference.merge_groups(slot, metric.shape[1] - r, (grid_h // 2) * (grid_w // 2)))


@merge_plan_groups_op.register_fake
def _(metric, offsets, grid_h, grid_w, r, released, match_radius=0):
    b, n = metric.shape[:2]
    return (metric.new_empty(b, n, dtype=torch.int64), metric.new_empty(b, n, dtype=torch.int32),
            metric.new_empty(b, (grid_h // 2) * (grid_w // 2) + 1, dtype=torch.int32))


@torch.library.custom_op("bigain::token_merge", mutates_args=())
def token_merge_op(x: torch.Tensor, slot: torch.Tensor, num_out: int, num_dst: int,
                   members: Optional[torch.Tensor] = None, starts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Segment mean ``[B, N, C]`` -> ``[B, num_out, C]``; the last ``num_dst`` rows are anchors.
    ``members``/``starts`` (this slot map's groups, :func:`merge_plan_groups_op`) let the kernel gather."""
    launch = _kernels()
    if launch.available(x):
        if members is not None and starts is not None:
            return launch.grouped_merge(x, members, starts, num_out, num_dst)
        return launch.merge(x, slot, num_out, num_dst)
    return reference.merge(x, slot, num_out)


@token_merge_op.register_fake
def _(x, slot, num_out, num_dst, members=None, starts=None):
    return x.new_empty(x.shape[0], num_out, x.shape[2])


@torch.library.custom_op("bigain::token_unmerge", mutates_args=())
def token_unmerge_op(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """``[B, N - r, C]`` -> ``[B, N, C]``: every token takes its slot's row."""
    launch = _kernels()
    if launch.available(y):
        return launch.unmerge(y, slot)
    return reference.unmerge(y, slot)


@token_unmerge_op.register_fake
def _(y, slot):
    return y.new_empty(y.shape[0], slot.shape[1], y.shape[2])


@torch.library.custom_op("bigain::kv_pool", mutates_args=())
def kv_pool_op(x: torch.Tensor, alpha: torch.Tensor, grid_h: int, grid_w: int, s: int) -> torch.Tensor:
    """IE-KVD ``[B, N, C]`` -> ``[B, N / s^2, C]``; ``alpha`` float32 with 1 or B elements."""
    launch = _kernels()
    if launch.available(x):
        return launch.kv_pool(x, alpha, grid_h, grid_w, s)
    return reference.kv_downsample(x, alpha.reshape(-1, 1, 1), grid_h, grid_w, s)


@kv_pool_op.register_fake
def _(x, alpha, grid_h, grid_w, s):
    return x.new_empty(x.shape[0], (grid_h // s) * (grid_w // s), x.shape[2])


# --------------------------------------------------------------------------- what models call
def anchor_offsets(
    metric: torch.Tensor, grid_h: int, grid_w: int, anchor: str, generator: torch.Generator | None = None
) -> torch.Tensor | None:
    """Offsets of the ToMe anchors (``fixed``, ``random``), or None for the Laplacian gate."""
    if anchor in GATED_ANCHORS:
        return None
    return reference.choose_offsets(metric, grid_h, grid_w, anchor, generator)


def merge_plan(
    metric: torch.Tensor, grid_h: int, grid_w: int, r: int, anchor: str, match_radius: int = 0
) -> torch.Tensor:
    """Slot map ``[B, N]`` of a gated (BiGain) or ToMe merge of ``metric [B, N, C]``."""
    offsets = anchor_offsets(metric, grid_h, grid_w, anchor)
    return merge_plan_op(metric, offsets, grid_h, grid_w, r, anchor == "released", match_radius)


def gated_merge(
    x: torch.Tensor, metric: torch.Tensor, grid_h: int, grid_w: int, r: int, anchor: str, match_radius: int = 0,
    serves_more: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Merge ``x [B, N, C]`` to ``[B, N - r, C]`` with anchors and matching from ``metric``.

    Returns ``(merged, slot, groups)``; ``slot [B, N]`` is what :func:`token_unmerge` (and, with
    plan reuse, :func:`token_merge` in later blocks) needs. With ``serves_more`` (the plan will
    merge other tensors too: plan reuse, ``merge_crossattn``/``merge_mlp``) ``groups`` is its rows
    as token groups (:func:`merge_plan_groups_op`, None off the kernels), for merges by gathering;
    else None. On the kernels the plan builds its groups whenever the merge gathers
    (``serves_more``, or ``launch.MERGE_PATH == "groups"``, the default): its select counts them.
    ``match_radius``: :attr:`BiGainConfig.match_radius`.
    """
    if _exporting():
        from ..export.onnx_ops import emit_gated_merge

        return (*emit_gated_merge(x, metric, grid_h, grid_w, r, anchor, match_radius), None)
    # read while tracing: Dynamo guards the setting, so a compiled model retraces when it changes
    if _kernels().available(x) and (serves_more or _kernels().merge_path() == "groups"):
        offsets = anchor_offsets(metric, grid_h, grid_w, anchor)
        slot, members, starts = merge_plan_groups_op(metric, offsets, grid_h, grid_w, r, anchor == "released",
                                                     match_radius)
        groups = (members, starts)
        return token_merge(x, slot, grid_h, grid_w, r, groups), slot, groups if serves_more else None
    # off the kernels (the reference merges by the slot map), or MERGE_PATH="atomic"
    slot = merge_plan(metric, grid_h, grid_w, r, anchor, match_radius)
    return token_merge(x, slot, grid_h, grid_w, r), slot, None


def token_merge(x: torch.Tensor, slot: torch.Tensor, grid_h: int, grid_w: int, r: int,
                groups: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``[B, N, C]`` -> ``[B, N - r, C]`` by a slot map from :func:`gated_merge` / :func:`merge_plan`
    (``groups``: its groups from :func:`gated_merge`, the same result by a gather)."""
    num_out = x.shape[1] - r
    if _exporting():
        from ..export.onnx_ops import emit_token_merge

        return emit_token_merge(x, slot, num_out, (grid_h // 2) * (grid_w // 2))
    members, starts = groups if groups is not None else (None, None)
    return token_merge_op(x, slot, num_out, (grid_h // 2) * (grid_w // 2), members, starts)


def token_unmerge(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """``[B, N - r, C]`` -> ``[B, N, C]``: every token takes its slot's row."""
    if _exporting():
        from ..export.onnx_ops import emit_token_unmerge

        return emit_token_unmerge(y, slot)
    if torch.compiler.is_compiling() and _kernels().UNMERGE_IN_GRAPH:
        out = reference.unmerge(y, slot)  # Inductor fuses the gather into what reads it
        # Inductor's prim; a torch.export graph (for other runtimes) keeps the plain gather
        return _realized(out) if _kernels().UNMERGE_REALIZE and not torch.compiler.is_exporting() else out
    return token_unmerge_op(y, slot)


def _realized(x: torch.Tensor) -> torch.Tensor:
    """``x`` as it is, but a buffer Inductor stores once with ``x``'s strides instead of an
    expression it recomputes inside each consumer (launch.UNMERGE_REALIZE says why)."""
    import torch._inductor.inductor_prims  # noqa: F401  (registers prims.inductor_force_stride_order)

    return torch.ops.prims.inductor_force_stride_order.default(x, x.stride())


def kv_pool(
    x: torch.Tensor, alpha: torch.Tensor | float, grid_h: int, grid_w: int, s: int
) -> torch.Tensor:
    """IE-KVD: ``[B, N, C]`` -> ``[B, N / s^2, C]`` (alpha scalar or ``[B|1, 1, 1]``)."""
    if grid_h % s or grid_w % s:
        raise ConfigError(
            f"BiGainConfig.downsample={s} does not divide the {grid_h}x{grid_w} token grid; "
            f"allowed: a common divisor of {grid_h} and {grid_w}"
        )
    if _exporting():
        from ..export.onnx_ops import emit_kv_pool

        return emit_kv_pool(x, alpha, grid_h, grid_w, s)
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.full((1,), float(alpha), dtype=torch.float32, device=x.device)
    return kv_pool_op(x, alpha.reshape(-1).to(torch.float32), grid_h, grid_w, s)
