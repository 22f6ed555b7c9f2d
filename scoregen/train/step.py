"""The arithmetic of one optimisation step that needs no trainer state.

:meth:`Trainer.step <scoregen.train.trainer.Trainer.step>` on this rank's batch ``x0:
(B, *D)`` of a global batch of ``B * world_size`` rows:

* :func:`to_device`: the batch on the training device (channels_last when asked);
* :func:`draw_rows`: ``t``, ``eps`` and the classifier-free-guidance dropout mask are
  drawn for the *global* batch by :func:`scoregen.losses.draw_training_batch` (the draw
  ``dsm_loss`` uses) from a generator seeded by ``(seed, step)``; this rank keeps its
  rows (``[rank::world_size]``, the rows ``DistributedSampler`` gives it). The run is
  thus the same for any number of processes with the same global batch, and resuming
  needs no generator state;
* :func:`autocast_for`: the autocast context of the run's precision (fp32: none; bf16:
  ``torch.autocast``; fp16: autocast, with a ``GradScaler`` in the trainer);
* :func:`grad_norm`: the global gradient norm, clipped to ``grad_clip`` when set;
* :func:`host_values`: the loss averaged over ranks and the gradient norm as floats,
  with one host sync.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor, nn

from scoregen.losses import draw_training_batch, drop_condition
from scoregen.model import ScoreModel
from scoregen.train.batches import stable_seed
from scoregen.train.config import TrainConfig

__all__ = ["autocast_for", "to_device", "draw_rows", "grad_norm", "host_values"]


def autocast_for(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` ("fp32": a no-op) on ``device_type``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def to_device(x: Tensor | None, device: torch.device, channels_last: bool = False
              ) -> Tensor | None:
    """``x`` on ``device``; a 4-D ``x`` in channels_last when asked; None stays None."""
    if x is None:
        return None
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def draw_rows(
    model: ScoreModel, x0: Tensor, cond: Tensor | None, *, config: TrainConfig, step: int,
    generator: torch.Generator, device: torch.device, rank: int, world_size: int,
    channels_last: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``t``, ``eps``, dropped-out ``cond`` and the self-conditioning rows (None unless
    the model is self-conditioned) of this rank's rows of the global batch of update
    ``step`` (0-based); ``eps`` in channels_last when asked (4-D)."""
    g = generator.manual_seed(stable_seed(config.seed, "step", step))
    draw = draw_training_batch(
        model, (x0.shape[0] * world_size, *x0.shape[1:]),
        p_uncond=config.p_uncond if cond is not None else 0.0, discrete=config.discrete,
        time_power=config.time_power, generator=g, device=device, dtype=x0.dtype,
        p_self_cond=config.p_self_cond if model.self_condition else None,
    ).shard(rank, world_size)
    layout = torch.channels_last if channels_last and x0.ndim == 4 else torch.contiguous_format
    return (draw.t, draw.noise.contiguous(memory_format=layout),
            drop_condition(cond, draw.keep), draw.self_cond)


def grad_norm(model: nn.Module, clip: float | None) -> Tensor:
    """The global norm of ``model``'s (unscaled) gradients, after clipping them to
    ``clip`` when it is not None."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        raise RuntimeError("no parameter received a gradient: is the net using its input?")
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def host_values(loss: Tensor, norm: Tensor, *, distributed: bool, world_size: int
                ) -> tuple[float, float]:
    """``(loss averaged over ranks, gradient norm)`` as floats: the step's one host sync."""
    loss_all = loss.detach().float().reshape(1)
    if distributed:
        dist.all_reduce(loss_all)
        loss_all = loss_all / world_size
    loss_v, norm_v = torch.cat([loss_all, norm.detach().float().reshape(1)
                                .to(loss_all.device)]).tolist()
    return loss_v, norm_v
