"""The run's log: ``metrics.jsonl`` (one JSON object a line) and the windowed loss meter.

Lines are appended by rank 0 only; :class:`Progress` is the tqdm bar and the loss window
of one ``fit`` call. Two kinds: a training line every ``log_every`` steps
``{"step", "epoch", "loss", "lr", "grad_norm", "skipped", "it_per_s"}`` (``loss`` is the
mean of the finite losses of the window) and event lines with an ``"event"`` key
(``"epoch_end"`` with what the epoch hook returned, ``"nonfinite"``). Plotting is the
caller's: :func:`loss_curve` gives the points.

The file is strict JSON: a non-finite float (a NaN loss, an infinite gradient norm) is
written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (what Python's
``json`` would otherwise write as a bare, non-standard token) and :meth:`MetricsLog.read`
turns those three strings back into floats.

Resume keeps exactly the rows written before the checkpoint: the trainer stores the
number of rows of the log in each checkpoint and :meth:`MetricsLog.truncate` keeps that
many (older checkpoints without the count: every row of a step up to the checkpoint's).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = ["MetricsLog", "LossWindow", "Progress", "loss_curve", "strict_json"]

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite_or_name(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, Mapping):
        return {k: _finite_or_name(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_name(v) for v in obj]
    return obj


def _names_to_floats(obj: Any) -> Any:
    if isinstance(obj, str):
        return _NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _names_to_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_names_to_floats(v) for v in obj]
    return obj


def strict_json(record: Mapping[str, Any]) -> str:
    """One line of standard JSON: non-finite floats become ``"NaN"`` / ``"Infinity"`` /
    ``"-Infinity"`` strings (no bare tokens, which strict parsers reject)."""
    return json.dumps(_finite_or_name(dict(record)), allow_nan=False)


class MetricsLog:
    """``metrics.jsonl`` at ``path``; writes only where ``enabled`` (rank 0)."""

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.rows = 0  # rows this log holds for the current run (set by truncate / reset)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one strict-JSON line (a no-op where not ``enabled``)."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(strict_json(record) + "\n")
        self.rows += 1

    def read(self) -> list[dict[str, Any]]:
        """The records, ``"NaN"`` / ``"Infinity"`` read back as floats (unparsable lines
        from a killed writer skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(_names_to_floats(json.loads(line)))
        return out

    def truncate(self, step: int, rows: int | None = None) -> None:
        """Drop the lines written after the checkpoint of ``step`` (by a run that was then
        killed). ``rows``: the number of rows the log held when the checkpoint was written
        (kept exactly); None (a checkpoint older than the count): keep every row of a
        step up to ``step``, events included."""
        if not self.enabled:
            return
        records = self.read()
        keep = records[:rows] if rows is not None else [
            r for r in records if _step_of(r) <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(strict_json(r) + "\n" for r in keep))
        os.replace(tmp, self.path)
        self.rows = len(keep)


def _step_of(record: Mapping[str, Any]) -> int:
    s = record.get("step", 0)
    return s if isinstance(s, int) else 0


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


class Progress:
    """The tqdm bar (when shown) and the :class:`LossWindow` of one ``fit`` call."""

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.window = LossWindow()
        self.bar: Any = None

    @contextlib.contextmanager
    def running(self, *, total: int | None, initial: int, show: bool) -> Iterator[None]:
        """A bar from ``initial`` to ``total`` steps (``show``: rank 0 asked for one)."""
        if show:
            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)
        self.window.reset()
        try:
            yield
        finally:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def step(self, step: int, loss: float) -> tuple[float, float] | None:
        """Count ``step``; every ``log_every``-th step returns ``(mean loss, steps per
        second)`` of the window (then started anew), else None."""
        self.window.add(loss)
        if self.bar is not None:
            self.bar.update(1)
        return None if step % self.log_every else self.window.flush()

    def show(self, loss: float, skipped: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", skipped=skipped)


def loss_curve(records: list[Mapping[str, Any]]) -> tuple[list[int], list[float]]:
    """``(steps, losses)`` of the finite training lines of ``records`` (for a plot)."""
    pts = [(int(r["step"]), float(r["loss"])) for r in records
           if "event" not in r and isinstance(r.get("loss"), (int, float))
           and math.isfinite(r["loss"])]
    return [s for s, _ in pts], [v for _, v in pts]
