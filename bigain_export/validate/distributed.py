"""Shard validation images across processes with ``torch.distributed``.

Launch the same script with ``torchrun --nproc-per-node K``; rank r evaluates images
``r, r + K, r + 2K, ...`` and every rank receives the merged result in index order. When
``torch.distributed`` is not initialised the functions run single-process, unchanged.

Results equal single-process ones because all per-image randomness is seeded by the image's
global index (``classifier.py``, ``sampling.py``), never by its position within a shard. Results
are gathered with ``all_gather_object`` on CPU tensors: they are small (per-image errors, images)
and it works on every backend (gloo, NCCL).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
import torch.distributed as dist

from .batching import EpsFn
from .classifier import ClassificationResult, base_seed, classify
from .sampling import sample

logger = logging.getLogger(__name__)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``, or ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_indices(count: int, rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """Global indices this rank evaluates: ``rank::world_size`` of ``0 .. count-1`` (``[n_rank]`` long)."""
    if rank is None or world_size is None:
        rank, world_size = rank_and_world()
    return torch.arange(rank, count, world_size, dtype=torch.long)


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` single-process)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def classify_sharded(
    eps_fn: EpsFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    generator: torch.Generator | int | None = None,
    offset: int = 0,
    **kwargs: Any,
) -> ClassificationResult:
    """:func:`classify` over this rank's shard of ``images [N, C, H, W]``; the merged result on every rank.

    ``generator`` must be seeded identically on every rank (or be an int seed); ``offset`` is the
    global index of ``images[0]`` when they are a slice of a larger set (a chunk of a sweep), so
    each image keeps its noise; the other keyword arguments go to :func:`classify` (``indices`` is
    set here).
    """
    seed = base_seed(generator)
    idx = shard_indices(images.shape[0])
    part = classify(eps_fn, images[idx.to(images.device)], torch.as_tensor(labels)[idx], generator=seed,
                    indices=idx + offset, **kwargs)
    return ClassificationResult.merge(gather(part))


def sample_sharded(eps_fn: EpsFn, class_labels: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """:func:`sample` over this rank's shard of ``class_labels [N]``; all ``[N, C, H, W]`` images on every rank."""
    labels = torch.as_tensor(class_labels, dtype=torch.long)
    idx = shard_indices(labels.numel())
    part = sample(eps_fn, labels[idx], indices=idx, **kwargs).cpu()
    parts: list[tuple[torch.Tensor, torch.Tensor]] = gather((idx, part))
    all_idx = torch.cat([i for i, _ in parts])
    images = torch.cat([p for _, p in parts])
    return images[torch.argsort(all_idx)]


def is_main_process() -> bool:
    """True on rank 0 (the rank that writes reports)."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op single-process)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def describe() -> Mapping[str, int]:
    rank, world = rank_and_world()
    return {"rank": rank, "world_size": world}
