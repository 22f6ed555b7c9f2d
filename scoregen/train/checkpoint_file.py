"""The checkpoint file: its format, its integrity checks and its atomic write.

A checkpoint is one ``.safetensors`` file: named tensors (raw bytes) and a string
header. The header holds

    format   "scoregen-checkpoint"; version: the format version (this code reads <= 1)
    meta     one JSON document (what it means: :mod:`scoregen.train.checkpoint`)
    crc32    JSON ``{tensor name: CRC-32 of its bytes, "__meta__": CRC-32 of meta}``

Nothing is pickled: reading parses a JSON header and raw tensor bytes, so a file from an
untrusted source cannot run code.

Integrity: :func:`read_checkpoint` recomputes every CRC-32 and raises
:class:`CheckpointError` naming the file and the tensor on a mismatch (a flipped byte);
before anything is built from the metadata its sizes are bounded (:func:`check_bounds`:
the SDE's ``num_steps``), so a crafted header cannot make loading allocate gigabytes.
Files written before checksums existed load without the check.

Writes are atomic (:func:`write_atomic`): the file is written under a temporary name in
the same folder, ``fsync``-ed, renamed over the final name with ``os.replace`` and the
folder is ``fsync``-ed, so a process killed at any moment leaves either the old set of
checkpoints or the new one, never a half-written file under a checkpoint name.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

__all__ = [
    "CheckpointError",
    "CheckpointBoundsError",
    "FORMAT",
    "VERSION",
    "MAX_SDE_STEPS",
    "write_atomic",
    "read_checkpoint",
    "read_meta",
    "run_id_of",
    "check_bounds",
]

FORMAT = "scoregen-checkpoint"
VERSION = 1
MAX_SDE_STEPS = 1_000_000  # DDPM uses 1000; tables of this length are a few MB
_META_CRC = "__meta__"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not a scoregen checkpoint."""


class CheckpointBoundsError(CheckpointError, ValueError):
    """A checkpoint's metadata asks for sizes beyond any real run (refused before
    allocating)."""


# ---------------------------------------------------------------------------- writing
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _owned(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous tensors that share no storage (safetensors refuses shared storage)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not torch.is_tensor(t):
            raise TypeError(f"checkpoint entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu()
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
        ptr = t.untyped_storage().data_ptr()
        if not t.is_contiguous() or not whole or (t.numel() and ptr in seen):
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        if t.numel():
            seen.add(ptr)
        out[name] = t
    return out


def write_atomic(
    path: str | os.PathLike,
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    save: Callable[..., None] = save_file,
) -> Path:
    """Atomically write ``tensors`` and the JSON document ``meta`` to ``path``, with the
    CRC-32 of each tensor and of ``meta`` in the header.

    The data goes to ``.<name>.<pid>.tmp`` in the same folder (through ``save``,
    safetensors' ``save_file``), is flushed to disk, then renamed over ``path``; the
    folder entry is flushed too. A reader never sees a partial file under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owned = _owned(tensors)
    meta_text = json.dumps(meta, allow_nan=False)  # standard JSON: no bare NaN / Infinity
    crcs = {name: _crc(t) for name, t in owned.items()}
    crcs[_META_CRC] = f"{zlib.crc32(meta_text.encode()):08x}"
    header = {"format": FORMAT, "version": str(VERSION), "meta": meta_text,
              "crc32": json.dumps(crcs)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save(owned, str(tmp), metadata=header)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


# ---------------------------------------------------------------------------- reading
def _crc(t: Tensor) -> str:
    """CRC-32 of a CPU tensor's bytes, 8 hex digits."""
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return f"{zlib.crc32(data):08x}"


def _header(f: Any, path: Path) -> tuple[dict[str, Any], dict[str, str] | None]:
    """``(meta, crcs)`` from an open safetensors file, the metadata's CRC verified."""
    header = f.metadata() or {}
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a scoregen checkpoint "
            f"(metadata format={header.get('format')!r}, expected {FORMAT!r})"
        )
    version = int(header.get("version", "0"))
    if version > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this scoregen reads "
            f"up to {VERSION}: upgrade scoregen"
        )
    crcs = json.loads(header["crc32"]) if "crc32" in header else None
    text = header["meta"]
    if crcs is not None and f"{zlib.crc32(text.encode()):08x}" != crcs.get(_META_CRC):
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata does not match "
                              "its checksum")
    return json.loads(text), crcs


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[Any, dict[str, Any], dict[str, str] | None]]:
    """``(open file, meta, crcs)``; a missing file raises ``FileNotFoundError``, any
    safetensors error (a bad header or size, here or in the block) a CheckpointError."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            yield (f, *_header(f, path))
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for bad headers / sizes
        raise CheckpointError(
            f"cannot read checkpoint {path}: truncated, corrupt or not a safetensors file "
            f"({type(e).__name__}: {e})") from e


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, reading only its header (cheap: used to ask a
    file which run wrote it)."""
    with _opened(Path(path)) as (_, meta, _):
        return meta


def run_id_of(meta: Mapping[str, Any]) -> str | None:
    """The run id in a checkpoint's metadata, None when it has none."""
    run = meta.get("run")
    rid = run.get("id") if isinstance(run, Mapping) else None
    return rid if isinstance(rid, str) and rid else None


def check_bounds(meta: Mapping[str, Any], path: Any = "") -> None:
    """Raise :class:`CheckpointBoundsError` when the metadata asks for sizes no real run
    has, before anything is built from it (``sde.num_steps``: DDPM tables)."""
    sde = meta.get("sde")
    n = sde.get("num_steps") if isinstance(sde, Mapping) else None
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                          or not 1 <= n <= MAX_SDE_STEPS):
        raise CheckpointBoundsError(
            f"checkpoint {path}: sde.num_steps must be an int in [1, {MAX_SDE_STEPS}], got "
            f"{n!r}; refused before allocating its tables (a corrupt or crafted header?)")


def read_checkpoint(
    path: str | os.PathLike,
    *,
    prefixes: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint; only tensors whose names start with ``prefixes``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a
    truncated, corrupt or foreign file. Nothing is unpickled.
    """
    path = Path(path)
    pre = tuple(prefixes) if prefixes is not None else None
    with _opened(path) as (f, meta, crcs):
        check_bounds(meta, path)
        keys = [k for k in f.keys() if pre is None or k.startswith(pre)]
        tensors = {k: f.get_tensor(k) for k in keys}
    if crcs is not None:
        bad = [k for k, t in tensors.items() if crcs.get(k) != _crc(t)]
        if bad:
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            raise CheckpointError(
                f"checkpoint {path} is corrupt: the data of {', '.join(bad[:5])}{more} does "
                "not match its checksum (a damaged file; resume from an earlier checkpoint)")
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


