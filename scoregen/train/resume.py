"""A trainer's state in a checkpoint: writing it, and resuming from it.

:func:`save_trainer` writes everything an exact resume needs (:func:`trainer_state`: the
step, the data position, the skip counters, the wall time, the number of log rows; the
run's identity; every rank's RNG states) through
:func:`~scoregen.train.checkpoint.save_checkpoint`; :func:`restore` reads it back.

:meth:`Trainer.resume <scoregen.train.trainer.Trainer.resume>` continues the newest
checkpoint of ``out_dir`` that loads (:func:`newest_loadable`): a newer one that fails
its checksums, its header bounds or holds non-finite weights is skipped with one warning
naming each, for the previous one. :func:`restore_training_state` puts the weights, the
EMA, the optimizer and the GradScaler back (the config wins over the optimizer's saved
betas and weight decay); :func:`restore` does that and puts the trainer's step, data
position, counters, run identity and this rank's RNG states back.
:func:`warn_differences` says when the resumed run will differ from an uninterrupted one
(a changed ``TrainConfig``; another number of processes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from scoregen.model import ScoreModel
from scoregen.train import checkpoint as ckpt
from scoregen.train.config import TrainConfig
from scoregen.train.ema import EMA
from scoregen.train.nonfinite import nonfinite_tensors
from scoregen.train.run_dir import warn_caller

if TYPE_CHECKING:
    from scoregen.train.trainer import Trainer

__all__ = ["resume_run", "newest_loadable", "restore", "restore_training_state",
           "warn_differences", "trainer_state", "save_trainer"]


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


def restore(trainer: Trainer, ck: ckpt.Checkpoint) -> None:
    """Put ``trainer`` in the state ``ck`` was saved in (after checking that ``ck`` fits
    its model): weights, EMA, optimizer, scaler, step, data position, skip counters,
    wall time, run identity and this rank's RNG states."""
    tr = trainer
    ck.check_compatible(model_config=tr.model_config, sde=tr.model.sde,
                        prediction=tr.model.prediction, run_info=tr.run_info)
    tr.ema = restore_training_state(ck, tr.model, tr.ema, tr.optimizer, tr.scaler, tr.config)
    st = ck.state
    tr.global_step = tr._last_saved = ck.step
    tr.epoch = int(st.get("epoch", 0))
    tr.batch_in_epoch = int(st.get("batch_in_epoch", 0))
    tr.skips.load_state(st)
    tr.train_seconds = float(st.get("train_seconds", 0.0))
    run = ck.meta.get("run") or {}
    if isinstance(run.get("config_hash"), str):
        tr.config_hash = run["config_hash"]
    if isinstance(run.get("started"), str):
        tr.run_started = run["started"]
    warn_differences(ck, tr.config, tr.world_size)
    rng = ck.rng_state(tr.rank)
    if rng is not None:
        ckpt.restore_rng(rng)


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """The trainer's position and counters for a checkpoint's ``state`` (in the key order
    of format 1, so that the metadata text is unchanged)."""
    tr, skips = trainer, trainer.skips.state()
    return {"epoch": tr.epoch, "batch_in_epoch": tr.batch_in_epoch,
            **{k: skips[k] for k in ("skipped_steps", "overflow_steps", "nonfinite_run")},
            "world_size": tr.world_size, "train_seconds": round(tr._elapsed(), 3),
            **{k: skips[k] for k in ("first_skipped_step", "suspect")},
            "log_rows": tr.metrics.rows}


def save_trainer(trainer: Trainer, path: str | os.PathLike,
                 rng: Mapping[int, Mapping[str, Tensor]]) -> Path:
    """Write ``trainer``'s checkpoint to ``path``; ``rng``: every rank's RNG states."""
    tr = trainer
    return ckpt.save_checkpoint(
        Path(path), tr.model, ema=tr.ema, optimizer=tr.optimizer, scaler=tr.scaler,
        step=tr.global_step, train_config=tr.config.to_dict(), model_config=tr.model_config,
        state=trainer_state(tr), rng=rng, host_options=tr.host.to_dict(),
        run_info=tr.run_info,
        run={"id": tr.run_id, "started": tr.run_started, "config_hash": tr.config_hash},
    )


def resume_run(trainer: Trainer, path: str | os.PathLike | None) -> bool:
    """:meth:`Trainer.resume <scoregen.train.trainer.Trainer.resume>`: continue the newest
    checkpoint that loads (or ``path``) under the folder's lock, take its run id, claim the
    folder for it, keep the log's rows up to it and log a ``"resume"`` row."""
    tr = trainer
    with tr._hold(tr.run_id, claim=False):
        candidates = [Path(path)] if path is not None else tr.checkpoints.list()[::-1]
        ck = newest_loadable(candidates, explicit=path is not None, directory=tr.checkpoint_dir)
        if ck is None:
            return False
        restore(tr, ck)
        tr.run_id = tr.folder.run_id = ck.run_id or tr.run_id
        tr.folder.legacy = ck.run_id is None
        tr.resumed_from = ck.path
        tr._hold.claim_now()  # no other run's checkpoints beside it
        tr.metrics.truncate(ck.step, ck.state.get("log_rows"))
        tr.log({"event": "resume", "run_id": tr.run_id, "from": ck.path.name,
                "written_by_run": ck.run_id})
    return True
