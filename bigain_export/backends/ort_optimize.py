"""ONNX Runtime graph optimization of an exported engine graph (its transformers optimizer).

``optimize_onnx(path, backend=..., precision=...)`` rewrites ``model.onnx`` in place with ONNX
Runtime's own fusions (``onnxruntime.transformers.optimizer.optimize_model``, model type
``unet``, ``opt_level=0``: only the Python fusions; the session applies ORT's runtime graph
optimizations when it loads the file) and returns what was applied, for the manifest.

* Model type ``unet`` for UNets *and* DiTs: it is BERT's fusions (LayerNorm, Gelu,
  SkipLayerNorm, attention without masks) plus the diffusion ones (GroupNorm, NhwcConv,
  BiasSplitGelu, BiasAdd), each applied only where its pattern is found. ``vit`` expects ViT's
  patch-embedding and masks, ``mmdit`` SD3/Flux's joint attention and RMSNorm; a DiT has neither.
* Fusion options follow the backend: ``ort-cuda`` gets ORT's own defaults for ``unet`` (what
  its Stable Diffusion scripts use); ``ort-cpu`` leaves out the fusions whose fused operators
  only have CUDA kernels (GroupNorm, SkipGroupNorm, NhwcConv, BiasSplitGelu, BiasAdd, packed QKV/KV).
* fp16 builds are fused as exported (the graph torch exported in fp16); converting a fused
  fp32 graph with ``convert_float_to_float16`` was measured worse (mean abs drift 2.3e-2 vs
  4.9e-3 on the built-in DiT with merging, tolerance 1e-2), see docs/development.md.
* Our ``bigain.ai`` nodes and their model-local function bodies pass through untouched; the
  result is refused if a node count or a function changed.
* A ``LayerNormalization`` without its optional bias input (torch exports
  ``elementwise_affine=False`` norms that way: DiT's ``norm1``/``norm2``) made the optimizer's
  SkipLayerNorm fusion raise ``IndexError`` (it reads ``node.input[2]``): such norms get an
  explicit zero bias first (the same function), so the fusion applies.

``--ort-optimize onnxscript`` (``optimizer="onnxscript"``) uses onnxscript's
``rewriter.ort_fusions.optimize_for_ort`` instead, which does fuse our dynamo-exported attention
(``MultiHeadAttention``) and GroupNorm where ORT's ``unet`` patterns do not:

* It inlines every model-local function (``onnxscript.optimizer.optimize`` runs ``InlinePass``)
  and rewrites inside function bodies, so the ``bigain.ai`` functions are taken out of the model
  before it runs (their nodes are then unknown ops the inliner and the rules leave alone) and put
  back, byte-identical, afterwards; opset imports it dropped as unused are restored.
* ``GroupNorm`` has CUDA kernels only: for ``ort-cpu`` its rules (instance-to-group
  normalization) are left out, so the graph gets MultiHeadAttention, SkipLayerNorm and Gelu and
  runs on the CPU; ``ort-cuda`` gets onnxscript's full rule set. A CUDA-only op in a CPU graph
  is refused.
* The record has the same keys; ``model_type`` holds ``onnxscript <version>`` (its rules have no
  model type, and the manifest's ``versions`` do not list onnxscript).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EngineError

log = logging.getLogger(__name__)

ORT_OPTIMIZE = ("auto", "none", "fusions", "onnxscript")
DEFAULT_ORT_OPTIMIZE = "auto"
MODEL_TYPE = "unet"
OPT_LEVEL = 0
FUSION_PRECISIONS = ("fp32", "fp16")
# Fused operators that ONNX Runtime implements only on CUDA.
CUDA_ONLY_FUSIONS = ("enable_group_norm", "enable_skip_group_norm", "enable_nhwc_conv", "enable_bias_splitgelu",
                     "enable_bias_add", "enable_packed_qkv", "enable_packed_kv")
DOMAIN = "bigain.ai"
# Which optimizer ``optimize_model_proto`` runs, per --ort-optimize choice that optimizes.
OPTIMIZERS = ("onnxruntime", "onnxscript")
OPTIMIZER_OF = {"fusions": "onnxruntime", "onnxscript": "onnxscript"}
ONNXSCRIPT_OPTIMIZER = "onnxscript.rewriter.ort_fusions"
# com.microsoft ops that ONNX Runtime implements only on CUDA (refused in a non-CUDA graph).
CUDA_ONLY_OPS = ("GroupNorm", "SkipGroupNorm", "NhwcConv", "BiasSplitGelu", "BiasAdd")
# The keys of the manifest's ``ort_optimization`` record (``optimize_model_proto``; checked by engine/manifest.py).
RECORD_KEYS = frozenset({"optimizer", "onnxruntime", "model_type", "opt_level", "for_backend", "precision", "float16",
                         "fusions", "com_microsoft_nodes", "layernorm_bias_added", "seconds"})


def resolve_ort_optimize(choice: str, backend: str, precision: str) -> str:
    """``none``, ``fusions`` or ``onnxscript`` for a build of ``backend`` at ``precision`` (one-line errors).

    ``auto``: for fp16 ONNX Runtime builds, onnxscript's fusions on ``ort-cuda`` (they fuse this
    exporter's attention and GroupNorm: the SD2 UNet at 1024 px went from 81.6 to 39.2 ms on an
    H200, docs/benchmarks.md session 10; ORT's own ``unet`` patterns match neither) and ORT's
    fusions on ``ort-cpu`` (onnxscript's attention was not timed there); none otherwise (fp32
    engines stay exactly what was exported; the fp32 drift guarantee of 1e-4 is not put at stake
    for no measured gain).
    """
    if choice not in ORT_OPTIMIZE:
        raise ConfigError(f"--ort-optimize {choice!r} is not allowed; allowed: {' | '.join(ORT_OPTIMIZE)}")
    if backend == "trt":
        if choice in OPTIMIZER_OF:
            raise ConfigError(f"--ort-optimize {choice} is not applicable to --backend trt (TensorRT fuses the "
                              "ONNX graph itself, and ONNX Runtime's fused com.microsoft ops do not parse there); "
                              "allowed with trt: auto | none")
        return "none"
    if choice in OPTIMIZER_OF and precision not in FUSION_PRECISIONS:
        raise ConfigError(f"--ort-optimize {choice} is not allowed with --precision {precision} (ONNX Runtime's "
                          f"fused operators were not tested in it); allowed: --precision {' | '.join(FUSION_PRECISIONS)}, "
                          "or --ort-optimize none")
    if choice == "auto":
        if precision != "fp16":
            return "none"
        return "onnxscript" if backend == "ort-cuda" else "fusions"
    return choice


def recorded_choice(record: dict[str, Any] | None) -> str:
    """The ``--ort-optimize`` choice (``none`` / ``fusions`` / ``onnxscript``) a manifest's
    ``ort_optimization`` record was built with."""
    if not record:
        return "none"
    return "onnxscript" if record.get("optimizer") == ONNXSCRIPT_OPTIMIZER else "fusions"


def fusion_options(backend: str):
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(MODEL_TYPE)
    if backend != "ort-cuda":
        for name in CUDA_ONLY_FUSIONS:
            setattr(options, name, False)
    return options


def add_missing_layernorm_bias(model) -> int:
    """Give every 2-input ``LayerNormalization`` an explicit zero bias (same result); returns how many.

    ONNX Runtime's ``FusionSkipLayerNormalization`` reads the bias as ``node.input[2]`` and raised
    ``IndexError`` on our exported DiT, whose non-affine norms have a constant scale and no bias.
    """
    import numpy as np
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    added = 0
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        scale = initializers.get(node.input[1])
        if scale is None:
            continue  # a computed scale: leave the node as it is (the fusion then skips it only if safe)
        name = f"{node.input[1]}__zero_bias"
        if name not in initializers:
            zeros = np.zeros_like(numpy_helper.to_array(scale))
            initializers[name] = numpy_helper.from_array(zeros, name)
            model.graph.initializer.append(initializers[name])
        node.input.append(name)
        added += 1
    return added


def custom_nodes(model) -> dict[str, int]:
    """Our ``bigain.ai`` nodes by op type (``export.onnx_export.custom_node_counts``)."""
    from ..export.onnx_export import custom_node_counts

    return custom_node_counts(model)


def _contrib_nodes(model) -> dict[str, int]:
    """ONNX Runtime's fused ``com.microsoft`` nodes by op type, sorted (as recorded in manifests)."""
    from ..export.onnx_export import custom_node_counts

    return dict(sorted(custom_node_counts(model, "com.microsoft").items()))


def _functions(model) -> list[bytes]:
    return sorted(f.SerializeToString(deterministic=True) for f in model.functions)


@contextlib.contextmanager
def _quiet():
    """The optimizer logs every fusion and draws a tqdm bar; keep the CLI's output readable."""
    loggers = [logging.getLogger(n) for n in ("onnxruntime", "onnxruntime.transformers", "fusion_base", "onnx_model")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING) if lg.level else logging.WARNING)
    try:
        try:
            import tqdm
        except ImportError:
            tqdm = None
        if tqdm is None:
            yield
        else:
            from unittest import mock

            with mock.patch.object(tqdm.tqdm, "__init__", _silent_tqdm_init(tqdm.tqdm.__init__)):
                yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _silent_tqdm_init(original):
    def init(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    return init


def _onnxscript_fuse(model, backend: str):
    """onnxscript's ORT fusions on ``model`` (modified: its bigain.ai functions are taken out and
    put back); returns ``(ModelProto, fusion counts, 0)`` as :func:`_onnxruntime_fuse` does."""
    from unittest import mock

    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import _core, instance_to_group_normalization, optimize_for_ort

    ours = [f for f in model.functions if f.domain == DOMAIN]
    others = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(others)  # onnxscript inlines these (none in our exports today)
    rules = list(_core.ORT_PATTERN_REWRITE_RULES)
    if backend != "ort-cuda":  # GroupNorm: CUDA kernels only
        group_norm = {id(r) for r in instance_to_group_normalization.rules.rules}
        rules = [r for r in rules if id(r) not in group_norm]
    with mock.patch.object(_core, "ORT_PATTERN_REWRITE_RULES", rules):
        fused, counts = optimize_for_ort(ir.serde.deserialize_model(model))
    result = ir.serde.serialize_model(fused)
    result.functions.extend(ours)
    have = {o.domain for o in result.opset_import}
    result.opset_import.extend(o for o in model.opset_import if o.domain not in have)
    return result, {k: int(v) for k, v in sorted(counts.items()) if v}, 0  # no LayerNorm biases added


def optimize_model_proto(model, *, backend: str, precision: str, optimizer: str = "onnxruntime"):
    """``(optimized ModelProto, record)``: ONNX Runtime's (or onnxscript's) fusions on ``model`` (not modified)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {optimizer!r} is not allowed; allowed: {' | '.join(OPTIMIZERS)}")
    import onnxruntime

    if optimizer == "onnxscript":
        _check_onnxscript_target(backend, precision)
        import onnxscript

        name, fuse = "onnxscript's ORT fusions", lambda m: _onnxscript_fuse(m, backend)
        recorded_as, model_type = ONNXSCRIPT_OPTIMIZER, f"onnxscript {onnxscript.__version__}"
    else:
        name, fuse = "ONNX Runtime's transformers optimizer", lambda m: _onnxruntime_fuse(m, backend)
        recorded_as, model_type = "onnxruntime.transformers.optimizer", MODEL_TYPE
    result, fusions, biases, contrib, seconds = _guarded(model, name, fuse)
    cuda_only = sorted(set(contrib) & set(CUDA_ONLY_OPS))
    if optimizer == "onnxscript" and backend != "ort-cuda" and cuda_only:
        raise EngineError(f"onnxscript's ORT fusions produced CUDA-only ops ({', '.join(cuda_only)}) for {backend}; "
                          "build with --ort-optimize none")
    record = {
        "optimizer": recorded_as,
        "onnxruntime": onnxruntime.__version__,
        "model_type": model_type,
        "opt_level": OPT_LEVEL,
        "for_backend": backend,
        "precision": precision,
        "float16": precision == "fp16",
        "fusions": fusions,
        "com_microsoft_nodes": contrib,  # what the graph now holds (ORT's statistics leave out e.g. FastGelu)
        "layernorm_bias_added": biases,
        "seconds": round(seconds, 2),
    }
    return result, record


def _guarded(model, name: str, fuse):
    """Run ``fuse`` on a copy of ``model``; refuse a result whose bigain.ai nodes or function bodies
    changed. ``fuse(copy) -> (result, fusion counts, layernorm biases added)``; returns those plus
    the result's com.microsoft nodes and the seconds it took."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    before, functions = custom_nodes(model), _functions(model)
    start = time.perf_counter()
    try:
        result, fusions, biases = fuse(model)
    except Exception as exc:  # noqa: BLE001  the optimizer's own failures are internal errors of a fusion
        raise EngineError(f"{name} failed ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else 'no message'}); "
                          "build with --ort-optimize none") from exc
    seconds = time.perf_counter() - start
    after = custom_nodes(result)
    if after != before or _functions(result) != functions:
        raise EngineError(f"{name} changed the bigain.ai nodes ({before} -> {after}) "
                          "or their function bodies; build with --ort-optimize none")
    return result, fusions, biases, _contrib_nodes(result), seconds


def _onnxruntime_fuse(model, backend: str):
    """ONNX Runtime's transformers optimizer on ``model`` (modified: missing LayerNorm biases added)."""
    from onnxruntime.transformers.optimizer import optimize_model

    biases = add_missing_layernorm_bias(model)
    with _quiet():
        optimized = optimize_model(model, model_type=MODEL_TYPE, num_heads=0, hidden_size=0, opt_level=OPT_LEVEL,
                                   optimization_options=fusion_options(backend), use_gpu=backend == "ort-cuda")
    stats = {k: int(v) for k, v in sorted(optimized.get_fused_operator_statistics().items()) if v}
    return optimized.model, stats, biases


def _check_onnxscript_target(backend: str, precision: str) -> None:
    if backend not in ("ort-cpu", "ort-cuda"):
        raise ConfigError(f"onnxscript's ORT fusions are not applicable to --backend {backend} (com.microsoft ops); "
                          "allowed backends: ort-cpu | ort-cuda")
    if precision not in FUSION_PRECISIONS:
        raise ConfigError(f"onnxscript's ORT fusions are not allowed with --precision {precision}; "
                          f"allowed: --precision {' | '.join(FUSION_PRECISIONS)}")


def optimize_onnx(path: str | Path, *, backend: str, precision: str, optimizer: str = "onnxruntime") -> dict[str, Any]:
    """Rewrite the ONNX file at ``path`` with ``optimizer``'s fusions (atomically); returns the manifest record."""
    import onnx

    from ..export.onnx_export import save_model_atomically

    path = Path(path)
    optimized, record = optimize_model_proto(onnx.load(str(path)), backend=backend, precision=precision,
                                             optimizer=optimizer)
    save_model_atomically(optimized, path)
    log.info("ORT fusions for %s: %s", backend, record["fusions"] or "none matched")
    return record


def describe(record: dict[str, Any] | None) -> str:
    """One line for ``bigain-export info``."""
    if not record:
        return "none (the graph as exported)"
    fusions = ", ".join(f"{k} {v}" for k, v in record["com_microsoft_nodes"].items()) or "no pattern matched"
    if record["optimizer"] == ONNXSCRIPT_OPTIMIZER:
        return (f"{record['optimizer']} ({record['model_type']}, onnxruntime {record['onnxruntime']}), "
                f"for {record['for_backend']}, {'fp16' if record['float16'] else record['precision']}: {fusions}")
    return (f"{record['optimizer']} (onnxruntime {record['onnxruntime']}), model_type {record['model_type']}, "
            f"opt_level {record['opt_level']}, for {record['for_backend']}, "
            f"{'fp16' if record['float16'] else record['precision']}: {fusions}")
