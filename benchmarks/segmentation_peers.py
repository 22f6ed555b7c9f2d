"""Supervised peers of the diffusion segmenter for ``benchmarks/segmentation.py`` (issue 9).

Two peers, trained on the same carved Train rest as the diffusion model, with the same
small random affine (the dataset's ``augment``; no flips):

* ``monai`` — MONAI's ``UNet(spatial_dims=2, in_channels=1, out_channels=1,
  channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)`` (1.62 M
  parameters), ``DiceCELoss(sigmoid=True)``, Adam lr 1e-3, batch 32, 20 epochs. MONAI is
  the optional ``[bench]`` extra: :func:`import_monai` raises ImportError without it.
* ``unet`` — the diffusion model's own U-Net used as a plain segmenter (the X-ray is its
  input, t = 0) with BCE + soft Dice (Milletari et al. 2016), AdamW, warm-up + cosine,
  EMA 0.999: the same network, a different training signal.

Both stop at ``epochs`` or when ``budget_seconds`` of training wall time (the diffusion
run's) is spent, whichever comes first; :class:`TrainedPeer` records which, with the
epochs, steps and seconds. Peers return logits; probabilities are their sigmoid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

import scoregen as sg
from scoregen.segmentation import SegmentationDataset, describe_augment

__all__ = ["PEERS", "TrainedPeer", "Segmenter", "import_monai", "soft_dice_loss",
           "train_peer", "MONAI_SKIP_MESSAGE", "PadToMultiple"]

#: Peer names accepted by ``--peer``.
PEERS: tuple[str, ...] = ("monai", "unet")

MONAI_SKIP_MESSAGE = "skipped peer 'monai': not installed (pip install -e '.[bench]')"


@dataclass
class TrainedPeer:
    """A trained supervised segmenter: ``net(images) -> logits`` (N, 1, H, W)."""

    name: str
    net: nn.Module
    epochs: float  # epochs completed (fractional when the budget stopped it mid-epoch)
    steps: int
    train_seconds: float
    params: int
    recipe: str
    stopped_by: str  # "epochs", "budget" or "max_steps"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "epochs": round(self.epochs, 3), "steps": self.steps,
                "train_seconds": round(self.train_seconds, 1), "params": self.params,
                "recipe": self.recipe, "stopped_by": self.stopped_by}


class Segmenter(nn.Module):
    """The diffusion U-Net used as a plain segmenter: the X-ray is its input, t = 0."""

    def __init__(self, config: sg.UNetConfig) -> None:
        super().__init__()
        self.unet = sg.UNet(config)

    def forward(self, images: Tensor) -> Tensor:
        t = torch.zeros(images.shape[0], device=images.device)
        return self.unet(images, t, None)  # logits



def _norm_note(train_ds: SegmentationDataset) -> str:
    """", images equalize" when the training images were normalised; nothing otherwise."""
    norm = getattr(train_ds, "image_norm", "none")
    return "" if norm == "none" else f", images {norm}"

def soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - soft Dice over each image (Milletari et al. 2016), averaged over the batch."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def import_monai() -> ModuleType:
    """``monai`` with ``monai.networks.nets`` and ``monai.losses`` loaded; ImportError
    when the ``[bench]`` extra is not installed."""
    import monai  # noqa: F401
    import monai.losses
    import monai.networks.nets

    return monai


class PadToMultiple(nn.Module):
    """Runs ``net`` on images padded (edge-replicated) to a side ``>= minimum`` that is a
    multiple of ``multiple``, and crops the logits back. MONAI's UNet with 4 strides
    needs sides divisible by 16 and at least 32 (its instance norm at the bottom needs
    more than one pixel); at 64 x 64 (the benchmark's size) nothing is padded, only the
    16-pixel phantoms of the tests are."""

    def __init__(self, net: nn.Module, multiple: int = 16, minimum: int = 32) -> None:
        super().__init__()
        self.net, self.multiple, self.minimum = net, multiple, minimum

    def forward(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        th = max(self.minimum, -(-h // self.multiple) * self.multiple)
        tw = max(self.minimum, -(-w // self.multiple) * self.multiple)
        if (th, tw) == (h, w):
            return self.net(images)
        top, left = (th - h) // 2, (tw - w) // 2
        x = F.pad(images, (left, tw - w - left, top, th - h - top), mode="replicate")
        return self.net(x)[..., top:top + h, left:left + w]


def _monai_net_and_loss() -> tuple[nn.Module, Callable[[Tensor, Tensor], Tensor]]:
    monai = import_monai()
    net = monai.networks.nets.UNet(spatial_dims=2, in_channels=1, out_channels=1,
                                   channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
                                   num_res_units=2)
    return PadToMultiple(net), monai.losses.DiceCELoss(sigmoid=True)


def _bce_dice(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)


def train_peer(
    name: str,
    train_ds: SegmentationDataset,
    *,
    epochs: int = 20,
    batch_size: int = 32,
    budget_seconds: float | None = None,
    max_steps: int | None = None,
    unet_config: Mapping[str, Any] | None = None,
    lr: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TrainedPeer:
    """Train peer ``name`` (one of :data:`PEERS`) on ``train_ds`` (its ``augment`` is used).

    Args:
        epochs: at most this many passes over ``train_ds``.
        budget_seconds: stop once this much training wall time is spent (None: no limit).
        max_steps: stop after this many optimiser steps (tests; None: no limit).
        unet_config: the diffusion U-Net's config dict (the checkpoint's
            ``model_config``), for ``unet`` (made 1 -> 1 channel, unconditional here).
        lr: learning rate (default 1e-3, the MONAI recipe's and the diffusion runs').
    Raises:
        ImportError: ``monai`` without MONAI installed.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    lr = 1e-3 if lr is None else float(lr)
    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(train_ds) / batch_size)
    planned = epochs * steps_per_epoch if max_steps is None else min(max_steps,
                                                                     epochs * steps_per_epoch)
    ema = None
    if name == "monai":
        net, loss_fn = _monai_net_and_loss()
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        recipe = (f"MONAI UNet (16-256, 4 strides, 2 res units), DiceCELoss(sigmoid), "
                  f"Adam lr {lr:g}, batch {batch_size}, "
                  f"augment {describe_augment(train_ds.augment)}{_norm_note(train_ds)}")
        schedule = sg.TrainConfig(lr=lr, max_steps=planned)  # constant lr
    else:
        if unet_config is None:
            raise ValueError("peer 'unet' needs unet_config (the diffusion U-Net's config)")
        config = sg.UNetConfig.from_dict({**dict(unet_config), "in_channels": 1,
                                          "out_channels": 1, "cond_channels": 0,
                                          "cond_mode": None})
        net = Segmenter(config)
        ema = sg.EMA(net, 0.999)
        loss_fn = _bce_dice
        opt = torch.optim.AdamW(net.parameters(), lr=lr)
        recipe = (f"same U-Net as the diffusion model, BCE + soft Dice, AdamW lr {lr:g}, "
                  f"warm-up + cosine, EMA 0.999, batch {batch_size}, "
                  f"augment {describe_augment(train_ds.augment)}{_norm_note(train_ds)}")
        # the diffusion runs' schedule (examples/covid_qu_seg.py): warm-up, cosine to 5 %
        schedule = sg.TrainConfig(lr=lr, warmup_steps=min(100, planned // 10),
                                  lr_schedule="cosine", min_lr=0.05 * lr, max_steps=planned)

    params = sum(p.numel() for p in net.parameters())
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=gen)
    net.train()
    step, stopped_by = 0, "epochs"
    t0 = time.perf_counter()
    done = False
    for epoch in range(epochs):
        train_ds.set_epoch(epoch)
        for batch in loader:
            for group in opt.param_groups:
                group["lr"] = schedule.lr_at(step)
            target = (batch["mask"] + 1) / 2
            loss = loss_fn(net(batch["image"]), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if ema is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if ema is not None:
                ema.update(net)
            step += 1
            if max_steps is not None and step >= max_steps:
                stopped_by, done = "max_steps", True
            elif budget_seconds is not None and time.perf_counter() - t0 >= budget_seconds:
                stopped_by, done = "budget", True
            if done:
                break
        if progress:
            print(f"  peer {name}: epoch {epoch + 1}/{epochs}, step {step}, "
                  f"{time.perf_counter() - t0:.0f} s, loss {float(loss):.4f}", flush=True)
        if done:
            break
    seconds = time.perf_counter() - t0
    final = ema.module if ema is not None else net
    return TrainedPeer(name=name, net=final.eval(), epochs=step / steps_per_epoch, steps=step,
                       train_seconds=seconds, params=params, recipe=recipe,
                       stopped_by=stopped_by)
