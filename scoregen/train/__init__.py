"""The training side: the :class:`Trainer` loop and what it needs on a host.

Imports only the core (:mod:`scoregen.model`, :mod:`scoregen.losses`, :mod:`scoregen.sde`)
and never the application (:mod:`scoregen.segmentation`). Its parts:

* :mod:`~scoregen.train.trainer` — :class:`Trainer`: one step and the ``fit`` loop;
* :mod:`~scoregen.train.step` — the arithmetic of a step (per-rank draw, gradient norm);
* :mod:`~scoregen.train.nonfinite` — the non-finite policy: skips, weight checks, errors;
* :mod:`~scoregen.train.resume` — a trainer's state in a checkpoint; resuming from one;
* :mod:`~scoregen.train.config` — :class:`TrainConfig` (what defines the run, compared on
  resume) and :class:`HostOptions` (how this host runs it, never compared);
* :mod:`~scoregen.train.batches` — the batch contract and the resumable data loader;
* :mod:`~scoregen.train.metrics_log` — ``metrics.jsonl``, the windowed loss, the bar;
* :mod:`~scoregen.train.checkpoint` — what a checkpoint holds, save / load / load_model
  (and the public path of the whole checkpoint API);
* :mod:`~scoregen.train.checkpoint_file` — the file: header, CRC-32, bounds, atomic write;
* :mod:`~scoregen.train.rng_state` — RNG states as tensors (capture, restore);
* :mod:`~scoregen.train.checkpoint_dir` — the run's folder of step checkpoints (pruning);
* :mod:`~scoregen.train.run_dir` — run identity, the out_dir lock, moving a run aside;
* :mod:`~scoregen.train.ema` — the exponential moving average of the weights;
* :mod:`~scoregen.train.distributed` — torchrun / DDP helpers.
"""

from scoregen.train.batches import default_batch_fn
from scoregen.train.checkpoint import (
    CheckpointBoundsError,
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from scoregen.train.config import HostOptions, TrainConfig
from scoregen.train.ema import EMA
from scoregen.train.metrics_log import loss_curve
from scoregen.train.run_dir import ExistingRunError, OutDirInUseError
from scoregen.train.trainer import NonFiniteLossError, NonFiniteWeightsError, Trainer

__all__ = [
    "Trainer", "TrainConfig", "HostOptions", "NonFiniteLossError", "NonFiniteWeightsError",
    "ExistingRunError", "OutDirInUseError", "default_batch_fn", "EMA",
    "loss_curve",
    "save_checkpoint", "load_checkpoint", "load_model", "CheckpointError",
    "CheckpointMismatchError", "CheckpointBoundsError",
]
