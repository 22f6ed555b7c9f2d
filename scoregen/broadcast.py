"""Broadcasting per-sample coefficients against data of any rank.

Times and schedule coefficients have shape ``(B,)``; data has shape ``(B, *D)`` where
``D`` may be ``(2,)`` for toy points, ``(C, H, W)`` for images or anything else. One
helper appends the trailing singleton dimensions so no code hard-codes the data's rank.
"""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append singleton dimensions to ``v`` until it has ``ndim`` dimensions.

    ``v``: ``(B,)`` (or a 0-d tensor) → ``(B, 1, ..., 1)`` with ``ndim`` dims in total.
    """
    missing = ndim - v.ndim
    if missing < 0:
        raise ValueError(f"cannot broadcast a tensor of shape {tuple(v.shape)} to {ndim} dims")
    return v.reshape(*v.shape, *([1] * missing))


def as_batch_times(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """Return ``t`` as a float tensor of shape ``(batch,)`` on ``like``'s device.

    Accepts a python number, a 0-d tensor, a ``(1,)`` tensor or a ``(batch,)`` tensor.
    """
    if not torch.is_tensor(t):
        t = torch.tensor(float(t), device=like.device)
    if not t.is_floating_point():
        raise TypeError(f"t must be a float tensor, got dtype {t.dtype}")
    if t.ndim == 0 or t.shape == (1,):
        return t.reshape(()).expand(batch).to(like.device)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},) to match the batch, got {tuple(t.shape)}")
    return t.to(like.device)
