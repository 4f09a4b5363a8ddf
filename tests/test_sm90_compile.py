"""Every Triton kernel compiles for sm_90 (H100/H200) as the launchers launch it, on this CPU
machine, and the kernels whose speed rests on it keep their registers (no spill): the Triton
interpreter of test_kernels.py checks what the kernels compute, not whether the GPU compiler takes
them. Uses scripts/check_sm90.py (Triton's own ptxas and cuobjdump, shipped in its wheel)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install -e '.[dev]' installs it)")
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("the interpreter compiles nothing", allow_module_level=True)
if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists():
    pytest.skip("this Triton wheel ships no NVIDIA toolchain", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import check_sm90  # noqa: E402


@pytest.fixture(scope="module")
def rows():
    return check_sm90.check(["sd2-1024", "dit-xl2-512", "float32"], arch=90)


def test_every_launch_compiles_for_sm90(rows):
    kernels = {row["kernel"] for row in rows}
    # both similarity kernels, the three selections, the merge, unmerge and KV pooling were captured
    assert {"best_anchor_resident_kernel", "best_anchor_kernel", "radix_hist_kernel", "one_program_select_kernel",
            "small_select_kernel", "merge_kernel", "gather_rows_kernel", "kv_pool_kernel", "group_count_kernel",
            "group_starts_kernel", "group_fill_kernel", "grouped_merge_kernel"} <= kernels
    assert [row for row in rows if "error" in row] == []


def test_the_kernels_that_must_not_spill_do_not(rows):
    spills = [(row["shape"], row["kernel"], row["stack"]) for row in rows
              if row.get("kernel") in check_sm90.MUST_NOT_SPILL and row.get("stack", 0) > 0]
    assert spills == []


def test_a_spill_is_reported(monkeypatch):
    """The check itself can fail: the nested similarity kernel at SD2's shape spills (Triton 3.6
    to 3.9; should a later Triton stop spilling there, pick another kernel that does)."""
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "SIM_RESIDENT", False)
    rows = check_sm90.check(["sd2-1024"], arch=90, only=("best_anchor_kernel",))
    global_form = [row for row in rows if row["constexprs"]["R"] == 0]  # (R=1: the local form, also launched)
    assert {row["kernel"] for row in rows} == {"best_anchor_kernel"} and global_form[0]["stack"] > 0
