"""Patching diffusers models with BiGain: ``apply_bigain`` / ``remove_bigain`` / ``bigain_patched``."""

from .apply import apply_bigain, bigain_patched, patch_info, remove_bigain, resolve_model

__all__ = ["apply_bigain", "remove_bigain", "bigain_patched", "patch_info", "resolve_model"]
