"""The Triton kernels against the reference operators, on the same random inputs.

CPU (CI): Triton's interpreter (``TRITON_INTERPRET=1``) runs the very kernels on small shapes in
float32/float16 (the interpreter has no bfloat16): the slot maps must be EQUAL to the reference's,
ties included. GPU (``-m gpu``, run on the lent H200, results in docs/benchmarks.md): large shapes,
odd grids, every dtype; since cuBLAS and the kernel sum in different orders, a plan is checked to
be a correct ToMe plan for float64 similarities up to a tolerance, and equal where inputs are exact.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from bigain_export.config import BiGainConfig
from bigain_export.ops import library
from bigain_export.ops import reference as ref

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install -e '.[dev]' installs it)")

GRIDS = [(4, 4), (5, 7), (6, 8), (9, 4), (16, 16)]
ANCHORS = ["window", "released", "fixed", "random"]


INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
interpreter = pytest.mark.interpreter


@pytest.fixture(scope="module")
def interpreted():
    """The kernel launchers, in the inner run under Triton's CPU interpreter (see below)."""
    if not INTERPRETING:
        pytest.skip("runs inside test_kernels_under_the_triton_interpreter (TRITON_INTERPRET=1)")
    from bigain_export.kernels import launch

    return launch


def test_kernels_under_the_triton_interpreter():
    """Triton reads TRITON_INTERPRET when it is imported, so the interpreter tests of this file
    run in a child pytest with it set (and only there: it would reroute every CPU op here)."""
    if INTERPRETING or torch.cuda.is_available():
        pytest.skip("inner run, or a GPU is present (the -m gpu tests run the compiled kernels)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "interpreter", __file__],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]


def _tokens(b, n, c, seed, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, generator=g).to(device=device, dtype=dtype)


def _reference_plan(metric, h, w, r, anchor, offsets, match_radius=0):
    if offsets is None:
        offsets = ref.window_offsets(ref.laplacian_score(metric, h, w), h, w, anchor)
    candidates = ref.local_candidates(h, w, match_radius, metric.device)
    return ref.merge_plan(metric, ref.anchor_tokens(offsets, h, w), r, candidates)


def _offsets(anchor, h, w, seed):
    if anchor == "fixed":
        return torch.zeros(1, h // 2, w // 2, dtype=torch.long)
    if anchor == "random":
        return torch.randint(4, (1, h // 2, w // 2), generator=torch.Generator().manual_seed(seed))
    return None


def _exact_tie_tokens(b, n, seed):
    """Rows drawn from 4 vectors whose unit rows and dot products are exact: ties are real ties."""
    atoms = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [1.0, 1, 1, 1], [1.0, -1, 1, -1]])
    pick = torch.randint(len(atoms), (b, n), generator=torch.Generator().manual_seed(seed))
    return atoms[pick]


# --------------------------------------------------------------------------- CPU: interpreter
@interpreter
@pytest.mark.parametrize("h,w", GRIDS)
@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75])
def test_interpreted_plan_equals_reference(interpreted, h, w, anchor, ratio):
    n = h * w
    r = BiGainConfig(ratio=ratio).merged_count(n, h, w)
    # float16 at the top ratio only (CI time; every ratio in float32)
    for dtype in (torch.float32, torch.float16) if ratio == 0.75 else (torch.float32,):
        metric = _tokens(2, n, 12, seed=h * 31 + w, dtype=dtype)
        offsets = _offsets(anchor, h, w, seed=n)
        got = interpreted.merge_plan(metric, offsets, h, w, r, released=anchor == "released")
        assert torch.equal(got, _reference_plan(metric, h, w, r, anchor, offsets)), (dtype, anchor)


def _force_select(monkeypatch, path):
    """Make every plan take ``path``; chunks of 16-32 sources, so that the large selections carry
    counts and tie ranks across several chunks even on small grids."""
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "SMALL_SELECT", 1 << 30 if path == "small" else 0)
    monkeypatch.setattr(launch, "ONE_PROGRAM_SELECT", 1 << 30 if path == "one-program" else 0)
    monkeypatch.setattr(launch, "SELECT_BLOCK", 16 if path == "one-program" else 32)  # radix: a program a chunk
    assert launch.select_path(5000, torch.device("cpu")) == path


@pytest.fixture(params=["small", "one-program", "radix"])
def select_path(request, monkeypatch):
    """Every selection of the plan: a sort in registers (small_select_kernel), the radix select
    walked by one program per sample, and the radix select over chunks."""
    _force_select(monkeypatch, request.param)
    return request.param


def test_select_paths_by_size():
    from bigain_export.kernels import launch

    cpu = torch.device("cpu")
    assert launch.select_path(launch.SMALL_SELECT, cpu) == "small"
    assert launch.select_path(launch.SMALL_SELECT + 1, cpu) == "one-program"
    assert launch.select_path(launch.ONE_PROGRAM_SELECT + 1, cpu) == "radix"


@interpreter
@pytest.mark.parametrize("h,w", [(5, 7), (16, 16)])
@pytest.mark.parametrize("anchor", ["window", "random"])  # every anchor rule: the plan test above
@pytest.mark.parametrize("path", ["one-program", "radix"])
def test_interpreted_large_selects_equal_reference(interpreted, monkeypatch, h, w, anchor, path):
    """The selections for many sources (forced: these shapes take small_select_kernel otherwise)."""
    _force_select(monkeypatch, path)
    n = h * w
    for ratio in (0.5, 0.75):
        r = BiGainConfig(ratio=ratio).merged_count(n, h, w)
        metric = _tokens(3, n, 12, seed=h + w)
        offsets = _offsets(anchor, h, w, seed=n)
        got = interpreted.merge_plan(metric, offsets, h, w, r, released=anchor == "released")
        assert torch.equal(got, _reference_plan(metric, h, w, r, anchor, offsets)), (anchor, ratio)


@interpreter
@pytest.mark.parametrize("kind", ["duplicated", "constant"])
def test_interpreted_plan_breaks_ties_like_the_reference(interpreted, select_path, kind):
    h, w = 8, 10
    n = h * w
    metric = _exact_tie_tokens(2, n, seed=3) if kind == "duplicated" else torch.ones(2, n, 4)
    for ratio in (0.3, 0.7):  # (0.5 as well on the GPU)
        r = BiGainConfig(ratio=ratio).merged_count(n, h, w)
        for anchor in ("window", "released", "fixed"):
            offsets = _offsets(anchor, h, w, seed=0)
            got = interpreted.merge_plan(metric, offsets, h, w, r, released=anchor == "released")
            assert torch.equal(got, _reference_plan(metric, h, w, r, anchor, offsets)), (kind, ratio, anchor)


@pytest.fixture(params=["resident", "nested"])
def similarity_kernel(request, monkeypatch):
    """Both similarity kernels: the source rows kept on chip (channels 256 + 64 style) and the
    nested channel loop (forced with SIM_RESIDENT = False)."""
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "SIM_RESIDENT", request.param == "resident")
    return request.param


@interpreter
@pytest.mark.parametrize("similarity_kernel, c", [("resident", 16), ("resident", 48), ("nested", 48)],
                         indirect=["similarity_kernel"])
def test_interpreted_similarity_kernels_equal_reference(interpreted, similarity_kernel, monkeypatch, c):
    """Channel counts that the resident kernel takes (16 = 16 + 0, 48 = 32 + 16), on random rows
    and on exact ties (4 atoms padded with zeros to c channels), in float16."""
    from bigain_export.kernels import launch

    assert (launch.resident_channels(c, 2) is not None) == (similarity_kernel == "resident")
    # anchor tiles of 16: the 20 anchors span two tiles, so ties across tiles are decided too
    monkeypatch.setattr(launch, "RES_BLOCK_N", 16)
    monkeypatch.setattr(launch, "SIM_BLOCK_N", 16)
    h, w = 9, 10
    n = h * w
    ties = torch.nn.functional.pad(_exact_tie_tokens(2, n, seed=4), (0, c - 4)).half()
    for metric in (_tokens(2, n, c, seed=c, dtype=torch.float16), ties):  # float16: resident takes 16 bits
        for ratio in (0.7,):
            r = BiGainConfig(ratio=ratio).merged_count(n, h, w)
            for anchor in ("window", "fixed"):
                offsets = _offsets(anchor, h, w, seed=0)
                got = interpreted.merge_plan(metric, offsets, h, w, r)
                assert torch.equal(got, _reference_plan(metric, h, w, r, anchor, offsets)), (ratio, anchor)


@interpreter
@pytest.mark.parametrize("h,w", [(5, 7), (9, 4)])
@pytest.mark.parametrize("radius", [1, 2])
def test_interpreted_local_match_equals_reference(interpreted, h, w, radius):
    """``match_radius``: the similarity kernel's local form against the reference's candidate
    gather, on random rows (float32, float16) and on exact ties, odd grids (their last row or
    column joins the window before it), with gated and given anchors (larger grids, with several
    source tiles a band: test_interpreted_local_bands_equal_reference)."""
    n = h * w
    ties = _exact_tie_tokens(2, n, seed=radius)
    for metric in (_tokens(2, n, 12, seed=h * w + radius), _tokens(2, n, 12, seed=radius, dtype=torch.float16), ties):
        for ratio in (0.7,):
            r = BiGainConfig(ratio=ratio).merged_count(n, h, w)
            for anchor in ("window", "random"):
                offsets = _offsets(anchor, h, w, seed=n)
                got = interpreted.merge_plan(metric, offsets, h, w, r, match_radius=radius)
                want = _reference_plan(metric, h, w, r, anchor, offsets, radius)
                assert torch.equal(got, want), (metric.dtype, ratio, anchor)


@interpreter
@pytest.mark.parametrize("similarity_kernel, h, w, radius", [("resident", 18, 21, 1), ("nested", 23, 16, 2)],
                         indirect=["similarity_kernel"])
def test_interpreted_local_bands_equal_reference(interpreted, similarity_kernel, monkeypatch, h, w, radius):
    """Source tiles of 16 and anchor tiles of 16: each program scans the band of window rows its
    sources reach, which here is a few rows of many (and starts or ends mid-tile), in both
    similarity kernels; random rows and exact ties (float16: the resident kernel takes 16 bits)."""
    from bigain_export.kernels import launch

    for name in ("RES_BLOCK_M", "RES_BLOCK_N", "SIM_BLOCK_M", "SIM_BLOCK_N"):
        monkeypatch.setattr(launch, name, 16)
    n, c = h * w, 32
    assert (launch.resident_channels(c, 2) is not None) == (similarity_kernel == "resident")
    ties = torch.nn.functional.pad(_exact_tie_tokens(2, n, seed=radius), (0, c - 4)).half()
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    for metric, anchor in ((_tokens(2, n, c, seed=n + radius, dtype=torch.float16), "window"), (ties, "fixed")):
        offsets = _offsets(anchor, h, w, seed=0)
        got = interpreted.merge_plan(metric, offsets, h, w, r, match_radius=radius)
        assert torch.equal(got, _reference_plan(metric, h, w, r, anchor, offsets, radius)), anchor


@interpreter
@pytest.mark.parametrize("h,w", [(5, 7), (16, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("merge_path", ["groups", "atomic"])
def test_interpreted_merge_and_kv_pool_equal_reference(interpreted, monkeypatch, h, w, dtype, merge_path):
    monkeypatch.setattr(interpreted, "MERGE_PATH", merge_path)
    n, nd = h * w, (h // 2) * (w // 2)
    x = _tokens(2, n, 70, seed=1, dtype=dtype)  # 70 channels: two channel blocks, one partial
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    slot = ref.token_merge_plan(_tokens(2, n, 70, seed=2), h, w, r)
    tol = dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-3, atol=1e-3)
    merged = interpreted.merge(x, slot, n - r, nd)
    torch.testing.assert_close(merged, ref.merge(x, slot, n - r), **tol)
    assert torch.equal(interpreted.unmerge(merged, slot), ref.unmerge(merged, slot))
    if h % 2 == 0 and w % 2 == 0:
        alpha = torch.tensor([0.8, 1.2])
        want = ref.kv_downsample(x, alpha.reshape(2, 1, 1), h, w, 2)
        # the reference rounds each step in x.dtype, the kernel once: one half-precision ulp apart
        torch.testing.assert_close(interpreted.kv_pool(x, alpha, h, w, 2), want,
                                   **(dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-3, atol=4e-3)))


def _sorted_groups(members, starts, kept):
    """Members sorted within each anchor group (the kernel fills a group in any order)."""
    out = members.clone()
    for b in range(members.shape[0]):
        bounds = starts[b].tolist()
        for a in range(len(bounds) - 1):
            out[b, bounds[a]:bounds[a + 1]] = members[b, bounds[a]:bounds[a + 1]].sort().values
    return out


@interpreter
@pytest.mark.parametrize("h,w,radius", [(5, 7, 0), (16, 16, 0), (18, 21, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_interpreted_grouped_merge_equals_reference(interpreted, monkeypatch, h, w, radius, dtype):
    """The groups a reused plan builds: the same starts as the reference and the same members
    per group; the merge by them equal to the reference merge (float32 exactly: the sums of a
    group's few rows come out equal here; float16 within its rounding). Also a plan whose tied
    constant rows all merge into the first anchor (one large group); blocks of 16 so that a scan
    and a fill take several steps."""
    monkeypatch.setattr(interpreted, "GROUP_BLOCK_T", 16)
    monkeypatch.setattr(interpreted, "GROUP_SCAN_BLOCK", 16)
    n, nd = h * w, (h // 2) * (w // 2)
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    x = _tokens(2, n, 70, seed=3, dtype=dtype)
    for metric in (_tokens(2, n, 8, seed=4), torch.ones(2, n, 8)):
        slot = ref.token_merge_plan(metric, h, w, r, match_radius=radius)
        members, starts = interpreted.merge_groups(slot, n - r, nd)
        want_members, want_starts = ref.merge_groups(slot, n - r, nd)
        assert torch.equal(starts, want_starts)
        assert torch.equal(_sorted_groups(members, starts, n - r - nd), want_members)
        tol = dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(interpreted.grouped_merge(x, members, starts, n - r, nd),
                                   ref.merge(x, slot, n - r), **tol)


class _LaunchSpy:
    """Stands in for a ``@triton.jit`` kernel: records each launch's constexpr ``PASS`` (or None)
    and launches the kernel."""

    def __init__(self, kernel, seen: list):
        self.kernel, self.seen = kernel, seen

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.seen.append(kwargs.get("PASS"))
            return self.kernel[grid](*args, **kwargs)

        return run


@interpreter
@pytest.mark.parametrize("fusion,bits", [(True, 8), (True, 11), (False, 8)])
@pytest.mark.parametrize("h,w,radius", [(24, 24, 0), (18, 21, 1)])
def test_interpreted_plan_with_groups_equals_reference(interpreted, monkeypatch, select_path, fusion, bits, h, w,
                                                       radius):
    """The plan that builds its groups (gated_merge's kernel path): the slot map equal to the
    reference's and the groups to reference.merge_groups of it, on random rows and exact ties,
    with every select, the launches fused or not, 8- or 11-bit radix digits; 2 similarity splits
    at R=0 (the radix select joins them) and 1 at R=1 (the similarity kernel counts the first
    digit). Every torch.empty of the launcher returns junk, as reused GPU memory does: the
    counters the fused plan zeroes in unit_rows_kernel must be zeroed there. The launches that
    fusion removes must be gone."""
    k = interpreted._triton()
    monkeypatch.setattr(interpreted, "PLAN_FUSION", fusion)
    monkeypatch.setattr(interpreted, "RADIX_BITS", bits)
    monkeypatch.setattr(interpreted, "SPLIT_RULE", "fill")
    for name in ("RES_BLOCK_N", "SIM_BLOCK_N", "GROUP_SCAN_BLOCK"):
        monkeypatch.setattr(interpreted, name, 16)
    passes, counts = [], []
    monkeypatch.setattr(k, "radix_hist_kernel", _LaunchSpy(k.radix_hist_kernel, passes))
    monkeypatch.setattr(k, "group_count_kernel", _LaunchSpy(k.group_count_kernel, counts))
    n, nd = h * w, (h // 2) * (w // 2)
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    ties = _exact_tie_tokens(2, n, seed=h)
    real_empty = torch.empty
    for metric, anchor in ((_tokens(2, n, 12, seed=h * w), "window"), (ties, "fixed")):
        offsets = _offsets(anchor, h, w, seed=0)
        passes.clear(), counts.clear()
        with monkeypatch.context() as dirty:
            dirty.setattr(torch, "empty", lambda *a, **kw: real_empty(*a, **kw).fill_(7))
            slot, members, starts = interpreted.merge_plan(metric, offsets, h, w, r, match_radius=radius, groups=True)
        assert torch.equal(slot, _reference_plan(metric, h, w, r, anchor, offsets, radius)), anchor
        want_members, want_starts = ref.merge_groups(slot, n - r, nd)
        assert torch.equal(starts, want_starts) and torch.equal(_sorted_groups(members, starts, n - r - nd), want_members)
        radix_passes = {8: 4, 11: 3}[bits] if select_path == "radix" else 0
        first_in_similarity = fusion and select_path == "radix" and radius > 0  # one split
        assert len(passes) == radix_passes - first_in_similarity, passes
        assert len(counts) == (0 if fusion else 1)


def test_an_unknown_radix_digit_width_is_refused_by_name(monkeypatch):
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "RADIX_BITS", 16)
    with pytest.raises(ValueError, match="RADIX_BITS=16; allowed: 8, 11"):
        launch.radix_digits()


@interpreter
def test_interpreted_patched_unet_with_a_shared_plan_equals_the_reference_path(interpreted, monkeypatch):
    """The processor's grouped path end to end: the tiny UNet with plan reuse, the MLP merged and
    local matching runs its plans, groups and grouped merges on the kernels (interpreted) and
    matches the reference path (BIGAIN_KERNELS=reference), float32."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_unet, unet_inputs

    from bigain_export import apply_bigain

    # a per-block merge would take the atomics here: only serves_more can keep them all grouped
    monkeypatch.setattr(interpreted, "MERGE_PATH", "atomic")
    calls, atomic = [], []
    real = interpreted.grouped_merge
    monkeypatch.setattr(interpreted, "grouped_merge", lambda *a: (calls.append(1), real(*a))[1])
    real_atomic = interpreted.atomic_merge
    monkeypatch.setattr(interpreted, "atomic_merge", lambda *a: (atomic.append(1), real_atomic(*a))[1])
    model = tiny_unet()
    apply_bigain(model, BiGainConfig.preset("bigain-merge", ratio=0.5, plan_reuse=True, merge_mlp=True, match_radius=1))
    sample, t, context = unet_inputs()
    with torch.no_grad():
        kernels = model(sample, t, context).sample
        assert calls, "the grouped merge did not run"
        # the plan serves several merges, so even the merge that made it gathers by its groups
        assert not atomic, f"{len(atomic)} merges of a shared plan took the atomic path"
        monkeypatch.setenv("BIGAIN_KERNELS", "reference")
        reference = model(sample, t, context).sample
    torch.testing.assert_close(kernels, reference, rtol=1e-4, atol=1e-5)


def test_reference_merge_groups_are_the_slot_maps_rows():
    """Every token once; anchor group a = the tokens whose slot is kept + a, in token order;
    kept row o = its one token; and the mean over each group is reference.merge."""
    h, w = 9, 10
    n, nd = h * w, (h // 2) * (w // 2)
    r = BiGainConfig(ratio=0.6).merged_count(n, h, w)
    slot = ref.token_merge_plan(_tokens(2, n, 8, seed=9), h, w, r)
    kept = n - r - nd
    members, starts = ref.merge_groups(slot, n - r, nd)
    assert members.dtype == starts.dtype == torch.int32 and starts.shape == (2, nd + 1)
    for b in range(2):
        assert sorted(members[b].tolist()) == list(range(n)) and starts[b, -1] == n and starts[b, 0] == kept
        for o in range(kept):
            assert slot[b, members[b, o]] == o
        for a in range(nd):
            group = members[b, starts[b, a]:starts[b, a + 1]].long()
            assert group.tolist() == torch.nonzero(slot[b] == kept + a).flatten().tolist()
    x = _tokens(2, n, 6, seed=10)
    by_groups = torch.stack([torch.stack([x[b, members[b, o]] for o in range(kept)] +
                                         [x[b, members[b, starts[b, a]:starts[b, a + 1]].long()].mean(0) for a in range(nd)])
                             for b in range(2)])
    torch.testing.assert_close(by_groups, ref.merge(x, slot, n - r))


# --------------------------------------------------------------------------- CPU: launch arithmetic
@pytest.mark.parametrize("rule", ["fill", "waves"])
def test_similarity_splits_cover_every_anchor_once(monkeypatch, rule):
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "SPLIT_RULE", rule)
    for num_dst in (1, 5, 64, 65, 256, 2304, 4096, 16384):
        for block_n in (16, 64, 128):
            for programs in (1, 2, 108, 192, 1500):
                splits, per = launch.similarity_splits(num_dst, block_n, programs, 132)
                assert per % block_n == 0 and splits >= 1
                assert (splits - 1) * per < num_dst <= splits * per  # no empty split, none missing
    if rule == "fill":  # the measured rule, as before it was a function
        assert launch.similarity_splits(4096, 64, 192, 132) == (3, 1408)
        assert launch.similarity_splits(2304, 64, 108, 132) == (5, 512)
    else:  # fewer waves of one-program-per-SM: 2 splits of 32 tiles at SD2 1024 px
        assert launch.similarity_splits(4096, 64, 192, 132) == (2, 2048)


def test_an_unknown_merge_path_is_refused_by_name(monkeypatch):
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "MERGE_PATH", "scatter")
    with pytest.raises(ValueError, match="MERGE_PATH='scatter'; allowed: atomic, groups"):
        launch.merge_path()


@pytest.mark.parametrize("c,blocks", [(320, (32, 64)), (1152, (16, 128)), (70, (32, 64)), (8, (64, 32))])
def test_row_blocks_divide_the_channels_where_they_can(c, blocks, monkeypatch):
    from bigain_export.kernels import launch

    assert launch.row_blocks(c) == blocks
    monkeypatch.setattr(launch, "ROW_TILE", 1000)  # a tile Triton cannot lay out is refused by name
    with pytest.raises(ValueError, match="ROW_TILE=1000; allowed: a power of two of at least 128"):
        launch.row_blocks(c)


def test_an_unknown_split_rule_is_refused_by_name(monkeypatch):
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "SPLIT_RULE", "greedy")
    with pytest.raises(ValueError, match="'greedy'.*fill, waves"):
        launch.similarity_splits(256, 64, 8, 132)


# --------------------------------------------------------------------------- CPU: the custom ops
def test_custom_ops_pass_opcheck():
    h, w, n = 6, 8, 48
    metric, x = _tokens(2, n, 8, seed=5), _tokens(2, n, 8, seed=6)
    r = BiGainConfig(ratio=0.5).merged_count(n, h, w)
    torch.library.opcheck(library.merge_plan_op, (metric, None, h, w, r, False))
    torch.library.opcheck(library.merge_plan_op, (metric, torch.zeros(1, 3, 4, dtype=torch.long), h, w, r, False))
    slot = library.merge_plan_op(metric, None, h, w, r, False)
    torch.library.opcheck(library.token_merge_op, (x, slot, n - r, 12))
    torch.library.opcheck(library.merge_plan_groups_op, (metric, None, h, w, r, False))
    slot_again, *groups = library.merge_plan_groups_op(metric, None, h, w, r, False, 1)
    assert torch.equal(slot_again, library.merge_plan_op(metric, None, h, w, r, False, 1))
    assert all(torch.equal(a, b) for a, b in zip(groups, ref.merge_groups(slot_again, n - r, 12)))
    torch.library.opcheck(library.token_merge_op, (x, slot_again, n - r, 12, *groups))
    torch.library.opcheck(library.token_unmerge_op, (x[:, : n - r].contiguous(), slot))
    torch.library.opcheck(library.kv_pool_op, (x, torch.tensor([0.9]), h, w, 2))


@pytest.mark.parametrize("in_graph, realize", [(True, False), (True, True), (False, False)])
def test_compiled_unmerge_is_a_gather_inductor_can_fuse(monkeypatch, in_graph, realize):
    """Under torch.compile the unmerge is traced as a plain gather (launch.UNMERGE_IN_GRAPH), so
    Inductor can fuse it into its consumer; switched off, the custom op stays in the graph; with
    launch.UNMERGE_REALIZE the gather is followed by Inductor's realisation prim. Same values every
    way, eager and compiled."""
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "UNMERGE_IN_GRAPH", in_graph)
    monkeypatch.setattr(launch, "UNMERGE_REALIZE", realize)
    h, w, n = 6, 8, 48
    r = BiGainConfig(ratio=0.5).merged_count(n, h, w)
    x = _tokens(2, n, 8, seed=7)
    slot = library.merge_plan(x, h, w, r, "window")
    seen = []

    def capture(gm, example_inputs):
        seen.extend(node.target for node in gm.graph.nodes if node.op == "call_function")
        return gm

    def step(y, slot):
        return library.token_unmerge(y * 2, slot) + 1

    torch._dynamo.reset()
    got = torch.compile(step, fullgraph=True, backend=capture)(x[:, : n - r], slot)
    assert torch.equal(got, step(x[:, : n - r], slot))
    assert (torch.ops.bigain.token_unmerge.default in seen) is not in_graph, seen
    assert (torch.ops.prims.inductor_force_stride_order.default in seen) is realize, seen
    if realize:  # and Inductor itself lowers it (on the CPU: its C++ backend) to the same values
        torch._dynamo.reset()
        assert torch.equal(torch.compile(step, fullgraph=True)(x[:, : n - r], slot), step(x[:, : n - r], slot))
        # torch.export (graphs for other runtimes) keeps the plain gather: the prim is Inductor's own
        exported = torch.export.export(_Step(step), (x[:, : n - r], slot))
        assert torch.ops.prims.inductor_force_stride_order.default not in [n.target for n in exported.graph.nodes]


class _Step(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_float64_and_the_reference_switch_stay_on_the_reference(monkeypatch):
    from bigain_export.kernels import launch

    assert not launch.available(torch.zeros(1, dtype=torch.float64))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # would let CPU tensors take the kernels
    monkeypatch.setenv("BIGAIN_KERNELS", "reference")
    assert not launch.available(torch.zeros(1))


def test_an_unknown_kernel_switch_is_refused_by_name(monkeypatch):
    from bigain_export.errors import ConfigError

    monkeypatch.setenv("BIGAIN_KERNELS", "refrence")
    with pytest.raises(ConfigError, match=r"BIGAIN_KERNELS='refrence' is not a switch; allowed: unset or 'reference'"):
        library.merge_plan(_tokens(1, 16, 4, seed=0), 4, 4, 4, "window")


# --------------------------------------------------------------------------- GPU
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run with -m gpu on the GPU machine)")


def _groups(slot, kept):
    """Token -> group id: the slot for anchors and merged sources, -(token + 1) for kept ones."""
    tokens = torch.arange(slot.shape[1], device=slot.device).expand_as(slot)
    return torch.where(slot >= kept, slot, -(tokens + 1))


def _check_valid_plan(slot, metric, dst_idx, r, atol):
    """``slot`` is a ToMe plan of float64 similarities up to ``atol``: each merged source went to
    a best anchor, and no kept source is more similar than a merged one (by more than atol)."""
    b, n, _ = metric.shape
    num_dst = dst_idx.shape[1]
    num_src, kept = n - num_dst, n - num_dst - r
    m = metric.double()
    m = m / m.norm(dim=-1, keepdim=True)
    dst_idx = dst_idx.expand(b, num_dst)
    assert torch.equal(torch.gather(slot, 1, dst_idx), (kept + torch.arange(num_dst, device=slot.device)).expand(b, -1))
    is_anchor = torch.zeros(b, n, dtype=torch.bool, device=slot.device).scatter_(1, dst_idx, True)
    for i in range(b):
        src = (~is_anchor[i]).nonzero().flatten()
        sims = m[i, src] @ m[i, dst_idx[i]].T
        best = sims.max(dim=1).values
        src_slot = slot[i, src]
        merged = src_slot >= kept
        assert int(merged.sum()) == r
        kept_slots = src_slot[~merged]
        assert torch.equal(kept_slots, torch.arange(kept, device=slot.device))  # token order
        chosen = sims[merged.nonzero().flatten(), (src_slot[merged] - kept)]
        assert (chosen >= best[merged] - atol).all()
        if 0 < r < num_src:
            assert best[merged].min() >= best[~merged].max() - atol


@gpu
@needs_cuda
@pytest.mark.parametrize("h,w,c", [(16, 16, 64), (31, 33, 96), (64, 64, 320), (128, 128, 320), (32, 32, 1152)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("anchor", ["window", "released", "random"])
def test_gpu_plan_is_a_correct_plan(h, w, c, dtype, anchor):
    # (16, 16), (31, 33) and (32, 32) take small_select_kernel, (64, 64) and (128, 128) the radix select
    n = h * w
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    metric = _tokens(3, n, c, seed=n + c, dtype=dtype, device="cuda")
    offsets = _offsets(anchor, h, w, seed=1)
    offsets = None if offsets is None else offsets.cuda()
    slot = library.merge_plan_op(metric, offsets, h, w, r, anchor == "released")
    if offsets is None:  # the anchors must be the reference's (scores differ only in sum order)
        offsets = ref.window_offsets(ref.laplacian_score(metric, h, w), h, w, anchor)
    dst_idx = ref.anchor_tokens(offsets, h, w)
    _check_valid_plan(slot, metric, dst_idx, r, atol=1e-3 if dtype != torch.float32 else 1e-5)
    want = ref.merge_plan(metric, dst_idx, r)
    # a near-tie flip at the top-r boundary renumbers every later kept source, so compare the
    # partitions (each token's group = its anchor if merged, else itself): only flips differ
    assert (_groups(slot, want.shape[1] - r - dst_idx.shape[1]) == _groups(want, want.shape[1] - r - dst_idx.shape[1])).float().mean() > 0.999


@gpu
@needs_cuda
@pytest.mark.parametrize("kind", ["duplicated", "constant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_plan_breaks_exact_ties_like_the_reference(kind, dtype, select_path, similarity_kernel):
    h, w = 64, 48
    n = h * w
    # 16 channels (4 atoms padded with zeros): the smallest that the resident kernel takes
    metric = _exact_tie_tokens(2, n, seed=9) if kind == "duplicated" else torch.ones(2, n, 4)
    metric = torch.nn.functional.pad(metric, (0, 12))
    metric = metric.to("cuda", dtype)
    for ratio in (0.3, 0.5, 0.7, 0.75):
        r = BiGainConfig(ratio=ratio).merged_count(n, h, w)
        for anchor in ("window", "fixed"):
            offsets = _offsets(anchor, h, w, seed=0)
            offsets = None if offsets is None else offsets.cuda()
            got = library.merge_plan_op(metric, offsets, h, w, r, False)
            assert torch.equal(got, _reference_plan(metric, h, w, r, anchor, offsets)), (kind, ratio, anchor)


@gpu
@needs_cuda
@pytest.mark.parametrize("h,w,c", [(31, 33, 96), (96, 96, 320), (128, 128, 320), (32, 32, 1152)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("radius", [1, 3])
def test_gpu_local_match_equals_reference(h, w, c, dtype, radius):
    """The similarity kernels' local form (match_radius) against the reference's candidate gather: random
    rows up to near-tie flips (the partitions agree), exact ties exactly."""
    n = h * w
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    metric = _tokens(2, n, c, seed=n + radius, dtype=dtype, device="cuda")
    got = library.merge_plan_op(metric, None, h, w, r, False, radius)
    want = _reference_plan(metric, h, w, r, "window", None, radius)
    kept = n - r - (h // 2) * (w // 2)
    assert (_groups(got, kept) == _groups(want, kept)).float().mean() > 0.999
    ties = torch.nn.functional.pad(_exact_tie_tokens(2, n, seed=radius), (0, 12)).to("cuda", dtype)
    for anchor in ("window", "fixed"):
        offsets = _offsets(anchor, h, w, seed=0)
        offsets = None if offsets is None else offsets.cuda()
        got = library.merge_plan_op(ties, offsets, h, w, r, False, radius)
        assert torch.equal(got, _reference_plan(ties, h, w, r, anchor, offsets, radius)), anchor


@gpu
@needs_cuda
@pytest.mark.parametrize("h,w,c", [(31, 33, 96), (128, 128, 320)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("merge_path", ["groups", "atomic"])
def test_gpu_merge_unmerge_and_kv_pool_match_reference(h, w, c, dtype, merge_path, monkeypatch):
    """Against the float32 reference rounded once to the dtype (the reference run in bf16 rounds
    every step; the kernels accumulate in float32 and round once): within one ulp, on either
    merge path of a per-block plan."""
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "MERGE_PATH", merge_path)
    n, nd = h * w, (h // 2) * (w // 2)
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    x = _tokens(2, n, c, seed=4, dtype=dtype, device="cuda")
    slot = ref.token_merge_plan(_tokens(2, n, c, seed=5, device="cuda"), h, w, r)
    ulp = {torch.float32: 1e-6, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[dtype]
    tol = dict(rtol=ulp, atol=ulp)
    merged = library.token_merge_op(x, slot, n - r, nd)
    torch.testing.assert_close(merged, ref.merge(x.float(), slot, n - r).to(dtype), **tol)
    members, starts = launch.merge_groups(slot, n - r, nd)  # a reused plan's groups
    torch.testing.assert_close(library.token_merge_op(x, slot, n - r, nd, members, starts), merged, **tol)
    assert torch.equal(starts, ref.merge_groups(slot, n - r, nd)[1])
    assert torch.equal(library.token_unmerge(merged, slot), ref.unmerge(merged, slot))
    hh, ww = h - h % 2, w - w % 2
    x = x[:, : hh * ww].contiguous()
    alpha = torch.tensor([0.8, 1.2], device="cuda")
    want = ref.kv_downsample(x.float(), alpha.to(dtype).float().reshape(2, 1, 1), hh, ww, 2)
    # the kernel rounds the window mean to the dtype first (as the reference does), hence 2 ulps
    torch.testing.assert_close(library.kv_pool_op(x, alpha, hh, ww, 2), want.to(dtype), rtol=2 * ulp, atol=2 * ulp)


@gpu
@needs_cuda
@pytest.mark.parametrize("h,w,c,radius,force_radix", [(32, 32, 1152, 0, False), (96, 96, 320, 1, False),
                                                       (96, 96, 320, 1, True), (128, 128, 320, 0, False),
                                                       (31, 33, 96, 1, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fusion,bits", [(True, 8), (True, 11), (False, 8)])
def test_gpu_plan_with_groups_is_the_plan_and_its_groups(h, w, c, radius, force_radix, dtype, fusion, bits, monkeypatch):
    """gated_merge's plan with groups (the select counts them; fused launches, 8- or 11-bit
    digits): the same slot map as the plan alone with the launches as before (same similarity
    kernel, so bit-equal similarities), the groups of reference.merge_groups; on exact ties equal
    to the reference plan. Sizes take the small, one-program and radix selects (forced: the radix
    select with one similarity split, where the similarity kernel counts the first digit)."""
    from bigain_export.kernels import launch

    if force_radix:
        monkeypatch.setattr(launch, "ONE_PROGRAM_SELECT", 0)
    n, nd = h * w, (h // 2) * (w // 2)
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)
    metric = _tokens(2, n, c, seed=n + c, dtype=dtype, device="cuda")
    ties = torch.nn.functional.pad(_exact_tie_tokens(2, n, seed=c), (0, c - 4)).to("cuda", dtype)
    for rows in (metric, ties):
        with monkeypatch.context() as before:
            before.setattr(launch, "PLAN_FUSION", False)
            before.setattr(launch, "RADIX_BITS", 8)
            want = library.merge_plan_op(rows, None, h, w, r, False, radius)
        monkeypatch.setattr(launch, "PLAN_FUSION", fusion)
        monkeypatch.setattr(launch, "RADIX_BITS", bits)
        slot, members, starts = library.merge_plan_groups_op(rows, None, h, w, r, False, radius)
        assert torch.equal(slot, want)
        want_members, want_starts = ref.merge_groups(slot.cpu(), n - r, nd)
        assert torch.equal(starts.cpu(), want_starts)
        assert torch.equal(_sorted_groups(members.cpu(), starts.cpu(), n - r - nd), want_members)
    assert torch.equal(slot, _reference_plan(ties, h, w, r, "window", None, radius))


@gpu
@needs_cuda
def test_gpu_custom_ops_compile_fullgraph_without_recompiles():
    h, w, n, c = 32, 32, 1024, 64
    r = BiGainConfig(ratio=0.7).merged_count(n, h, w)

    def step(x, t):
        slot = library.merge_plan(x, h, w, r, "window")
        merged = library.token_merge(x, slot, h, w, r)
        pooled = library.kv_pool(x, ref.scheduled_alpha(t, 0.8, 1.2).reshape(-1, 1, 1), h, w, 2)
        return library.token_unmerge(merged * 2, slot), pooled

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    x = _tokens(2, n, c, seed=0, dtype=torch.bfloat16, device="cuda")
    for t in (999, 500, 3):
        got = compiled(x, torch.full((2,), t, device="cuda"))
        want = step(x, torch.full((2,), t, device="cuda"))
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@gpu
@needs_cuda
@pytest.mark.parametrize("kind", ["unet", "dit"])
@pytest.mark.parametrize("config", [BiGainConfig.preset("bigain-both", ratio=0.7),
                                    BiGainConfig.preset("bigain-merge", ratio=0.7, plan_reuse=True, merge_mlp=True,
                                                        match_radius=1)], ids=["both", "reuse-mlp-r1"])
def test_gpu_patched_models_agree_with_the_reference_path(kind, config, monkeypatch):
    """The tiny UNet / DiT patched with BiGain merging + KV pooling, or with a plan reused across
    blocks and the MLP (the grouped merge) and local matching, bf16 on the GPU: the kernel path
    against the reference path (BIGAIN_KERNELS=reference), mean abs error within the bf16 drift
    tolerance (merging is discontinuous: a near-tie may flip a token, so not max error)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import dit_inputs, tiny_dit, tiny_unet, unet_inputs

    from bigain_export import apply_bigain

    model = (tiny_unet(sample_size=32) if kind == "unet" else tiny_dit(sample_size=32)).to("cuda", torch.bfloat16)
    apply_bigain(model, config)
    if kind == "unet":
        sample, t, context = (a.to("cuda") for a in unet_inputs(size=32))
        call = lambda: model(sample.bfloat16(), t, context.bfloat16()).sample  # noqa: E731
    else:
        inputs = {k: v.to("cuda") for k, v in dit_inputs(size=32).items()}
        inputs["hidden_states"] = inputs["hidden_states"].bfloat16()
        call = lambda: model(**inputs).sample  # noqa: E731
    with torch.no_grad():
        kernels = call().float()
        monkeypatch.setenv("BIGAIN_KERNELS", "reference")
        reference = call().float()
    assert (kernels - reference).abs().mean() <= 2e-2 * reference.abs().mean()


@gpu
@needs_cuda
def test_gpu_compiled_unet_with_the_realised_unmerge_agrees_with_the_default(monkeypatch):
    """launch.UNMERGE_REALIZE only changes where Inductor stores the unmerged rows: the tiny UNet,
    merged with a reused plan, compiled with it and without it, agrees to bf16 rounding."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_unet, unet_inputs

    from bigain_export import apply_bigain
    from bigain_export.kernels import launch

    model = tiny_unet(sample_size=32).to("cuda", torch.bfloat16)
    apply_bigain(model, BiGainConfig.preset("bigain-merge", ratio=0.7, plan_reuse=True, match_radius=1))
    sample, t, context = (a.to("cuda") for a in unet_inputs(size=32))
    outputs = []
    for realize in (False, True):
        monkeypatch.setattr(launch, "UNMERGE_REALIZE", realize)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        with torch.no_grad():
            outputs.append(compiled(sample.bfloat16(), t, context.bfloat16()).sample.float())
    default, realised = outputs
    assert (realised - default).abs().mean() <= 1e-2 * default.abs().mean()


def test_compiling_code_that_picks_the_kernel_path_raises_no_dynamo_warning():
    """Patched processors ask ``runs_on`` inside the compiled region; with the Triton module behind
    ``functools.lru_cache`` every compile warned that Dynamo ignores the cache wrapper. A fresh
    process (Dynamo warns once per process, and nothing has resolved the module yet)."""
    code = (
        "import warnings, torch\n"
        "from bigain_export.kernels import launch\n"
        "f = torch.compile(lambda x: x * 2 if launch.runs_on(x.device) else x, fullgraph=True, backend='eager')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    out = f(torch.ones(3))\n"
        "assert out.tolist() == [2.0, 2.0, 2.0], out  # the kernel path was taken: Triton resolved in the trace\n"
        "print([str(w.message) for w in seen if 'Dynamo' in str(w.message)])\n")
    env = {**{k: v for k, v in os.environ.items() if k != "TORCH_LOGS"}, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
