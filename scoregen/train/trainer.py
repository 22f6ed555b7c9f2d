"""``Trainer``: denoising score matching with AdamW, EMA, AMP, compile, DDP, checkpoints.

One optimisation step (:meth:`Trainer.step`) on a local batch ``x0: (B, *D)``: the
learning rate of the step (warm-up, then constant or cosine); ``t``, ``eps`` and the
guidance dropout drawn for the global batch (:mod:`~scoregen.train.step`: the same run
for any number of processes); :func:`scoregen.dsm_loss` under autocast; backward (DDP
averages gradients), unscale, clipping; the AdamW and EMA update — or none at all when
the loss or the gradient norm is not finite, and a check of the weights every
``check_finite_every`` steps (:mod:`~scoregen.train.nonfinite`).

:meth:`Trainer.fit` is the loop: batches (:mod:`~scoregen.train.batches`), the log
(:mod:`~scoregen.train.metrics_log`), per-epoch hooks and checkpoints
(:mod:`~scoregen.train.checkpoint`). :meth:`Trainer.resume`
(:mod:`~scoregen.train.resume`) continues a run exactly where its last good checkpoint
left it, inside the epoch too. The run owns its ``out_dir``
(:mod:`~scoregen.train.run_dir`): a run id in its checkpoints and log, a fresh run
refuses another run's folder (``on_existing``), pruning deletes only its own files and
an advisory lock keeps a second trainer out. The trainer draws no figures.

What defines the run is a :class:`~scoregen.train.config.TrainConfig` (compared on
resume); how this host runs it is a :class:`~scoregen.train.config.HostOptions` (never
compared).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from scoregen.losses import dsm_loss
from scoregen.model import ScoreModel
from scoregen.train import checkpoint as ckpt
from scoregen.train import distributed as dist_utils
from scoregen.train import nonfinite, run_dir
from scoregen.train.batches import Batch, default_batch_fn, epoch_batches, loader_for
from scoregen.train.checkpoint_dir import CheckpointDir
from scoregen.train.config import HostOptions, TrainConfig, plain_model_config, plain_run_info
from scoregen.train.ema import EMA
from scoregen.train.metrics_log import MetricsLog, Progress
from scoregen.train.nonfinite import NonFiniteLossError, NonFiniteWeightsError
from scoregen.train.resume import resume_run, save_trainer
from scoregen.train.run_dir import ExistingRunError, OutDirInUseError
from scoregen.train.step import autocast_for, draw_rows, grad_norm, host_values, to_device

__all__ = ["Trainer", "NonFiniteLossError", "NonFiniteWeightsError", "ExistingRunError",
           "OutDirInUseError"]

_END = object()


class Trainer:
    """Train a :class:`~scoregen.ScoreModel` by denoising score matching.

    Args:
        model: the model; its net must be an ``nn.Module`` with parameters.
        config: a :class:`TrainConfig`: what defines the run (compared on resume).
        out_dir: where ``checkpoints/`` and ``metrics.jsonl`` go.
        host: :class:`HostOptions`: how this host runs it (never compared); default
            ``HostOptions()``.
        model_config: the net's configuration (a dict, a dataclass, or an object with
            ``to_dict()`` such as ``UNetConfig``), saved as JSON so that
            :func:`scoregen.train.checkpoint.load_model` can rebuild the net and resuming can
            check it.
        run_info: what the run is about (JSON), for whoever loads its checkpoints: e.g.
            ``{"task": "lung", "image_size": 64}``. Saved in every checkpoint
            (:attr:`Checkpoint.run_info <scoregen.train.checkpoint.Checkpoint.run_info>`);
            :meth:`resume` refuses a checkpoint whose run_info differs on a shared key.
        device: where to train; default the model's device. Under torchrun a CUDA device
            gets index ``LOCAL_RANK``.
        on_existing: what a *fresh* run (not :meth:`resume`-d) does when ``out_dir``
            already holds another run's checkpoints: ``"refuse"`` (default) raises
            :class:`ExistingRunError`; ``"resume"`` makes :meth:`fit` continue the run
            there (as :meth:`resume` would; a fresh start when there is none);
            ``"overwrite"`` moves the old run (``checkpoints/``, ``metrics.jsonl``) to
            ``out_dir/previous-<its run id>/`` and starts afresh.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is started here (NCCL on
    CUDA, Gloo on CPU), the net is wrapped in ``DistributedDataParallel`` and rank 0 logs
    and writes checkpoints. Every rank must call :meth:`fit`, :meth:`save` and
    :meth:`resume`.
    """

    def __init__(
        self,
        model: ScoreModel,
        config: TrainConfig,
        out_dir: str | os.PathLike,
        *,
        host: HostOptions | None = None,
        model_config: Mapping[str, Any] | Any | None = None,
        run_info: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        on_existing: str = "refuse",
    ) -> None:
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        host = HostOptions() if host is None else host
        if not isinstance(host, HostOptions):
            raise TypeError(f"host must be a HostOptions, got {type(host).__name__}")
        if on_existing not in run_dir.ON_EXISTING:
            raise ValueError(f"on_existing must be one of {run_dir.ON_EXISTING}, "
                             f"got {on_existing!r}")
        if not isinstance(model.net, torch.nn.Module) or not any(True for _ in model.parameters()):
            raise ValueError("the model's net must be an nn.Module with parameters to train")
        self.config, self.host = config, host
        self.model_config = plain_model_config(model_config)
        self.run_info = plain_run_info(run_info)
        self.out_dir = Path(out_dir)
        self.checkpoints = CheckpointDir(self.out_dir / "checkpoints")

        want = torch.device(device) if device is not None else model.device
        self.distributed = dist_utils.init_distributed(want)
        self.rank, self.world_size = dist_utils.get_rank(), dist_utils.get_world_size()
        self.is_main = self.rank == 0
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", enabled=self.is_main)
        self.device = dist_utils.local_device(want)
        if config.precision == "fp16" and self.device.type == "cpu":
            warnings.warn("fp16 on CPU is slow and rarely useful; bf16 is the CPU choice",
                          stacklevel=2)

        model.to(self.device)
        if host.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        net = dist_utils.wrap_net(model.net, self.device, compile=host.compile,
                                  find_unused_parameters=host.find_unused_parameters)
        # Shares every parameter with `model`; only the net call goes through DDP / compile.
        self._train_model = ScoreModel(net, model.sde, model.prediction,
                                       self_condition=model.self_condition)
        self.ema = EMA(model, config.ema_decay, warmup=config.ema_warmup)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.autocast = autocast_for(config.precision, self.device.type)  # entered every step
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self._gen = torch.Generator(device=self.device)
        self._loader_gen = torch.Generator()

        self.global_step = self.epoch = self.batch_in_epoch = 0
        self.skips = nonfinite.SkipCounter(host.max_nonfinite)  # non-finite steps: update skipped
        self.train_seconds = 0.0  # wall time inside fit(), summed over resumed runs
        self._fit_t0: float | None = None
        self._last_saved = -1
        self.progress = Progress(host.log_every)
        self.last_loss = self.last_grad_norm = math.nan

        # Run identity (the same on every rank) and the folder's lock.
        self.on_existing = on_existing
        self.config_hash, self.run_id, self.run_started = run_dir.new_identity({
            "train_config": config.to_dict(), "model_config": self.model_config,
            "run_info": self.run_info, "sde": model.sde.to_dict(),
            "prediction": model.prediction})
        self.resumed_from: Path | None = None
        self._lock = run_dir.RunLock(self.out_dir)
        self._hold = run_dir.FolderHold(self._lock, self._claim)
        self.folder = run_dir.RunFolder(self.out_dir, self.checkpoints, self.metrics, self.run_id)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OutDirInUseError), self._lock.held(self.run_id):
                self.checkpoints.remove_partial()  # only when no trainer is writing here

    @property
    def checkpoint_dir(self) -> Path:
        """The folder of the step checkpoints (``out_dir/checkpoints``)."""
        return self.checkpoints.path

    @property
    def metrics_path(self) -> Path:
        """``out_dir/metrics.jsonl``."""
        return self.metrics.path

    @property
    def ema_model(self) -> ScoreModel:
        """A ``ScoreModel`` holding the EMA weights (eval mode): sample from this."""
        return self.ema.module

    # the run's skip counters (:class:`~scoregen.train.nonfinite.SkipCounter`), read-only
    skipped_steps = property(lambda self: self.skips.skipped,
                             doc="Steps skipped with a non-finite loss or gradient (over resumes).")
    overflow_steps = property(lambda self: self.skips.overflows,
                              doc="fp16 GradScaler overflows with a finite loss (update skipped).")
    first_skipped_step = property(lambda self: self.skips.first,
                                  doc="The step of the run's first skip; None: none skipped.")

    # ------------------------------------------------------------------ one step
    def step(self, x0: Tensor, cond: Tensor | None = None) -> float:
        """One optimisation step on this rank's batch ``x0: (B, *D)``, ``cond: (B, ...)``.

        Returns the loss averaged over ranks (NaN / inf when the step was skipped).
        """
        cfg = self.config
        if not torch.is_tensor(x0) or x0.ndim < 2 or not x0.is_floating_point():
            got = f"{getattr(x0, 'dtype', type(x0).__name__)} {tuple(getattr(x0, 'shape', ()))}"
            raise ValueError(f"x0 must be a float tensor of shape (B, *D), got {got}")
        if self._train_model is None:
            raise RuntimeError("this trainer left the process group (leave_distributed()); "
                               "it cannot step again: its gradients would no longer be synced")
        if not self._hold.depth:  # a step outside fit(): this trainer owns the folder until
            self._hold.keep(self.run_id)  # close(), so another cannot write between steps
        x0, cond = (to_device(v, self.device, self.host.channels_last) for v in (x0, cond))
        if not self.model.net.training:
            self._train_model.train()
        index = self.global_step  # 0-based index of this update
        lr = cfg.lr_at(index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t, noise, cond, self_cond = draw_rows(self.model, x0, cond, config=cfg, step=index,
                                   generator=self._gen, device=self.device, rank=self.rank,
                                   world_size=self.world_size,
                                   channels_last=self.host.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = dsm_loss(self._train_model, x0, cond, t=t, noise=noise,
                            weighting=cfg.weighting, aux=cfg.aux_loss,
                            aux_weight=cfg.aux_weight, aux_weighting=cfg.aux_weighting,
                            self_cond=self_cond)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        loss_v, norm_v = host_values(loss, grad_norm(self.model, cfg.grad_clip),
                                     distributed=self.distributed, world_size=self.world_size)
        self.global_step += 1
        self.last_loss, self.last_grad_norm = loss_v, norm_v
        self._update_or_skip(loss_v, norm_v)
        every = self.host.check_finite_every
        if every and self.global_step % every == 0:
            self.check_finite()
        self._record(loss_v, lr)
        return loss_v

    def _update_or_skip(self, loss_v: float, norm_v: float) -> None:
        """AdamW + EMA update when loss and gradient norm are finite; else no update."""
        if math.isfinite(loss_v) and math.isfinite(norm_v):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.ema.update(self.model)
            self.skips.passed()
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()  # fp16: lowers the scale after an overflow; else a no-op
        if self.scaler.is_enabled() and math.isfinite(loss_v):
            self.skips.overflows += 1
            return
        self.check_finite()  # were the weights the cause? (a diverged update before)
        self.log({"event": "nonfinite", "step": self.global_step, "loss": loss_v,
                  "grad_norm": norm_v})
        self.skips.skip(self.global_step, loss_v, norm_v)  # raises after max_nonfinite

    def check_finite(self, when: str = "") -> None:
        """Raise :class:`NonFiniteWeightsError` unless every weight and EMA value is
        finite (:func:`~scoregen.train.nonfinite.nonfinite_parts`: one host sync)."""
        nonfinite.check_finite(self.model, self.ema.module, step=self.global_step, when=when,
                               folder=self.folder, skipped=self.skipped_steps)

    # ------------------------------------------------------------------ logging
    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0 only); ``step`` is added."""
        self.metrics.append({"step": self.global_step, **record})

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (unparsable lines from a killed writer skipped)."""
        return self.metrics.read()

    def _record(self, loss_v: float, lr: float) -> None:
        window = self.progress.step(self.global_step, loss_v)
        if window is not None:  # a training line every log_every steps
            mean, rate = window
            self.log({"epoch": self.epoch, "loss": mean, "lr": lr,
                      "grad_norm": self.last_grad_norm, "skipped": self.skipped_steps,
                      "it_per_s": rate})
            self.progress.show(mean, self.skipped_steps)

    # ------------------------------------------------------------------ the folder
    def _claim(self) -> None:
        """Rank 0, lock held: :meth:`RunFolder.claim <scoregen.train.run_dir.RunFolder.claim>`
        the folder for this run; a fresh run starts its log with a ``"run_start"`` row."""
        fresh = self.resumed_from is None
        self.folder.claim(fresh=fresh, overwrite=self.on_existing == "overwrite", start_row={
            "step": self.global_step, "event": "run_start", "run_id": self.run_id,
            "config_hash": self.config_hash, "started": self.run_started} if fresh else None)

    def close(self) -> None:
        """Release ``out_dir`` after a hand-written loop of :meth:`step` calls (which holds
        the folder's lock from its first step on, so that no other trainer writes there
        between steps). :meth:`fit` needs no ``close``: it releases the lock when it returns.
        The lock is also gone when the process ends. ``with Trainer(...) as trainer:``
        calls it on exit. Call on every rank."""
        self._hold.release_kept()

    def leave_distributed(self) -> None:
        """Drop this trainer's ``DistributedDataParallel`` wrapper (after its last step,
        before :func:`~scoregen.train.distributed.cleanup_distributed`, on every rank).

        The wrapper's reducer keeps the process group alive: destroyed only when the
        trainer is garbage-collected at interpreter exit, its Gloo threads can abort the
        process ("terminate called without an active exception", seen on rank 1 of
        ``examples/unconditional_xray.py`` under torchrun). ``model``, ``ema_model`` and
        the run folder stay usable for sampling and writing results; :meth:`step`
        refuses afterwards. A no-op on one process apart from that refusal."""
        self._train_model = None
        gc.collect()  # the DDP reducer goes now, while the process group still exists

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ checkpoints
    def _elapsed(self) -> float:
        running = 0.0 if self._fit_t0 is None else time.perf_counter() - self._fit_t0
        return self.train_seconds + running

    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write a checkpoint (default ``checkpoints/step_XXXXXXXX.safetensors``) and prune
        the run's own checkpoints to the last ``HostOptions.keep_last`` (plus the newest
        one without skipped steps while later ones had some). Refuses
        (:class:`NonFiniteWeightsError`) weights or an EMA that are not finite. Call on
        every rank; rank 0 writes and returns the path. Draws nothing."""
        self.check_finite(": refusing to save them")
        with self._hold(self.run_id):
            rng = dist_utils.gather_rng_states(ckpt.capture_rng())  # a collective under DDP
            self._last_saved = self.global_step
            if not self.is_main:
                return None
            written = save_trainer(
                self, self.checkpoints.path_for(self.global_step) if path is None else path, rng)
            if path is None:
                self.folder.prune(self.host.keep_last)
            return written

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Continue the run of the newest checkpoint of ``out_dir`` that loads (or of
        ``path``), exactly: weights, EMA, optimizer, GradScaler, step, data position,
        this rank's RNG states, its run id and its log up to the checkpoint.

        A corrupt newest checkpoint (checksum, bounds, non-finite weights) is skipped with
        a warning naming it, for the previous one. Returns False when ``path`` is None and
        there is nothing to resume. Raises
        :class:`~scoregen.train.checkpoint.CheckpointMismatchError` naming the fields when
        the checkpoint belongs to a model of another config, and :class:`ExistingRunError`
        when ``out_dir`` also holds checkpoints of another run. The run continued is
        ``trainer.run_id`` (logged as a ``"resume"`` row of ``metrics.jsonl``).
        """
        return resume_run(self, path)

    # ------------------------------------------------------------------ the loop
    @contextlib.contextmanager
    def _fitting(self, total: int | None) -> Iterator[None]:
        """The progress bar, the loss window and the wall clock of one ``fit`` call."""
        with self.progress.running(total=total, initial=self.global_step,
                                   show=self.is_main and self.host.progress):
            self._fit_t0 = time.perf_counter()
            try:
                yield
            finally:
                self.train_seconds, self._fit_t0 = self._elapsed(), None

    def _end_epoch(self, hook: Callable[[Trainer, int], Any] | None) -> None:
        """Run the epoch hook and log its row. When the hook raises, the row records the
        error and the epoch's checkpoint is written before the error propagates: a
        resumed run starts the next epoch (it neither repeats this one nor loses its
        row)."""
        finished = self.epoch
        self.epoch, self.batch_in_epoch = finished + 1, 0
        try:
            metrics = hook(self, finished) if hook is not None else None
        except Exception as e:
            self.log({"event": "epoch_end", "epoch": finished,
                      "error": f"{type(e).__name__}: {e}"})
            if self._last_saved != self.global_step:
                self.save()
            raise
        self.log({"event": "epoch_end", "epoch": finished, **(metrics or {})})

    def fit(
        self,
        data: Dataset | Tensor | Iterable[Any],
        *,
        steps: int | None = None,
        epochs: int | None = None,
        batch_fn: Callable[[Any], Batch] | None = None,
        on_epoch_end: Callable[[Trainer, int], Mapping[str, Any] | None] | None = None,
        on_step_end: Callable[[Trainer, int, float], None] | None = None,
    ) -> dict[str, Any]:
        """Train until ``global_step == steps`` or ``epoch == epochs`` (totals, so the same
        call continues a resumed run); default ``steps = config.max_steps``.

        ``data``: a map-style ``Dataset`` or a tensor of samples (the trainer shuffles,
        shards across ranks and batches it with ``config.batch_size``: exact resume), or
        any re-iterable of batches such as a ``DataLoader`` (its ``sampler.set_epoch`` is
        called; on resume the consumed batches of the epoch are skipped by iterating).
        ``batch_fn`` maps a batch to ``(x0, cond)``; default :func:`default_batch_fn`.
        ``on_epoch_end(trainer, epoch)`` runs on every rank after each epoch; a dict it
        returns is logged (when it raises, the epoch's checkpoint is written first).
        ``on_step_end(trainer, step, loss)`` runs after every step.

        Holds the out_dir lock throughout (:class:`OutDirInUseError` when another trainer
        holds it); a fresh run refuses a folder with another run's checkpoints
        (:class:`ExistingRunError`, see ``on_existing``). Returns ``{"step", "epoch",
        "loss", "skipped_steps", "train_seconds", "run_id", "ok", "status"}``: ``ok`` is
        False when any step was skipped as non-finite (``status`` says which; a script
        should exit non-zero). A diverged run raises :class:`NonFiniteWeightsError`.
        """
        if steps is None and epochs is None:
            steps = self.config.max_steps
        batch_fn = batch_fn or default_batch_fn
        data, loader = loader_for(
            data, batch_size=self.config.batch_size, seed=self.config.seed, rank=self.rank,
            world_size=self.world_size, num_workers=self.host.num_workers,
            generator=self._loader_gen, pin_memory=self.device.type == "cuda")
        if self.on_existing == "resume" and self.resumed_from is None and not self._hold.claimed:
            self.resume()

        def done() -> bool:
            return ((steps is not None and self.global_step >= steps)
                    or (epochs is not None and self.epoch >= epochs))

        with self._hold(self.run_id), self._fitting(total=steps):
            while not done():
                batches = epoch_batches(data, loader, epoch=self.epoch, skip=self.batch_in_epoch,
                                        seed=self.config.seed, generator=self._loader_gen)
                self._run_epoch(batches, batch_fn, done, on_epoch_end, on_step_end)
            if self._last_saved != self.global_step:
                self.save()
        ok = self.skipped_steps == 0
        return {"step": self.global_step, "epoch": self.epoch, "loss": self.last_loss,
                "skipped_steps": self.skipped_steps, "train_seconds": self.train_seconds,
                "run_id": self.run_id, "ok": ok, "status": self.status()}

    def _run_epoch(
        self,
        batches: Iterator[Any],
        batch_fn: Callable[[Any], Batch],
        done: Callable[[], bool],
        on_epoch_end: Callable[[Trainer, int], Mapping[str, Any] | None] | None,
        on_step_end: Callable[[Trainer, int, float], None] | None,
    ) -> None:
        """Steps over the rest of this epoch until it ends or ``done()``."""
        batch = next(batches, _END)
        if batch is _END:
            if self.batch_in_epoch == 0:
                raise ValueError(
                    f"the data yielded no batch in epoch {self.epoch}; pass a re-iterable "
                    "(a Dataset, tensor or DataLoader), not a one-shot iterator, with at "
                    "least one full batch")
            self._end_epoch(on_epoch_end)  # resumed exactly at the end of an epoch
            return
        while batch is not _END and not done():
            loss = self.step(*batch_fn(batch))
            self.batch_in_epoch += 1
            if on_step_end is not None:
                on_step_end(self, self.global_step, loss)
            batch = next(batches, _END)  # look ahead: was that the epoch's last?
            if batch is _END:
                self._end_epoch(on_epoch_end)
            every = self.host.checkpoint_every
            if every and self.global_step % every == 0:
                self.save()

    def status(self) -> str:
        """One line on the run's health: ``"ok"``, or how many steps were skipped as
        non-finite, from which step, and the newest checkpoint written without skips."""
        return self.skips.status(self.run_id, self.global_step, self.folder)
