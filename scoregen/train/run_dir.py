"""The out_dir of one run: its identity, the lock that keeps a second trainer out, and
moving an older run aside.

**Run identity.** Every run gets a run id when its :class:`~scoregen.Trainer` is made,

    <start time, UTC>-<hash of what defines the run>-<random tag>
    e.g. 20261202T004512Z-3fa9c1d2-7b1e

where the hash (:func:`config_hash`) is SHA-256 over the JSON of the ``TrainConfig``,
the net's ``model_config``, ``run_info``, the SDE and the prediction type; the random
tag keeps two runs of one config started in the same second apart. The id is written
into every checkpoint (``meta["run"]``) and into ``metrics.jsonl`` (a ``"run_start"``
row, and a ``"resume"`` row each time the run is continued). A resumed trainer takes
the id of the checkpoint it continues, so a run keeps one id across kills.

**One run per folder.** The trainer deletes (prunes) only checkpoints that carry its own
run id, and a fresh run refuses a folder holding another run's checkpoints
(:class:`ExistingRunError`) unless told to resume it or to move it aside
(:func:`move_run_aside`: ``checkpoints/``, ``metrics.jsonl`` go to
``out_dir/previous-<run id>/``).

**The lock.** :class:`RunLock` holds an advisory ``fcntl.flock`` on ``out_dir/.lock``
while a trainer writes into the folder; a second trainer (another process, or another
``Trainer`` object in this one) gets :class:`OutDirInUseError`. The lock belongs to the
open file, so it dies with the process: a SIGKILLed trainer leaves the file behind but
never a held lock. The file is never deleted (deleting it would let two processes lock
two different files of one name).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "RunLock",
    "OutDirInUseError",
    "ExistingRunError",
    "ON_EXISTING",
    "config_hash",
    "new_run_id",
    "move_run_aside",
]

ON_EXISTING = ("refuse", "resume", "overwrite")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LOCK_NAME = ".lock"

try:  # POSIX; elsewhere the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class OutDirInUseError(RuntimeError):
    """Another trainer holds the lock of this out_dir."""


class ExistingRunError(RuntimeError):
    """The out_dir holds checkpoints of another run."""


def config_hash(parts: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``parts`` (sorted keys)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def new_run_id(digest: str, started: float) -> str:
    """``<UTC start time>-<first 8 of digest>-<4 random hex>``."""
    stamp = datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
    return f"{stamp:%Y%m%dT%H%M%SZ}-{digest[:8]}-{os.urandom(2).hex()}"


class RunLock:
    """Advisory, re-entrant (within this object) lock on ``directory/.lock``.

    ``with lock.held(run_id): ...`` takes it (raising :class:`OutDirInUseError` naming the
    holder when another open file holds it) and releases it when the outermost block
    ends. What the holder wrote (pid, host, run id, since) is in the file for the message.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._file: IO[str] | None = None
        self._depth = 0

    @property
    def is_held(self) -> bool:
        return self._depth > 0

    def acquire(self, run_id: str) -> None:
        if self._depth:
            self._depth += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open while locked
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown holder"
                f.close()
                raise OutDirInUseError(
                    f"{self.path.parent} is in use by another trainer ({holder}); two "
                    "trainers writing into one folder overwrite each other's checkpoints and "
                    "log. Wait for it to finish, or choose another out_dir (--out)."
                ) from None
        f.seek(0)
        f.truncate()
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, run {run_id}, since {since}\n")
        f.flush()
        self._file, self._depth = f, 1

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._file is not None:
            if fcntl is not None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @contextlib.contextmanager
    def held(self, run_id: str) -> Iterator[None]:
        self.acquire(run_id)
        try:
            yield
        finally:
            self.release()


def move_run_aside(out_dir: Path, run_id: str | None, names: tuple[str, ...]) -> Path:
    """Move ``out_dir/<name>`` for each of ``names`` that exists into
    ``out_dir/previous-<run_id>/`` (``previous-unknown-<n>`` without an id) and return
    that folder. Each move is one ``os.replace`` (atomic); a kill between two moves
    leaves each entry either in place or moved, and running again moves the rest."""
    if run_id is not None and not _SAFE_ID.fullmatch(run_id):
        run_id = None  # read from a file: never let it name a path outside out_dir
    base = f"previous-{run_id}" if run_id else "previous-unknown"
    dest, n = out_dir / base, 1
    while not run_id and dest.exists() and any((dest / nm).exists() for nm in names):
        n += 1
        dest = out_dir / f"{base}-{n}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = out_dir / name
        if not src.exists():
            continue
        target = dest / name
        if target.exists():  # an earlier, interrupted move of the same run
            if target.is_dir() and src.is_dir():
                for child in src.iterdir():
                    os.replace(child, target / child.name)
                src.rmdir()
                continue
            target = dest / f"{name}.{os.getpid()}"
        os.replace(src, target)
    return dest
