"""The attention processor that applies BiGain / ToMe / ToDo around a self-attention layer.

It wraps the layer's original processor (SDPA by default) and changes only what goes in and out:

* merging: queries are the merged tokens, the output is unmerged back to ``N`` tokens;
* KV downsampling: keys and values are computed from the pooled grid (passed to the inner
  processor as ``encoder_hidden_states``; a self-attention layer projects K/V from it).

Per-call facts the processor cannot see itself (the input's spatial size, the timestep, and for
UNets the transformer block's input) arrive through :class:`CallState`, filled by forward
pre-hooks that :mod:`bigain_export.patch.apply` installs.

The opt-in switches of :class:`~bigain_export.config.BiGainConfig` live here too: ``plan_reuse``
(one plan per resolution and call, kept in the :class:`CallState`) and ``merge_crossattn`` /
``merge_mlp`` (the block's plan, kept in a :class:`BlockPlan`, also merges the cross-attention's
queries and the feed-forward's input, as tomesd does).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import BiGainConfig
from ..errors import UnsupportedModelError
from ..ops import library
from ..ops.reference import scheduled_alpha


class CallState:
    """Facts about the current model call, shared by all processors of one patched model.

    ``sample_hw``: spatial size of the model input; ``timestep``: the raw timestep argument.
    Both are set by a pre-hook on the model and cleared by its post-hook, so nothing leaks from
    one call to the next (indices are recomputed at every call, as the method requires).
    """

    def __init__(self, config: BiGainConfig, patch_size: int, num_train_timesteps: int = 1000):
        self.config = config
        self.patch_size = patch_size
        self.num_train_timesteps = num_train_timesteps
        self.sample_hw: tuple[int, int] | None = None
        self.timestep: torch.Tensor | None = None
        # num_tokens -> (slot map, its merge groups or None) (plan_reuse only)
        self.plans: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]] = {}
        # Set (never read while tracing, so torch.compile does not guard on it) by a processor
        # that compressed: export checks it, since with min_tokens an enabled config may
        # legitimately compress no layer at a given input size.
        self.compressed = False

    def start_call(self, sample_hw: tuple[int, int], timestep: Any) -> None:
        # A Python-number timestep becomes a tensor here: torch.compile treats an int stored on
        # an object as a constant (one graph per timestep), a stored tensor as a graph input.
        # (scalar_tensor keeps a dynamic int symbolic; as_tensor/tensor specialise on its value)
        if timestep is not None and not isinstance(timestep, torch.Tensor):
            timestep = torch.scalar_tensor(timestep, dtype=torch.float32)
        self.sample_hw, self.timestep, self.plans = sample_hw, timestep, {}

    def end_call(self) -> None:
        self.sample_hw, self.timestep, self.plans = None, None, {}

    def grid_for(self, num_tokens: int) -> tuple[int, int]:
        """Token grid (h, w) of a layer with ``num_tokens`` tokens: input size / (patch * 2^k)."""
        if self.sample_hw is None:
            raise UnsupportedModelError(
                "BiGain processor called outside a patched model call; call the patched model "
                "(UNet/DiT) itself, not one of its attention layers"
            )
        height, width = self.sample_hw
        factor = self.patch_size
        for _ in range(8):
            grid = (math.ceil(height / factor), math.ceil(width / factor))
            if grid[0] * grid[1] == num_tokens:
                return grid
            factor *= 2
        raise UnsupportedModelError(
            f"cannot place {num_tokens} tokens on a grid of the {height}x{width} input "
            f"(patch {self.patch_size}, downsampling by powers of 2)"
        )

    def alpha(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | float:
        """IE-KVD alpha: the config's constant, or alpha(t) per sample as ``[B|1, 1, 1]``."""
        fixed = self.config.fixed_alpha
        if fixed is not None:
            return fixed
        t = self.timestep
        if t is None:
            raise UnsupportedModelError("a scheduled alpha needs the timestep; call the model with timestep=")
        alpha = scheduled_alpha(
            t.to(device), self.config.alpha_start, self.config.alpha_end, self.num_train_timesteps
        )
        return alpha.reshape(-1, 1, 1).to(dtype)


class BlockPlan:
    """The merge of one block in the current call, shared by its attention, cross-attention and
    feed-forward (set by the self-attention processor, cleared when the block is done)."""

    def __init__(self) -> None:
        self.slot: torch.Tensor | None = None
        self.groups: tuple[torch.Tensor, torch.Tensor] | None = None  # slot's token groups (library.gated_merge)
        self.grid: tuple[int, int] = (0, 0)
        self.r = -1  # -1: not set in this call; 0: nothing merged (identity)

    def set(self, slot: torch.Tensor | None, grid: tuple[int, int], r: int,
            groups: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.slot, self.grid, self.r, self.groups = slot, grid, r, groups

    def clear(self) -> None:
        self.set(None, (0, 0), -1)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        if self.r < 0:
            raise UnsupportedModelError("block plan missing: the block's self-attention did not run first")
        return x if self.r == 0 else library.token_merge(x, self.slot, self.grid[0], self.grid[1], self.r, self.groups)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.r == 0 else library.token_unmerge(y, self.slot)


class MergedQueryProcessor:
    """Cross-attention with merged queries (``merge_crossattn``): keys/values are the text."""

    def __init__(self, inner: Any, plan: BlockPlan):
        self.inner = inner
        self.plan = plan

    def __call__(self, attn: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.plan.unmerge(self.inner(attn, self.plan.merge(hidden_states), *args, **kwargs))


class BiGainAttnProcessor:
    """Self-attention processor with token merging and/or KV downsampling.

    Args:
        inner: the processor it replaces (kept, and restored by ``remove_bigain``).
        state: the model's :class:`CallState`.
        metric_from_block_input: UNet blocks score and match on the transformer block's input
            (before ``norm1``), which the block pre-hook stores in ``self.block_input``; DiT blocks
            use the adaLN-modulated tokens the attention receives.
    """

    def __init__(self, inner: Any, state: CallState, metric_from_block_input: bool, plan: BlockPlan | None = None):
        self.inner = inner
        self.state = state
        self.metric_from_block_input = metric_from_block_input
        self.block_input: torch.Tensor | None = None
        self.plan = plan if plan is not None else BlockPlan()

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        config = self.state.config
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise UnsupportedModelError(
                "BiGain patches self-attention on [B, N, C] tokens without a mask; got "
                f"ndim={hidden_states.ndim}, encoder_hidden_states={encoder_hidden_states is not None}, "
                f"attention_mask={attention_mask is not None}"
            )
        num_tokens = hidden_states.shape[1]
        grid_h, grid_w = self.state.grid_for(num_tokens)

        queries, slot, groups = hidden_states, None, None
        r = config.merged_count(num_tokens, grid_h, grid_w)
        if r > 0:
            reused = self.state.plans.get(num_tokens) if config.plan_reuse else None
            if reused is not None:
                slot, groups = reused
                queries = library.token_merge(hidden_states, slot, grid_h, grid_w, r, groups)
            else:
                metric = self.block_input if self.metric_from_block_input else hidden_states
                if metric is None:
                    raise UnsupportedModelError("UNet block input missing: the block pre-hook did not run")
                # a plan that merges more than this layer's queries merges by its groups (built
                # once; None where the reference or an export merges)
                serves_more = config.plan_reuse or config.merge_crossattn or config.merge_mlp
                queries, slot, groups = library.gated_merge(hidden_states, metric, grid_h, grid_w, r, config.anchor,
                                                             config.match_radius, serves_more)
                if config.plan_reuse:
                    self.state.plans[num_tokens] = (slot, groups)
        self.plan.set(slot, (grid_h, grid_w), r, groups)
        keys_values = None
        pools = config.pools_kv_at(num_tokens)
        if r > 0 or pools:
            self.state.compressed = True
        if pools:
            alpha = self.state.alpha(hidden_states.dtype, hidden_states.device)
            keys_values = library.kv_pool(hidden_states, alpha, grid_h, grid_w, config.downsample)

        out = self.inner(attn, queries, keys_values, None, temb, **kwargs)
        self.block_input = None
        return out if slot is None else library.token_unmerge(out, slot)
