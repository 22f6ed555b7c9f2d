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

**One run per folder** (:class:`RunFolder`). The trainer deletes (prunes) only
checkpoints that carry its own run id, and a fresh run refuses a folder holding another
run's checkpoints (:class:`ExistingRunError`) unless told to resume it or to move it
aside (:func:`move_run_aside`: ``checkpoints/``, ``metrics.jsonl`` go to
``out_dir/previous-<run id>/``).

**Holding the folder** (:class:`FolderHold`): ``fit``, ``save`` and ``resume`` run inside
one hold, which takes the lock on rank 0 and claims the folder for the run once.

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
import gc
import hashlib
import json
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from scoregen.train.checkpoint_dir import CheckpointDir
from scoregen.train.checkpoint_file import CheckpointError, read_meta, run_id_of
from scoregen.train.distributed import broadcast_object, on_main
from scoregen.train.metrics_log import MetricsLog

__all__ = [
    "RunFolder",
    "RunLock",
    "FolderHold",
    "OutDirInUseError",
    "ExistingRunError",
    "ON_EXISTING",
    "config_hash",
    "new_run_id",
    "new_identity",
    "started_iso",
    "move_run_aside",
    "warn_caller",
]

ON_EXISTING = ("refuse", "resume", "overwrite")
RUN_FILES = ("checkpoints", "metrics.jsonl")  # what belongs to a run in out_dir
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


def new_identity(parts: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(config hash of parts, run id, start time)`` of a run starting now; the run id
    is rank 0's on every rank (call on every rank)."""
    digest = config_hash(parts)
    started = time.time()
    return digest, broadcast_object(new_run_id(digest, started)), started_iso(started)


def started_iso(started: float) -> str:
    """A start time (``time.time()``) as ISO 8601 UTC, to the second."""
    return datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(
        timespec="seconds")


def warn_caller(message: str) -> None:
    """``warnings.warn`` attributed to the first frame outside this package and
    contextlib (the user's ``fit`` / ``resume`` call, however deep the path)."""
    here = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None and (os.path.dirname(os.path.abspath(frame.f_code.co_filename))
                                 == here or frame.f_code.co_filename == contextlib.__file__):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, stacklevel=level + 1)


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
        if fcntl is not None and not self._try_lock(f):
            f.seek(0)
            holder = f.read().strip() or "unknown holder"
            f.close()
            ours = holder.startswith(f"pid {os.getpid()} ")
            raise OutDirInUseError(
                f"{self.path.parent} is in use by another trainer ({holder}); two "
                "trainers writing into one folder overwrite each other's checkpoints and "
                "log. " + ("It is a trainer of this process: call its close() (a loop of "
                           "step() calls holds the folder until then), or "
                           if ours else "Wait for it to finish, or ")
                + "choose another out_dir (--out)."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, run {run_id}, "
                f"since {started_iso(time.time())}\n")
        f.flush()
        self._file, self._depth = f, 1

    @staticmethod
    def _try_lock(f: IO[str]) -> bool:
        """flock ``f`` without waiting. When a trainer of this process holds the lock,
        collect garbage once and retry: a trainer dropped without ``close()`` (its last
        reference gone, but in a reference cycle) then lets go of its lock file."""
        for attempt in range(2):
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                f.seek(0)
                if attempt or not f.read().startswith(f"pid {os.getpid()} "):
                    return False
                gc.collect()
        return False

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._file is not None:
            if fcntl is not None and not self._file.closed:
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


class FolderHold:
    """The out_dir held by one trainer, on every rank: ``with hold(run_id): ...`` takes
    ``lock`` on rank 0 and, with ``claim=True``, runs ``claim()`` there the first time
    (the folder must be this run's). Nested blocks (a ``save`` inside ``fit``) neither
    lock again nor synchronise the ranks. A refusal on rank 0
    (:class:`OutDirInUseError`, :class:`ExistingRunError`) is raised on every rank."""

    def __init__(self, lock: RunLock, claim: Callable[[], None]) -> None:
        self.lock = lock
        self._claim = claim
        self.depth = 0  # nesting of blocks (the same on every rank)
        self.claimed = False
        self.kept = False  # between keep() and release_kept()

    def keep(self, run_id: str) -> None:
        """Enter a block (lock and claim, as ``with hold(run_id)``) and stay in it until
        :meth:`release_kept`: a hand-written loop of ``Trainer.step`` calls owns the folder
        between its steps, not only during the first. Later blocks nest inside it."""
        if self.kept:
            return
        if self.depth == 0:
            on_main(lambda: self.lock.acquire(run_id))
        self.depth += 1
        try:
            if not self.claimed:
                self.claim_now()
        except BaseException:
            self._leave()
            raise
        self.kept = True

    def release_kept(self) -> None:
        """Leave the block :meth:`keep` entered (a no-op without one)."""
        if self.kept:
            self.kept = False
            self._leave()

    def _leave(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.lock.release()  # a no-op on the ranks that never took it

    def claim_now(self) -> None:
        """Claim the folder (rank 0, under the lock) and remember it."""
        on_main(self._claim)
        self.claimed = True

    @contextlib.contextmanager
    def __call__(self, run_id: str, claim: bool = True) -> Iterator[None]:
        if self.depth:  # inside another block: held and claimed already
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        on_main(lambda: self.lock.acquire(run_id))
        self.depth = 1
        try:
            if claim and not self.claimed:
                self.claim_now()
            yield
        finally:
            self._leave()


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


class RunFolder:
    """Which of ``out_dir``'s checkpoints are this run's, and claiming the folder.

    ``run_id`` is the run's id; ``legacy`` is set when the run continues a checkpoint
    written before run ids (then files without an id count as its own). A checkpoint's
    run id and ``suspect`` flag are read from its header only, cached by modification time.
    """

    def __init__(self, out_dir: Path, checkpoints: CheckpointDir, metrics: MetricsLog,
                 run_id: str) -> None:
        self.out_dir, self.checkpoints, self.metrics = out_dir, checkpoints, metrics
        self.run_id = run_id
        self.legacy = False
        self._cache: dict[str, tuple[int, str | None, bool]] = {}

    def info(self, path: Path) -> tuple[str | None, bool] | None:
        """``(run id, suspect)`` of a checkpoint; None when it cannot be read."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        hit = self._cache.get(path.name)
        if hit is not None and hit[0] == mtime:
            return hit[1], hit[2]
        try:
            meta = read_meta(path)
        except (CheckpointError, OSError):
            return None
        info = (run_id_of(meta), bool((meta.get("state") or {}).get("suspect", False)))
        self._cache[path.name] = (mtime, *info)
        return info

    def owns(self, path: Path) -> bool:
        info = self.info(path)
        return info is not None and (info[0] == self.run_id or (info[0] is None and self.legacy))

    def is_suspect(self, path: Path) -> bool:
        info = self.info(path)
        return info is not None and info[1]

    def own_checkpoints(self) -> list[Path]:
        return [p for p in self.checkpoints.list() if self.owns(p)]

    def prune(self, keep_last: int) -> list[Path]:
        """Keep the run's newest ``keep_last`` checkpoints, and its last good one while
        later ones are suspect; other runs' files and unreadable ones are never deleted."""
        return self.checkpoints.prune(keep_last, owned=self.owns, suspect=self.is_suspect)

    def claim(self, *, fresh: bool, overwrite: bool,
              start_row: Mapping[str, Any] | None = None) -> tuple[Path, str] | None:
        """Make sure the folder holds no other run's checkpoints (call with the lock held).

        Raises :class:`ExistingRunError` when it does, unless ``fresh`` and ``overwrite``:
        then they and ``metrics.jsonl`` are moved aside, with a warning. A fresh run also
        moves aside a ``metrics.jsonl`` left without any checkpoint (a run killed before
        its first one) and starts its own with ``start_row`` (the ``"run_start"`` row).
        Returns ``(the folder things were moved to, what was moved)``, or None.
        """
        moved = self._make_room(fresh=fresh, overwrite=overwrite)
        if moved is not None:
            warn_caller(f"moved {moved[1]} of the previous run in {self.out_dir} to {moved[0]}")
        if fresh and start_row is not None:
            self.metrics.rows = 0
            self.metrics.append(start_row)
        return moved

    def _make_room(self, *, fresh: bool, overwrite: bool) -> tuple[Path, str] | None:
        self.checkpoints.remove_partial()
        others: dict[str, str | None] = {}  # another run's checkpoint -> its run id
        for p in self.checkpoints.list():
            info = self.info(p)
            if info is None:  # unreadable: someone's for a fresh run; a resumed run
                if fresh:     # skipped it (corrupt) and writes over it
                    others[p.name] = None
            elif not self.owns(p):
                others[p.name] = info[0]
        if others and not (fresh and overwrite):
            newest = max(others)
            what = ("a fresh run here would mix its checkpoints and log with it" if fresh
                    else f"the resumed run {self.run_id} must not mix with it")
            raise ExistingRunError(
                f"{self.out_dir} holds {len(others)} checkpoint(s) of another run (newest "
                f"{newest}, run {others[newest] or 'unknown'}); {what}. Continue that run with "
                "Trainer.resume() (--resume), write this run to another out_dir (--out), or "
                "move the old run aside with Trainer(..., on_existing='overwrite') "
                "(--overwrite).")
        log = self.metrics.path
        if not fresh or not (others or (log.is_file() and log.stat().st_size)):
            return None
        old_id = others[max(others)] if others else self._log_run_id()
        self._cache.clear()
        what = "the checkpoints and log" if others else "the log (no checkpoint)"
        return move_run_aside(self.out_dir, old_id, RUN_FILES), what

    def _log_run_id(self) -> str | None:
        """The run id of the ``run_start`` row of an existing metrics.jsonl, if any."""
        for r in self.metrics.read()[:1]:
            if r.get("event") == "run_start" and isinstance(r.get("run_id"), str):
                return r["run_id"]
        return None
