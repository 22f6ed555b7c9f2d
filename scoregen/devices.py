"""Choosing where to run: ``"auto"`` device names and the matching default precision."""

from __future__ import annotations

import contextlib
import os
import platform

import torch

__all__ = ["resolve_device", "default_precision", "device_name", "describe_device",
           "resolve_threads"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device, checked.

    Raises ``ValueError`` for a CUDA device on a machine without CUDA, or a device type
    other than cpu / cuda.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine "
                         f"(torch {torch.__version__}); use 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {str(device)!r}")
    return device


def default_precision(device: torch.device) -> str:
    """bf16 autocast on CUDA (k-diffusion's advice: fp16 diffusion training is NaN-prone),
    float32 on CPU: bf16 pays there only with native bf16 instructions (2.4x on the AMD
    EPYC of ``docs/benchmarks.md``, slower where it is emulated); pass ``bf16`` to opt in."""
    return "bf16" if device.type == "cuda" else "fp32"


def device_name(device: torch.device | str = "cpu") -> str:
    """The GPU's name, or the CPU model from ``/proc/cpuinfo`` (``platform`` elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_device(device: torch.device | str = "cpu") -> str:
    """One line for reports: name, and for CPUs the cores and torch's intra-op threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device_name(device)} (CUDA)"
    threads = torch.get_num_threads()
    return (f"{device_name(device)}, {os.cpu_count()} cores, "
            f"{threads} torch thread{'s' if threads != 1 else ''}")


def resolve_threads(spec: int | str = "auto", *, cap: int | None = None) -> int:
    """Torch intra-op threads for this host: an int >= 1 as given, or ``"auto"``.

    ``"auto"`` takes the cores not already busy, ``round(cores - load)`` with ``load`` the
    1-minute load average (``os.getloadavg``), at least 1 and at most ``cap`` (default
    ``torch.get_num_threads()``, i.e. ``OMP_NUM_THREADS`` when set). Reason (measured in
    ``benchmarks/host_times.py``): OpenMP threads spin-wait for each other, so on a core
    another process holds, a second thread costs far more than it gains (a training step
    of the X-ray example was 1.0-15x slower, never faster, with 2 threads than with 1
    beside other jobs, ``docs/benchmarks.md``), while on idle cores 2 threads are faster
    (issue 12: the main job in 183 s with 2 threads). Hosts without a load average get
    ``cap``.
    """
    cap = torch.get_num_threads() if cap is None else cap
    if spec != "auto":
        if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
            raise ValueError(f"threads must be an integer >= 1 or 'auto', got {spec!r}")
        return spec
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return max(1, cap)
    free = round((os.cpu_count() or 1) - load)
    return max(1, min(cap, free))
