"""Feeding ``Trainer.fit``: the batch contract, the resumable loader, one epoch's batches.

A map-style ``Dataset`` (or a tensor) is shuffled, sharded over ranks and batched here
with a :class:`~scoregen.train.distributed.ResumableDistributedSampler`, so that a resumed
run continues inside the epoch exactly where it stopped. Any other re-iterable of
batches (a ``DataLoader``) is iterated as given, the consumed batches skipped on resume.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from scoregen.train import distributed as dist_utils

__all__ = ["Batch", "default_batch_fn", "make_loader", "loader_for", "epoch_batches",
           "stable_seed"]

Batch = tuple[Tensor, "Tensor | None"]


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and python versions)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def default_batch_fn(batch: Any) -> Batch:
    """The batch contract: a tensor ``x0``; ``(x0,)``; ``(x0, cond)``; or a dict with
    ``"x0"`` and optionally ``"cond"``. Returns ``(x0, cond or None)``."""
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, Mapping) and "x0" in batch:
        return batch["x0"], batch.get("cond")
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise TypeError(
        "a batch must be a tensor x0, a tuple (x0,) or (x0, cond), or a dict with 'x0' "
        f"(and optionally 'cond'); got {type(batch).__name__}. Pass batch_fn= to adapt yours."
    )


def make_loader(
    dataset: Dataset, *, batch_size: int, seed: int, rank: int, world_size: int,
    num_workers: int, generator: torch.Generator, pin_memory: bool,
) -> DataLoader:
    """This rank's loader of ``batch_size // world_size`` samples (``batch_size`` global)."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} (global) is not divisible by the "
                         f"{world_size} processes")
    local = batch_size // world_size
    sampler = dist_utils.ResumableDistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    if sampler.num_samples < local:
        raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one global "
                         f"batch of {batch_size}")
    return DataLoader(dataset, batch_size=local, sampler=sampler, drop_last=True,
                      num_workers=num_workers, generator=generator, pin_memory=pin_memory)


def loader_for(data: Any, **loader_args: Any) -> tuple[Any, DataLoader | None]:
    """``(data, loader)``: a tensor or map-style ``Dataset`` gets a resumable loader
    (:func:`make_loader` with ``loader_args``); any other re-iterable of batches is used
    as given (loader None)."""
    if torch.is_tensor(data):
        data = TensorDataset(data)
    if not isinstance(data, Dataset) or isinstance(data, IterableDataset):
        return data, None
    return data, make_loader(data, **loader_args)


def epoch_batches(
    data: Any, loader: DataLoader | None, *, epoch: int, skip: int, seed: int,
    generator: torch.Generator,
) -> Iterator[Any]:
    """The batches of ``epoch`` after the first ``skip`` (already consumed)."""
    if loader is not None:
        loader.sampler.set_epoch(epoch)
        loader.sampler.skip = skip * loader.batch_size
        generator.manual_seed(stable_seed(seed, "workers", epoch))
        return iter(loader)
    sampler = getattr(data, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    return itertools.islice(iter(data), skip, None)
