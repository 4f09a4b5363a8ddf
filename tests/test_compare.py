"""Polygraphy's verdict on eager vs engine drift (backends/compare.py)."""

from __future__ import annotations

import types
import warnings

import pytest

pytest.importorskip("onnxruntime")
compare = pytest.importorskip("polygraphy.comparator.compare")

from bigain_export import BiGainConfig  # noqa: E402
from bigain_export.engine.build import measure_drift  # noqa: E402
from tiny import cpu_engine, jitter, responsive_dit  # noqa: E402

CONFIG = BiGainConfig.preset("bigain-merge")


def test_the_drift_verdict_is_the_same_with_either_polygraphy_spelling_and_warns_of_no_removal(tmp_path, monkeypatch):
    """``SimpleCompareFunc`` where Polygraphy has it (``CompareFunc.simple`` warned of its removal at
    every drift check), ``CompareFunc.simple`` on versions before it: same numbers, same verdicts."""
    # a model whose output depends on its input, and the same with every weight nudged
    engine = cpu_engine(responsive_dit(), tmp_path / "engine")
    models = {"same": responsive_dit(), "drifted": jitter(responsive_dit(), 0.5, seed=1)}

    def verdicts():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            reports = {k: measure_drift(m, CONFIG, engine, feeds=1) for k, m in models.items()}
        removal = [str(w.message) for w in seen if "deprecated" in str(w.message) and "CompareFunc" in str(w.message)]
        return {k: (r.passed, [o.max_abs for o in r.outputs]) for k, r in reports.items()}, removal

    new, removal = verdicts()
    assert new["same"][0] and not new["drifted"][0]
    assert removal == []
    # a Polygraphy before SimpleCompareFunc, as backends/compare.py sees it
    import polygraphy.comparator

    monkeypatch.setattr(polygraphy.comparator, "compare", types.SimpleNamespace(CompareFunc=compare.CompareFunc))
    old, _ = verdicts()
    assert old == new
