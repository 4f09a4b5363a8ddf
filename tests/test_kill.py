"""Issue 9: ``build`` and ``validate --resume`` killed (SIGINT, SIGTERM, SIGKILL) at several points.

After every kill no later command trusts a partial artifact (no engine folder or the old, intact
one; no report.json, so ``check`` refuses), SIGINT/SIGTERM end with one line and leave no staging
folder, a SIGKILLed build's staging folder is removed by the next build, and a resumed validation
reports exactly what an uninterrupted one does. Real subprocesses, tiny models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bigain_export.models import save_denoiser
from tiny import micro_dit

pytestmark = [pytest.mark.slow]
pytest.importorskip("onnxruntime")


def _cli(*argv):
    return [sys.executable, "-m", "bigain_export.cli.main", *argv]


def _env(tmp_path):
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def run_until(argv, marker: str, sig: int, env, delay: float = 0.0, timeout: float = 300):
    """Start ``argv``, send ``sig`` once ``marker`` appears in its output; (rc, output)."""
    # A test runner started in the background (`cmd &`, nohup) ignores SIGINT, and so would the
    # child: Python installs its KeyboardInterrupt handler only over the default disposition.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            time.sleep(delay)
            proc.send_signal(sig)
            break
        if time.monotonic() > deadline:
            break
    rest, _ = proc.communicate(timeout=timeout)
    output = "".join(lines) + (rest or "")
    assert proc.returncode != 0, f"finished before it could be killed at {marker!r}:\n{output}"
    return proc.returncode, output


def _assert_clean_exit(rc, output, sig, command):
    """SIGINT/SIGTERM: the documented status and one line, no traceback. SIGKILL: killed."""
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
        return
    want = {signal.SIGINT: (130, "interrupted (SIGINT)"), signal.SIGTERM: (143, "terminated (SIGTERM)")}[sig]
    assert rc == want[0], output
    assert f"bigain-export {command}: {want[1]}" in output and "Traceback" not in output, output


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    model = save_denoiser(micro_dit(), root / "micro-dit", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    np.savez(root / "data.npz", images=(torch.rand(4, 1, 32, 32, generator=g) * 2 - 1).numpy(),
             labels=np.array([0, 3, 9, 5]))
    return {"model": str(model), "data": str(root / "data.npz")}


# (signal, marker, delay, target): first builds and rebuilds over a good engine, every signal.
BUILD_POINTS = [
    (signal.SIGINT, "[1/2] exporting", 0.8, "new"),
    (signal.SIGTERM, "[2/2] measuring drift", 0.0, "old"),
    (signal.SIGKILL, "[1/2] exporting", 0.8, "old"),
    (signal.SIGKILL, "[2/2] measuring drift", 0.0, "new"),
]


def test_killed_builds_leave_nothing_trusted(assets, tmp_path):
    from bigain_export.engine.build import load_engine

    env = _env(tmp_path)
    build = ("build", "--model", assets["model"], "--backend", "ort-cpu", "--batch-size", "2", "--drift-inputs", "2")
    engines = tmp_path / "engines"
    old = engines / "old"
    assert subprocess.run(_cli(*build, "--out", str(old)), env=env, capture_output=True).returncode == 0
    old_manifest = (old / "manifest.json").read_text()

    for sig, marker, delay, target in BUILD_POINTS:
        rc, output = run_until(_cli(*build, "--out", str(engines / target), "--config", "bigain-kv"), marker, sig, env, delay)
        _assert_clean_exit(rc, output, sig, "build")
        if sig != signal.SIGKILL:
            assert [p for p in engines.iterdir() if p.name.startswith(".")] == []  # staging removed on the way out
        assert not (engines / "new").exists()  # never half an engine under its name
        assert load_engine(old).manifest.bigain_config.kv == "none"  # the old engine, intact
        assert (old / "manifest.json").read_text() == old_manifest

    # The next build removes what the SIGKILLed ones left behind.
    assert [p for p in engines.iterdir() if p.name.startswith(".")]
    done = subprocess.run(_cli(*build, "--out", str(engines / "new")), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in engines.iterdir()) == ["new", "old"]
    assert subprocess.run(_cli("info", str(engines / "new")), env=env, capture_output=True).returncode == 0


# One run after another, each resumed from the last one's checkpoints and killed in a later method.
VALIDATE_POINTS = [
    (signal.SIGTERM, "validate eager-none: diffusion classifier"),
    (signal.SIGINT, "validate eager-same-config: diffusion classifier"),
    (signal.SIGKILL, "validate engine: diffusion classifier"),
]


def _measured(path):
    report = json.loads((path / "report.json").read_text())
    return {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in report["methods"].items()}


def test_killed_validations_resume_to_the_uninterrupted_numbers(assets, tmp_path):
    from bigain_export import BiGainConfig
    from bigain_export.engine.build import build_engine
    from bigain_export.models.registry import load_denoiser

    env = _env(tmp_path)
    engine = tmp_path / "engine"
    build_engine(load_denoiser(assets["model"]), BiGainConfig.preset("bigain-merge"), engine, backend="ort-cpu",
                 batch=2, drift_feeds_count=1)
    out = tmp_path / "report"
    validate = ("validate", "--data", assets["data"], "--limit", "4", "--engine", str(engine), "--schedule",
                "uniform-4", "--drift-inputs", "4", "--no-fid", "--no-progress")
    from bigain_export.cli.main import main

    assert main([*validate, "--out", str(tmp_path / "plain")]) == 0  # in this process: one start-up less
    # A complete report of an earlier run sits in the folder: a killed run must not leave it there.
    out.mkdir()
    (out / "report.json").write_text((tmp_path / "plain" / "report.json").read_text())
    (out / "samples.png").write_bytes(b"an old figure")
    resumable = (*validate, "--resume", "--out", str(out))
    for number, (sig, marker) in enumerate(VALIDATE_POINTS):
        rc, output = run_until(_cli(*resumable), marker, sig, env)
        _assert_clean_exit(rc, output, sig, "validate")
        assert not (out / "report.json").exists() and not (out / "samples.png").exists()
        check = subprocess.run(_cli("check", str(out), "--baseline", str(tmp_path / "plain")), env=env,
                               capture_output=True, text=True)
        assert check.returncode == 2 and "cannot read report" in check.stderr
        assert not list(out.rglob(".*.tmp"))  # no half-written file under any name
        assert len(list((out / "methods").glob("*.json"))) == number  # the methods finished before the kill
    resumed = subprocess.run(_cli(*resumable), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "validate eager-none: from checkpoint" in resumed.stderr
    assert "validate eager-same-config: from checkpoint" in resumed.stderr
    assert _measured(out) == _measured(tmp_path / "plain")
