"""Figures of a training run, drawn by the caller (the Trainer itself draws nothing)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scoregen.plotting import plot_curves
from scoregen.train.metrics_log import loss_curve

__all__ = ["plot_loss"]


def plot_loss(
    records: list[Mapping[str, Any]], path: str | os.PathLike, *, log_every: int
) -> Path | None:
    """The DSM loss curve of a run's ``metrics.jsonl`` rows (``Trainer.read_metrics()``).

    Each point is the mean loss of ``log_every`` steps; log scale when every loss is
    positive. Returns the PNG's path, or None when the log has no finite loss yet.
    """
    steps, losses = loss_curve(records)
    if not steps:
        return None
    name = f"DSM loss (mean of {log_every} steps)"
    return plot_curves({name: (steps, losses)}, path, xlabel="training step", ylabel="loss",
                       logy=[name] if min(losses) > 0 else [])
