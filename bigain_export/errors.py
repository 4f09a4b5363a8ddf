"""One error hierarchy for the whole package.

Every user-facing failure raises a subclass of :class:`BigainError` with a one-line message that
names the bad value (or file) and what is allowed; the CLI prints that line, never a traceback.
"""


class BigainError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(BigainError, ValueError):
    """A configuration field has a value outside what is allowed."""


class UnsupportedModelError(BigainError):
    """The model, block layout or input cannot be patched or exported."""


class ExportError(BigainError):
    """ONNX export failed or produced an invalid model."""


class EngineError(BigainError):
    """An engine is missing, corrupted, mismatched, or failed to build or run."""


class DataError(BigainError):
    """A data set or built-in model is missing or malformed."""


class ValidationError(BigainError):
    """A validation run or a regression check could not be computed."""
