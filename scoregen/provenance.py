"""Where a result came from: the commit of the checkout that produced it.

Results files (``benchmarks/results/``, an example's ``results.json``) record the exact
command, the hardware (:func:`scoregen.devices.describe_device`), the date and
:func:`git_commit`, so a number in the docs can be traced to the code that measured it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_commit"]


def git_commit(path: str | Path | None = None) -> str:
    """The short commit of the git checkout holding ``path`` (default: this package),
    with ``+dirty`` when it has uncommitted changes; ``"unknown"`` outside a checkout."""
    root = Path(path) if path is not None else Path(__file__).resolve().parent
    if root.is_file():
        root = root.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
