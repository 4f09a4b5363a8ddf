"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Reports and cached statistics are read by CI jobs that may race a writer (or follow one that was
killed), so every file is written to a temporary name in the same folder and moved into place with
``os.replace``, which is atomic on POSIX and Windows within one file system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; restore at once
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def check_writable(folder: str | os.PathLike, *, what: str, min_free_bytes: int = 16 << 20) -> Path:
    """Raise a one-line :class:`~bigain_export.errors.ConfigError` unless ``folder`` can take files.

    Called before long work starts, so a read-only, full or mistyped output folder fails at once
    instead of after hours of computing. Creates ``folder`` (and its parents) and writes, then
    removes, a probe file in it.
    """
    from ..errors import ConfigError

    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{what} {str(folder)!r} is a file; allowed: a folder (it is created if missing)")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / ".write-probe", b"ok")
        (folder / ".write-probe").unlink()
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise ConfigError(f"{what} {str(folder)!r} is not writable ({exc.strerror or exc}); allowed: a writable folder") from None
    if free < min_free_bytes:
        raise ConfigError(f"{what} {str(folder)!r} has {free / 2**20:.1f} MiB free; at least "
                          f"{min_free_bytes / 2**20:.0f} MiB is needed")
    return folder
