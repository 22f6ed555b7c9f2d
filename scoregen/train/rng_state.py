"""RNG states of a process, as tensors for a checkpoint: capture and restore.

An exact resume continues every random stream where the interrupted run left it: torch's
CPU generator, the current CUDA device's, numpy's legacy global ``RandomState`` (MT19937:
624 keys, the position and the cached Gaussian) and python's ``random`` (its version,
625 words of state and the cached Gaussian). :func:`capture_rng` packs them into tensors
(a checkpoint stores them as ``rng.<rank>.<kind>``; each DDP rank has its own, gathered
by :func:`scoregen.train.distributed.gather_rng_states`) and :func:`restore_rng` unpacks
them. Nothing is pickled.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["capture_rng", "restore_rng"]


def capture_rng() -> dict[str, Tensor]:
    """This process's global RNG states as tensors: torch CPU, CUDA (current device),
    numpy's legacy global ``RandomState`` and python's ``random``."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    if kind != "MT19937":
        raise RuntimeError(f"unsupported numpy RNG state {kind!r}")
    out["numpy"] = torch.from_numpy(
        np.concatenate([keys.astype(np.int64), np.array([pos, has_gauss], dtype=np.int64)])
    )
    out["numpy_gauss"] = torch.tensor([cached], dtype=torch.float64)
    version, internal, gauss_next = random.getstate()
    out["python"] = torch.tensor([version, *internal], dtype=torch.int64)
    out["python_gauss"] = torch.tensor(
        [0.0 if gauss_next is None else gauss_next, float(gauss_next is None)],
        dtype=torch.float64,
    )
    return out


def restore_rng(state: Mapping[str, Tensor]) -> None:
    """Inverse of :func:`capture_rng`; a CUDA state is skipped (with a warning) without CUDA."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    if "cuda" in state:
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"].to(torch.uint8).cpu())
        else:
            warnings.warn("checkpoint holds a CUDA RNG state but CUDA is unavailable; "
                          "skipped", stacklevel=2)
    if "numpy" in state:
        a = state["numpy"].cpu().numpy()
        np.random.set_state(
            ("MT19937", a[:624].astype(np.uint32), int(a[624]), int(a[625]),
             float(state["numpy_gauss"][0]))
        )
    if "python" in state:
        p = state["python"].tolist()
        g, is_none = state["python_gauss"].tolist()
        random.setstate((int(p[0]), tuple(int(v) for v in p[1:]), None if is_none else g))
