"""One checkpoint file per sweep point, holding its finished parts, each with what it measured.

A point is measured in **parts** (``classify``, ``fid@<seed>``, ``drift``, ``latency``, ``flops``),
so a run cut off mid-point (a 600 s GPU call, a preemption) loses at most one part. Each part is
saved with its **facts**, ``validate.provenance.measured_facts`` (model identity and weight hash,
the point's full config per task, backend, dtype, planned engine, seed, data bytes, device,
package versions, drift reference) narrowed to the settings that part depends on (``run.py``). A
part is reused only when the new run's facts are identical (``provenance.fingerprint``);
otherwise it is measured again and the log names the first fact that differs, so a checkpoint
never vouches for something it did not measure.

Layout: ``<out>/points/<stem>.json`` (``validate.checkpoint``'s file names), written atomically
after every part::

    {"schema": "bigain-export/sweep-point", "version": 1, "name": point name,
     "parts": {part: {"fingerprint": sha256 of facts, "facts": {...}, "result": {...}}}}
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from ..validate.atomic import atomic_write
from ..validate.checkpoint import _file_stem
from ..validate.provenance import compare_paths, fingerprint

logger = logging.getLogger(__name__)

SCHEMA = "bigain-export/sweep-point"
VERSION = 1


def first_difference(old: Any, new: Any) -> str | None:
    """``"method.config.classify.ratio 0.5 vs 0.7"`` for the first differing fact, else None."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return None if old == new else "the facts"
    lines = compare_paths(old, new, [(key,) for key in sorted(set(old) | set(new))])
    return lines[0] if lines else None


class PointRecords:
    """The finished parts of every point of a sweep, in ``folder``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _path(self, name: str) -> Path:
        return self.folder / f"{_file_stem(name)}.json"

    def _read(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("sweep checkpoint %s is unreadable (%s): measuring %s again", path, exc, name)
            return {}
        if not (isinstance(data, dict) and data.get("schema") == SCHEMA and data.get("version") == VERSION
                and data.get("name") == name and isinstance(data.get("parts"), dict)):
            logger.warning("sweep checkpoint %s is not a version-%d record of %s: measuring it again", path, VERSION, name)
            return {}
        return data["parts"]

    def load(self, name: str, part: str, facts: Mapping[str, Any]) -> dict[str, Any] | None:
        """The saved result of ``name``'s ``part`` if it was measured with exactly ``facts``, else None."""
        saved = self._read(name).get(part)
        if not isinstance(saved, dict):
            return None
        facts = json.loads(json.dumps(facts))  # the form it was saved in
        if saved.get("fingerprint") != fingerprint(facts) or saved.get("facts") != facts:
            logger.warning("sweep point %s: %s was measured with other settings (%s): measuring it again",
                           name, part, first_difference(saved.get("facts"), facts) or "fingerprint differs")
            return None
        return saved.get("result")

    def save(self, name: str, part: str, facts: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Add (or replace) ``part`` in ``name``'s record; the file is rewritten atomically."""
        parts = self._read(name)
        facts = json.loads(json.dumps(facts))
        parts[part] = {"fingerprint": fingerprint(facts), "facts": facts, "result": dict(result)}
        record = {"schema": SCHEMA, "version": VERSION, "name": name, "parts": parts}
        atomic_write(self._path(name), json.dumps(record, allow_nan=True) + "\n")
