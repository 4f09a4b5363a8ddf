"""RunnerEps: a runner with a static batch serves the classifier and sampler through padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bigain_export.errors import ValidationError
from bigain_export.validate.classifier import classify
from bigain_export.validate.runner_eps import RunnerEps
from validate_toys import SCHEDULER_CONFIG, PrototypeEps, prototypes


class StaticBatchRunner:
    """Polygraphy-like runner over an eps function that accepts exactly ``batch`` rows of numpy."""

    def __init__(self, eps_fn, batch: int):
        self.eps_fn, self.batch = eps_fn, batch
        self.is_active = False
        self.activations = 0
        self.feeds: list[dict[str, np.ndarray]] = []

    def activate(self):
        self.is_active = True
        self.activations += 1

    def deactivate(self):
        self.is_active = False

    def infer(self, feed_dict):
        assert self.is_active
        assert feed_dict["sample"].shape[0] == self.batch
        self.feeds.append(feed_dict)
        eps = self.eps_fn(*(torch.from_numpy(feed_dict[k]) for k in ("sample", "timestep", "class_labels")))
        return {"eps": eps.numpy()}


def test_runner_eps_matches_the_eager_function():
    protos = prototypes(4)
    eager = PrototypeEps(protos, offset=0.1)
    runner = StaticBatchRunner(eager, batch=6)
    eps_fn = RunnerEps(runner, batch_size=6)
    labels = torch.tensor([0, 1, 2, 3, 1])
    images = protos[labels] * 0.8
    kwargs = dict(num_classes=4, scheduler_config=SCHEDULER_CONFIG, generator=1)
    a = classify(eps_fn, images, labels, batch_size=6, **kwargs)
    b = classify(eager, images, labels, batch_size=16, **kwargs)
    torch.testing.assert_close(a.errors, b.errors, rtol=1e-5, atol=1e-6)
    assert runner.activations == 1
    feed = runner.feeds[0]
    assert feed["sample"].dtype == np.float32 and feed["timestep"].dtype == np.int64
    assert feed["class_labels"].dtype == np.int64
    eps_fn.close()
    assert not runner.is_active


def test_runner_eps_names_a_wrong_batch_and_missing_output():
    runner = StaticBatchRunner(lambda x, t, y: x, batch=4)
    x, t, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValidationError, match="takes batch 4, got 3"):
        RunnerEps(runner, batch_size=4)(x, t, y)
    with pytest.raises(ValidationError, match="expected 'noise'"):
        RunnerEps(StaticBatchRunner(lambda x, t, y: x, batch=3), output="noise")(x, t, y)
