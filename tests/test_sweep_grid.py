"""Sweep grid parsing and expansion, Pareto fronts and the budget answer (no model runs here)."""

from __future__ import annotations

import json

import pytest

from bigain_export.config import PAPER_DIT_BLOCKS, BiGainConfig
from bigain_export.errors import ConfigError
from bigain_export.sweep.grid import default_grid, expand, load_grid_file, parse_entry
from bigain_export.sweep.pareto import Budget, fastest_within, pareto_front


def test_default_grid_is_the_issues():
    names = [e.name for e in default_grid()]
    assert names == ["none", "tome-0.3", "tome-0.5", "tome-0.7", "bigain-merge-0.3", "bigain-merge-0.5",
                     "bigain-merge-0.7", "todo-s2", "bigain-kv-s2", "bigain-both-0.5-s2"]
    both = default_grid()[-1].config
    assert (both.merge, both.kv, both.ratio, both.downsample) == ("bigain", "bigain", 0.5, 2)


def test_entries_from_the_command_line():
    e = parse_entry("bigain-merge:ratio=0.7,anchor=released")
    assert e.name == "bigain-merge-0.7-released"
    assert e.config == BiGainConfig.preset("bigain-merge", ratio=0.7, anchor="released")
    e = parse_entry("fraction=bigain-merge:dit_blocks=[1,2,3,4],ratio=0.7")
    assert e.name == "fraction" and e.config.dit_blocks == (1, 2, 3, 4) and e.config.ratio == 0.7
    assert parse_entry("tome:anchor=fixed").config.anchor == "fixed"
    assert parse_entry("todo").name == "todo"


@pytest.mark.parametrize("text, message", [
    ("fastest", "preset 'fastest' is not known"),
    ("tome:ratio", "'ratio' is not FIELD=VALUE"),
    ("tome:ratio=0.9", "BiGainConfig.ratio=0.9 is not allowed"),
    ("tome:anchor=window", "BiGainConfig.anchor='window' is not allowed"),
    ("tome:speed=2", "unexpected keyword argument 'speed'"),
])
def test_bad_entries_are_one_line_errors(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_entry(text)
    assert "\n" not in str(info.value)


def test_a_grid_file_expresses_the_dit_ablation(tmp_path):
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps({"grid": [
        "none",
        {"name": "gtm", "preset": "bigain-merge", "vary": {"ratio": [0.5, 0.7], "dit_blocks": [None, [1, 2, 3, 4]]}},
        {"preset": "tome", "anchor": "fixed", "vary": {"ratio": [0.7]}},
    ]}))
    entries = load_grid_file(path)
    assert [e.name for e in entries] == ["none", "gtm-0.5-blocks-paper", "gtm-0.5-blocks1-4", "gtm-0.7-blocks-paper",
                                         "gtm-0.7-blocks1-4", "tome-fixed-0.7"]
    assert entries[2].config.dit_blocks == (1, 2, 3, 4) and entries[1].config.dit_blocks is None
    assert entries[-1].config == BiGainConfig.preset("tome", anchor="fixed", ratio=0.7)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="entry 1 is int; allowed: a string or an object"):
        load_grid_file(path)


def test_expand_adds_the_reference_seeds_random_points_and_skips_unexportable_ones():
    entries = [parse_entry("tome:ratio=0.5"), parse_entry("bigain-merge:ratio=0.5"),
               parse_entry("tomefix=tome:ratio=0.5,anchor=fixed")]
    points, skipped = expand(entries, ["engine", "eager"], seeds=[0, 1, 2])
    names = [p.name for p in points]
    assert names[0] == "none" and points[0].mode == "eager" and points[0].uncompressed  # added reference
    # random ToMe gets one point per seed; deterministic configs one point
    assert [n for n in names if n.startswith("tome-0.5")] == ["tome-0.5@s0", "tome-0.5@s1", "tome-0.5@s2"]
    assert {p.group for p in points if p.entry == "tome-0.5"} == {"tome-0.5"}
    assert "bigain-merge-0.5" in names and "engine:bigain-merge-0.5" in names and "engine:tomefix" in names
    assert skipped == [{"point": "engine:tome-0.5", "reason": skipped[0]["reason"]}]
    assert "random anchors cannot be exported" in skipped[0]["reason"]
    assert len(names) == len(set(names))
    with pytest.raises(ConfigError, match="used twice"):
        expand([parse_entry("a=tome"), parse_entry("a=todo")])
    with pytest.raises(ConfigError, match="--modes fast"):
        expand(entries, ["fast"])


def test_paper_blocks_default():
    assert BiGainConfig().dit_blocks is None and len(PAPER_DIT_BLOCKS) == 10


def _p(name, ms, acc, fid=None):
    return {"name": name, "latency": {"ms": ms}, "accuracy": acc, "fid": fid}


def test_pareto_front_on_a_constructed_case():
    points = [
        _p("ref", 10.0, 0.90, 50.0),
        _p("a", 5.0, 0.85, 60.0),    # faster, worse: on the front
        _p("b", 6.0, 0.80, 55.0),    # dominated by a on accuracy (slower and worse); not on FID's
        _p("c", 4.0, 0.70, 70.0),    # fastest: on both fronts
        _p("d", 10.0, 0.89, 51.0),   # as slow as ref and worse on both: dominated on both
        _p("e", 8.0, 0.90, None),    # faster than ref at the same accuracy: ref leaves the accuracy front
        _p("f", 3.0, None, None),    # nothing to compare: on no front
    ]
    assert pareto_front(points, "accuracy", higher_is_better=True) == ["c", "a", "e"]
    assert pareto_front(points, "fid", higher_is_better=False) == ["c", "a", "b", "ref"]


def test_budget_picks_the_fastest_point_within_bounds():
    ref = _p("none", 10.0, 0.90, 50.0)
    points = [ref, _p("fast-bad", 4.0, 0.80, 51.0), _p("mid", 6.0, 0.895, 52.0), _p("slow-ok", 8.0, 0.90, 50.5),
              _p("mid-fid", 5.0, 0.90, 60.0)]
    answer = fastest_within(points, ref, Budget.parse(1.0, "5%"))
    assert answer["point"] == "mid" and answer["within"] == ["mid", "slow-ok", "none"]
    assert answer["speedup"] == pytest.approx(10.0 / 6.0)
    assert "fastest within accuracy drop <= 1 points and FID rise <= 5%: mid" in answer["message"]
    assert fastest_within(points, ref, Budget.parse(1.0, None))["point"] == "mid-fid"  # FID unbounded
    assert fastest_within(points, ref, Budget.parse(None, "0.6"))["point"] == "slow-ok"  # absolute FID units
    assert fastest_within(points, ref, Budget.parse(0.0, "0"))["point"] == "none"
    assert "no compression pays off" in fastest_within(points, ref, Budget.parse(0.0, "0"))["message"]
    # nothing qualifies when the reference itself has no latency and every other point is out of bounds
    no_ref = [{**ref, "latency": None}, *points[1:]]
    none = fastest_within(no_ref, no_ref[0], Budget.parse(0.0, "0"))
    assert none["point"] is None and none["message"].startswith("no configuration is within")


@pytest.mark.parametrize("acc, fid, message", [
    (-1.0, None, "--max-acc-drop -1.0 is not allowed"),
    (None, "five%", "--max-fid-rise 'five%' is not allowed"),
    (None, "-2", "--max-fid-rise '-2' is not allowed"),
])
def test_bad_budgets(acc, fid, message):
    with pytest.raises(ConfigError, match=message):
        Budget.parse(acc, fid)


@pytest.mark.parametrize("name, shared", [("speed.json", 9), ("speed-core.json", 7), ("speed-min.json", 5),
                                          ("beyond.json", 2)])
def test_grids_that_reuse_the_published_sweep_share_its_entries(name, shared):
    """scripts/grids/{speed,speed-core,speed-min,beyond}.json reuse the published sweep's checkpoints: an entry under a
    published name has the published config (else the reuse would silently be of another method)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "scripts" / "grids"
    published = {e.name: e.config for e in load_grid_file(root / "published.json")}
    grid = {e.name: e.config for e in load_grid_file(root / name)}
    common = [n for n in grid if n in published]
    assert len(common) == shared and all(published[n] == grid[n] for n in common)
