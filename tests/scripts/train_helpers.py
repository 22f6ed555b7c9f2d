"""Tiny nets, data and trainers shared by the training tests and their subprocess scripts.

Kept free of ``scoregen.nn`` on purpose: the trainer is tested with nets defined here.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from scoregen.model import ScoreModel
from scoregen.sde import SDE, VPSDE
from scoregen.train import HostOptions, TrainConfig, Trainer

HOST_FIELDS = frozenset(HostOptions.__dataclass_fields__)


class TinyNet(nn.Module):
    """MLP ``(x: (B, dim), t: (B,), cond: (B, cond_dim) | None) -> (B, dim)``."""

    def __init__(self, dim: int = 2, width: int = 32, cond_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        self.cond_dim = cond_dim
        self.body = nn.Sequential(
            nn.Linear(dim + 1 + cond_dim, width), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim),
        )

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        parts = [x, t[:, None].to(x.dtype)]
        if self.cond_dim:
            parts.append(cond if cond is not None else x.new_zeros(x.shape[0], self.cond_dim))
        return self.body(torch.cat(parts, 1))


class TinyConv(nn.Module):
    """Conv net on (B, C, H, W) images for the channels_last / autocast checks."""

    def __init__(self, channels: int = 1, width: int = 8):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        h = torch.nn.functional.silu(self.inp(x) + t[:, None, None, None].to(x.dtype))
        return self.out(h)


class NaNNet(TinyNet):
    """TinyNet that returns NaN on the training calls whose 0-based index is in ``bad``."""

    def __init__(self, bad: set[int] | None = None, **kw):
        super().__init__(**kw)
        self.bad = set(bad or ())
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        out = super().forward(x, t, cond)
        if self.training:
            if self.calls in self.bad or math.inf in self.bad:
                out = out * math.nan
            self.calls += 1
        return out


def make_points(n: int = 40, dim: int = 2, seed: int = 1) -> Tensor:
    """``n`` points: 4 well-separated centres, repeated, in float32."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, generator=g) * 2.0
    return centres.repeat((n + 3) // 4, 1)[:n].contiguous()


def make_pairs(n: int = 40) -> torch.utils.data.TensorDataset:
    """(x0, cond) pairs: cond is a fixed function of x0 (for conditional training)."""
    x = make_points(n)
    return torch.utils.data.TensorDataset(x, torch.tanh(x))


def make_trainer(
    out_dir: str | Path,
    *,
    width: int = 16,
    cond_dim: int = 0,
    dropout: float = 0.0,
    sde: SDE | None = None,
    net: nn.Module | None = None,
    model_config: dict | None = None,
    run_info: dict | None = None,
    on_existing: str = "refuse",
    **overrides,
) -> Trainer:
    """A seeded TinyNet model and a Trainer with fast defaults; ``overrides`` go to
    HostOptions when they name one of its fields, else to TrainConfig."""
    torch.manual_seed(0)
    if net is None:
        net = TinyNet(width=width, cond_dim=cond_dim, dropout=dropout)
        model_config = {"dim": 2, "width": width, "cond_dim": cond_dim, "dropout": dropout}
    model = ScoreModel(net, sde or VPSDE(), "eps")
    cfg = dict(lr=1e-2, batch_size=8, max_steps=20, log_every=1, checkpoint_every=0,
               ema_decay=0.9, progress=False, keep_last=100)
    cfg.update(overrides)
    host = {k: cfg.pop(k) for k in list(cfg) if k in HOST_FIELDS}
    extra = {} if on_existing == "refuse" else {"on_existing": on_existing}  # the default
    return Trainer(model, TrainConfig(**cfg), out_dir, host=HostOptions(**host),
                   model_config=model_config, run_info=run_info, **extra)


def weights(trainer: Trainer) -> dict[str, Tensor]:
    """Copies of the model (``model.*``) and EMA (``ema.*``) weights."""
    out = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    out.update({f"ema.{k}": v.detach().clone() for k, v in trainer.ema.state_dict().items()})
    return out
