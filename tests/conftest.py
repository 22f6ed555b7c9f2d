"""Shared pytest fixtures and the location of the real data in ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

#: Real data lives beside the checkout, never inside it. Override with SCOREGEN_SHARED_DATA.
SHARED_DATA = Path(
    os.environ.get("SCOREGEN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def shared_data(*parts: str) -> Path:
    """Path under the shared data folder; skips the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path} (it lives in ../shared/data)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


# Tests run many small tensor ops: one intra-op thread avoids OpenMP overhead and
# contention on small machines (2 threads made tiny ops ~100x slower on a busy 2-core box).
torch.set_num_threads(1)
