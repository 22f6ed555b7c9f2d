"""Device names and default precision."""

import pytest
import torch

from scoregen.devices import default_precision, describe_device, device_name, resolve_device


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
    assert "cores" in text and "torch threads" in text and len(device_name("cpu")) > 0
