"""The sweep grid: which token-compression configurations are measured, and how.

A **grid entry** is a named :class:`~bigain_export.config.BiGainConfig`. A **point** is one entry
measured one way (``mode``): ``eager`` (the patched PyTorch model), ``compile`` (the same under
``torch.compile``), ``cudagraphs`` (``torch.compile`` with CUDA graphs, ``mode="reduce-overhead"``:
no per-kernel launch cost, as a deployed runtime replays) or ``engine`` (an ONNX Runtime /
TensorRT engine built from it), with one global
RNG ``seed`` (ToMe's random anchors draw from it; deterministic configs get one point only).

Entries are written as ``[NAME=]PRESET[:FIELD=VALUE,FIELD=VALUE...]`` on the command line
(``bigain-merge:ratio=0.7,anchor=released``, ``blocks4=bigain-merge:dit_blocks=[1,2,3,4]``; values
are JSON, bare words are strings) or in a JSON grid file (:func:`load_grid_file`)::

    {"grid": ["none", "tome:ratio=0.7",
              {"name": "gtm", "preset": "bigain-merge", "anchor": "window",
               "vary": {"ratio": [0.5, 0.7], "dit_blocks": [null, [1, 2, 3, 4]]}}]}

``vary`` expands to the product of its lists (here 4 entries, named ``gtm-0.5``,
``gtm-0.5-blocks1-4``, ...): the DiT ablation of issue 12 is one such file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..config import PRESETS, BiGainConfig
from ..errors import ConfigError

MODES = ("eager", "compile", "cudagraphs", "engine")
DEFAULT_RATIOS = (0.3, 0.5, 0.7)
DEFAULT_DOWNSAMPLE = 2
REFERENCE_NAME = "none"


@dataclass(frozen=True)
class GridEntry:
    """A named configuration of the grid."""

    name: str
    config: BiGainConfig


@dataclass(frozen=True)
class SweepPoint:
    """One measurement of the sweep: an entry's config, measured in ``mode`` with RNG ``seed``.

    ``name`` is unique in a sweep: the entry name, prefixed by the mode unless eager
    (``engine:bigain-merge-0.7``), suffixed by the seed when several seeds are swept
    (``tome-0.7@s2``). ``group`` is the name without the seed (points that differ only by seed).
    """

    name: str
    group: str
    entry: str
    config: BiGainConfig
    mode: str = "eager"
    seed: int = 0

    @property
    def uncompressed(self) -> bool:
        return not self.config.enabled

    def identity(self) -> dict[str, Any]:
        """What makes this point this point (part of every checkpoint fingerprint)."""
        return {"config": self.config.to_dict(), "mode": self.mode, "seed": self.seed}


def is_random(config: BiGainConfig) -> bool:
    """True when the config draws random numbers per call (ToMe's random anchors)."""
    return config.merges and config.merge == "tome" and config.anchor == "random"


def default_grid(ratios: Sequence[float] = DEFAULT_RATIOS, downsample: int = DEFAULT_DOWNSAMPLE) -> list[GridEntry]:
    """Issue 12's default: none; ToMe and BiGain merging at each ratio; ToDo, BiGain KV and both
    combined (BiGain merging at 0.5 + BiGain KV) at ``downsample``."""
    entries = [GridEntry(REFERENCE_NAME, BiGainConfig.preset("none"))]
    for preset in ("tome", "bigain-merge"):
        entries += [GridEntry(f"{preset}-{r:g}", BiGainConfig.preset(preset, ratio=r)) for r in ratios]
    entries += [
        GridEntry(f"todo-s{downsample}", BiGainConfig.preset("todo", downsample=downsample)),
        GridEntry(f"bigain-kv-s{downsample}", BiGainConfig.preset("bigain-kv", downsample=downsample)),
        GridEntry(f"bigain-both-0.5-s{downsample}", BiGainConfig.preset("bigain-both", ratio=0.5, downsample=downsample)),
    ]
    return entries


def _blocks_label(blocks: Sequence[int]) -> str:
    """``[1, 2, 3, 4, 5, 7, 8]`` -> ``1-5.7-8`` (runs of consecutive indices)."""
    runs, start, prev = [], None, None
    for i in sorted(blocks):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            runs.append((start, prev))
            start = prev = i
    if start is not None:
        runs.append((start, prev))
    return ".".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _suffix(field: str, value: Any) -> str:
    """Name suffix of an override: ratio 0.7 -> ``0.7``, downsample 4 -> ``s4``, dit_blocks -> ``blocks1-4``."""
    if field == "ratio":
        return f"{value:g}"
    if field == "downsample":
        return f"s{value}"
    if field == "anchor":
        return str(value)
    if field == "dit_blocks":
        return "blocks-paper" if value is None else f"blocks{_blocks_label(value)}"
    if field == "alpha":
        return "alpha-sched" if value is None else f"alpha{value:g}"
    return f"{field}{value}"


def make_entry(preset: str, overrides: Mapping[str, Any], name: str | None = None, source: str = "grid entry") -> GridEntry:
    """A grid entry from a preset and field overrides; the name defaults to preset + override suffixes."""
    if preset not in PRESETS:
        raise ConfigError(f"{source}: preset {preset!r} is not known; allowed: {' | '.join(PRESETS)}")
    try:
        config = BiGainConfig.preset(preset, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()})
    except TypeError as exc:  # an unknown field name
        names = ", ".join(f.name for f in dataclasses.fields(BiGainConfig))
        raise ConfigError(f"{source}: {exc.args[0].split('() ')[-1]}; allowed fields: {names}") from None
    auto = "-".join([preset, *(_suffix(k, v) for k, v in overrides.items())])
    return GridEntry(name or auto, config)


def _split_fields(text: str) -> list[str]:
    """Split ``a=1,b=[1,2],c=x`` on the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare words: anchor=released


def parse_entry(text: str) -> GridEntry:
    """``[NAME=]PRESET[:FIELD=VALUE,...]`` -> a grid entry (a one-line ConfigError when malformed)."""
    source = f"--grid entry {text!r}"
    name = None
    head, _, fields = text.partition(":")
    if "=" in head:
        name, _, head = head.partition("=")
        name = name.strip()
        if not name:
            raise ConfigError(f"{source}: empty name; allowed: [NAME=]PRESET[:FIELD=VALUE,...]")
    overrides: dict[str, Any] = {}
    for item in _split_fields(fields):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{source}: {item!r} is not FIELD=VALUE; allowed: [NAME=]PRESET[:FIELD=VALUE,...]")
        overrides[key.strip()] = _value(raw.strip())
    return make_entry(head.strip(), overrides, name, source)


def _entries_from_object(item: Mapping[str, Any], source: str) -> list[GridEntry]:
    fields = dict(item)
    preset = fields.pop("preset", None)
    if not isinstance(preset, str):
        raise ConfigError(f"{source}: entry {json.dumps(item)} has no \"preset\"; allowed presets: {' | '.join(PRESETS)}")
    name = fields.pop("name", None)
    vary = fields.pop("vary", {}) or {}
    if not isinstance(vary, dict) or not all(isinstance(v, list) and v for v in vary.values()):
        raise ConfigError(f"{source}: \"vary\" of {name or preset!r} must map fields to non-empty lists; got {vary!r}")
    base = make_entry(preset, fields, name, source).name
    if not vary:
        return [make_entry(preset, fields, base, source)]
    out = []
    for combo in itertools.product(*vary.values()):
        overrides = dict(zip(vary, combo))
        label = "-".join([base, *(_suffix(k, v) for k, v in overrides.items())])
        out.append(make_entry(preset, {**fields, **overrides}, label, source))
    return out


def load_grid_file(path: str | Path) -> list[GridEntry]:
    """Grid entries from a JSON file: a list (or ``{"grid": [...]}``) of entry strings or objects."""
    source = f"--grid-file {str(path)!r}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    items = data.get("grid") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: expected a non-empty list of entries (or {{\"grid\": [...]}})")
    entries: list[GridEntry] = []
    for item in items:
        if isinstance(item, str):
            entries.append(parse_entry(item))
        elif isinstance(item, dict):
            entries += _entries_from_object(item, source)
        else:
            raise ConfigError(f"{source}: entry {item!r} is {type(item).__name__}; allowed: a string or an object")
    return entries


def expand(
    entries: Iterable[GridEntry], modes: Sequence[str] = ("eager",), seeds: Sequence[int] = (0,),
) -> tuple[list[SweepPoint], list[dict[str, str]]]:
    """Points of ``entries`` x ``modes`` (random configs also x ``seeds``), plus the skipped ones.

    An uncompressed eager point is always first: it is the reference of drift, accuracy drop and
    FID rise (added when the grid lacks one). ToMe with random anchors cannot be baked into an
    engine (a new pattern per call): its engine points are skipped, with the reason.
    """
    entries = list(entries)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"--modes {' '.join(bad) or '(none)'} is not allowed; allowed: {' | '.join(MODES)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds)) or '(none)'} is not allowed; allowed: distinct integers")
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"grid entry name {dupes[0]!r} is used twice; allowed: distinct names (use NAME=PRESET...)")
    if not any(not e.config.enabled for e in entries):
        name = REFERENCE_NAME if REFERENCE_NAME not in names else "uncompressed"
        entries.insert(0, GridEntry(name, BiGainConfig.preset("none")))
    else:  # the reference first
        entries.sort(key=lambda e: e.config.enabled)
    points, skipped = [], []
    for mode in sorted(dict.fromkeys(modes), key=lambda m: m != "eager"):  # eager first
        for entry in entries:
            group = entry.name if mode == "eager" else f"{mode}:{entry.name}"
            if mode == "engine" and is_random(entry.config):
                skipped.append({"point": group, "reason": "ToMe with random anchors cannot be exported "
                                "(a new pattern per call); add an entry with anchor=fixed"})
                continue
            point_seeds = seeds if is_random(entry.config) else seeds[:1]
            for seed in point_seeds:
                name = group if len(point_seeds) == 1 else f"{group}@s{seed}"
                points.append(SweepPoint(name, group, entry.name, entry.config, mode, int(seed)))
    if points[0].mode != "eager" or not points[0].uncompressed:
        reference = next(e for e in entries if not e.config.enabled)
        points.insert(0, SweepPoint(reference.name, reference.name, reference.name, reference.config, "eager", int(seeds[0])))
    return points, skipped
