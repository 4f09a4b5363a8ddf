"""The three operators as the patched models call them: ``gated_merge``, ``token_unmerge``,
``kv_pool``.

Eagerly and under ``torch.compile`` they run :mod:`bigain_export.ops.reference` (Inductor sees
plain tensor ops and fuses them). During ``torch.onnx.export`` each becomes ONE node of the
``bigain.ai`` domain (see :mod:`bigain_export.export.onnx_ops`), whose attributes carry the
static configuration and which a TensorRT plugin or the model-local function body implements.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from . import reference

DOMAIN = "bigain.ai"
ANCHOR_CODES = {"window": 0, "released": 1, "fixed": 2, "random": 3}


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def gated_merge(
    x: torch.Tensor, metric: torch.Tensor, grid_h: int, grid_w: int, r: int, anchor: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``x [B, N, C]`` to ``[B, N - r, C]`` with anchors and matching from ``metric``.

    Returns ``(merged, slot)``; ``slot [B, N]`` is what :func:`token_unmerge` needs.
    """
    b, n, c = x.shape
    if _exporting():
        from ..export.onnx_ops import emit_gated_merge

        return emit_gated_merge(x, metric, grid_h, grid_w, r, anchor)
    slot = reference.token_merge_plan(metric, grid_h, grid_w, r, anchor)
    return reference.merge(x, slot, n - r), slot


def token_unmerge(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """``[B, N - r, C]`` -> ``[B, N, C]``: every token takes its slot's row."""
    if _exporting():
        from ..export.onnx_ops import emit_token_unmerge

        return emit_token_unmerge(y, slot)
    return reference.unmerge(y, slot)


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
    return reference.kv_downsample(x, alpha, grid_h, grid_w, s)
