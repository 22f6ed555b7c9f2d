"""``Trainer``: denoising score matching with AdamW, EMA, AMP, compile, DDP, checkpoints.

One optimisation step (:meth:`Trainer.step`) on a local batch ``x0: (B, *D)``:

1. the learning rate of this step: linear warm-up, then constant or cosine;
2. ``t``, ``eps`` and the classifier-free-guidance dropout mask are drawn for the
   *global* batch from a generator seeded by ``(seed, step)``; each rank keeps its rows
   (``[rank::world_size]``, the rows ``DistributedSampler`` gives it). The run is thus
   the same for any number of processes with the same global batch, and resuming
   needs no generator state;
3. :func:`scoregen.dsm_loss` under the autocast context chosen once in ``__init__``
   (fp32: none; bf16: ``torch.autocast``; fp16: autocast + ``GradScaler``);
4. backward (DDP averages gradients across ranks), unscale, gradient-norm clipping;
5. if the loss (averaged over ranks) or the gradient norm is not finite the update is
   skipped — no optimizer or EMA change — and counted; ``max_nonfinite`` skips in a
   row stop training with :class:`NonFiniteLossError` naming the step;
6. AdamW update, then the EMA update (:class:`scoregen.EMA`).

:meth:`Trainer.fit` feeds batches, logs (tqdm bar, ``metrics.jsonl``, ``loss.png``),
calls per-epoch hooks and writes atomic checkpoints (:mod:`scoregen.train.checkpoint`);
:meth:`Trainer.resume` continues a run exactly where its last checkpoint left it,
including the position inside the epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset
from tqdm.auto import tqdm

from scoregen.broadcast import append_dims
from scoregen.losses import WEIGHTINGS, dsm_loss, sample_times
from scoregen.model import ScoreModel
from scoregen.train import checkpoint as ckpt
from scoregen.train import distributed as dist_utils
from scoregen.train.ema import EMA

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "default_batch_fn"]

PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")
Batch = tuple[Tensor, "Tensor | None"]


class NonFiniteLossError(RuntimeError):
    """Training produced too many non-finite losses or gradients in a row."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a run; saved as JSON in every checkpoint.

    ``batch_size`` is the *global* batch (split evenly over DDP processes) and is used
    when :meth:`Trainer.fit` gets a ``Dataset``. Step counts are 1-based: "step k" is the
    k-th update, and a checkpoint of step k holds the state after k updates.
    """

    lr: float = 2e-4
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    lr_schedule: str = "constant"  # "constant" or "cosine" (to min_lr at max_steps)
    min_lr: float = 0.0
    max_steps: int = 10_000  # default length of fit()
    batch_size: int = 64  # global batch, over all processes
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n))
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    compile: bool = False  # torch.compile the net
    channels_last: bool = False  # 4-D weights and batches in channels_last
    p_uncond: float = 0.0  # classifier-free guidance: P(cond replaced by zeros)
    weighting: str | None = None  # dsm_loss weighting: None (its default), "simple", "sigma2"
    discrete: bool | None = None  # DDPM integer times; None: when the SDE has num_steps
    checkpoint_every: int = 1000  # steps between checkpoints; 0: only at the end of fit()
    keep_last: int = 3  # checkpoints kept in out_dir/checkpoints
    log_every: int = 50  # steps between metrics.jsonl lines
    seed: int = 0  # seeds the data order and the per-step noise
    max_nonfinite: int = 10  # consecutive skipped (non-finite) steps before stopping
    num_workers: int = 0  # DataLoader workers when fit() gets a Dataset
    find_unused_parameters: bool = False  # passed to DistributedDataParallel
    progress: bool = True  # tqdm bar on rank 0

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, want: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {want}, got {getattr(self, name)!r}")

        def pos_int(name: str, zero: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if zero else v > 0)
            check(ok, name, "a non-negative int" if zero else "a positive int")

        check(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "a positive number")
        check(0 <= self.min_lr <= self.lr, "min_lr", "in [0, lr]")
        for name in ("max_steps", "batch_size", "keep_last", "log_every", "max_nonfinite"):
            pos_int(name)
        for name in ("warmup_steps", "checkpoint_every", "num_workers", "seed"):
            pos_int(name, zero=True)
        check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}")
        check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        check(self.weight_decay >= 0, "weight_decay", ">= 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
              "two numbers in [0, 1)")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "None or > 0")
        check(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        check(0 <= self.p_uncond <= 1, "p_uncond", "in [0, 1]")
        check(self.weighting is None or self.weighting in WEIGHTINGS, "weighting",
              f"None or one of {WEIGHTINGS} (callables cannot be saved in a config)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(names)}")
        return cls(**d)

    def lr_at(self, step: int) -> float:
        """Learning rate of the update with 0-based index ``step``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


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


_END = object()


def _seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and python versions)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Trainer:
    """Train a :class:`~scoregen.ScoreModel` by denoising score matching.

    Args:
        model: the model; its net must be an ``nn.Module`` with parameters.
        config: a :class:`TrainConfig`.
        out_dir: where ``checkpoints/``, ``metrics.jsonl`` and ``loss.png`` go.
        model_config: the net's configuration (a dict, a dataclass, or an object with
            ``to_dict()`` such as ``UNetConfig``), saved as JSON so that
            :func:`scoregen.train.checkpoint.load_model` can rebuild the net and resuming can
            check it.
        device: where to train; default the model's device. Under torchrun a CUDA device
            gets index ``LOCAL_RANK``.

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
        model_config: Mapping[str, Any] | Any | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not isinstance(model.net, torch.nn.Module) or not any(True for _ in model.parameters()):
            raise ValueError("the model's net must be an nn.Module with parameters to train")
        if callable(getattr(model_config, "to_dict", None)):  # e.g. UNetConfig
            model_config = model_config.to_dict()
        elif dataclasses.is_dataclass(model_config) and not isinstance(model_config, type):
            model_config = dataclasses.asdict(model_config)
        if model_config is not None:
            model_config = json.loads(json.dumps(dict(model_config)))  # JSON-able, plain copy
        self.config = config
        self.model_config: dict[str, Any] | None = model_config
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"

        want = torch.device(device) if device is not None else model.device
        self.distributed = dist_utils.init_distributed(want)
        self.rank = dist_utils.get_rank()
        self.world_size = dist_utils.get_world_size()
        self.is_main = self.rank == 0
        self.device = dist_utils.local_device(want)
        if config.precision == "fp16" and self.device.type == "cpu":
            warnings.warn("fp16 on CPU is slow and rarely useful; bf16 is the CPU choice",
                          stacklevel=2)

        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        net: Any = model.net
        if self.distributed:  # broadcasts rank 0's weights: every rank starts identical
            net = DistributedDataParallel(
                net,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )
        if config.compile:
            net = torch.compile(net)
        # Shares every parameter with `model`; only the net call goes through DDP / compile.
        self._train_model = ScoreModel(net, model.sde, model.prediction)
        self.ema = EMA(model, config.ema_decay, warmup=config.ema_warmup)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.autocast = self._autocast_context()  # chosen once, entered every step
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self._gen = torch.Generator(device=self.device)
        self._loader_gen = torch.Generator()

        self.global_step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.skipped_steps = 0  # non-finite loss / gradients: update skipped
        self.overflow_steps = 0  # fp16 GradScaler overflows (finite loss): update skipped
        self._nonfinite_run = 0
        self.train_seconds = 0.0  # wall time inside fit(), summed over resumed runs
        self._fit_t0: float | None = None
        self._last_saved = -1
        self._window: list[float] = []
        self._window_t0 = time.perf_counter()
        self._bar: Any = None
        self.last_loss = math.nan
        self.last_grad_norm = math.nan
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_partial_checkpoints(self.checkpoint_dir)

    # ------------------------------------------------------------------ pieces
    def _autocast_context(self) -> contextlib.AbstractContextManager:
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def ema_model(self) -> ScoreModel:
        """A ``ScoreModel`` holding the EMA weights (eval mode): sample from this."""
        return self.ema.module

    def _to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.config.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _draw(
        self, x0: Tensor, cond: Tensor | None, step: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``t``, ``eps`` and dropped-out ``cond`` of this rank's rows of the global batch."""
        cfg, r, w = self.config, self.rank, self.world_size
        g = self._gen.manual_seed(_seed(cfg.seed, "step", step))
        n = x0.shape[0] * w  # global batch
        t = sample_times(self.model, n, discrete=cfg.discrete, generator=g, device=self.device)
        noise = torch.randn((n, *x0.shape[1:]), generator=g, device=self.device, dtype=x0.dtype)
        t, noise = t[r::w], noise[r::w]
        if cfg.channels_last and noise.ndim == 4:
            noise = noise.contiguous(memory_format=torch.channels_last)
        else:
            noise = noise.contiguous()
        if cond is not None and cfg.p_uncond > 0:
            keep = (torch.rand(n, generator=g, device=self.device) >= cfg.p_uncond)[r::w]
            cond = cond * append_dims(keep.to(cond.dtype), cond.ndim)
        return t, noise, cond

    def _grad_norm(self) -> Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            raise RuntimeError("no parameter received a gradient: is the net using its input?")
        if self.config.grad_clip is not None:
            return torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    # ------------------------------------------------------------------ one step
    def step(self, x0: Tensor, cond: Tensor | None = None) -> float:
        """One optimisation step on this rank's batch ``x0: (B, *D)``, ``cond: (B, ...)``.

        Returns the loss averaged over ranks (NaN / inf when the step was skipped).
        """
        cfg = self.config
        if not torch.is_tensor(x0) or x0.ndim < 2 or not x0.is_floating_point():
            got = f"{getattr(x0, 'dtype', type(x0).__name__)} {tuple(getattr(x0, 'shape', ()))}"
            raise ValueError(f"x0 must be a float tensor of shape (B, *D), got {got}")
        x0 = self._to_device(x0)
        cond = self._to_device(cond) if cond is not None else None
        if not self.model.net.training:
            self._train_model.train()
        index = self.global_step  # 0-based index of this update
        lr = cfg.lr_at(index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t, noise, cond = self._draw(x0, cond, index)

        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = dsm_loss(self._train_model, x0, cond, t=t, noise=noise,
                            weighting=cfg.weighting)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = self._grad_norm()
        loss_all = loss.detach().float().reshape(1)
        if self.distributed:
            dist.all_reduce(loss_all)
            loss_all = loss_all / self.world_size
        loss_v, norm_v = torch.cat([loss_all, grad_norm.detach().float().reshape(1)
                                    .to(loss_all.device)]).tolist()  # the one host sync
        self.global_step += 1
        self.last_loss, self.last_grad_norm = loss_v, norm_v

        if math.isfinite(loss_v) and math.isfinite(norm_v):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.ema.update(self.model)
            self._nonfinite_run = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()  # fp16: lowers the scale after an overflow; else a no-op
            if self.scaler.is_enabled() and math.isfinite(loss_v):
                self.overflow_steps += 1
            else:
                self._skip_nonfinite(loss_v, norm_v)
        self._record(loss_v, lr)
        return loss_v

    def _skip_nonfinite(self, loss_v: float, norm_v: float) -> None:
        self.skipped_steps += 1
        self._nonfinite_run += 1
        s = self.global_step
        self.log({"event": "nonfinite", "step": s, "loss": loss_v, "grad_norm": norm_v})
        if self._nonfinite_run >= self.config.max_nonfinite:
            first = s - self._nonfinite_run + 1
            raise NonFiniteLossError(
                f"training stopped at step {s}: {self._nonfinite_run} consecutive steps "
                f"(steps {first}..{s}) had a non-finite loss or gradient norm (last loss "
                f"{loss_v}, grad norm {norm_v}); max_nonfinite={self.config.max_nonfinite}. "
                "Skipped steps never reached the weights, the EMA or a checkpoint; try a lower "
                "lr, grad_clip, or bf16 instead of fp16."
            )

    # ------------------------------------------------------------------ logging
    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0 only); ``step`` is added."""
        if not self.is_main:
            return
        rec = {"step": self.global_step, **record}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _record(self, loss_v: float, lr: float) -> None:
        if math.isfinite(loss_v):
            self._window.append(loss_v)
        if self._bar is not None:
            self._bar.update(1)
        if self.global_step % self.config.log_every:
            return
        now = time.perf_counter()
        mean = sum(self._window) / len(self._window) if self._window else math.nan
        rate = self.config.log_every / max(now - self._window_t0, 1e-9)
        self.log({"epoch": self.epoch, "loss": mean, "lr": lr, "grad_norm": self.last_grad_norm,
                  "skipped": self.skipped_steps, "it_per_s": rate})
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{mean:.4g}", skipped=self.skipped_steps)
        self._window, self._window_t0 = [], now

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (unparsable lines from a killed writer skipped)."""
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def plot_losses(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the loss curve from ``metrics.jsonl`` as a PNG (rank 0); None if no points."""
        if not self.is_main:
            return None
        from scoregen.plotting import plot_curves

        recs = [r for r in self.read_metrics() if "event" not in r and "loss" in r]
        pts = [(r["step"], r["loss"]) for r in recs if math.isfinite(r["loss"])]
        if not pts:
            return None
        name = f"DSM loss (mean of {self.config.log_every} steps)"
        steps, losses = zip(*pts, strict=True)
        logy = [name] if min(losses) > 0 else []
        return plot_curves({name: (list(steps), list(losses))},
                           path if path is not None else self.out_dir / "loss.png",
                           xlabel="step", logy=logy)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "skipped_steps": self.skipped_steps, "overflow_steps": self.overflow_steps,
                "nonfinite_run": self._nonfinite_run, "world_size": self.world_size,
                "train_seconds": round(self._elapsed(), 3)}

    def _elapsed(self) -> float:
        running = 0.0 if self._fit_t0 is None else time.perf_counter() - self._fit_t0
        return self.train_seconds + running

    def save(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write a checkpoint (default ``checkpoints/step_XXXXXXXX.safetensors``) and keep
        the last ``keep_last``. Call on every rank; rank 0 writes and returns the path."""
        rng = dist_utils.gather_rng_states(ckpt.capture_rng())  # a collective under DDP
        self._last_saved = self.global_step
        if not self.is_main:
            return None
        default = path is None
        if path is None:
            path = self.checkpoint_dir / ckpt.checkpoint_name(self.global_step)
        written = ckpt.save_checkpoint(
            Path(path), self.model, ema=self.ema, optimizer=self.optimizer,
            scaler=self.scaler, step=self.global_step, train_config=self.config.to_dict(),
            model_config=self.model_config, state=self._state(), rng=rng,
        )
        if default:
            ckpt.prune_checkpoints(self.checkpoint_dir, self.config.keep_last)
        self.plot_losses()
        return written

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load the latest checkpoint of ``out_dir`` (or ``path``) to continue exactly.

        Restores weights, EMA, optimizer, GradScaler, step, data position and this rank's
        RNG states. Returns False when ``path`` is None and there is nothing to resume.
        Raises :class:`~scoregen.train.checkpoint.CheckpointMismatchError` naming the fields when
        the checkpoint belongs to a model of another config.
        """
        if path is None:
            path = ckpt.latest_checkpoint(self.checkpoint_dir)
            if path is None:
                return False
        ck = ckpt.load_checkpoint(path)
        ck.check_compatible(model_config=self.model_config, sde=self.model.sde,
                            prediction=self.model.prediction)
        ckpt.load_state_checked(self.model, ck.model_state(), "weights", path)
        ema_state = ck.ema_state()
        if ema_state is not None:
            ckpt.load_state_checked(self.ema.module, ema_state, "EMA weights", path)
            self.ema.num_updates = int(ck.meta["ema"]["num_updates"])
        else:
            warnings.warn(f"{path} has no EMA weights; the EMA restarts from the weights",
                          stacklevel=2)
            self.ema = EMA(self.model, self.config.ema_decay, warmup=self.config.ema_warmup)
        opt_state = ck.optimizer_state()
        if opt_state is not None:
            self.optimizer.load_state_dict(opt_state)
            for group in self.optimizer.param_groups:  # the config wins over saved groups
                group.update(betas=self.config.betas, weight_decay=self.config.weight_decay)
        scaler_state = ck.scaler_state()
        if scaler_state is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler_state)
        st = ck.state
        self.global_step = ck.step
        self.epoch = int(st.get("epoch", 0))
        self.batch_in_epoch = int(st.get("batch_in_epoch", 0))
        self.skipped_steps = int(st.get("skipped_steps", 0))
        self.overflow_steps = int(st.get("overflow_steps", 0))
        self._nonfinite_run = int(st.get("nonfinite_run", 0))
        self.train_seconds = float(st.get("train_seconds", 0.0))
        self._last_saved = ck.step
        self._warn_differences(ck, path)
        rng = ck.rng_state(self.rank)
        if rng is not None:
            ckpt.restore_rng(rng)
        if self.is_main:
            self._truncate_metrics(ck.step)
        return True

    def _warn_differences(self, ck: ckpt.Checkpoint, path: Any) -> None:
        saved = ck.train_config or {}
        now = self.config.to_dict()
        changed = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now
                   if k in saved and saved[k] != now[k]]
        if changed:
            warnings.warn(f"resuming {path} with a changed TrainConfig ({'; '.join(changed)}); "
                          "the run will differ from an uninterrupted one", stacklevel=3)
        ws = ck.state.get("world_size", self.world_size)
        if ws != self.world_size:
            warnings.warn(f"{path} was written by {ws} processes, resuming with "
                          f"{self.world_size}: per-rank RNG states (dropout) are not carried "
                          "over", stacklevel=3)

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines written after the checkpoint (by a run that was then killed)."""
        keep = [r for r in self.read_metrics()
                if r.get("step", 0) < step or (r.get("step") == step and "event" not in r)]
        tmp = self.metrics_path.with_name(f".{self.metrics_path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.metrics_path)

    # ------------------------------------------------------------------ the loop
    def _make_loader(self, dataset: Dataset) -> DataLoader:
        cfg, w = self.config, self.world_size
        if cfg.batch_size % w:
            raise ValueError(f"batch_size {cfg.batch_size} (global) is not divisible by the "
                             f"{w} processes")
        local = cfg.batch_size // w
        sampler = dist_utils.ResumableDistributedSampler(
            dataset, num_replicas=w, rank=self.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        if sampler.num_samples < local:
            raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one global "
                             f"batch of {cfg.batch_size}")
        return DataLoader(dataset, batch_size=local, sampler=sampler, drop_last=True,
                          num_workers=cfg.num_workers, generator=self._loader_gen,
                          pin_memory=self.device.type == "cuda")

    def _batches(self, data: Any, loader: DataLoader | None) -> Iterator[Any]:
        """This epoch's batches, starting after the ``batch_in_epoch`` already consumed."""
        skip = self.batch_in_epoch
        if loader is not None:
            loader.sampler.set_epoch(self.epoch)
            loader.sampler.skip = skip * loader.batch_size
            self._loader_gen.manual_seed(_seed(self.config.seed, "workers", self.epoch))
            return iter(loader)
        sampler = getattr(data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        return itertools.islice(iter(data), skip, None)

    def _end_epoch(self, hook: Callable[[Trainer, int], Any] | None) -> None:
        finished = self.epoch
        self.epoch, self.batch_in_epoch = finished + 1, 0
        metrics = hook(self, finished) if hook is not None else None
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
        returns is logged. ``on_step_end(trainer, step, loss)`` runs after every step.
        """
        if steps is None and epochs is None:
            steps = self.config.max_steps
        batch_fn = batch_fn or default_batch_fn
        if torch.is_tensor(data):
            data = TensorDataset(data)
        is_map = isinstance(data, Dataset) and not isinstance(data, IterableDataset)
        loader = self._make_loader(data) if is_map else None

        def done() -> bool:
            return ((steps is not None and self.global_step >= steps)
                    or (epochs is not None and self.epoch >= epochs))

        if self.is_main and self.config.progress:
            total = steps if steps is not None else None
            self._bar = tqdm(total=total, initial=self.global_step, desc="train",
                             dynamic_ncols=True)
        self._window, self._window_t0 = [], time.perf_counter()
        self._fit_t0 = time.perf_counter()
        try:
            while not done():
                batches = self._batches(data, loader)
                batch = next(batches, _END)
                if batch is _END and self.batch_in_epoch == 0:
                    raise ValueError(
                        f"the data yielded no batch in epoch {self.epoch}; pass a re-iterable "
                        "(a Dataset, tensor or DataLoader), not a one-shot iterator, with at "
                        "least one full batch")
                while batch is not _END:
                    loss = self.step(*batch_fn(batch))
                    self.batch_in_epoch += 1
                    if on_step_end is not None:
                        on_step_end(self, self.global_step, loss)
                    batch = next(batches, _END)  # look ahead: was that the epoch's last?
                    if batch is _END:
                        self._end_epoch(on_epoch_end)
                    every = self.config.checkpoint_every
                    if every and self.global_step % every == 0:
                        self.save()
                    if done():
                        break
                else:
                    if self.batch_in_epoch:  # resumed exactly at the end of an epoch
                        self._end_epoch(on_epoch_end)
        finally:
            self.train_seconds, self._fit_t0 = self._elapsed(), None
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        if self._last_saved != self.global_step:
            self.save()
        return {"step": self.global_step, "epoch": self.epoch, "loss": self.last_loss,
                "skipped_steps": self.skipped_steps, "train_seconds": self.train_seconds}
