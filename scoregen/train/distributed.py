"""Thin helpers over ``torch.distributed`` for runs launched with ``torchrun``.

``torchrun --nproc_per_node=N script.py`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them (``env://``)
and starts the process group: NCCL for CUDA devices, Gloo for CPU. A plain
``python script.py`` (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) runs single-process and
nothing is initialised. There is no home-made distribution here.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

__all__ = [
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "local_device",
    "all_gather_tensors",
    "gather_rng_states",
    "broadcast_object",
    "on_main",
    "wrap_net",
    "ResumableDistributedSampler",
]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that logs and writes checkpoints."""
    return get_rank() == 0


def local_device(device: torch.device | str | None) -> torch.device:
    """``device`` with the CUDA index set to ``LOCAL_RANK`` when running under torchrun."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None and _env_int("WORLD_SIZE", 1) > 1:
        dev = torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return dev


def init_distributed(device: torch.device | str | None = None) -> bool:
    """Start the process group from torchrun's environment when ``WORLD_SIZE > 1``.

    The backend is NCCL when ``device`` is a CUDA device (whose index becomes
    ``LOCAL_RANK``), Gloo otherwise. Returns True when running distributed. Calling it
    again, or after the user initialised the group, is a no-op.
    """
    if is_distributed():
        return True
    if _env_int("WORLD_SIZE", 1) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dev = local_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def cleanup_distributed() -> None:
    """Destroy the process group if one is running (call at the end of a torchrun script,
    on every rank).

    A barrier comes first so that no rank tears down its Gloo/NCCL connections while
    another still has a collective in flight: without it a fast rank 0 could exit while
    rank 1 was still receiving, and rank 1 aborted in Gloo's worker thread ("terminate
    called without an active exception", seen once in CI on a loaded 2-core machine).
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_tensors(t: Tensor) -> list[Tensor]:
    """``[t from rank 0, t from rank 1, ...]`` (same shape and dtype on every rank)."""
    if not is_distributed():
        return [t]
    dev = t.device
    if dist.get_backend() == "nccl":
        t = t.cuda()
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return [o.to(dev) for o in out]


def gather_rng_states(local: Mapping[str, Tensor]) -> dict[int, dict[str, Tensor]]:
    """``{rank: that rank's states}`` on every rank, from each rank's ``local`` dict
    (``scoregen.train.checkpoint.capture_rng()``; same keys and shapes on all ranks)."""
    if not is_distributed():
        return {0: dict(local)}
    out: dict[int, dict[str, Tensor]] = {r: {} for r in range(get_world_size())}
    for key in sorted(local):
        for r, t in enumerate(all_gather_tensors(local[key])):
            out[r][key] = t.cpu()
    return out


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start ``skip`` indices into its epoch.

    The permutation of an epoch depends on ``seed + epoch`` only and rank ``r`` takes
    positions ``r, r + W, ...`` of it, so with ``drop_last=True`` global batch ``k`` is the
    same set of samples for any number of processes ``W``; ``skip`` is how a resumed run
    starts where the interrupted one stopped.
    """

    skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects: a run id, an exception);
    ``obj`` itself when not distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn: Callable[[], Any]) -> None:
    """Run ``fn`` on rank 0; an error it raises is raised on every rank, so no rank waits
    in a collective for one that gave up. Call on every rank."""
    error: BaseException | None = None
    if get_rank() == 0:
        try:
            fn()
        except Exception as e:
            error = e
    if is_distributed():
        error = broadcast_object(error)
    if error is not None:
        raise error


def wrap_net(net: nn.Module, device: torch.device, *, find_unused_parameters: bool = False,
             compile: bool = False) -> Any:
    """``net`` in ``DistributedDataParallel`` when running distributed (which broadcasts
    rank 0's weights: every rank starts identical), then ``torch.compile``-d when asked.
    The result shares every parameter with ``net``."""
    if is_distributed():
        net = DistributedDataParallel(
            net, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)
    return torch.compile(net) if compile else net
