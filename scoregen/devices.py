"""Choosing where to run: ``"auto"`` device names and the matching default precision."""

from __future__ import annotations

import contextlib
import os
import platform
import time

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


def _cpu_times() -> tuple[float, float] | None:
    """``(busy, total)`` CPU time of all cores since boot from ``/proc/stat`` (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    idle = fields[3] + fields[4]  # idle + iowait; user/nice/system/irq/softirq/steal are busy
    return sum(fields) - idle, sum(fields)


def busy_cores(interval: float = 0.2) -> float | None:
    """Cores in use right now: the busy share of all CPU time over ``interval`` seconds,
    times the core count (``/proc/stat``); None where that file does not exist.

    Unlike the 1-minute load average, which decays with a one-minute time constant and
    so still reads ~1 a minute after a job ended, this sees the machine as it is now.
    """
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(interval)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    share = (after[0] - before[0]) / (after[1] - before[1])
    return max(0.0, min(1.0, share)) * (os.cpu_count() or 1)


def resolve_threads(spec: int | str = "auto", *, cap: int | None = None) -> int:
    """Torch intra-op threads for this host: an int >= 1 as given, or ``"auto"``.

    ``"auto"`` takes the cores not already busy, ``round(cores - busy)``, at least 1 and at
    most ``cap`` (default ``torch.get_num_threads()``, i.e. ``OMP_NUM_THREADS`` when set).
    ``busy`` is :func:`busy_cores` (the CPU use of the last 0.2 s), or the 1-minute load
    average where ``/proc/stat`` is missing. Reason (measured in
    ``benchmarks/host_times.py``, docs/benchmarks.md "Host times"): OpenMP threads
    spin-wait for each other, so on a core another process holds, a second thread costs
    far more than it gains (a training step of the X-ray example was 1.0-15x slower,
    never faster, with 2 threads than with 1 beside other jobs), while on idle cores 2
    threads are faster (1.57x per step on 2 idle cores). Hosts with neither get ``cap``.
    """
    cap = torch.get_num_threads() if cap is None else cap
    if spec != "auto":
        if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
            raise ValueError(f"threads must be an integer >= 1 or 'auto', got {spec!r}")
        return spec
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows)
            return max(1, cap)
    free = round((os.cpu_count() or 1) - busy)
    return max(1, min(cap, free))
