"""What defines a run (:class:`TrainConfig`) and how this host runs it (:class:`HostOptions`).

The split follows one rule: a field belongs to :class:`TrainConfig` when changing it can
change the trained weights, to :class:`HostOptions` when it cannot. ``TrainConfig`` is
saved in every checkpoint and compared on resume (a changed field is warned about: the
run will differ from an uninterrupted one); ``HostOptions`` is saved for the record and
never compared, so a resume on another machine with other workers, another progress
bar or another checkpoint cadence is silent.

``compile`` and ``channels_last`` are host options: they change how the same math is
executed (fused kernels, memory layout), as a different device does, so they may change
float rounding but not the computation. ``precision`` is not: bf16 / fp16 autocast
changes the arithmetic of the run and fp16 adds a loss scale.

Both are frozen dataclasses, written to JSON by ``to_dict`` and read back by
``from_dict``. Configs saved before the split held both groups in one dict;
``TrainConfig.from_dict`` and ``HostOptions.from_dict`` each read their own fields from
such a dict and ignore the other group's; a field of neither raises.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scoregen.losses import AUX_LOSSES, AUX_WEIGHTINGS, SELF_COND_P, WEIGHTINGS

__all__ = ["TrainConfig", "HostOptions", "PRECISIONS", "LR_SCHEDULES", "plain_model_config",
           "plain_run_info"]

PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")


def _checker(obj: Any) -> tuple[Any, Any]:
    """``check(ok, name, want)`` and ``pos_int(name, zero=False)`` for ``obj``'s fields."""
    cls = type(obj).__name__

    def check(ok: bool, name: str, want: str) -> None:
        if not ok:
            raise ValueError(f"{cls}.{name} must be {want}, got {getattr(obj, name)!r}")

    def pos_int(name: str, zero: bool = False) -> None:
        v = getattr(obj, name)
        ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if zero else v > 0)
        check(ok, name, "a non-negative int" if zero else "a positive int")

    return check, pos_int


def _is_finite_number(v: Any) -> bool:
    """A real, finite int or float (not a bool): ``inf`` / ``nan`` in ``lr`` or
    ``weight_decay`` would write NaN into every weight at the first update."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _refuse_fields_of(other: type, cls: type, kwargs: Mapping[str, Any]) -> None:
    """A TypeError that says where a field of the other half goes (before the dataclass's
    own "unexpected keyword argument")."""
    misplaced = sorted(set(kwargs) & {f.name for f in dataclasses.fields(other)})
    if misplaced:
        where = ("Trainer(..., host=HostOptions(...))" if other is HostOptions
                 else "Trainer(model, TrainConfig(...), out_dir)")
        raise TypeError(f"{misplaced} are {other.__name__} fields, not {cls.__name__} "
                        f"fields: pass them as {where}")


def _from_dict(cls: type, other: type, d: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    theirs = {f.name for f in dataclasses.fields(other)}
    unknown = sorted(set(d) - names - theirs)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)} "
                         f"(and the {other.__name__} fields {sorted(theirs)})")
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class TrainConfig:
    """What defines a run: every field here can change the trained weights.

    Saved as JSON in every checkpoint and compared on resume. ``batch_size`` is the
    *global* batch (split evenly over DDP processes) and is used when
    :meth:`~scoregen.Trainer.fit` gets a ``Dataset``. Step counts are 1-based: "step k"
    is the k-th update, and a checkpoint of step k holds the state after k updates.
    """

    lr: float = 2e-4
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    lr_schedule: str = "constant"  # "constant" or "cosine" (to min_lr at max_steps)
    min_lr: float = 0.0
    max_steps: int = 10_000  # default length of fit(); the end of the cosine schedule
    batch_size: int = 64  # global batch, over all processes
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n))
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    p_uncond: float = 0.0  # classifier-free guidance: P(cond replaced by zeros)
    weighting: str | None = None  # dsm_loss weighting: None (its default), "simple", "sigma2"
    aux_loss: str | None = None  # dsm_loss aux: None or "dice_bce" (masks in {-1, +1})
    aux_weight: float = 1.0
    aux_weighting: str = "alpha2"  # "alpha2" (alpha(t)^2) or "uniform"
    discrete: bool | None = None  # DDPM integer times; None: when the SDE has num_steps
    time_power: float = 1.0  # training-time density ∝ t^(k-1) (losses.sample_times' power)
    p_self_cond: float = SELF_COND_P  # self-conditioned nets: share trained on own estimate
    seed: int = 0  # seeds the data order and the per-step noise

    def __new__(cls, *args: Any, **kwargs: Any) -> TrainConfig:
        _refuse_fields_of(HostOptions, cls, kwargs)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        check, pos_int = _checker(self)
        for name in ("lr", "min_lr", "weight_decay", "ema_decay", "p_uncond", "time_power",
                     "p_self_cond"):
            check(_is_finite_number(getattr(self, name)), name, "a finite number")
        check(self.grad_clip is None or _is_finite_number(self.grad_clip), "grad_clip",
              "None or a finite number")
        check(self.lr > 0, "lr", "a positive number")
        check(0 <= self.min_lr <= self.lr, "min_lr", "in [0, lr]")
        for name in ("max_steps", "batch_size"):
            pos_int(name)
        for name in ("warmup_steps", "seed"):
            pos_int(name, zero=True)
        check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}")
        check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        check(self.weight_decay >= 0, "weight_decay", ">= 0")
        check(len(self.betas) == 2 and all(_is_finite_number(b) and 0 <= b < 1
                                            for b in self.betas), "betas",
              "two numbers in [0, 1)")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "None or > 0")
        check(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        check(0 <= self.p_uncond <= 1, "p_uncond", "in [0, 1]")
        check(0 <= self.p_self_cond <= 1, "p_self_cond", "in [0, 1]")
        check(self.time_power > 0, "time_power", "> 0 (1: uniform training times)")
        check(self.aux_loss is None or self.aux_loss in AUX_LOSSES, "aux_loss",
              f"None or one of {AUX_LOSSES}")
        check(_is_finite_number(self.aux_weight) and self.aux_weight >= 0, "aux_weight",
              "a finite number >= 0")
        check(self.aux_weighting in AUX_WEIGHTINGS, "aux_weighting", f"one of {AUX_WEIGHTINGS}")
        check(self.weighting is None or self.weighting in WEIGHTINGS, "weighting",
              f"None or one of {WEIGHTINGS} (callables cannot be saved in a config)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Read a ``to_dict()``; host options in a config saved before the split are
        ignored (read them with :meth:`HostOptions.from_dict`); other fields raise."""
        return _from_dict(cls, HostOptions, d)

    def differences(self, saved: Mapping[str, Any]) -> list[str]:
        """``"name: saved -> now"`` for every field of this config that ``saved`` (a
        checkpoint's dict) holds with another value; host options are never compared."""
        now = self.to_dict()
        return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now
                if k in saved and saved[k] != now[k]]

    def lr_at(self, step: int) -> float:
        """Learning rate of the update with 0-based index ``step``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class HostOptions:
    """How this host runs the run: nothing here changes the trained weights.

    Saved in checkpoints for the record, never compared on resume.
    """

    compile: bool = False  # torch.compile the net
    channels_last: bool = False  # 4-D weights and batches in channels_last
    checkpoint_every: int = 1000  # steps between checkpoints; 0: only at the end of fit()
    keep_last: int = 3  # checkpoints kept in out_dir/checkpoints
    log_every: int = 50  # steps between metrics.jsonl lines
    max_nonfinite: int = 10  # consecutive skipped (non-finite) steps before stopping
    check_finite_every: int = 50  # steps between weight / EMA finiteness checks; 0: only
    #                               after a skipped step and before every save
    num_workers: int = 0  # DataLoader workers when fit() gets a Dataset
    find_unused_parameters: bool = False  # passed to DistributedDataParallel
    progress: bool = True  # tqdm bar on rank 0

    def __new__(cls, *args: Any, **kwargs: Any) -> HostOptions:
        _refuse_fields_of(TrainConfig, cls, kwargs)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        check, pos_int = _checker(self)
        for name in ("keep_last", "log_every", "max_nonfinite"):
            pos_int(name)
        for name in ("checkpoint_every", "num_workers", "check_finite_every"):
            pos_int(name, zero=True)
        for name in ("compile", "channels_last", "find_unused_parameters", "progress"):
            check(isinstance(getattr(self, name), bool), name, "a bool")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HostOptions:
        """Read a ``to_dict()``; run fields (a config saved before the split) are ignored."""
        return _from_dict(cls, TrainConfig, d)


def plain_model_config(model_config: Mapping[str, Any] | Any | None) -> dict[str, Any] | None:
    """The net's configuration as a plain JSON dict (a copy), from a dict, a dataclass or
    an object with ``to_dict()`` such as ``UNetConfig``; None stays None."""
    if callable(getattr(model_config, "to_dict", None)):  # e.g. UNetConfig
        model_config = model_config.to_dict()
    elif dataclasses.is_dataclass(model_config) and not isinstance(model_config, type):
        model_config = dataclasses.asdict(model_config)
    if model_config is None:
        return None
    return _plain_json("model_config", dict(model_config))


def _plain_json(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """A JSON copy of ``value``; a clear error for what a checkpoint cannot hold."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except TypeError as e:
        raise TypeError(f"{name} must be JSON (dicts, lists, str, numbers, bools, None): "
                        f"{e}") from None
    except ValueError:
        raise ValueError(f"{name} holds a NaN or infinite number; it is saved in every "
                         "checkpoint as standard JSON: use a string or None") from None


def plain_run_info(run_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the run is about, as a plain JSON dict (a copy; None: empty)."""
    if run_info is not None and not isinstance(run_info, Mapping):
        raise TypeError(f"run_info must be a mapping (JSON), got {type(run_info).__name__}")
    return _plain_json("run_info", dict(run_info or {}))
