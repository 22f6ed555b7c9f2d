"""The training side: the :class:`Trainer` loop and what it needs on a host.

Imports only the core (:mod:`scoregen.model`, :mod:`scoregen.losses`, :mod:`scoregen.sde`)
and never the application (:mod:`scoregen.segmentation`). Its parts:

* :mod:`~scoregen.train.trainer` — :class:`Trainer`: one step, the ``fit`` loop, resume;
* :mod:`~scoregen.train.checkpoint` — atomic, pickle-free checkpoint files;
* :mod:`~scoregen.train.ema` — the exponential moving average of the weights;
* :mod:`~scoregen.train.distributed` — torchrun / DDP helpers.
"""

from scoregen.train.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from scoregen.train.ema import EMA
from scoregen.train.trainer import NonFiniteLossError, TrainConfig, Trainer, default_batch_fn

__all__ = [
    "Trainer", "TrainConfig", "NonFiniteLossError", "default_batch_fn", "EMA",
    "save_checkpoint", "load_checkpoint", "load_model", "CheckpointError",
    "CheckpointMismatchError",
]
