"""Patched denoiser -> ONNX with BiGain's operators as ``bigain.ai`` nodes plus local functions.

``torch.onnx.export(dynamo=True)`` traces the patched :class:`~bigain_export.models.denoiser.Denoiser`;
the processors emit one custom node per operator (``torch.onnx.ops.symbolic``), so the exporter
never sees the operator internals. The standard-op function bodies are attached afterwards, which
also keeps the exporter's optimizer from inlining them away. The timestep stays a graph input
and alpha(t) is computed in the graph, so one model serves every sampling step.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.inliner
import torch

from ..config import BiGainConfig
from ..errors import BigainError, ExportError
from ..models.casting import cast_temporarily
from ..ops.library import DOMAIN
from ..patch import apply_bigain, patch_info, remove_bigain
from .onnx_ops import EXPORTABLE_ANCHORS, STANDARD_OPSET, attach_functions
from .spec import DenoiserSpec

log = logging.getLogger(__name__)

TWO_GB = 2**31


@dataclass(frozen=True)
class ExportResult:
    path: Path
    inlined_path: Path | None
    custom_nodes: dict[str, int]  # op_type -> count
    opset: int
    patched: dict | None = None  # {"blocks": [...], "unet_levels": [...] or None}: what the config resolved to


def save_inlined_copy(model: onnx.ModelProto, path: Path) -> None:
    """``model`` with its local functions (our nodes' bodies) inlined, for runtimes without functions.
    ``model``'s call nodes get their default attributes written out (same meaning)."""
    save_model_atomically(onnx.inliner.inline_local_functions(with_default_attributes(model)), path)


def with_default_attributes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (in place, returned) with every defaulted attribute of a function (e.g.
    GatedMerge's ``match_radius = 0``) written on its call nodes: ``onnx.inliner`` ignores a
    function's attribute defaults and leaves the body's Constant without a value (ONNX Runtime
    then refuses the model: "Constant node has no data attributes"). In place, not a copy: the
    models inlined here hold the weights, and their callers no longer need them as they were."""
    defaults = {(f.domain, f.name): list(f.attribute_proto) for f in model.functions}
    for node in model.graph.node:
        present = {a.name for a in node.attribute}
        node.attribute.extend(a for a in defaults.get((node.domain, node.op_type), []) if a.name not in present)
    return model


def custom_node_counts(model: onnx.ModelProto, domain: str = DOMAIN) -> dict[str, int]:
    """``{op type: count}`` of the graph's nodes in ``domain`` (ours by default), in graph order."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain == domain:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def trace_to_onnx(denoiser: torch.nn.Module, spec: DenoiserSpec, config: BiGainConfig) -> onnx.ModelProto:
    """Patch, trace and unpatch; returns the in-memory model with local functions attached.

    What is traced is the denoiser's network (``Denoiser.network_module``): its inputs are the
    spec's, i.e. class labels or a text pipeline's embeddings (and SDXL's added conditions).
    """
    inputs = spec.sample_inputs()
    args = tuple(inputs[t.name] for t in spec.inputs)
    apply_bigain(denoiser, config)
    state = patch_info(denoiser).state
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                denoiser.network_module(), args, dynamo=True, opset_version=STANDARD_OPSET,
                input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                external_data=False, verbose=False,
            )
    except ExportError:
        raise
    except Exception as exc:  # the exporter's own errors are long; keep the first line
        ours = _our_error(exc)
        if ours is not None:  # e.g. a config that does not fit the model, raised while tracing
            raise ours from None
        raise ExportError(f"torch.onnx.export failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    finally:
        remove_bigain(denoiser)
    model = program.model_proto
    # (with min_tokens an enabled config may compress no layer at this size; the processors say so)
    expects_nodes = state.compressed or (config.enabled and not config.min_tokens)
    if config.enabled and not expects_nodes:
        log.warning("note: BiGainConfig.min_tokens=%d exceeds every patched layer's token count at this "
                    "input size: the export is the uncompressed model", config.min_tokens)
    if expects_nodes and not custom_node_counts(model):
        # torch.onnx.export silently retries with strict (dynamo) capture when the non-strict one
        # fails; that path traces the reference ops instead of emitting bigain.ai nodes.
        raise ExportError("the exported graph has no bigain.ai nodes (the exporter fell back to another "
                          "capture strategy); re-run with -v to see torch.onnx's report")
    attach_functions(model)
    return model


def _our_error(exc: BaseException) -> BigainError | None:
    """The package's own error inside the exporter's wrapping exceptions, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BigainError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def save_model_atomically(model: onnx.ModelProto, path: Path) -> None:
    """Write ``path`` (and ``path.data`` when over 2 GB) so that a failure leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > TWO_GB - 2**20
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-") as tmp:
        tmp_path = Path(tmp) / path.name
        onnx.save_model(model, tmp_path, save_as_external_data=large, all_tensors_to_one_file=True,
                        location=path.name + ".data" if large else None)
        if large:
            os.replace(Path(tmp) / (path.name + ".data"), path.parent / (path.name + ".data"))
        os.replace(tmp_path, path)


def check_onnx(path: Path) -> None:
    """onnx.checker with full checks (shape inference through the local functions)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path}: onnx.checker failed: {str(exc).strip().splitlines()[0][:300]}") from exc


def export_onnx(
    denoiser: torch.nn.Module,
    config: BiGainConfig,
    path: str | os.PathLike,
    *,
    batch: int = 2,
    precision: str = "fp32",
    inline_copy: bool = False,
    spec: DenoiserSpec | None = None,
) -> ExportResult:
    """Export ``denoiser`` with ``config`` baked in to ``path``.

    Args:
        denoiser: a :class:`~bigain_export.models.denoiser.Denoiser` (converted to ``precision``
            in place for the export and converted back afterwards).
        batch: the static batch size of the engine.
        precision: ``fp32`` | ``fp16`` | ``bf16`` (the graph's compute dtype; I/O stays float32).
        inline_copy: also write ``<name>.inlined.onnx`` with the functions inlined, for runtimes
            that do not take model-local functions.
        spec: the graph's I/O (default ``DenoiserSpec.for_denoiser(denoiser, batch, precision)``);
            the optimum layout asks for a scalar timestep and ``out_sample``.
    """
    path = Path(path)
    if config.merges and config.anchor not in EXPORTABLE_ANCHORS:
        raise ExportError(
            f"anchor={config.anchor!r} draws a new random pattern at every call and cannot be baked into "
            f"an engine; allowed for export: {' | '.join(EXPORTABLE_ANCHORS)} (ToMe: anchor='fixed')"
        )
    spec = spec or DenoiserSpec.for_denoiser(denoiser, batch, precision)
    # Trace on the CPU: the fake outputs of torch.onnx.ops.symbolic are CPU tensors (torch 2.11
    # on CUDA failed with "found two different devices cpu, cuda:0"); tracing computes nothing.
    # The caller's weights come back exact (a cast back from fp16 would round them).
    with cast_temporarily(denoiser, "cpu", spec.dtype):
        model = trace_to_onnx(denoiser, spec, config)
    counts = custom_node_counts(model)
    log.info("exported %s: custom nodes %s", path.name, counts or "none")
    save_model_atomically(model, path)
    try:
        check_onnx(path)
    except ExportError:
        path.unlink(missing_ok=True)
        raise
    inlined = None
    if inline_copy:
        inlined = path.with_suffix(".inlined.onnx")
        save_inlined_copy(model, inlined)
    return ExportResult(path, inlined, counts, STANDARD_OPSET, patched_blocks(denoiser, config))


def patched_blocks(denoiser: torch.nn.Module, config: BiGainConfig) -> dict:
    """The blocks (and UNet levels) ``config`` patches in ``denoiser``: ``unet_levels=None`` resolved."""
    from ..patch.adapters import layout_of
    from ..patch.apply import resolve_model

    layout = layout_of(resolve_model(denoiser), config)
    levels = None if layout.unet_levels is None else list(layout.unet_levels)
    return {"blocks": [t.name for t in layout.targets], "unet_levels": levels}
