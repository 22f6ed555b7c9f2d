"""The run's log: ``metrics.jsonl`` (one JSON object a line) and the windowed loss meter.

Lines are appended by rank 0 only. Two kinds: a training line every ``log_every`` steps
``{"step", "epoch", "loss", "lr", "grad_norm", "skipped", "it_per_s"}`` (``loss`` is the
mean of the finite losses of the window) and event lines with an ``"event"`` key
(``"epoch_end"`` with what the epoch hook returned, ``"nonfinite"``). Plotting is the
caller's: :func:`loss_curve` gives the points.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "LossWindow", "loss_curve"]


class MetricsLog:
    """``metrics.jsonl`` at ``path``; writes only where ``enabled`` (rank 0)."""

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line (a no-op where not ``enabled``)."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(record)) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """The records (unparsable lines from a killed writer skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def truncate(self, step: int) -> None:
        """Drop the lines written after the checkpoint of ``step`` (by a run that was then
        killed): training lines of later steps and event lines of ``step`` or later."""
        if not self.enabled:
            return
        keep = [r for r in self.read()
                if r.get("step", 0) < step or (r.get("step") == step and "event" not in r)]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.path)


class LossWindow:
    """Mean of the finite losses and steps per second since the last :meth:`flush`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._losses: list[float] = []
        self._steps = 0
        self._t0 = time.perf_counter()

    def add(self, loss: float) -> None:
        self._steps += 1
        if math.isfinite(loss):
            self._losses.append(loss)

    def flush(self) -> tuple[float, float]:
        """``(mean loss, steps per second)`` of the window (NaN mean when no finite
        loss), then start a new window."""
        now = time.perf_counter()
        mean = sum(self._losses) / len(self._losses) if self._losses else math.nan
        rate = self._steps / max(now - self._t0, 1e-9)
        self._losses, self._steps, self._t0 = [], 0, now
        return mean, rate


def loss_curve(records: list[Mapping[str, Any]]) -> tuple[list[int], list[float]]:
    """``(steps, losses)`` of the finite training lines of ``records`` (for a plot)."""
    pts = [(int(r["step"]), float(r["loss"])) for r in records
           if "event" not in r and "loss" in r and math.isfinite(r["loss"])]
    return [s for s, _ in pts], [v for _, v in pts]
