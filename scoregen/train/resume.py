"""Resuming a run: which checkpoint to continue from, and putting its state back.

:meth:`Trainer.resume <scoregen.train.trainer.Trainer.resume>` continues the newest
checkpoint of ``out_dir`` that loads (:func:`newest_loadable`): a newer one that fails
its checksums, its header bounds or holds non-finite weights is skipped with one warning
naming each, for the previous one. :func:`restore_training_state` puts the weights, the
EMA, the optimizer and the GradScaler back (the config wins over the optimizer's saved
betas and weight decay); the trainer restores its own counters and position.
:func:`warn_differences` says when the resumed run will differ from an uninterrupted one
(a changed ``TrainConfig``; another number of processes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from scoregen.model import ScoreModel
from scoregen.train import checkpoint as ckpt
from scoregen.train.config import TrainConfig
from scoregen.train.ema import EMA
from scoregen.train.nonfinite import nonfinite_tensors

__all__ = ["newest_loadable", "restore_training_state", "warn_differences", "warn_caller"]


def warn_caller(message: str) -> None:
    """``warnings.warn`` attributed to the first frame outside this package and
    contextlib (the user's ``fit`` / ``resume`` call, however deep the path)."""
    here = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None and (os.path.dirname(os.path.abspath(frame.f_code.co_filename))
                                 == here or frame.f_code.co_filename == contextlib.__file__):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, stacklevel=level + 1)


def newest_loadable(candidates: list[Path], *, explicit: bool, directory: Path
                    ) -> ckpt.Checkpoint | None:
    """The first of ``candidates`` (newest first) that loads, with finite weights and
    EMA, warning about each one skipped; None when there are none. ``explicit`` (a
    path the user named): its error is raised, nothing is skipped. A
    :class:`~scoregen.train.checkpoint.CheckpointMismatchError` is always raised."""
    skipped: list[str] = []
    for p in candidates:
        try:
            ck = ckpt.load_checkpoint(p)
            bad = nonfinite_tensors({k: v for k, v in ck.tensors.items()
                                     if k.startswith(("model.", "ema."))})
            if bad:
                raise ckpt.CheckpointError(f"{p} holds non-finite weights ({bad[0]}, ...)")
        except ckpt.CheckpointMismatchError:
            raise
        except ckpt.CheckpointError as e:
            if explicit:
                raise
            skipped.append(f"{p.name}: {e}")
            continue
        if skipped:
            warn_caller(f"resume: skipped {len(skipped)} checkpoint(s) that do not load "
                        f"and continued from {p.name}:\n  " + "\n  ".join(skipped))
        return ck
    if skipped:
        raise ckpt.CheckpointError(f"no checkpoint in {directory} loads:\n  "
                                   + "\n  ".join(skipped))
    return None


def restore_training_state(
    ck: ckpt.Checkpoint, model: ScoreModel, ema: EMA, optimizer: torch.optim.Optimizer,
    scaler: Any, config: TrainConfig,
) -> EMA:
    """Load ``ck``'s weights, EMA, optimizer and GradScaler states in place; returns the
    EMA (a fresh one from the weights, with a warning, when ``ck`` has none)."""
    path = ck.path
    ckpt.load_state_checked(model, ck.model_state(), "weights", path)
    ema_state = ck.ema_state()
    if ema_state is not None:
        ckpt.load_state_checked(ema.module, ema_state, "EMA weights", path)
        ema.num_updates = int(ck.meta["ema"]["num_updates"])
    else:
        warn_caller(f"{path} has no EMA weights; the EMA restarts from the weights")
        ema = EMA(model, config.ema_decay, warmup=config.ema_warmup)
    opt_state = ck.optimizer_state()
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
        for group in optimizer.param_groups:  # the config wins over saved groups
            group.update(betas=config.betas, weight_decay=config.weight_decay)
    scaler_state = ck.scaler_state()
    if scaler_state is not None and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)
    return ema


def warn_differences(ck: ckpt.Checkpoint, config: TrainConfig, world_size: int) -> None:
    """Warn when continuing ``ck`` with ``config`` on ``world_size`` processes makes a run
    that differs from an uninterrupted one (host options are never compared)."""
    changed = config.differences(ck.train_config or {})
    if changed:
        warn_caller(f"resuming {ck.path} with a changed TrainConfig ({'; '.join(changed)}); "
                    "the run will differ from an uninterrupted one")
    ws = ck.state.get("world_size", world_size)
    if ws != world_size:
        warn_caller(f"{ck.path} was written by {ws} processes, resuming with {world_size}: "
                    "per-rank RNG states (dropout) are not carried over")
