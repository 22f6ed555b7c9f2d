"""The folder of a run's step checkpoints: names, listing, the latest, pruning.

A run writes ``out_dir/checkpoints/step_XXXXXXXX.safetensors`` (zero-padded, so names
sort like steps) through :func:`scoregen.train.checkpoint.write_checkpoint`, which
writes ``.step_XXXXXXXX.safetensors.<pid>.tmp`` first and renames it. This module only
deals with those names; reading and writing the files is :mod:`scoregen.train.checkpoint`.
:class:`CheckpointDir` is the one object the trainer asks which checkpoints exist, which
to resume from and which to delete.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CheckpointDir",
    "checkpoint_name",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "remove_partial_checkpoints",
]

_NAME_RE = re.compile(r"^step_(\d+)\.safetensors$")
_PARTIAL_RE = re.compile(r"^\.step_\d+\.safetensors\.\d+\.tmp$")  # write_checkpoint's temp


def checkpoint_name(step: int) -> str:
    """``step_00001000.safetensors``: zero-padded so names sort like steps."""
    return f"step_{int(step):08d}.safetensors"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest step first (temporary files excluded)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints; return the deleted paths."""
    return CheckpointDir(directory).prune(keep_last)


def remove_partial_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a writer that was killed mid-save."""
    d = Path(directory)
    if not d.is_dir():
        return []
    stale = [p for p in d.iterdir() if _PARTIAL_RE.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class CheckpointDir:
    """The step checkpoints of one run in ``path`` (usually ``out_dir/checkpoints``).

    Every question the trainer asks about the folder goes through here: where the
    checkpoint of a step goes (:meth:`path_for`), which exist (:meth:`list`), which to
    resume from (:meth:`latest`), which to delete (:meth:`prune`) and what a killed
    writer left (:meth:`remove_partial`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CheckpointDir({str(self.path)!r})"

    def path_for(self, step: int) -> Path:
        return self.path / checkpoint_name(step)

    def list(self) -> list[Path]:
        return list_checkpoints(self.path)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.path)

    def prune(
        self,
        keep_last: int,
        *,
        owned: Callable[[Path], bool] | None = None,
        suspect: Callable[[Path], bool] | None = None,
    ) -> list[Path]:
        """Delete all but the newest ``keep_last`` checkpoints; return the deleted paths.

        ``owned(path)``: only checkpoints it accepts are counted or deleted (the trainer
        passes "written by this run", so another run's files are never touched).
        ``suspect(path)``: when a kept checkpoint is suspect, the newest one that is not
        is kept too (the last good one of a diverging run).
        """
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        mine = [p for p in self.list() if owned is None or owned(p)]
        keep = set(mine[-keep_last:])
        if suspect is not None and any(suspect(p) for p in keep):
            clean = [p for p in mine if not suspect(p)]
            keep.update(clean[-1:])
        gone = [p for p in mine if p not in keep]
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

    def remove_partial(self) -> list[Path]:
        return remove_partial_checkpoints(self.path)
