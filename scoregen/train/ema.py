"""Exponential moving average of a model's weights (Polyak averaging).

Diffusion models are sampled from an EMA of the training weights (Ho et al. 2020,
sec. 4, decay 0.9999; Song et al. 2021, app. D, decay 0.999 / 0.9999). After each
optimizer update ``n = 1, 2, ...``::

    d_n      = min(decay, (1 + n) / (10 + n))     with warm-up (the default)
    d_n      = decay                              without
    theta_ema <- d_n * theta_ema + (1 - d_n) * theta

The warm-up is the ``num_updates`` rule of TensorFlow's ``ExponentialMovingAverage``:
early on, when the weights move fast, the average forgets quickly; it reaches
``decay`` after ``(10 decay - 1) / (1 - decay)`` updates (~90,000 for 0.9999).
Buffers (e.g. normalisation statistics) are copied, not averaged.

The average is a deep copy of the module, so ``ema.module`` is used exactly like the
model (for a :class:`~scoregen.ScoreModel`, it is a ``ScoreModel`` with the EMA
weights, ready for sampling). Every rank of a DDP run holds identical weights and
applies identical updates, so the EMA is identical on all ranks without communication.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

__all__ = ["EMA", "ema_decay_at"]


def ema_decay_at(num_updates: int, decay: float, warmup: bool = True) -> float:
    """The decay ``d_n`` used for update number ``num_updates`` (counted from 1)."""
    if not warmup:
        return decay
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """Exponential moving average of ``model``'s parameters.

    Args:
        model: the module being trained; it is deep-copied once, here.
        decay: the target decay in [0, 1); 0.9999 for long runs, 0.999 for short ones.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` for the n-th update.

    Call :meth:`update` after each optimizer step that changed the weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"EMA needs an nn.Module, got {type(model).__name__}")
        if not (isinstance(decay, (int, float)) and math.isfinite(decay) and 0.0 <= decay < 1.0):
            raise ValueError(f"ema decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        names = [n for n, _ in model.named_parameters()]
        if not names:
            raise ValueError("EMA: the model has no parameters to average")
        self._param_names = names

    @property
    def current_decay(self) -> float:
        """Decay that the next :meth:`update` will use."""
        return ema_decay_at(self.num_updates + 1, self.decay, self.warmup)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``theta_ema <- d theta_ema + (1 - d) theta`` for every parameter; copy buffers."""
        d = self.current_decay
        ema_params = dict(self.module.named_parameters())
        src_params = dict(model.named_parameters())
        if src_params.keys() != ema_params.keys():
            raise ValueError("EMA.update: the model's parameters differ from the averaged copy")
        ema_list = [ema_params[n] for n in self._param_names]
        src_list = [src_params[n].detach() for n in self._param_names]
        torch._foreach_lerp_(ema_list, src_list, 1.0 - d)
        ema_buffers = dict(self.module.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights (the module's ``state_dict``)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], num_updates: int) -> None:
        """Restore averaged weights and the update counter (which drives the warm-up)."""
        self.module.load_state_dict(state)
        self.num_updates = int(num_updates)

    def __repr__(self) -> str:
        return f"EMA(decay={self.decay}, warmup={self.warmup}, num_updates={self.num_updates})"
