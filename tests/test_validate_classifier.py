"""Diffusion classifier: known answers, shared noise, schedule bookkeeping, determinism."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import pytest
import torch

from bigain_export.errors import ConfigError, ValidationError
from bigain_export.validate.classifier import ClassificationResult, base_seed, classify, image_noise
from bigain_export.validate.schedule import ClassifierSchedule, alphas_cumprod, uniform_grid
from bigain_export.validate.stats import wilson_interval
from validate_toys import SCHEDULER_CONFIG, PrototypeEps, prototypes

C = 10


def test_exact_eps_for_true_class_wins_with_zero_error():
    protos = prototypes(C)
    labels = torch.tensor([3, 7, 0, 9, 3, 5])
    eps_fn = PrototypeEps(protos)
    result = classify(eps_fn, protos[labels], labels, num_classes=C, scheduler_config=SCHEDULER_CONFIG,
                      batch_size=16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.predictions, labels)
    assert result.accuracy == 1.0
    true_err = result.errors[torch.arange(len(labels)), labels]
    assert torch.all(true_err < 1e-8)
    others = result.errors.clone()
    others[torch.arange(len(labels)), labels] = float("nan")
    assert torch.all(others.nan_to_num(1.0) > 1e-3)


def test_wrong_model_gives_wrong_predictions():
    # The model believes each class's prototype is the next class's: predictions shift by one.
    protos = prototypes(C)
    labels = torch.tensor([1, 4, 8])
    shifted = PrototypeEps(protos.roll(1, dims=0))
    result = classify(shifted, protos[labels], labels, num_classes=C, scheduler_config=SCHEDULER_CONFIG, batch_size=32)
    assert torch.equal(result.predictions, (labels + 1) % C)
    assert result.accuracy == 0.0


def test_noise_is_shared_by_all_classes_at_each_timestep():
    protos = prototypes(C)
    x0 = protos[2:3] * 0.5
    abar = alphas_cumprod(SCHEDULER_CONFIG)
    seen: dict[int, dict[int, torch.Tensor]] = defaultdict(dict)

    def recording(x, t, y):
        a = abar[t].view(-1, 1, 1, 1)
        noise = (x - a.sqrt() * x0) / (1 - a).sqrt()  # invert the forward process: one image
        for k in range(x.shape[0]):
            seen[int(t[k])][int(y[k])] = noise[k]
        return torch.zeros_like(x)

    schedule = ClassifierSchedule.bigain_adaptive()
    result = classify(recording, x0, torch.tensor([2]), num_classes=C, scheduler_config=SCHEDULER_CONFIG,
                      schedule=schedule, batch_size=9, generator=11)
    expected = image_noise(11, 0, (20, *x0.shape[1:]))
    for j, t in enumerate(schedule.timesteps):
        noises = list(seen[t].values())
        assert len(noises) in (5, C)
        for noise in noises:
            torch.testing.assert_close(noise, expected[j], atol=2e-4, rtol=0)
    # different timesteps get different noise
    assert not torch.allclose(expected[0], expected[1])
    assert result.seed == 11


def test_schedule_bookkeeping_counts_and_timesteps():
    protos = prototypes(C)
    labels = torch.tensor([0, 5, 6])
    inner = PrototypeEps(protos)  # records the batch size of every call
    schedule = ClassifierSchedule.bigain_adaptive()
    result = classify(inner, protos[labels] + 0.1, labels, num_classes=C, scheduler_config=SCHEDULER_CONFIG,
                      schedule=schedule, batch_size=16)
    per_image = 5 * C + 75
    assert schedule.calls_per_image(C) == per_image
    assert result.eps_calls == len(labels) * per_image
    # every call got exactly the static batch size (the last one padded)
    assert set(inner.batch_sizes) == {16}
    assert len(inner.batch_sizes) == math.ceil(len(labels) * (5 * C) / 16) + math.ceil(len(labels) * 75 / 16)
    # scored timesteps per class: all 20 for the 5 survivors, the 5 stage-1 timesteps for the rest
    scored = (~result.timestep_errors.isnan()).sum(-1)  # [N, C]
    stage1 = [schedule.timesteps.index(t) for t in (125, 325, 525, 725, 925)]
    for i in range(len(labels)):
        assert sorted(scored[i].tolist()) == [5] * 5 + [20] * 5
        assert not result.timestep_errors[i][:, stage1].isnan().any()
        pruned = scored[i] == 5
        assert torch.isinf(result.errors[i][pruned]).all()
        assert torch.isfinite(result.errors[i][~pruned]).all()
        # survivors were the 5 best after stage 1
        stage1_mean = result.timestep_errors[i][:, stage1].mean(-1)
        assert set(torch.argsort(stage1_mean, stable=True)[:5].tolist()) == set(torch.nonzero(~pruned).flatten().tolist())
        assert result.predictions[i] == torch.argmin(result.errors[i])
    assert result.timesteps == uniform_grid(20) == tuple(range(25, 1000, 50))


def test_uniform_schedule_scores_every_class_everywhere():
    protos = prototypes(4)
    labels = torch.tensor([0, 3])
    eps_fn = PrototypeEps(protos)
    result = classify(eps_fn, protos[labels], labels, num_classes=4, scheduler_config=SCHEDULER_CONFIG,
                      schedule=ClassifierSchedule.uniform(6), batch_size=5)
    assert result.eps_calls == 2 * 4 * 6
    assert not result.timestep_errors.isnan().any()
    assert torch.equal(result.predictions, labels)


def test_results_do_not_depend_on_batch_size_or_image_subset():
    protos = prototypes(C)
    labels = torch.tensor([1, 2, 3, 4])
    images = protos[labels] + 0.4 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    eps_fn = PrototypeEps(protos, offset=0.05)
    kwargs = dict(num_classes=C, scheduler_config=SCHEDULER_CONFIG, generator=3)
    a = classify(eps_fn, images, labels, batch_size=7, **kwargs)
    b = classify(eps_fn, images, labels, batch_size=64, **kwargs)
    c = classify(eps_fn, images[2:], labels[2:], batch_size=5, indices=torch.tensor([2, 3]), **kwargs)
    torch.testing.assert_close(a.errors, b.errors, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.errors[2:], c.errors, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.predictions, b.predictions)
    merged = ClassificationResult.merge([c, classify(eps_fn, images[:2], labels[:2], batch_size=3, **kwargs)])
    assert torch.equal(merged.indices, torch.arange(4))
    torch.testing.assert_close(merged.errors, a.errors, rtol=1e-5, atol=1e-6)


def test_generator_seed_is_consumed_deterministically():
    assert base_seed(torch.Generator().manual_seed(1)) == base_seed(torch.Generator().manual_seed(1))
    assert base_seed(torch.Generator().manual_seed(1)) != base_seed(torch.Generator().manual_seed(2))
    assert base_seed(None) == 0 and base_seed(42) == 42
    with pytest.raises(ValidationError, match="generator"):
        base_seed("seed")


def test_result_dict_is_strict_json_and_interval_is_wilson():
    protos = prototypes(C)
    labels = torch.tensor([0, 1])
    result = classify(PrototypeEps(protos), protos[labels], labels, num_classes=C, scheduler_config=SCHEDULER_CONFIG)
    data = result.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["errors"][0].count(None) == 5
    assert data["accuracy"] == 1.0 and data["eps_calls"] == 2 * 125
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 200))


@pytest.mark.parametrize(
    "stages, match",
    [
        ((), "at least one"),
        ((((1, 2), 3), ((2, 4), 1)), "repeats"),
        ((((1, 2), 3), ((5,), 4)), "keep=4"),
        ((((1, 2), 2),), "last stage keep=2"),
        ((((1, 1), 1),), "distinct"),
    ],
)
def test_bad_schedules_are_rejected(stages, match):
    with pytest.raises(ConfigError, match=match):
        ClassifierSchedule(stages=stages)


def test_schedule_names_and_round_trip():
    s = ClassifierSchedule.bigain_adaptive()
    assert ClassifierSchedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert ClassifierSchedule.named("uniform-4").timesteps == (125, 375, 625, 875)
    assert s.calls_per_image(3) == 3 * 20  # fewer classes than survivors: all kept
    with pytest.raises(ConfigError, match="allowed: bigain-adaptive"):
        ClassifierSchedule.named("fast")


def test_input_errors_name_the_bad_value():
    protos = prototypes(3)
    with pytest.raises(ValidationError, match=r"labels span \[0, 5\]"):
        classify(PrototypeEps(protos), protos[:2], torch.tensor([0, 5]), num_classes=3, scheduler_config=SCHEDULER_CONFIG)
    with pytest.raises(ConfigError, match="outside the scheduler's range"):
        classify(PrototypeEps(protos), protos[:1], torch.tensor([0]), num_classes=3,
                 scheduler_config={**SCHEDULER_CONFIG, "num_train_timesteps": 100})
    with pytest.raises(ValidationError, match="batch_size=0"):
        classify(PrototypeEps(protos), protos[:1], torch.tensor([0]), num_classes=3,
                 scheduler_config=SCHEDULER_CONFIG, batch_size=0)
    with pytest.raises(ValidationError, match="eps function returned"):
        classify(lambda x, t, y: x[:1], protos[:1], torch.tensor([0]), num_classes=3,
                 scheduler_config=SCHEDULER_CONFIG, batch_size=4)


def test_mcnemar_exact_p_values():
    from bigain_export.validate.stats import mcnemar_exact, paired_comparison

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)  # all 10 discordant images favour A
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 2**10)  # P(X<=1), X~Bin(10, 1/2), two-sided
    assert mcnemar_exact(3, 12) == mcnemar_exact(12, 3)
    # More than 1023 discordant images (a 2,000-image sweep of a weak method): 2.0**n overflowed.
    assert mcnemar_exact(600, 600) == 1.0
    assert 0.0 < mcnemar_exact(480, 560) < 0.02  # z = 80 / sqrt(1040) = 2.48: p ~ 0.015
    assert mcnemar_exact(0, 1500) == 0.0  # 2 / 2**1500 underflows to 0.0, not an error
    got = paired_comparison([1, 1, 0, 0, 1], [1, 0, 1, 0, 0])
    assert got == {"images": 5, "only_a": 2, "only_b": 1, "mcnemar_p": 1.0}
    with pytest.raises(ValueError, match="the same images"):
        paired_comparison([1], [1, 0])
