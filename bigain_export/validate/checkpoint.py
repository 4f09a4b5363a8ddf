"""Per-method checkpoints of a validation run, so a stopped run resumes where it stopped.

A validation of many methods (engines built one by one, thousands of classifier calls each) can
outlast a job's time limit or a preemptible GPU. ``validate(..., resume=True)`` saves each method's
finished result under ``<out_dir>/methods/`` and, on the next run with the same settings, loads it
instead of measuring the method again.

A checkpoint is used only when its **fingerprint** matches: a hash of the settings, the images,
labels and FID reference. A method is identified by its name, so use a fresh folder when a name
starts to mean something else (another config, another engine). Files are written atomically: a
run killed mid-write leaves the previous checkpoint or none, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .atomic import atomic_path, atomic_write

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


def fingerprint(settings: Mapping[str, Any], images: torch.Tensor, labels: torch.Tensor, extra: Mapping[str, Any]) -> str:
    """sha256 over the settings (JSON), the exact image and label bytes and ``extra`` facts."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CHECKPOINT_VERSION, "settings": settings, "extra": extra},
                             sort_keys=True, default=str).encode())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    digest.update(torch.as_tensor(labels, dtype=torch.long).cpu().numpy().tobytes())
    return digest.hexdigest()


def _file_stem(name: str) -> str:
    """A portable file name for a method name (``engine:bigain-kv-s2`` -> ``engine_bigain-kv-s2-<hash>``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "method"
    return f"{safe[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class MethodCheckpoints:
    """Finished method results of one run: ``<folder>/<stem>.json`` plus ``<stem>.npz`` (sample grid)."""

    def __init__(self, folder: str | os.PathLike, run_fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = run_fingerprint

    def load(self, name: str) -> tuple[dict[str, Any], torch.Tensor | None] | None:
        """``(result, grid samples or None)`` of ``name`` when a matching checkpoint exists, else None."""
        path = self.folder / f"{_file_stem(name)}.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("checkpoint %s is unreadable (%s): measuring %s again", path, exc, name)
            return None
        if data.get("fingerprint") != self.fingerprint or data.get("name") != name:
            logger.warning("checkpoint %s is from other settings or data: measuring %s again", path, name)
            return None
        samples = None
        grid = self.folder / f"{_file_stem(name)}.npz"
        if data.get("has_samples") and grid.is_file():
            with np.load(grid, allow_pickle=False) as npz:
                samples = torch.from_numpy(npz["samples"])
        return data["result"], samples

    def save(self, name: str, result: Mapping[str, Any], samples: torch.Tensor | None) -> None:
        """Write ``name``'s result (and its grid samples) atomically; the JSON last, as the commit."""
        # Names like "tome-0.7" contain dots: build file names by concatenation (a suffix
        # replacement would cut "0.7-<hash>" and make tome-0.3/0.5/0.7 share one file).
        stem = self.folder / _file_stem(name)
        if samples is not None:
            with atomic_path(f"{stem}.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(handle, samples=samples.detach().to(torch.float32).cpu().numpy())
        record = {"name": name, "fingerprint": self.fingerprint, "has_samples": samples is not None,
                  "result": dict(result)}
        atomic_write(f"{stem}.json", json.dumps(record, allow_nan=True) + "\n")
