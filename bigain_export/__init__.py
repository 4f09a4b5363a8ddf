"""bigain-export: BiGain token compression baked into diffusion-model engines.

Public verbs (heavy backends load lazily, so ``import bigain_export`` works on CPU-only machines)::

    from bigain_export import BiGainConfig, apply_bigain, remove_bigain
    apply_bigain(pipe_or_model, BiGainConfig.preset("bigain-merge", ratio=0.5))
"""

from .config import BiGainConfig
from .errors import BigainError
from .patch import apply_bigain, bigain_patched, remove_bigain

__version__ = "0.1.0"
__all__ = ["BiGainConfig", "BigainError", "apply_bigain", "remove_bigain", "bigain_patched", "__version__"]
