"""The manifest beside every engine: what was built, from what, and how far it drifts from eager.

An engine directory holds ``model.onnx`` (plus ``model.onnx.data`` above 2 GB, ``model.plan``
for TensorRT, ``model.inlined.onnx`` when asked for) and ``manifest.json``. Loading checks:

* the manifest's structure, field by field (a missing, extra or mistyped field is named);
* **files**: every file the engine uses is listed and hashed (``model.onnx`` always,
  ``model.plan`` for TensorRT, every external-data file the graph references), every listed name
  is a plain file name of a regular file inside the engine directory (no ``..``, no absolute
  paths, no links), nothing unlisted lies in the directory, and every hash matches;
* the ``spec`` (batch, sample shape, precision) matches the ONNX graph's inputs and outputs;
* what the manifest says was built (model, weights hash, config, spec, backend, opset, custom
  nodes, patched blocks, ONNX Runtime optimizations) and the drift measured at build time equal
  the build record that the build wrote into ``model.onnx``'s metadata (``bigain.build``): that
  file is hashed, so a manifest edited after the build, or copied beside another engine's files,
  disagrees with its own graph (the manifest is not a signature: whoever rewrites the graph, its
  record and every hash can forge an engine);
* on request, that it was built from the expected weights, config and model shapes.

Each failure is one :class:`~bigain_export.errors.EngineError` line naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..backends.ort_optimize import RECORD_KEYS
from ..config import BiGainConfig
from ..errors import BigainError, EngineError
from ..export.spec import DTYPES, DenoiserSpec

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 3  # 3: model.onnx carries the build record (bigain.build)
ONNX_NAME = "model.onnx"
PLAN_NAME = "model.plan"
BACKENDS = ("ort-cpu", "ort-cuda", "trt")
BUILD_RECORD_KEY = "bigain.build"
# The manifest's fields that the build also writes into model.onnx (``stamp_build_record``).
RECORDED_FIELDS = ("model", "model_sha256", "config", "spec", "backend", "opset", "custom_nodes", "model_info",
                   "patched", "ort_optimization", "drift")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_MANIFEST_BYTES = 16 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Half-precision weights are hashed as float32 (exact), so fp16-stored weights (the built-ins, most
# SD checkpoints) hash alike loaded at fp32 or at fp16; a lossy cast (fp32 -> fp16, fp16 -> bf16)
# makes other values, which hash differently.
_HASHED_AS_FLOAT32 = (torch.float16, torch.bfloat16)


def model_sha256(module: torch.nn.Module) -> str:
    """Hash of the weights' values (names, shapes, bytes; half types as float32), independent of the
    file format. A :class:`~bigain_export.models.Denoiser` from ``load_denoiser`` carries the hash
    taken before its precision cast (``weights_sha256``): use :func:`weights_sha256` for those."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu()
        data = (data.float() if data.dtype in _HASHED_AS_FLOAT32 else data).contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")  # 0-dim too
    return digest.hexdigest()


def record_weights_sha256(denoiser: torch.nn.Module, sha256: str) -> None:
    """Attach the hash of ``denoiser``'s weights as loaded (before a precision cast), with a
    snapshot of its tensors, so that a later in-place change of the weights voids it."""
    denoiser.weights_sha256 = sha256
    denoiser._weights_snapshot = _weights_snapshot(denoiser)


def weights_sha256(denoiser: torch.nn.Module) -> str:
    """The weights' identity: the hash ``load_denoiser`` took as loaded, before ``--precision`` cast
    them (so an engine built at fp16 from fp32 weights matches the same model validated at fp16),
    while the tensors are those it saw, unmodified; else :func:`model_sha256` of them as they are."""
    recorded, snapshot = getattr(denoiser, "weights_sha256", None), getattr(denoiser, "_weights_snapshot", None)
    if isinstance(recorded, str) and snapshot is not None and snapshot == _weights_snapshot(denoiser):
        return recorded
    return model_sha256(denoiser)


def _weights_snapshot(module: torch.nn.Module) -> tuple | None:
    # Which tensors, and their in-place version counters (``copy_``, ``load_state_dict`` and
    # optimizer steps bump them; ``.to()`` makes new tensors). The candidates (``conditioning``:
    # label ids, prompt embeddings) are not weights: a Denoiser bound to other classes shares them.
    try:
        return tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                     for name, t in sorted(module.state_dict().items()) if not name.startswith("conditioning."))
    except RuntimeError:  # inference-mode tensors keep no version counter: no snapshot, always hash
        return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "diffusers", "polygraphy", "tensorrt", "tensorrt_rtx"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001  absent or broken optional dependency
            continue
    from .. import __version__

    found["bigain_export"] = __version__
    return found


def model_info(denoiser) -> dict[str, Any]:
    """What an engine's inputs may hold: labels ``0 .. null_label``, timesteps ``0 .. T-1``.

    Labels are the network's (a DiT bound to 3 of its 1000 classes still takes 0 .. 999 and its
    null label 1000); a text-conditioned network takes no labels (its prompt classes are listed).
    """
    num_classes, null_label = getattr(denoiser.conditioning, "network_labels", (denoiser.num_classes, denoiser.null_label))
    return {
        "kind": denoiser.kind,
        "num_classes": int(num_classes),
        "null_label": int(null_label),
        "num_train_timesteps": int(denoiser.scheduler_config.get("num_train_timesteps", 1000)),
    }


_SPEC_KEYS = {"batch", "sample_shape", "precision", "conditions", "timestep", "output"}


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_fields(data: dict[str, Any]) -> None:
    """Raise ValueError naming the first field whose type or value is wrong."""

    def need(ok: bool, name: str, allowed: str) -> None:
        if not ok:
            raise ValueError(f"{name}={_brief(data.get(name))}; allowed: {allowed}")

    need(isinstance(data.get("model"), str) and bool(data["model"]), "model", "a model spec string")
    need(isinstance(data.get("model_sha256"), str) and bool(_SHA256.fullmatch(data["model_sha256"])),
         "model_sha256", "64 lowercase hex digits")
    need(isinstance(data.get("config"), dict), "config", "a BiGainConfig object")
    spec = data.get("spec")
    need(isinstance(spec, dict) and {"batch", "sample_shape", "precision"} <= set(spec) <= _SPEC_KEYS
         and _is_int(spec.get("batch"), 1) and spec.get("precision") in DTYPES
         and isinstance(spec.get("sample_shape"), list) and len(spec["sample_shape"]) == 3
         and all(_is_int(v, 1) for v in spec["sample_shape"]),
         "spec", "{'batch': int >= 1, 'sample_shape': [C, H, W] ints >= 1, 'precision': fp32 | fp16 | bf16, "
         "optional 'conditions', 'timestep', 'output'}")
    need(data.get("backend") in BACKENDS, "backend", " | ".join(BACKENDS))
    need(_is_int(data.get("opset"), 1), "opset", "an integer >= 1")
    files = data.get("files")
    need(isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v)
                                         for k, v in files.items()),
         "files", "{file name: sha256 hex}")
    need(isinstance(data.get("custom_nodes"), dict)
         and all(isinstance(k, str) and _is_int(v) for k, v in data["custom_nodes"].items()),
         "custom_nodes", "{op type: count}")
    need(isinstance(data.get("versions"), dict) and all(isinstance(v, str) for v in data["versions"].values()),
         "versions", "{package: version string}")
    need(data.get("drift") is None or isinstance(data["drift"], dict), "drift", "an object or null")
    info = data.get("model_info")
    need(isinstance(info, dict) and set(info) == {"kind", "num_classes", "null_label", "num_train_timesteps"}
         and isinstance(info.get("kind"), str) and _is_int(info.get("num_classes"), 0)
         and _is_int(info.get("null_label")) and _is_int(info.get("num_train_timesteps"), 1),
         "model_info", "{'kind': str, 'num_classes': int >= 0, 'null_label': int >= 0, 'num_train_timesteps': int >= 1}")
    need(data.get("patched") is None or isinstance(data["patched"], dict), "patched", "an object or null")
    opt = data.get("ort_optimization")
    need(opt is None or (data.get("backend") in ("ort-cpu", "ort-cuda") and isinstance(opt, dict)
                         and set(opt) == RECORD_KEYS and isinstance(opt.get("fusions"), dict)
                         and all(isinstance(k, str) and _is_int(v) for k, v in opt["fusions"].items())
                         and isinstance(opt.get("float16"), bool) and _is_int(opt.get("opt_level"))),
         "ort_optimization", "null, or (ONNX Runtime engines) {optimizer, onnxruntime, model_type, opt_level, "
         "for_backend, precision, float16, fusions: {op: count}, com_microsoft_nodes, layernorm_bias_added, seconds}")


def plain_file_name(name: str) -> bool:
    """A name that can only mean a file directly inside the engine directory."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and not Path(name).is_absolute() and len(name) <= 255)


@dataclass
class Manifest:
    model: str
    model_sha256: str
    config: dict[str, Any]
    spec: dict[str, Any]
    backend: str
    opset: int
    files: dict[str, str]  # file name -> sha256
    custom_nodes: dict[str, int]
    model_info: dict[str, Any]
    versions: dict[str, str] = field(default_factory=versions)
    drift: dict[str, Any] | None = None
    patched: dict[str, Any] | None = None  # blocks and UNet levels patched (unet_levels=None resolved)
    # ONNX Runtime graph optimizations applied to model.onnx (backends/ort_optimize.py); None (or a
    # manifest written before the field existed): the graph as exported
    ort_optimization: dict[str, Any] | None = None
    manifest_version: int = MANIFEST_VERSION

    @property
    def bigain_config(self) -> BiGainConfig:
        return BiGainConfig.from_dict(self.config)

    @property
    def denoiser_spec(self) -> DenoiserSpec:
        return DenoiserSpec.from_dict(self.spec)

    @property
    def required_files(self) -> tuple[str, ...]:
        return (ONNX_NAME, PLAN_NAME) if self.backend == "trt" else (ONNX_NAME,)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, engine_dir: Path) -> "Manifest":
        path = Path(engine_dir) / MANIFEST_NAME
        if path.is_symlink() or not path.is_file():
            raise EngineError(f"{path}: missing; an engine directory needs {MANIFEST_NAME} (build it with 'bigain-export build')")
        try:
            if path.stat().st_size > _MAX_MANIFEST_BYTES:
                raise ValueError(f"{path.stat().st_size} bytes; allowed: up to {_MAX_MANIFEST_BYTES}")
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
            if not isinstance(data, dict):
                raise ValueError(f"top level is {type(data).__name__}, expected an object")
            version = data.get("manifest_version")
            if version != MANIFEST_VERSION or isinstance(version, bool):
                raise EngineError(f"{path}: manifest_version={_brief(version)}; this tool reads {MANIFEST_VERSION} "
                                  "(rebuild the engine with 'bigain-export build')")
            known = {f.name for f in fields(cls)}
            missing = sorted(known - set(data) - {"versions", "drift", "manifest_version", "patched", "ort_optimization"})
            unknown = sorted(set(data) - known)
            if missing or unknown:
                raise ValueError(f"missing field(s) {missing}" if missing else f"unexpected field(s) {unknown}")
            _check_fields(data)
            manifest = cls(**data)
            manifest.bigain_config, manifest.denoiser_spec  # noqa: B018  validate both
            return manifest
        except BigainError as exc:
            raise EngineError(str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}") from None
        except (ValueError, TypeError, KeyError, OSError, UnicodeDecodeError, RecursionError) as exc:
            raise EngineError(f"{path}: not a valid manifest ({type(exc).__name__}: {str(exc)[:200]})") from None

    def verify_files(self, engine_dir: Path) -> None:
        """Every file listed, plain, inside the directory and unchanged; nothing else there."""
        engine_dir = Path(engine_dir)
        where = engine_dir / MANIFEST_NAME
        for name in self.files:
            if not plain_file_name(name):
                raise EngineError(f"{where}: file name {name!r} is not allowed; allowed: a plain file name "
                                  "inside the engine directory")
        for name in self.required_files:
            if name not in self.files:
                raise EngineError(f"{where}: does not list {name} (a {self.backend} engine needs it listed and hashed)")
        for entry in sorted(engine_dir.iterdir()):
            if entry.name != MANIFEST_NAME and entry.name not in self.files:
                raise EngineError(f"{entry}: not listed in {MANIFEST_NAME} (every file of an engine is listed and hashed)")
        for name, expected in self.files.items():
            path = engine_dir / name
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise EngineError(f"{path}: not a regular file (listed in {MANIFEST_NAME})")
            if not path.is_file():
                raise EngineError(f"{path}: missing (listed in {MANIFEST_NAME})")
            if file_sha256(path) != expected:
                raise EngineError(f"{path}: corrupted or replaced (sha256 differs from {MANIFEST_NAME})")
        self.verify_graph(engine_dir)

    def verify_graph(self, engine_dir: Path) -> None:
        """The ONNX graph's inputs/outputs match ``spec`` and its external data files are listed."""
        import onnx

        path = Path(engine_dir) / ONNX_NAME
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001  protobuf DecodeError and friends
            raise EngineError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
        for tensor in _all_tensors(model):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                location = {e.key: e.value for e in tensor.external_data}.get("location", "")
                if location not in self.files:
                    raise EngineError(f"{path}: external data {location!r} is not listed in {MANIFEST_NAME}")
        spec = self.denoiser_spec
        elem = {torch.float32: onnx.TensorProto.FLOAT, torch.int64: onnx.TensorProto.INT64}
        want = [(t.name, list(t.shape), elem[t.dtype]) for t in spec.inputs], \
               [(t.name, list(t.shape), elem[t.dtype]) for t in spec.outputs]
        got = tuple([(v.name, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim],
                      v.type.tensor_type.elem_type) for v in values]
                    for values in (model.graph.input, model.graph.output))
        for kind, w, g in zip(("inputs", "outputs"), want, got):
            if w != g:
                raise EngineError(f"{path}: graph {kind} {_io_text(g)} do not match the manifest's spec {_io_text(w)}")
        self._verify_build_record(Path(engine_dir), model)

    def build_record(self) -> dict[str, Any]:
        """What the build stamps into model.onnx: the manifest's :data:`RECORDED_FIELDS`, as JSON values."""
        return json.loads(json.dumps({name: getattr(self, name) for name in RECORDED_FIELDS}))

    def _verify_build_record(self, engine_dir: Path, model) -> None:
        where = engine_dir / MANIFEST_NAME
        props = {p.key: p.value for p in model.metadata_props}
        try:
            record = json.loads(props[BUILD_RECORD_KEY], parse_constant=_reject_constant)
            if not isinstance(record, dict) or set(record) != set(RECORDED_FIELDS):
                raise ValueError
        except (KeyError, ValueError, RecursionError):
            raise EngineError(f"{engine_dir / ONNX_NAME}: carries no readable build record ({BUILD_RECORD_KEY!r} "
                              "metadata); rebuild the engine with 'bigain-export build'") from None
        mine = self.build_record()
        for name in RECORDED_FIELDS:
            if mine[name] != record[name]:
                if name == "config":
                    field_name, said, built = name, _config_text(mine[name]), _config_text(record[name])
                else:
                    field_name, said, built = _first_difference(name, mine[name], record[name])
                raise EngineError(f"{where}: {field_name} says {said}, but {ONNX_NAME} was built with {built}: the manifest "
                                  "was edited after the build or belongs to another engine; rebuild the engine")

    def verify_matches(self, engine_dir: Path, *, config: BiGainConfig | None = None, model_hash: str | None = None,
                       sample_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> None:
        where = Path(engine_dir) / MANIFEST_NAME
        if config is not None and self.bigain_config != config:
            raise EngineError(f"{where}: built with config '{self.bigain_config.describe()}', expected '{config.describe()}'")
        if sample_shape is not None and list(sample_shape) != list(self.spec["sample_shape"]):
            raise EngineError(f"{where}: built for samples {self.spec['sample_shape']}, the model takes {list(sample_shape)}")
        if num_classes is not None and num_classes != self.model_info["num_classes"]:
            raise EngineError(f"{where}: built for {self.model_info['num_classes']} classes, the model has {num_classes}")
        if model_hash is not None and model_hash != self.model_sha256:
            # Until session 12 an fp16/bf16 build of fp32 weights rounded them before hashing:
            # such an engine's recorded hash matches no load of the weights, so name that cause.
            older = (" (an fp16/bf16 engine built before 2026-12-02 from fp32 weights recorded the hash of "
                     "rounded weights: rebuild it)" if self.spec.get("precision") in ("fp16", "bf16") else "")
            raise EngineError(f"{where}: built from other weights (model sha256 {self.model_sha256[:12]}…, expected "
                              f"{model_hash[:12]}…){older}; allowed: the weights the engine was built from")


def stamp_build_record(onnx_path: Path, manifest: Manifest) -> None:
    """Write ``manifest``'s build record (:meth:`Manifest.build_record`) into the ONNX file's
    metadata, replacing any earlier one, in place and atomically; external weights stay where
    they are, untouched."""
    import onnx

    from ..export.onnx_export import save_model_atomically

    model = onnx.load(str(onnx_path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key != BUILD_RECORD_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=BUILD_RECORD_KEY, value=json.dumps(manifest.build_record(), sort_keys=True))
    save_model_atomically(model, Path(onnx_path))


def _all_tensors(model):
    """Every TensorProto of ``model``: initializers and tensor attributes, in graphs, subgraphs and functions."""
    import onnx

    def from_graph(graph):
        yield from graph.initializer
        yield from from_nodes(graph.node)

    def from_nodes(nodes):
        for node in nodes:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                yield from attr.tensors
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from from_graph(attr.g)
                for graph in attr.graphs:
                    yield from from_graph(graph)

    yield from from_graph(model.graph)
    for function in model.functions:
        yield from from_nodes(function.node)


def _first_difference(name: str, said: Any, built: Any) -> tuple[str, str, str]:
    """The innermost key where two JSON values differ, as ``(dotted.name, said, built)`` briefs."""
    while isinstance(said, dict) and isinstance(built, dict) and set(said) == set(built):
        key = next(k for k in sorted(said) if said[k] != built[k])
        name, said, built = f"{name}.{key}", said[key], built[key]
    return name, _brief(said), _brief(built)


def _config_text(config: Any) -> str:
    try:
        return f"'{BiGainConfig.from_dict(config).describe()}'"
    except Exception:  # noqa: BLE001  a record's config this tool cannot read: show it as it is
        return _brief(config)


def _io_text(values) -> str:
    return ", ".join(f"{name}{shape}" for name, shape, _ in values)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")
