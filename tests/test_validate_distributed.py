"""Sharding across two gloo processes gives the single-process results."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bigain_export.validate.distributed import classify_sharded, rank_and_world, sample_sharded, shard_indices
from bigain_export.validate.run import ValidationSettings, validate
from bigain_export.validate.sampling import SamplingConfig
from validate_toys import SCHEDULER_CONFIG, PixelFeatures, toy_problem

SAMPLING = SamplingConfig(num_steps=4, guidance_scale=2.0, null_label=4, eta=0.5, seed=3)


def _compute(out_dir=None):
    images, labels, methods = toy_problem(num_images=7)
    cls = classify_sharded(methods["offset"], images, labels, num_classes=4, scheduler_config=SCHEDULER_CONFIG,
                           batch_size=6, generator=torch.Generator().manual_seed(5))
    imgs = sample_sharded(methods["offset"], labels, scheduler_config=SCHEDULER_CONFIG, sample_shape=(1, 8, 8),
                          config=SAMPLING, batch_size=4)
    settings = ValidationSettings(num_classes=4, scheduler_config=SCHEDULER_CONFIG, sampling=SAMPLING,
                                  drift_inputs=4, batch_size=6)
    report = validate(methods, images, labels, settings, out_dir, feature_fn=PixelFeatures(), progress=False)
    return cls, imgs, report


def _worker(rank: int, init_file: str, out_file: str, report_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        assert rank_and_world() == (rank, 2)
        cls, imgs, report = _compute(report_dir)
        if rank == 1:  # every rank holds the merged results
            torch.save({"cls": cls, "imgs": imgs, "report": report}, out_file)
    finally:
        dist.destroy_process_group()


def test_shard_indices():
    assert shard_indices(7, 0, 2).tolist() == [0, 2, 4, 6]
    assert shard_indices(7, 1, 2).tolist() == [1, 3, 5]
    assert shard_indices(2, 2, 3).tolist() == []
    assert rank_and_world() == (0, 1)


def test_two_gloo_processes_match_one_process(tmp_path):
    out_file = tmp_path / "rank1.pt"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(out_file), str(tmp_path / "report")), nprocs=2, join=True)
    sharded = torch.load(out_file, weights_only=False)
    cls, imgs, report = _compute()
    assert 0 < cls.accuracy < 1  # a case where predictions can actually differ
    assert torch.equal(sharded["cls"].predictions, cls.predictions)
    assert torch.equal(sharded["cls"].indices, torch.arange(7))
    torch.testing.assert_close(sharded["cls"].errors, cls.errors, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sharded["imgs"], imgs, rtol=0, atol=1e-5)
    for name, entry in report["methods"].items():
        got = sharded["report"]["methods"][name]
        assert got["classification"]["predictions"] == entry["classification"]["predictions"]
        assert got["fid"] == pytest_approx(entry["fid"])
    assert sharded["report"]["settings"]["distributed"]["world_size"] == 2
    assert (tmp_path / "report" / "report.json").is_file()  # written once, by rank 0


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("device, local_rank, local_world, gpus, expected", [
    ("cpu", 1, 4, 0, ("gloo", "cpu")),
    ("cuda", 1, 2, 2, ("nccl", "cuda:1")),          # one GPU per rank
    ("cuda", 3, 4, 1, ("gloo", "cuda:0")),          # four ranks share one GPU: NCCL would refuse
    ("cuda", 3, 4, 2, ("gloo", "cuda:1")),
])
def test_process_group_plan_shares_gpus_over_gloo(device, local_rank, local_world, gpus, expected):
    from bigain_export.cli.validate import process_group_plan

    assert process_group_plan(device, local_rank, local_world, gpus) == expected


def test_process_group_plan_refuses_cuda_without_a_gpu():
    from bigain_export.cli.validate import process_group_plan
    from bigain_export.errors import ConfigError

    with pytest.raises(ConfigError, match="no CUDA device"):
        process_group_plan("cuda", 0, 2, 0)
