"""Apply and remove BiGain on diffusers models, pipelines and denoisers.

``apply_bigain`` swaps the self-attention processor of each target block for a
:class:`BiGainAttnProcessor` wrapping the original, and adds forward pre/post hooks that tell
the processors the input size, the timestep and (UNets) each block's input. Everything replaced
is kept, so ``remove_bigain`` restores the model exactly; applying twice first removes.
The layout is resolved and validated before anything changes, so a failure patches nothing.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ..config import BiGainConfig
from ..errors import UnsupportedModelError
from .adapters import SUPPORTED, is_instance_named, layout_of
from .processor import BiGainAttnProcessor, BlockPlan, CallState, MergedQueryProcessor

_RECORD = "_bigain_patch"


@dataclass
class PatchRecord:
    """What one ``apply_bigain`` changed, to undo it."""

    config: BiGainConfig
    state: CallState
    originals: list[tuple[torch.nn.Module, Any]] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    inductor_rule: Any = None  # its claim on kernels/inductor_choices' rule (launch.PERSISTENT_GATHER_NORMS)


def resolve_model(obj: Any) -> torch.nn.Module:
    """The diffusers denoiser inside a model, a DiffusionPipeline or a bigain Denoiser."""
    if is_instance_named(obj, SUPPORTED):
        return obj
    for attr in ("unet", "transformer", "model"):
        inner = getattr(obj, attr, None)
        if inner is not None and is_instance_named(inner, SUPPORTED):
            return inner
    raise UnsupportedModelError(
        f"found {type(obj).__name__}; supported: {', '.join(SUPPORTED)}, or a pipeline/denoiser "
        "with one of them as .unet, .transformer or .model"
    )


def _argument(args: tuple, kwargs: dict, position: int, name: str) -> Any:
    return args[position] if len(args) > position else kwargs.get(name)


def apply_bigain(obj: Any, config: BiGainConfig | None = None, **overrides: Any) -> torch.nn.Module:
    """Patch ``obj`` (model, pipeline or Denoiser) in place; returns the patched diffusers model.

    ``apply_bigain(pipe, ratio=0.5)`` is shorthand for ``BiGainConfig(ratio=0.5)``.
    A config with nothing enabled still installs the (pass-through) patch, so call sites that
    compare methods never branch.
    """
    if config is None:
        config = BiGainConfig(**overrides)
    elif overrides:
        config = BiGainConfig.from_dict({**config.to_dict(), **overrides})
    model = resolve_model(obj)
    remove_bigain(model)
    layout = layout_of(model, config)  # validates before anything changes
    _check_extra_merges(layout, config)
    state = CallState(config, layout.patch_size, _num_train_timesteps(obj))
    record = PatchRecord(config, state)

    def before_model(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = _argument(args, kwargs, 0, layout.sample_arg)
        state.start_call((int(sample.shape[-2]), int(sample.shape[-1])), _argument(args, kwargs, 1, "timestep"))

    def after_model(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        state.end_call()

    record.handles.append(model.register_forward_pre_hook(before_model, with_kwargs=True))
    record.handles.append(model.register_forward_hook(after_model, with_kwargs=True))
    for target in layout.targets:
        block, plan = target.block, BlockPlan()
        attn = block.attn1
        processor = BiGainAttnProcessor(attn.processor, state, target.metric_from_block_input, plan)
        record.originals.append((attn, attn.processor))
        attn.processor = processor
        record.target_names.append(target.name)
        if target.metric_from_block_input:
            record.handles.append(block.register_forward_pre_hook(_block_input_hook(processor), with_kwargs=True))
        if config.merges and config.merge_crossattn:
            record.originals.append((block.attn2, block.attn2.processor))
            block.attn2.processor = MergedQueryProcessor(block.attn2.processor, plan)
        if config.merges and config.merge_mlp:
            record.handles.append(block.ff.register_forward_pre_hook(lambda m, args, plan=plan: (plan.merge(args[0]), *args[1:])))
            record.handles.append(block.ff.register_forward_hook(lambda m, args, out, plan=plan: plan.unmerge(out)))
        record.handles.append(block.register_forward_hook(lambda m, args, out, plan=plan: plan.clear()))
    _hold_inductor_rule(record)
    setattr(model, _RECORD, record)
    return model


def _hold_inductor_rule(record: PatchRecord) -> None:
    """A merging patch holds the Inductor rule that makes the norm after its unmerge persistent,
    where ``launch.PERSISTENT_GATHER_NORMS`` asks for it (kernels/inductor_choices.py)."""
    from ..kernels import launch

    if record.config.merges and launch.PERSISTENT_GATHER_NORMS:
        from ..kernels import inductor_choices

        record.inductor_rule = inductor_choices.hold()
        if record.inductor_rule is None:
            warnings.warn("launch.PERSISTENT_GATHER_NORMS: another package's Inductor choices are in place "
                          f"({type(inductor_choices.V.choices).__name__}); the norms after the unmerge keep "
                          "Inductor's own kernels", stacklevel=3)


def _check_extra_merges(layout, config: BiGainConfig) -> None:
    """``merge_crossattn`` needs a cross-attention ``attn2``, ``merge_mlp`` a feed-forward ``ff``."""
    for target in layout.targets:
        if config.merge_crossattn and getattr(target.block, "attn2", None) is None:
            raise UnsupportedModelError(
                f"BiGainConfig.merge_crossattn=True, but block {target.name} has no cross-attention (attn2); "
                "allowed: false for this model"
            )
        if config.merge_mlp and getattr(target.block, "ff", None) is None:
            raise UnsupportedModelError(
                f"BiGainConfig.merge_mlp=True, but block {target.name} has no feed-forward (ff); allowed: false"
            )


def _num_train_timesteps(obj: Any) -> int:
    """T of the model's scheduler (pipeline or Denoiser), 1000 when unknown."""
    scheduler_config = getattr(obj, "scheduler_config", None)
    if scheduler_config is None:
        scheduler_config = getattr(getattr(obj, "scheduler", None), "config", None) or {}
    return int(scheduler_config.get("num_train_timesteps", 1000))


def _block_input_hook(processor: BiGainAttnProcessor):
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        processor.block_input = _argument(args, kwargs, 0, "hidden_states")

    return hook


def remove_bigain(obj: Any) -> torch.nn.Module:
    """Undo :func:`apply_bigain`; a no-op on an unpatched model."""
    model = resolve_model(obj)
    record: PatchRecord | None = getattr(model, _RECORD, None)
    if record is None:
        return model
    for handle in record.handles:
        handle.remove()
    for attn, original in record.originals:
        attn.processor = original
    if record.inductor_rule is not None:
        from ..kernels import inductor_choices

        inductor_choices.release(record.inductor_rule)
    delattr(model, _RECORD)
    return model


def patch_info(obj: Any) -> PatchRecord | None:
    """The active patch of a model, or None."""
    return getattr(resolve_model(obj), _RECORD, None)


@contextlib.contextmanager
def bigain_patched(obj: Any, config: BiGainConfig | None = None, **overrides: Any) -> Iterator[torch.nn.Module]:
    """``with bigain_patched(unet, BiGainConfig(ratio=0.7)) as model: ...`` — removed on exit."""
    model = apply_bigain(obj, config, **overrides)
    try:
        yield model
    finally:
        remove_bigain(model)
