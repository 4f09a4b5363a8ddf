"""The one configuration object of token compression: :class:`BiGainConfig`.

A config has two independent halves, each of which may be off:

* token **merging** (``merge``): ``"bigain"`` (Laplacian-gated anchors, the paper's L-GTM) or
  ``"tome"`` (ToMe for SD baseline), with ``ratio`` and ``anchor``;
* **KV downsampling** (``kv``): ``"bigain"`` (interpolate-extrapolate, IE-KVD, alpha scheduled or
  fixed) or ``"todo"`` (ToDo baseline: nearest-exact, alpha = 1), with ``downsample``.

When both are on, queries are the merged tokens and keys/values are pooled from the full grid.
The config is frozen, validates itself, serialises to a dict (saved beside every engine) and
carries a version so old manifests can be recognised.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

CONFIG_VERSION = 1

MERGE_METHODS = ("none", "bigain", "tome")
KV_METHODS = ("none", "bigain", "todo")
BIGAIN_ANCHORS = ("window", "released")
TOME_ANCHORS = ("random", "fixed")
# 15 x 15 windows at most; already at R = 3 the local match cost what the global one does at SD2
# 1024 px (H200, session 16: merge path 0.241 vs 0.230 ms), so larger radii buy nothing
MAX_MATCH_RADIUS = 7
MAX_RATIO = 0.75  # 3 of the 4 tokens of every 2x2 window are sources: more cannot merge

# The paper's DiT-XL/2 blocks (0-indexed, of 28).
PAPER_DIT_BLOCKS = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)

PRESETS: dict[str, dict[str, Any]] = {
    "none": dict(merge="none", kv="none"),
    "tome": dict(merge="tome", kv="none", anchor="random"),
    "todo": dict(merge="none", kv="todo"),
    "bigain-merge": dict(merge="bigain", kv="none", anchor="window"),
    "bigain-kv": dict(merge="none", kv="bigain"),
    "bigain-both": dict(merge="bigain", kv="bigain", anchor="window"),
}


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"BiGainConfig.{name}={value!r} is not allowed; allowed: {allowed}")


@dataclass(frozen=True)
class BiGainConfig:
    """Token-compression settings, validated on construction.

    Args:
        merge: ``"none"``, ``"bigain"`` or ``"tome"``.
        ratio: fraction of the tokens of a patched layer removed by merging, in [0, 0.75].
        anchor: merge anchor choice per 2x2 window. BiGain: ``"window"`` (lowest Laplacian score
            inside each 2x2 window, the paper) or ``"released"`` (bit-faithful to the official
            code's window reshape). ToMe: ``"random"`` (new pattern each call, shared by the batch)
            or ``"fixed"`` (top-left). ``None`` picks ``"window"`` / ``"random"``.
        kv: ``"none"``, ``"bigain"`` (IE-KVD) or ``"todo"`` (nearest-exact, alpha fixed at 1).
        downsample: per-side KV downsampling factor s (integer >= 1 dividing the token grid).
        alpha: fixed IE-KVD alpha, or ``None`` to schedule it linearly in the timestep from
            ``alpha_start`` at t = 999 to ``alpha_end`` at t = 0 (generation default 0.8 -> 1.2;
            the paper's classification setting is a fixed 0.9, see :meth:`for_task`).
        unet_levels: UNet resolution levels patched (0 = full latent resolution); ``None`` means
            the highest-resolution level that has transformer blocks (0 on SD 2.x, 1 on SDXL).
        dit_blocks: transformer block indices patched in a DiT; ``None`` means the paper's blocks
            1-5 and 7-11, intersected with the model's depth.
        plan_reuse: opt-in. Compute the merge plan at the first patched block of each resolution
            in a model call and reuse it in the other patched blocks of that resolution (the
            released code's cached-merge variant; ToMA reuses patterns across layers). Faster,
            and no longer the paper's per-block plan.
        merge_crossattn: opt-in (tomesd's switch). Also merge the queries of the block's
            cross-attention (``attn2``) with the block's plan; keys/values (the text) stay.
        merge_mlp: opt-in (tomesd's switch). Also run the block's feed-forward on merged tokens.
        min_tokens: opt-in. A patched layer with fewer tokens than this runs uncompressed (no
            merge, no KV pooling), so one config serves several resolutions without compressing
            where it cannot pay: on the H200 the SD2 UNet's measured attention-time ceiling at
            512 px (4,096 tokens) is 0.99x, at 768 px (9,216) 1.18x (docs/benchmarks.md).
            0 (the default, the paper) compresses every patched layer.
        match_radius: opt-in. 0 (the default, the paper) matches every source token with every
            merge anchor of the layer. R > 0 matches it only with the anchors of the 2x2 windows
            within R windows of its own, in both directions ((2R+1)^2 candidates, fewer at the
            edges): the similarity step then costs O(N (2R+1)^2) instead of O(N^2 / 4), the
            plan's dominant cost at 1024 px. Neighbouring tokens are the likeliest matches of
            smooth regions; distant look-alikes can no longer merge. In 0..7.
    """

    merge: str = "bigain"
    ratio: float = 0.5
    anchor: str | None = None
    kv: str = "none"
    downsample: int = 2
    alpha: float | None = None
    alpha_start: float = 0.8
    alpha_end: float = 1.2
    unet_levels: tuple[int, ...] | None = None
    dit_blocks: tuple[int, ...] | None = None
    plan_reuse: bool = False
    merge_crossattn: bool = False
    merge_mlp: bool = False
    min_tokens: int = 0
    match_radius: int = 0
    version: int = field(default=CONFIG_VERSION)

    def __post_init__(self) -> None:
        if self.merge not in MERGE_METHODS:
            _fail("merge", self.merge, " | ".join(MERGE_METHODS))
        if self.kv not in KV_METHODS:
            _fail("kv", self.kv, " | ".join(KV_METHODS))
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not (
            0.0 <= float(self.ratio) <= MAX_RATIO
        ):
            _fail("ratio", self.ratio, f"a number in [0, {MAX_RATIO}]")
        if self.anchor is None:
            object.__setattr__(self, "anchor", "random" if self.merge == "tome" else "window")
        allowed_anchors = TOME_ANCHORS if self.merge == "tome" else BIGAIN_ANCHORS
        if self.anchor not in allowed_anchors:
            _fail("anchor", self.anchor, f"{' | '.join(allowed_anchors)} (for merge={self.merge!r})")
        if isinstance(self.downsample, bool) or not isinstance(self.downsample, int) or self.downsample < 1:
            _fail("downsample", self.downsample, "an integer >= 1 that divides the token grid")
        for name in ("alpha", "alpha_start", "alpha_end"):
            value = getattr(self, name)
            if value is None and name == "alpha":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                _fail(name, value, "a finite number" + (" or None (scheduled)" if name == "alpha" else ""))
        if self.kv == "todo" and self.alpha not in (None, 1.0):
            _fail("alpha", self.alpha, "None or 1.0 for kv='todo' (ToDo is nearest-exact downsampling)")
        if self.unet_levels is not None:
            levels = tuple(self.unet_levels)
            if not levels or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in levels):
                _fail("unet_levels", self.unet_levels, "None (auto) or a non-empty tuple of integers >= 0")
            object.__setattr__(self, "unet_levels", tuple(sorted(set(levels))))
        if self.dit_blocks is not None:
            blocks = tuple(self.dit_blocks)
            if not blocks or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in blocks):
                _fail("dit_blocks", self.dit_blocks, "None or a non-empty tuple of integers >= 0")
            object.__setattr__(self, "dit_blocks", tuple(sorted(set(blocks))))
        for name in ("plan_reuse", "merge_crossattn", "merge_mlp"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "true | false")
            if getattr(self, name) and self.merge == "none":
                _fail(name, getattr(self, name), "false when merge='none' (it changes how merging is done)")
        if isinstance(self.min_tokens, bool) or not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            _fail("min_tokens", self.min_tokens, "an integer >= 0 (0: compress every patched layer)")
        if isinstance(self.match_radius, bool) or not isinstance(self.match_radius, int) or not (
            0 <= self.match_radius <= MAX_MATCH_RADIUS
        ):
            _fail("match_radius", self.match_radius,
                  f"an integer in [0, {MAX_MATCH_RADIUS}] (0: match every anchor, the paper)")
        if self.match_radius and self.merge == "none":
            _fail("match_radius", self.match_radius, "0 when merge='none' (it changes how merging is done)")
        if self.version != CONFIG_VERSION:
            _fail("version", self.version, str(CONFIG_VERSION))

    # -- derived values -------------------------------------------------------------------------
    @property
    def merges(self) -> bool:
        return self.merge != "none" and self.ratio > 0

    @property
    def pools_kv(self) -> bool:
        return self.kv != "none" and self.downsample > 1

    @property
    def enabled(self) -> bool:
        return self.merges or self.pools_kv

    @property
    def fixed_alpha(self) -> float | None:
        """The constant alpha, or None when it follows the timestep schedule."""
        if self.kv == "todo":
            return 1.0
        return None if self.alpha is None else float(self.alpha)

    def compresses(self, num_tokens: int) -> bool:
        """Whether a patched layer of ``num_tokens`` tokens is compressed at all (``min_tokens``)."""
        return self.enabled and num_tokens >= self.min_tokens

    def pools_kv_at(self, num_tokens: int) -> bool:
        return self.pools_kv and self.compresses(num_tokens)

    def merged_count(self, num_tokens: int, grid_h: int, grid_w: int) -> int:
        """r: tokens removed from a layer of ``num_tokens`` tokens (a static Python int)."""
        num_dst = (grid_h // 2) * (grid_w // 2)
        if not self.merges or num_dst == 0 or not self.compresses(num_tokens):
            return 0  # (a grid of one row or column has no 2x2 window to merge into)
        return min(int(num_tokens * self.ratio), num_tokens - num_dst)

    # -- construction helpers -------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "BiGainConfig":
        """A named method (``none``, ``tome``, ``todo``, ``bigain-merge``, ``bigain-kv``,
        ``bigain-both``) with field overrides, e.g. ``preset("tome", ratio=0.7)``."""
        if name not in PRESETS:
            _fail("preset", name, " | ".join(PRESETS))
        return cls(**{**PRESETS[name], **overrides})

    def for_task(self, task: str) -> "BiGainConfig":
        """The paper's alpha for a task: ``generation`` (scheduled 0.8 -> 1.2) or
        ``classification`` (fixed 0.9). ToDo keeps alpha = 1, and a config without BiGain KV
        downsampling is returned unchanged (alpha has no effect there: one engine serves both)."""
        if task not in ("generation", "classification"):
            _fail("task", task, "generation | classification")
        if self.kv != "bigain":
            return self
        return dataclasses.replace(self, alpha=None if task == "generation" else 0.9)

    # Fields added after the published sweeps and engines, left out of the dict at their default:
    # a config without them keeps the dict, and so the checkpoint and manifest fingerprints, it
    # had before they existed (from_dict fills the default back in).
    LATER_FIELDS = {"min_tokens": 0, "match_radius": 0}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name, default in self.LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        data["unet_levels"] = None if self.unet_levels is None else list(self.unet_levels)
        data["dit_blocks"] = None if self.dit_blocks is None else list(self.dit_blocks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BiGainConfig":
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ConfigError(f"BiGainConfig data {str(data)[:60]!r} is not allowed; allowed: an object of "
                              "BiGainConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            _fail(unknown[0], data[unknown[0]], "one of the fields " + ", ".join(sorted(known)))
        values = dict(data)
        for key in ("unet_levels", "dit_blocks"):
            if values.get(key) is not None:
                if not isinstance(values[key], (list, tuple)):
                    _fail(key, values[key], "a list of integers >= 0" + (" or null" if key == "dit_blocks" else ""))
                values[key] = tuple(values[key])
        return cls(**values)

    def describe(self) -> str:
        """Short human label, e.g. ``bigain-merge r=0.5`` or ``todo s=2``."""
        parts = []
        if self.merges:
            extras = [name for name, on in (("plan-reuse", self.plan_reuse), ("crossattn", self.merge_crossattn),
                                            ("mlp", self.merge_mlp)) if on]
            if self.match_radius:
                extras.append(f"match radius {self.match_radius}")
            parts.append(f"{self.merge}-merge r={self.ratio:g} ({', '.join([self.anchor, *extras])})")
        if self.pools_kv:
            alpha = "t-scheduled" if self.fixed_alpha is None else f"{self.fixed_alpha:g}"
            parts.append(f"{self.kv}-kv s={self.downsample} alpha={alpha}")
        if parts and self.min_tokens:
            parts.append(f"layers >= {self.min_tokens} tokens")
        return " + ".join(parts) or "none"
