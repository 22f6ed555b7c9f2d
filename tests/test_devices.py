"""Device names and default precision."""

import pytest
import torch

import scoregen.devices as devices_module
from scoregen.devices import (
    default_precision,
    describe_device,
    device_name,
    resolve_device,
    resolve_threads,
)


def test_auto_and_named_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert default_precision(torch.device("cpu")) == "fp32"
    assert default_precision(torch.device("cuda", 0)) == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["tpu", "gpu0", "mps"])
def test_unknown_devices_are_rejected(name):
    with pytest.raises(ValueError, match="cpu"):
        resolve_device(name)


def test_device_description_names_the_machine():
    text = describe_device("cpu")
    assert "cores" in text and "torch thread" in text and len(device_name("cpu")) > 0


def test_one_torch_thread_is_singular(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert describe_device("cpu").endswith(", 1 torch thread")


@pytest.mark.parametrize(("cores", "load", "cap", "expected"), [
    (2, 0.1, 2, 2),   # idle: every core
    (2, 1.0, 2, 1),   # one other job: the free core
    (2, 3.5, 2, 1),   # overloaded: still one thread
    (16, 4.2, 8, 8),  # never above the cap (OMP_NUM_THREADS / torch's default)
], ids=["idle", "one-job", "overloaded", "capped"])
def test_auto_threads_take_the_cores_other_processes_leave(monkeypatch, cores, load, cap,
                                                            expected):
    monkeypatch.setattr(devices_module.os, "cpu_count", lambda: cores)
    # the busy cores of the last 0.2 s, as /proc/stat counts them: total CPU time grows by
    # cores * 100 ticks, of which load * 100 were busy
    times = iter([(0.0, 0.0), (load * 100, cores * 100.0)])
    monkeypatch.setattr(devices_module, "_cpu_times", lambda: next(times))
    monkeypatch.setattr(devices_module.time, "sleep", lambda s: None)
    assert resolve_threads("auto", cap=cap) == expected


def test_auto_threads_fall_back_to_the_load_average_without_proc_stat(monkeypatch):
    monkeypatch.setattr(devices_module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(devices_module, "_cpu_times", lambda: None)
    monkeypatch.setattr(devices_module.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert resolve_threads("auto", cap=2) == 1
    monkeypatch.setattr(devices_module.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert resolve_threads("auto", cap=2) == 2


def test_busy_cores_reads_this_machine():
    busy = devices_module.busy_cores(0.05)
    if busy is not None:  # Linux
        assert 0.0 <= busy <= (devices_module.os.cpu_count() or 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True], ids=str)
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="integer >= 1 or 'auto'"):
        resolve_threads(bad)


def test_explicit_thread_counts_pass_through():
    assert resolve_threads(3) == 3


def test_git_commit_names_this_checkout_and_unknown_outside_one(tmp_path):
    from scoregen.provenance import git_commit

    here = git_commit()
    assert here == "unknown" or len(here.split("+")[0]) >= 7
    assert git_commit(tmp_path) == "unknown"
