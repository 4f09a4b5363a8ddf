"""Per-method checkpoints of a validation run, so a stopped run resumes where it stopped.

A validation of many methods (engines built one by one, thousands of classifier calls each) can
outlast a job's time limit or a preemptible GPU. ``validate(..., resume=True)`` saves each method's
finished result under ``<out_dir>/methods/`` and, on the next run, loads it instead of measuring
the method again.

A checkpoint is used only when its **fingerprint** matches: the sha256 of everything that
method's result was measured on (``provenance.measured_facts``: model weights, the method's full
config and engine, settings, seeds, data bytes, FID reference, package versions, device, and the
facts of its drift reference). Another config, engine or model under the same method name is
re-measured, never reused. Files are written atomically, the grid ``.npz`` before the ``.json``
that commits it, and the ``.json`` records the grid's sha256: a run killed mid-write leaves the
previous checkpoint or none, never half of one or a mismatched pair.
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

CHECKPOINT_VERSION = 2


def _file_stem(name: str) -> str:
    """A portable file name for a method name (``engine:bigain-kv-s2`` -> ``engine_bigain-kv-s2-<hash>``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "method"
    return f"{safe[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class MethodCheckpoints:
    """Finished method results: ``<folder>/<stem>.json`` plus ``<stem>.npz`` (sample grid)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def load(self, name: str, fingerprint: str) -> tuple[dict[str, Any], torch.Tensor | None] | None:
        """``(result, grid samples or None)`` of ``name`` measured on ``fingerprint``, else None."""
        stem = self.folder / _file_stem(name)
        path = Path(f"{stem}.json")
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            ok = (isinstance(data, dict) and data.get("version") == CHECKPOINT_VERSION
                  and isinstance(data.get("result"), dict))
        except (OSError, ValueError) as exc:
            logger.warning("checkpoint %s is unreadable (%s): measuring %s again", path, exc, name)
            return None
        if not ok:
            logger.warning("checkpoint %s is not a version-%d checkpoint: measuring %s again", path, CHECKPOINT_VERSION, name)
            return None
        if data.get("fingerprint") != fingerprint or data.get("name") != name:
            logger.warning("checkpoint %s was measured on other facts (model, config, engine, settings or "
                           "data): measuring %s again", path, name)
            return None
        samples = None
        if data.get("samples_sha256") is not None:
            grid = Path(f"{stem}.npz")
            try:
                if _sha256(grid) != data["samples_sha256"]:
                    raise ValueError("sha256 differs from its checkpoint")
                with np.load(grid, allow_pickle=False) as npz:
                    samples = torch.from_numpy(npz["samples"])
            except (OSError, KeyError, ValueError) as exc:
                logger.warning("checkpoint grid %s is unusable (%s): measuring %s again", grid, exc, name)
                return None
        return data["result"], samples

    def save(self, name: str, fingerprint: str, result: Mapping[str, Any], samples: torch.Tensor | None) -> None:
        """Write ``name``'s result (and its grid samples) atomically; the JSON last, as the commit."""
        # Names like "tome-0.7" contain dots: build file names by concatenation (a suffix
        # replacement would cut "0.7-<hash>" and make tome-0.3/0.5/0.7 share one file).
        stem = self.folder / _file_stem(name)
        samples_sha = None
        if samples is not None:
            with atomic_path(f"{stem}.npz") as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, samples=samples.detach().to(torch.float32).cpu().numpy())
                samples_sha = _sha256(tmp)
        record = {"version": CHECKPOINT_VERSION, "name": name, "fingerprint": fingerprint,
                  "samples_sha256": samples_sha, "result": dict(result)}
        atomic_write(f"{stem}.json", json.dumps(record, allow_nan=True) + "\n")
