"""TensorRT engines: ONNX -> serialized plan (with or without our plugins), and a Polygraphy runner.

Works with NVIDIA's ``tensorrt`` (10.x/11.x) or PyPI's TensorRT-RTX (``tensorrt_rtx``), through
the API both share: ``Builder`` -> strongly typed ``INetworkDefinition`` -> ``OnnxParser`` ->
``build_serialized_network``. Networks are strongly typed (TensorRT 11 and TensorRT-RTX have no
other kind): the precision is the ONNX graph's own, set at export.

``bigain.ai`` nodes become PLUGIN_V3 layers when :mod:`bigain_export.plugins` is registered
(``use_plugins=True``); otherwise the parser imports each node's model-local function body.

TensorRT-RTX wheel defect: the parser dlopens the unversioned ``libtensorrt_rtx.so`` when
it adds a plugin layer, the wheel ships only ``libtensorrt_rtx.so.1``, and the process aborts
("terminate called without an active exception") unless a file of the unversioned name is on
``LD_LIBRARY_PATH`` when the process starts. :func:`rtx_library_dir` makes that symlink in a
cache folder, :func:`plugin_env` gives the environment to start a process with, and
:func:`build_plan` builds in such a child process by itself when this process lacks it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import EngineError

log = logging.getLogger(__name__)

RTX_LIBRARY = "libtensorrt_rtx.so"
INSTALL_HINT = "pip install tensorrt-rtx-cu13 (PyPI; RTX-class GPUs), or NVIDIA's tensorrt wheel (pip install tensorrt --extra-index-url https://pypi.nvidia.com)"
RTX_GPUS = "TensorRT-RTX runs plans on compute capability 7.5, 8.0, 8.6, 8.9 and 12.x only; not on Hopper (9.0)"
# Function bodies are instantiated once per node with the same local value names: harmless.
_NOISE = ("already exists, the output tensors of this new instance will not be queryable",)


def import_tensorrt():
    """``(module, is_rtx)``: ``tensorrt`` when installed, else ``tensorrt_rtx``."""
    try:
        import tensorrt as trt

        return trt, False
    except ImportError:
        pass
    try:
        import tensorrt_rtx as trt

        return trt, True
    except ImportError:
        raise EngineError(f"backend 'trt' needs TensorRT, which is not installed: {INSTALL_HINT}") from None


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except EngineError:
        return False
    return True


# --------------------------------------------------------------------------- RTX library workaround
def _cache_root() -> Path:
    if os.environ.get("BIGAIN_EXPORT_CACHE"):
        return Path(os.environ["BIGAIN_EXPORT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bigain-export"


def rtx_library_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """A folder holding ``libtensorrt_rtx.so`` -> the wheel's ``libtensorrt_rtx.so.1`` (made once).

    Put it on ``LD_LIBRARY_PATH`` before starting Python (see :func:`plugin_env`).
    """
    try:
        import tensorrt_rtx_libs
    except ImportError:
        raise EngineError(f"tensorrt_rtx_libs is not installed; {INSTALL_HINT}") from None
    target = Path(tensorrt_rtx_libs.__file__).resolve().parent / f"{RTX_LIBRARY}.1"
    if not target.is_file():
        raise EngineError(f"{target}: not found; reinstall tensorrt-rtx-cu13")
    from tensorrt_rtx_bindings import __version__

    folder = Path(cache_dir) if cache_dir is not None else _cache_root() / f"tensorrt-rtx-{__version__}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / RTX_LIBRARY
    if not (link.is_symlink() and link.resolve() == target):
        tmp = folder / f".{RTX_LIBRARY}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)  # atomic: concurrent builders never see a half-made link
    return folder


def plugin_env(base: dict[str, str] | None = None, cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) in which TensorRT-RTX can add plugin layers.

    With full TensorRT it is returned unchanged.
    """
    env = dict(os.environ if base is None else base)
    _, is_rtx = import_tensorrt()
    if is_rtx:
        folder = str(rtx_library_dir(cache_dir))
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        if folder not in parts:
            env["LD_LIBRARY_PATH"] = os.pathsep.join([folder, *parts])
    return env


def plugin_layers_safe() -> bool:
    """Whether this process can add plugin layers without aborting (always, with full TensorRT).

    The loader's search path is fixed when a process starts, so for TensorRT-RTX this asks the
    loader for the unversioned name now; loading it again is harmless (same file, same handle).
    """
    _, is_rtx = import_tensorrt()
    if not is_rtx:
        return True
    try:
        ctypes.CDLL(RTX_LIBRARY)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- build
@dataclass
class BuildReport:
    """What one plan build did (JSON-serialisable)."""

    plan_path: str
    plan_bytes: int
    tensorrt: str  # module and version, e.g. "tensorrt_rtx 1.7.1.116"
    use_plugins: bool
    parse_s: float
    build_s: float
    layer_types: dict[str, int] = field(default_factory=dict)  # e.g. {"PLUGIN_V3": 30, ...}
    subprocess: bool = False

    @property
    def plugin_layers(self) -> int:
        return self.layer_types.get("PLUGIN_V3", 0)


@lru_cache(maxsize=None)
def make_logger(trt):
    """The process's one TensorRT logger (TensorRT keeps the first logger a builder is given)."""

    class Logger(trt.ILogger):
        """TensorRT's messages to :mod:`logging`; keeps errors for the exception message."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING and not any(n in msg for n in _NOISE):
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Logger()


def _first_line(text: str) -> str:
    return " ".join(str(text).strip().split())[:400]


def _describe(error) -> str:
    """One line for a parser error; inside a function body, name the node the body belongs to."""
    stack = list(error.local_function_stack()) if error.local_function_stack_size() else []
    where = f"in the function body of {' > '.join(stack)}, " if stack else ""
    node = error.node_name() or (f"#{error.node()}" if error.node() >= 0 else "")
    what = f"node {node} ({error.node_operator()}): " if node else f"{error.func()}: "
    return f"{where}{what}{_first_line(error.desc())}"


def parse_onnx(trt, logger, onnx_path: Path):
    """``(builder, network, parser)`` for ``onnx_path``; parser errors raise one-line :class:`EngineError`."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    # From the file, so the parser resolves external data next to the model.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        if errors:
            detail = _describe(errors[0]) + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
        else:
            detail = _first_line(logger.errors[-1] if logger.errors else "no error reported")
        raise EngineError(f"{onnx_path}: TensorRT cannot parse it: {detail}")
    return builder, network, parser


def layer_type_counts(network) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(network.num_layers):
        name = network.get_layer(i).type.name
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _write_atomically(data, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a plan is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build_here(onnx_path: Path, plan_path: Path, use_plugins: bool) -> BuildReport:
    trt, is_rtx = import_tensorrt()
    if use_plugins:
        if not plugin_layers_safe():
            raise EngineError(
                f"TensorRT-RTX would abort adding plugin layers: start Python with "
                f"LD_LIBRARY_PATH={rtx_library_dir()} (see bigain_export.backends.trt.plugin_env)"
            )
        from ..plugins import register_plugins

        register_plugins(trt)
    logger = make_logger(trt)
    seen = len(logger.errors)
    t0 = time.perf_counter()
    builder, network, _parser = parse_onnx(trt, logger, onnx_path)
    parse_s = time.perf_counter() - t0
    layers = layer_type_counts(network)
    config = builder.create_builder_config()
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if plan is None or plan.nbytes == 0:
        errors = logger.errors[seen:]
        detail = _first_line(errors[0]) if errors else "no error reported"
        raise EngineError(f"{onnx_path}: TensorRT failed to build a plan: {detail}")
    _write_atomically(memoryview(plan), plan_path)
    log.info("built %s (%.1f MB) in %.1f s; %d plugin layers", plan_path, plan.nbytes / 2**20, build_s, layers.get("PLUGIN_V3", 0))
    return BuildReport(
        str(plan_path), int(plan.nbytes), f"{trt.__name__} {trt.__version__}", use_plugins,
        round(parse_s, 3), round(build_s, 3), layers,
    )


def _our_plugins_registered() -> bool:
    from ..plugins import trt_plugins

    return bool(trt_plugins._REGISTERED)


def _build_in_subprocess(onnx_path: Path, plan_path: Path, use_plugins: bool) -> BuildReport:
    """Run :func:`_build_here` in a fresh interpreter whose environment lets plugins load."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = plugin_env()
    env["PYTHONPATH"] = os.pathsep.join([package_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    with tempfile.TemporaryDirectory(prefix="bigain-trt-") as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "bigain_export.backends.trt", str(onnx_path), str(plan_path), "--report", str(report_path)]
        if not use_plugins:
            cmd.append("--no-plugins")
        log.info("building in a child process (TensorRT-RTX plugin library path): %s", " ".join(cmd[3:]))
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            ours = [line for line in lines if line.startswith("EngineError: ")]
            if ours:
                raise EngineError(ours[-1][len("EngineError: "):])
            how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
            raise EngineError(f"{onnx_path}: TensorRT build process failed ({how}): {_first_line(lines[-1]) if lines else 'no output'}")
        report = BuildReport(**json.loads(report_path.read_text()))
    report.subprocess = True
    return report


def build_plan(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, *, use_plugins: bool = True) -> BuildReport:
    """Parse ``onnx_path`` and write a serialized TensorRT plan to ``plan_path`` (atomically).

    Args:
        use_plugins: register :mod:`bigain_export.plugins` so ``bigain.ai`` nodes become PLUGIN_V3
            layers; ``False`` lets the parser import their standard-op function bodies.
    Returns:
        a :class:`BuildReport` (sizes, times, layer type counts).

    Builds in a child process when this one cannot: TensorRT-RTX without the library symlink on
    ``LD_LIBRARY_PATH`` (plugins), or our plugins already registered here (``use_plugins=False``).
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise EngineError(f"{onnx_path}: no such ONNX file")
    import_tensorrt()  # fail early with the install hint
    if (use_plugins and not plugin_layers_safe()) or (not use_plugins and _our_plugins_registered()):
        return _build_in_subprocess(onnx_path, plan_path, use_plugins)
    return _build_here(onnx_path, plan_path, use_plugins)


# --------------------------------------------------------------------------- run
def _select_polygraphy_backend(is_rtx: bool) -> None:
    """Make Polygraphy import the same TensorRT module as we do (it decides at import time)."""
    from polygraphy import config as polygraphy_config

    if polygraphy_config.USE_TENSORRT_RTX == is_rtx:
        return
    if "polygraphy.backend.trt" in sys.modules:
        want = "1" if is_rtx else "0"
        raise EngineError(
            f"Polygraphy's TensorRT backend was already imported for the other TensorRT; "
            f"set POLYGRAPHY_USE_TENSORRT_RTX={want} before starting Python"
        )
    os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if is_rtx else "0"
    polygraphy_config.USE_TENSORRT_RTX = is_rtx


def make_trt_runner(plan_path: str | os.PathLike, name: str | None = None):
    """A Polygraphy ``TrtRunner`` over the plan (feeds and outputs by tensor name).

    Registers our plugins first: a plan with Python plugin layers deserializes only in a process
    where their creators are registered (and torch can reach the GPU). NOT RUN in this project:
    no machine here can execute an engine (see docs/tensorrt.md).
    """
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise EngineError(f"{plan_path}: no such TensorRT plan")
    trt, is_rtx = import_tensorrt()
    if is_rtx and not plugin_layers_safe():
        log.warning("TensorRT-RTX may abort loading plugin layers; start Python with LD_LIBRARY_PATH=%s", rtx_library_dir())
    from ..plugins import register_plugins

    register_plugins(trt)
    _select_polygraphy_backend(is_rtx)
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    def load_engine():
        # Runs at activate(); Polygraphy reports failure as a bare "Could not deserialize engine".
        try:
            return EngineFromBytes(plan_path.read_bytes)()
        except Exception as exc:  # noqa: BLE001  PolygraphyException, RuntimeError from the bindings
            import torch

            if not torch.cuda.is_available():
                hint = "no CUDA device is visible: TensorRT plans run on NVIDIA GPUs only"
            else:
                hint = RTX_GPUS if is_rtx else "needs an NVIDIA GPU and the TensorRT version that built it"
            raise EngineError(f"{plan_path}: {trt.__name__} {trt.__version__} cannot load this plan here ({hint}): {_first_line(exc)}") from exc

    return TrtRunner(load_engine, name=name or f"trt:{plan_path.name}")


# --------------------------------------------------------------------------- child process entry
def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bigain_export.backends.trt", description="Build a TensorRT plan from an ONNX file.")
    parser.add_argument("onnx")
    parser.add_argument("plan")
    parser.add_argument("--no-plugins", action="store_true", help="let the parser import the function bodies")
    parser.add_argument("--report", help="write the BuildReport here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = _build_here(Path(args.onnx), Path(args.plan), not args.no_plugins)
    except EngineError as exc:
        print(f"EngineError: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(asdict(report))
    if args.report:
        Path(args.report).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
