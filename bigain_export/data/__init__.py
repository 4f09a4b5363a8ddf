"""Real data sets that install offline (see docs/models.md)."""

from .fashion_mnist import CLASS_NAMES, FashionMNIST, dataset_sha256, load_fashion_mnist

__all__ = ["CLASS_NAMES", "FashionMNIST", "dataset_sha256", "load_fashion_mnist"]
