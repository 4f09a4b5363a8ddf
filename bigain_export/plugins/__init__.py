"""The project's "plugins" folder: TensorRT plugins for BiGain's ``bigain.ai`` ONNX operators.

Shipped inside the package (``bigain_export.plugins``) so that an installed wheel can import it;
it is the user's top-level ``plugins/`` (see docs/tensorrt.md)::

    from bigain_export.plugins import register_plugins
    register_plugins()          # GatedMerge, TokenUnmerge, KVPool under namespace "bigain.ai", version "1"

Modules, one job each:

* :mod:`.specs`: fields, output shapes and type rules, plain Python (no TensorRT import);
* :mod:`.compute`: the arithmetic, one call into :mod:`bigain_export.ops.reference` per operator;
* :mod:`.device`: TensorRT's device pointers as torch tensors, run on TensorRT's stream;
* :mod:`.trt_plugins`: the IPluginV3 classes and their registration.

Importing this package imports neither TensorRT nor CUDA.
"""

from .specs import PLUGIN_NAMESPACE, PLUGIN_VERSION, SPECS

PLUGIN_NAMES = tuple(SPECS)


def register_plugins(trt=None) -> list[str]:
    """Register the TensorRT plugin creators of every ``bigain.ai`` operator (idempotent)."""
    from .trt_plugins import register_plugins as register

    return register(trt)


__all__ = ["PLUGIN_NAMESPACE", "PLUGIN_VERSION", "PLUGIN_NAMES", "register_plugins"]
