"""Each operator against the independent loop oracle in tests/naive.py, on fresh random inputs."""

import pytest
import torch

from bigain_export.config import BiGainConfig
from bigain_export.ops import reference as ops

import naive

GRIDS = [(4, 4), (6, 8), (5, 7), (7, 7), (9, 4)]


def _random_tokens(b, h, w, c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h * w, c, generator=g)


@pytest.mark.parametrize("h,w", GRIDS)
def test_laplacian_score_matches_loops(h, w):
    x = _random_tokens(2, h, w, 5, seed=h * 10 + w)
    torch.testing.assert_close(ops.laplacian_score(x, h, w).double(), naive.laplacian_score(x, h, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h,w", GRIDS)
@pytest.mark.parametrize("mode", ["window", "released"])
def test_anchor_choice_matches_loops(h, w, mode):
    x = _random_tokens(3, h, w, 4, seed=h + 100 * w)
    score = ops.laplacian_score(x, h, w)
    mask = ops.anchor_mask(ops.window_offsets(score, h, w, mode), h, w)
    expected = (naive.anchors_window if mode == "window" else naive.anchors_released)(score, h, w)
    for b in range(3):
        assert set(torch.nonzero(mask[b]).flatten().tolist()) == expected[b]
    assert (mask.sum(1) == (h // 2) * (w // 2)).all()


def test_released_mode_hand_checked_8x8():
    """Scores 0..63 except one low token per row-quartet: the released code's argmin runs over 4
    consecutive tokens of a row, and its offset lands in a different 2x2 window."""
    score = torch.arange(64, dtype=torch.float32).reshape(1, 64) + 100
    score[0, 3] = 0  # row 0, cols 0..3 -> group 0 -> offset 3 -> window (0,0) bottom-right: token 9
    score[0, 13] = 0  # tokens 12..15 (row 1, cols 4..7) -> group 3 -> offset 1 -> window (0,3): token 7
    offsets = ops.window_offsets(score, 8, 8, "released")
    assert offsets[0, 0, 0] == 3 and offsets[0, 0, 3] == 1
    anchors = set(torch.nonzero(ops.anchor_mask(offsets, 8, 8)[0]).flatten().tolist())
    assert 9 in anchors and 7 in anchors
    # the paper's window mode instead picks token 3's own window (0,1): token 3 itself
    window = set(torch.nonzero(ops.anchor_mask(ops.window_offsets(score, 8, 8, "window"), 8, 8)[0]).flatten().tolist())
    assert 3 in window and 9 not in window


@pytest.mark.parametrize("h,w", GRIDS)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_merge_and_unmerge_match_loops(h, w, ratio, radius):
    b, c = 2, 6
    x = _random_tokens(b, h, w, c, seed=7 * h + w)
    metric = _random_tokens(b, h, w, c, seed=13 * h + w)
    r = BiGainConfig(ratio=ratio).merged_count(h * w, h, w)
    slot = ops.token_merge_plan(metric, h, w, r, "window", match_radius=radius)
    merged = ops.merge(x, slot, h * w - r)
    assert merged.shape == (b, h * w - r, c)
    anchors = naive.anchors_window(ops.laplacian_score(metric, h, w), h, w)
    expected_merged, expected_full = naive.merge_unmerge(x, metric, anchors, r, w, radius)
    for i in range(b):
        torch.testing.assert_close(merged[i].double(), expected_merged[i], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ops.unmerge(merged, slot).double(), expected_full, rtol=1e-5, atol=1e-6)


def test_match_radius_covering_the_grid_is_the_global_match_and_a_small_one_is_not():
    """A radius reaching every window compares every anchor (the global plan, ties included:
    duplicated candidates at the clamped edges change no first maximum); radius 1 on a 16 x 16
    grid restricts sources to their neighbourhood and so changes the plan."""
    h = w = 16
    metric = _random_tokens(2, h, w, 8, seed=5)
    ties = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [1.0, 1, 1, 1]])[torch.randint(3, (2, h * w), generator=torch.Generator().manual_seed(1))]
    r = BiGainConfig(ratio=0.7).merged_count(h * w, h, w)
    for m in (metric, ties):
        assert torch.equal(ops.token_merge_plan(m, h, w, r, "window", match_radius=7),
                           ops.token_merge_plan(m, h, w, r, "window"))
    assert not torch.equal(ops.token_merge_plan(metric, h, w, r, "window", match_radius=1),
                           ops.token_merge_plan(metric, h, w, r, "window"))
    candidates = ops.match_candidates(5, 7, 1)  # odd grid: last row and column join the windows before
    assert candidates.shape == (35, 9) and candidates[34].unique().tolist() == [1, 2, 4, 5]


@pytest.mark.parametrize("h,w", GRIDS)
def test_ratio_zero_is_identity(h, w):
    x = _random_tokens(2, h, w, 3, seed=1)
    slot = ops.token_merge_plan(x, h, w, 0, "window")
    assert torch.equal(ops.unmerge(ops.merge(x, slot, h * w), slot), x)


def test_every_anchor_keeps_its_merged_mean():
    h, w, c = 8, 8, 4
    x = _random_tokens(2, h, w, c, seed=3)
    r = 40
    slot = ops.token_merge_plan(x, h, w, r, "window")
    out = ops.unmerge(ops.merge(x, slot, h * w - r), slot)
    for b in range(2):
        for s in slot[b].unique():
            members = (slot[b] == s).nonzero().flatten()
            torch.testing.assert_close(out[b, members], x[b, members].mean(0).expand(len(members), c))


def test_half_precision_merge_accumulates_in_float32():
    x = _random_tokens(1, 8, 8, 16, seed=5)
    slot = ops.token_merge_plan(x, 8, 8, 30, "window")
    exact = ops.merge(x, slot, 34)
    half = ops.merge(x.to(torch.bfloat16), slot, 34)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), exact, rtol=2e-2, atol=2e-2)


def test_tome_random_anchor_is_one_pattern_for_the_batch_and_seeded():
    x = _random_tokens(3, 6, 6, 4, seed=0)
    m1 = ops.choose_anchors(x, 6, 6, "random", torch.Generator().manual_seed(1))
    m2 = ops.choose_anchors(x, 6, 6, "random", torch.Generator().manual_seed(1))
    assert torch.equal(m1, m2) and torch.equal(m1[0], m1[2])
    assert not torch.equal(m1, ops.choose_anchors(x, 6, 6, "random", torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("h,w,s", [(8, 8, 2), (6, 9, 3), (8, 4, 4), (4, 6, 1)])
@pytest.mark.parametrize("alpha", [0.0, 0.8, 1.0, 1.2])
def test_kv_downsample_matches_loops(h, w, s, alpha):
    x = _random_tokens(2, h, w, 3, seed=h * w * s)
    got = ops.kv_downsample(x, alpha, h, w, s)
    torch.testing.assert_close(got.double(), naive.kv_downsample(x, alpha, h, w, s), rtol=1e-5, atol=1e-6)


def test_kv_alpha_one_is_nearest_exact_and_zero_is_average_pool():
    h, w, c = 8, 12, 5
    x = _random_tokens(2, h, w, c, seed=9)
    grid = x.transpose(1, 2).reshape(2, c, h, w)
    nearest = torch.nn.functional.interpolate(grid, size=(h // 2, w // 2), mode="nearest-exact")
    pooled = torch.nn.functional.avg_pool2d(grid, 2)
    as_tokens = lambda g: g.flatten(2).transpose(1, 2)  # noqa: E731
    torch.testing.assert_close(ops.kv_downsample(x, 1.0, h, w, 2), as_tokens(nearest))
    torch.testing.assert_close(ops.kv_downsample(x, 0.0, h, w, 2), as_tokens(pooled))


def test_kv_downsample_per_sample_alpha():
    x = _random_tokens(2, 4, 4, 3, seed=2)
    alpha = torch.tensor([0.8, 1.2]).reshape(2, 1, 1)
    got = ops.kv_downsample(x, alpha, 4, 4, 2)
    torch.testing.assert_close(got[0], ops.kv_downsample(x[:1], 0.8, 4, 4, 2)[0])
    torch.testing.assert_close(got[1], ops.kv_downsample(x[1:], 1.2, 4, 4, 2)[0])


def test_scheduled_alpha_endpoints():
    alpha = ops.scheduled_alpha(torch.tensor([999, 0, 499.5]), 0.8, 1.2)
    torch.testing.assert_close(alpha, torch.tensor([0.8, 1.2, 1.0]))


@pytest.mark.parametrize("h,w", [(1, 9), (7, 1), (1, 1)])
def test_grids_without_a_window_merge_nothing(h, w):
    x = _random_tokens(2, h, w, 3, seed=2)
    r = BiGainConfig(ratio=0.7).merged_count(h * w, h, w)
    assert r == 0
    slot = ops.token_merge_plan(x, h, w, r, "window")
    assert torch.equal(ops.unmerge(ops.merge(x, slot, h * w), slot), x)
