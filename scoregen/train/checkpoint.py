"""Training checkpoints: what one holds, writing it, loading it, rebuilding a model.

A checkpoint is a single ``.safetensors`` file (the file itself — header, CRC-32
checksums, bounds, atomic write — is :mod:`~scoregen.train.checkpoint_file`). Its tensors
are

    model.<name>          the trained weights (``ScoreModel.state_dict()``)
    ema.<name>            the EMA weights
    optim.<...>           every tensor of the optimizer's state dict (moments, step counts)
    scaler.<...>          the GradScaler's tensors (fp16 only)
    rng.<rank>.<kind>     RNG states of each rank (:mod:`~scoregen.train.rng_state`)

and its metadata holds one JSON document: the step and the trainer's position (epoch,
batch within the epoch), the train config, the net's config dict, ``sde.to_dict()``, the
prediction type, the run's identity and ``run_info``, the non-tensor parts of the
optimizer and GradScaler states and the EMA's update count.

:func:`save_checkpoint` writes one; :func:`load_checkpoint` reads it into a
:class:`Checkpoint` (typed accessors, :meth:`Checkpoint.check_compatible`);
:func:`load_model` rebuilds a ``ScoreModel`` for inference, after counting the
parameters the saved ``model_config`` asks for on the ``meta`` device (no memory) and
refusing a config that needs more than the file holds.

This module is also the public path of the checkpoint API: the file functions, the RNG
helpers and the folder helpers (:mod:`~scoregen.train.checkpoint_dir`) are re-exported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from scoregen.model import ScoreModel
from scoregen.sde import SDE
from scoregen.train.checkpoint_dir import (  # the file names, re-exported
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    remove_partial_checkpoints,
)
from scoregen.train.checkpoint_file import (  # the file, re-exported
    FORMAT,
    MAX_SDE_STEPS,
    VERSION,
    CheckpointBoundsError,
    CheckpointError,
    check_bounds,
    read_checkpoint,
    read_meta,
    run_id_of,
    write_atomic,
)
from scoregen.train.ema import EMA
from scoregen.train.nonfinite import nonfinite_tensors  # re-exported
from scoregen.train.rng_state import capture_rng, restore_rng  # re-exported

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointBoundsError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "write_checkpoint",
    "read_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "remove_partial_checkpoints",
    "checkpoint_name",
    "capture_rng",
    "restore_rng",
    "load_state_checked",
    "read_meta",
    "run_id_of",
    "check_bounds",
    "nonfinite_tensors",
]


__all__ += ["FORMAT", "VERSION", "MAX_SDE_STEPS"]


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was saved for a model of another configuration or shape."""


def write_checkpoint(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> Path:
    """Atomically write ``tensors`` and the JSON document ``meta`` to ``path``
    (:func:`~scoregen.train.checkpoint_file.write_atomic`).

    The safetensors writer is looked up here, at each call: ``scoregen.train.checkpoint
    .save_file`` is the one place to intercept a write (the SIGKILL tests stall it
    half-way through a file)."""
    return write_atomic(path, tensors, meta, save_file)


# ---------------------------------------------------------------------------- nested state codec
# Optimizer / scaler state dicts are nests of dicts, lists, tuples, numbers and tensors.
# Tensors go to the safetensors part under a dotted key; the rest becomes JSON with small
# tags for what JSON lacks (tuples, non-string dict keys).
def _encode(obj: Any, key: str, tensors: dict[str, Tensor]) -> Any:
    if torch.is_tensor(obj):
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot store {key!r} of type {type(obj).__name__} in a checkpoint without pickling; "
        "only tensors, numbers, strings, lists, tuples and dicts are supported"
    )


def _decode(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


# ---------------------------------------------------------------------------- high level
def _jsonable(name: str, value: Any) -> Any:
    """``value`` unchanged if it is standard JSON: no objects JSON lacks and no NaN or
    infinity, whose bare tokens other readers of the header (serde_json, JSON.parse)
    reject and which never compare equal on resume."""
    try:
        json.dumps(value)
    except TypeError as e:
        raise TypeError(f"{name} must be JSON-serialisable to be saved in a checkpoint: {e}") from e
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError(f"{name} holds a NaN or infinite number; a checkpoint's metadata is "
                         f"standard JSON: store it as a string or None") from None
    return value


def save_checkpoint(
    path: str | os.PathLike,
    model: ScoreModel,
    *,
    ema: EMA | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    step: int = 0,
    train_config: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    rng: Mapping[int, Mapping[str, Tensor]] | None = None,
    host_options: Mapping[str, Any] | None = None,
    run_info: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete training checkpoint atomically to ``path``.

    Args:
        model: the trained ``ScoreModel`` (not a DDP / compiled wrapper).
        ema: its :class:`~scoregen.EMA`, if any.
        optimizer, scaler: optimizer and ``GradScaler`` whose states are saved.
        step: the number of training steps done.
        train_config: ``TrainConfig.to_dict()``; model_config: the net's config dict.
        host_options: ``HostOptions.to_dict()``, kept for the record (never compared).
        run_info: what the run is about, for whoever loads it (e.g. the task, image size and
            mask kind of the X-ray example); JSON.
        run: the run's identity ``{"id", "started", "config_hash"}``
            (:mod:`scoregen.train.run_dir`); JSON.
        state: extra JSON (the trainer's data position and counters).
        rng: per-rank RNG states ``{rank: capture_rng()}``; default this process's, as rank 0.
    """
    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    def plain(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if d is None else dict(d)

    meta: dict[str, Any] = {
        "step": int(step),
        "state": _jsonable("state", dict(state or {})),
        "train_config": _jsonable("train_config", plain(train_config)),
        "model_config": _jsonable("model_config", plain(model_config)),
        "host_options": _jsonable("host_options", plain(host_options)),
        "run_info": _jsonable("run_info", dict(run_info or {})),
        "run": _jsonable("run", dict(run or {})),
        "sde": model.sde.to_dict(),
        "prediction": model.prediction,
        "net_class": f"{type(model.net).__module__}.{type(model.net).__qualname__}",
        "torch_version": torch.__version__,
    }
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        meta["ema"] = {"decay": ema.decay, "warmup": ema.warmup, "num_updates": ema.num_updates}
    if optimizer is not None:
        meta["optimizer"] = _encode(optimizer.state_dict(), "optim", tensors)
    if scaler is not None and scaler.is_enabled():
        meta["scaler"] = _encode(scaler.state_dict(), "scaler", tensors)
    rng = {0: capture_rng()} if rng is None else rng
    meta["rng_ranks"] = sorted(int(r) for r in rng)
    for r, states in rng.items():
        tensors.update({f"rng.{int(r)}.{k}": v for k, v in states.items()})
    return write_checkpoint(path, tensors, meta)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its tensors and JSON metadata, with typed accessors."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, Tensor]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def state(self) -> dict[str, Any]:
        """The trainer's position and counters (epoch, batch in epoch, skipped steps...)."""
        return dict(self.meta.get("state") or {})

    @property
    def train_config(self) -> dict[str, Any] | None:
        return self.meta.get("train_config")

    @property
    def host_options(self) -> dict[str, Any] | None:
        """``HostOptions.to_dict()`` of the writer (None before the split); for the record."""
        return self.meta.get("host_options")

    @property
    def model_config(self) -> dict[str, Any] | None:
        return self.meta.get("model_config")

    @property
    def run_info(self) -> dict[str, Any]:
        """What the run is about (task, image size, ...); empty for older checkpoints."""
        return dict(self.meta.get("run_info") or {})

    @property
    def run_id(self) -> str | None:
        """The id of the run that wrote it (None for checkpoints older than run ids)."""
        return run_id_of(self.meta)

    @property
    def sde(self) -> SDE:
        return SDE.from_dict(self.meta["sde"])

    @property
    def prediction(self) -> str:
        return self.meta["prediction"]

    def _prefixed(self, prefix: str) -> dict[str, Tensor]:
        n = len(prefix)
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def model_state(self) -> dict[str, Tensor]:
        return self._prefixed("model.")

    def ema_state(self) -> dict[str, Tensor] | None:
        return self._prefixed("ema.") if "ema" in self.meta else None

    def optimizer_state(self) -> dict[str, Any] | None:
        enc = self.meta.get("optimizer")
        return None if enc is None else _decode(enc, self.tensors)

    def scaler_state(self) -> dict[str, Any] | None:
        enc = self.meta.get("scaler")
        return None if enc is None else _decode(enc, self.tensors)

    def rng_state(self, rank: int = 0) -> dict[str, Tensor] | None:
        states = self._prefixed(f"rng.{int(rank)}.")
        return states or None

    def check_compatible(
        self,
        *,
        model_config: Mapping[str, Any] | None = None,
        sde: SDE | None = None,
        prediction: str | None = None,
        run_info: Mapping[str, Any] | None = None,
    ) -> None:
        """Raise :class:`CheckpointMismatchError` naming every field that differs.

        ``run_info`` is compared key by key where both sides have the key (a checkpoint
        written before a key existed is not refused for lacking it).
        """
        diffs: list[str] = []
        if run_info is not None:
            saved = self.run_info
            diffs += _diff({k: saved[k] for k in saved if k in run_info},
                           {k: run_info[k] for k in run_info if k in saved}, "run_info")
        if model_config is not None and self.model_config is not None:
            diffs += _diff(self.model_config, dict(model_config), "model_config")
        if sde is not None:
            diffs += _diff(self.meta["sde"], sde.to_dict(), "sde")
        if prediction is not None and prediction != self.prediction:
            diffs.append(f"prediction: checkpoint {self.prediction!r}, this model {prediction!r}")
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {self.path} was saved for a different model:\n  " + "\n  ".join(diffs)
            )


def _diff(saved: Any, current: Any, name: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for k in sorted(set(saved) | set(current), key=str):
            if k not in current:
                out.append(f"{name}.{k}: checkpoint {saved[k]!r}, missing in this model")
            elif k not in saved:
                out.append(f"{name}.{k}: not in the checkpoint, this model {current[k]!r}")
            else:
                out += _diff(saved[k], current[k], f"{name}.{k}")
        return out
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)):
        if list(saved) == list(current):
            return []
    elif saved == current:
        return []
    return [f"{name}: checkpoint {saved!r}, this model {current!r}"]


def load_state_checked(
    module: nn.Module, state: Mapping[str, Tensor], what: str = "weights", source: Any = ""
) -> None:
    """``module.load_state_dict(state)`` after naming every missing, unexpected or
    shape-mismatched entry in one :class:`CheckpointMismatchError`."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    for label, items in (("shape mismatch", shapes), ("missing in checkpoint", missing),
                         ("unexpected in checkpoint", unexpected)):
        if items:
            more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
            problems.append(f"{label}: " + "; ".join(items[:10]) + more)
    if problems:
        src = f" from {source}" if source else ""
        raise CheckpointMismatchError(
            f"the {what}{src} do not fit the model:\n  " + "\n  ".join(problems)
        )
    module.load_state_dict(dict(state))


def load_checkpoint(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no unpickling anywhere)."""
    tensors, meta = read_checkpoint(path, device=device)
    for key in ("step", "sde", "prediction"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} lacks the metadata field {key!r}")
    return Checkpoint(Path(path), meta, tensors)


def load_model(
    path: str | os.PathLike,
    net_factory: Callable[..., nn.Module],
    *,
    ema: bool = True,
    device: torch.device | str | None = None,
) -> ScoreModel:
    """A ``ScoreModel`` for inference from a checkpoint (EMA weights by default).

    The net is built by ``net_factory(**model_config)`` with the config dict saved in the
    checkpoint (``net_factory()`` when none was saved); the SDE and prediction type come
    from the checkpoint too. Returns the model in eval mode on ``device`` (default CPU).
    """
    which = "ema." if ema else "model."
    tensors, meta = read_checkpoint(path, prefixes=(which,))
    if ema and "ema" not in meta:
        raise CheckpointError(f"checkpoint {path} has no EMA weights; pass ema=False")
    cfg = meta.get("model_config")
    _check_net_size(net_factory, cfg, sum(t.numel() for t in tensors.values()), path)
    net = net_factory(**cfg) if cfg is not None else net_factory()
    model = ScoreModel(net, SDE.from_dict(meta["sde"]), meta["prediction"])
    state = {k[len(which):]: v for k, v in tensors.items()}
    load_state_checked(model, state, "EMA weights" if ema else "weights", path)
    return model.to(device if device is not None else "cpu").eval()


def _check_net_size(factory: Callable[..., nn.Module], cfg: Mapping[str, Any] | None,
                    have: int, path: Any) -> None:
    """Build the net on the ``meta`` device (shapes, no memory) and refuse a saved config
    whose net needs more numbers than the checkpoint holds: such a file cannot fit, and
    building the net for real might allocate gigabytes first."""
    try:
        with torch.device("meta"):
            probe = factory(**cfg) if cfg is not None else factory()
    except ValueError as e:  # the factory's own bounds (e.g. UNetConfig.from_dict)
        raise CheckpointBoundsError(f"checkpoint {path}: its model_config is refused: {e}") from e
    except Exception:  # a factory that cannot run on "meta": no size check possible here;
        return         # building it for real below raises its own error
    need = sum(t.numel() for t in probe.state_dict().values())
    if need > have:
        raise CheckpointBoundsError(
            f"checkpoint {path}: its model_config builds a net of {need:,} numbers but the "
            f"file holds {have:,}; refused before allocating (a corrupt or crafted header?)")
