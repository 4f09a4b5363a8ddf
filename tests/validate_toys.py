"""Eps functions with known answers, shared by the validation tests.

``PrototypeEps`` is the exact eps of a data distribution that is a point mass at one prototype
per class: ``eps = (x_t - sqrt(abar_t) p_c) / sqrt(1 - abar_t)``. For an image equal to p_k, the
classifier error of class k is exactly 0 and every other class's error is positive, and DDIM
with it lands on p_c. Label ``num_classes`` (the null label) uses the mean prototype.
"""

from __future__ import annotations

import torch

from bigain_export.validate.schedule import alphas_cumprod

SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}


def prototypes(num_classes: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    """``[num_classes, *shape]`` well separated prototypes in (-1, 1)."""
    return torch.tanh(2 * torch.randn((num_classes, *shape), generator=torch.Generator().manual_seed(seed)))


class PrototypeEps:
    """Exact eps for per-class point masses; records every call's batch size."""

    def __init__(self, protos: torch.Tensor, offset: float = 0.0):
        self.protos = torch.cat([protos, protos.mean(0, keepdim=True)])  # last row: the null label
        self.abar = alphas_cumprod(SCHEDULER_CONFIG)
        self.offset = offset
        self.batch_sizes: list[int] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        a = self.abar[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.protos[y]) / (1 - a).sqrt() + self.offset


class PixelFeatures:
    """Fast stand-in for the Inception network: 16 fixed random projections of 16x16 pixels."""

    key = "test-pixel-projection-v1"

    def __init__(self) -> None:
        self.calls = 0
        self.weight = torch.randn(3 * 16 * 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def __call__(self, images: torch.Tensor):
        from bigain_export.validate.fid import to_uint8

        self.calls += 1
        x = to_uint8(images).to(torch.float64).expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(16, 16), mode="area")
        return (x.flatten(1) / 255.0 @ self.weight).numpy()


def toy_problem(num_images: int = 6, num_classes: int = 4):
    """Noisy class prototypes (noisy enough that some are misclassified), labels and two methods."""
    protos = prototypes(num_classes)
    labels = torch.arange(num_images) % num_classes
    noise = torch.randn((num_images, *protos.shape[1:]), generator=torch.Generator().manual_seed(1))
    images = (protos[labels] + 3.0 * noise).clamp(-1, 1)
    methods = {"exact": PrototypeEps(protos), "offset": PrototypeEps(protos, offset=0.2)}
    return images, labels, methods


def toy_provenance(names, **method_extra):
    """Provenance of toy methods: a fixed fake model, one ``method_facts`` per name."""
    from bigain_export.validate.provenance import Provenance, method_facts

    model = {"id": "toy", "sha256": "0" * 64, "kind": "toy", "sample_shape": [1, 8, 8], "num_classes": 4,
             "null_label": 4}
    return Provenance(model=model, methods={n: method_facts(None, backend="toy", toy=n, **method_extra) for n in names},
                      data_source="toy")
