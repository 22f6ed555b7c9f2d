"""argparse ``type=`` checks shared by the examples and benchmarks.

Each turns a command-line string into a value or raises ``argparse.ArgumentTypeError``
with one line that says what was expected, e.g. ``expected an integer >= 1, got '0'``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = ["decay_float", "nonnegative_int", "number_arg", "positive_float", "positive_int",
           "threads_arg"]


def number_arg(kind: type, ok: Callable[[Any], bool], want: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` when ``ok`` holds, else one line saying ``want``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    return parse


positive_int = number_arg(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = number_arg(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number_arg(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
decay_float = number_arg(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def threads_arg(text: str) -> int | str:
    """``--threads``: ``auto`` or an integer >= 1 (see :func:`scoregen.devices.resolve_threads`)."""
    return text if text == "auto" else positive_int(text)
