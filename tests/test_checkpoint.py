"""Checkpoints: atomic writes under SIGKILL, safe loading, config and shape mismatches."""

from __future__ import annotations

import os
import pickle
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import scoregen.train.checkpoint as ckpt
from scoregen.sde import VESDE
from scoregen.train.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    capture_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    restore_rng,
)

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from train_helpers import TinyNet, make_points, make_trainer, weights  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def trained(tmp_path):
    """A trainer after 3 steps and the path of its checkpoint."""
    tr = make_trainer(tmp_path / "run", p_uncond=0.0)
    tr.fit(make_points(), steps=3)
    return tr, latest_checkpoint(tmp_path / "run" / "checkpoints")


# ---------------------------------------------------------------------------- contents
def test_checkpoint_holds_everything_needed_to_resume(trained):
    tr, path = trained
    ck = load_checkpoint(path)
    assert ck.step == 3 and ck.prediction == "eps" and ck.sde == tr.model.sde
    assert ck.train_config == tr.config.to_dict()
    assert ck.model_config == {"dim": 2, "width": 16, "cond_dim": 0, "dropout": 0.0}
    state = dict(ck.state)
    assert state.pop("train_seconds") > 0  # wall time in fit(), carried across resume
    assert state == {"epoch": 0, "batch_in_epoch": 3, "skipped_steps": 0,
                     "overflow_steps": 0, "nonfinite_run": 0, "world_size": 1,
                     "first_skipped_step": None, "suspect": False,
                     "log_rows": 4}  # run_start + 3 training rows
    assert ck.run_id == tr.run_id and ck.meta["run"]["config_hash"] == tr.config_hash
    assert ck.meta["ema"]["num_updates"] == 3
    for k, v in tr.model.state_dict().items():
        assert torch.equal(ck.model_state()[k], v), k
    for k, v in tr.ema.state_dict().items():
        assert torch.equal(ck.ema_state()[k], v), k
    saved, live = ck.optimizer_state(), tr.optimizer.state_dict()
    assert saved["param_groups"] == live["param_groups"]
    assert saved["state"].keys() == live["state"].keys()
    for i, st in live["state"].items():
        for key, v in st.items():
            assert torch.equal(saved["state"][i][key], v), (i, key)
    assert set(ck.rng_state(0)) == {"torch", "numpy", "numpy_gauss", "python", "python_gauss"}


def test_rng_states_round_trip():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng(state)
    got = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]


def test_load_model_for_inference_uses_ema_weights(trained):
    tr, path = trained
    model = load_model(path, TinyNet)
    assert not model.training and model.prediction == "eps" and model.sde == tr.model.sde
    for k, v in tr.ema.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    raw = load_model(path, TinyNet, ema=False)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(raw.state_dict()[k], v), k
    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    torch.testing.assert_close(model.eps(x, t), tr.ema_model.eps(x, t))


# ---------------------------------------------------------------------------- safety
def test_loading_never_unpickles(trained, tmp_path, monkeypatch):
    """Checkpoints, optimizer and RNG states load with pickle and torch.load disabled."""
    _, path = trained

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    fresh = make_trainer(tmp_path / "run")
    assert fresh.resume(path) and fresh.global_step == 3
    load_model(path, TinyNet)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["SCOREGEN_TEST_MARKER"]),))


def test_a_pickle_disguised_as_a_checkpoint_is_rejected_not_run(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SCOREGEN_TEST_MARKER", str(marker))
    evil = tmp_path / "step_00000009.safetensors"
    with open(evil, "wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError):
        load_model(evil, TinyNet)
    assert not marker.exists()


def test_no_torch_load_without_weights_only_in_training_code():
    files = sorted((Path(__file__).resolve().parents[1] / "scoregen" / "train").glob("*.py"))
    assert len(files) >= 4  # the training side really is there
    for path in files:
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, (path.name, call)


def test_missing_truncated_and_foreign_files_give_clear_errors(trained, tmp_path):
    _, path = trained
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nothing.safetensors"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    data = path.read_bytes()
    for cut in (len(data) // 2, 7, 0):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"cut{cut}.safetensors.*truncated"):
            load_checkpoint(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a scoregen checkpoint"):
        load_checkpoint(foreign)


# ---------------------------------------------------------------------------- mismatches
def test_config_mismatch_names_the_fields(trained, tmp_path):
    _, path = trained
    other = make_trainer(tmp_path / "other", width=32)
    with pytest.raises(CheckpointMismatchError, match=r"model_config\.width: checkpoint 16, "
                                                      r"this model 32"):
        other.resume(path)
    ve = make_trainer(tmp_path / "ve", sde=VESDE())
    with pytest.raises(CheckpointMismatchError) as err:
        ve.resume(path)
    assert "sde.type: checkpoint 'VPSDE', this model 'VESDE'" in str(err.value)
    assert "sde.sigma_max: not in the checkpoint" in str(err.value)


def test_shape_mismatch_names_the_parameter(trained, tmp_path):
    _, path = trained
    unnamed = make_trainer(tmp_path / "x", net=TinyNet(width=8))  # no model_config to compare
    with pytest.raises(CheckpointMismatchError,
                       match=r"shape mismatch: net\.body\.0\.weight: checkpoint \(16, 3\), "
                             r"model \(8, 3\)"):
        unnamed.resume(path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_model(path, lambda **cfg: _Renamed())
    assert "missing in checkpoint: net.other.weight; net.other.bias" in str(err.value)
    assert "unexpected in checkpoint: net.body.0.bias" in str(err.value)


class _Renamed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.other = torch.nn.Linear(3, 2)

    def forward(self, x, t, cond=None):
        return self.other(torch.cat([x, t[:, None]], 1))


# ---------------------------------------------------------------------------- atomicity
def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    """SIGKILL while the step-4 checkpoint is half written: the step-2 one is the latest,
    loads and resumes; the partial temporary file is never taken for a checkpoint."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "train_kill.py"), str(run), "--steps", "8",
         "--checkpoint-every", "2", "--stall-save-at", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "STALLED", line + proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    ckdir = run / "checkpoints"
    partial = [p for p in ckdir.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1 and partial[0].name.startswith(".step_00000004.safetensors.")
    assert partial[0].stat().st_size > 0  # really killed mid-write
    assert [p.name for p in list_checkpoints(ckdir)] == ["step_00000002.safetensors"]
    with pytest.raises(CheckpointError):
        load_checkpoint(partial[0])
    assert load_checkpoint(latest_checkpoint(ckdir)).step == 2

    resumed = make_trainer(run, dropout=0.1, checkpoint_every=2)
    assert not any(p.name.endswith(".tmp") for p in ckdir.iterdir())  # stale file cleaned
    assert resumed.resume() and resumed.global_step == 2
    resumed.fit(make_points(), steps=4)
    assert load_checkpoint(latest_checkpoint(ckdir)).step == 4


def test_failed_write_removes_its_temporary_file(trained, tmp_path, monkeypatch):
    tr, _ = trained

    def boom(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        tr.save(tmp_path / "x.safetensors")
    assert list(tmp_path.glob(".x.safetensors*")) == []
    assert not (tmp_path / "x.safetensors").exists()


def test_tied_and_non_contiguous_tensors_are_saved(tmp_path):
    shared = torch.arange(6.0).reshape(2, 3)
    tensors = {"a": shared, "b": shared, "c": shared.t(), "d": shared[0]}
    path = ckpt.write_checkpoint(tmp_path / "t.safetensors", tensors, {"k": 1})
    back, meta = ckpt.read_checkpoint(path)
    assert meta == {"k": 1}
    for k, v in tensors.items():
        assert torch.equal(back[k], v), k


def test_weights_survive_a_save_load_cycle_exactly(trained, tmp_path):
    tr, path = trained
    fresh = make_trainer(tmp_path / "run")
    fresh.resume(path)
    w, v = weights(tr), weights(fresh)
    assert all(torch.equal(w[k], v[k]) for k in w)


# ---------------------------------------------------------------------------- integrity (issue 10)
def _flip_byte(path: Path, offset_from_end: int = 9) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01  # inside the tensor data (after the header)
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_tensor_data_is_detected_naming_the_file(trained, tmp_path):
    """Defect 5: a flipped byte in tensor data loaded without complaint."""
    _, path = trained
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(path.read_bytes())
    _flip_byte(bad)
    with pytest.raises(CheckpointError, match=r"flipped\.safetensors is corrupt: the data of "
                                              r"\S+ does not match its checksum"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        ckpt.read_checkpoint(bad)
    assert load_checkpoint(path).step == 3  # the original is fine


def test_a_changed_header_value_is_detected(trained, tmp_path):
    """The metadata is checksummed too: a step edited in the header is refused."""
    _, path = trained
    raw = path.read_bytes()
    edited = raw.replace(b'\\"step\\": 3', b'\\"step\\": 4', 1)
    assert edited != raw
    bad = tmp_path / "edited.safetensors"
    bad.write_bytes(edited)
    with pytest.raises(CheckpointError, match="metadata does not match its checksum"):
        load_checkpoint(bad)


def _crafted(tmp_path: Path, trained, *, sde=None, model_config=None) -> Path:
    """A valid, checksummed checkpoint of the trained model whose header asks for more."""
    _, path = trained
    tensors, meta = ckpt.read_checkpoint(path)
    if sde is not None:
        meta["sde"] = sde
    if model_config is not None:
        meta["model_config"] = model_config
    return ckpt.write_checkpoint(tmp_path / "crafted.safetensors", tensors, meta)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("num_steps", [10**10, 0, 2.5], ids=["1e10", "zero", "float"])
def test_a_crafted_sde_size_is_refused_before_allocating(trained, tmp_path, num_steps):
    """Defect 5: num_steps 1e10 in the header made loading allocate ~80 GB of DDPM tables
    (not run on the old code for that reason)."""
    path = _crafted(tmp_path, trained, sde={"type": "VPSDE", "schedule": "ddpm",
                                            "num_steps": num_steps, "beta_start": 1e-4,
                                            "beta_end": 0.02})
    before = _peak_rss_mb()
    for load in (load_checkpoint, lambda p: load_model(p, TinyNet)):
        with pytest.raises(ValueError, match=r"crafted\.safetensors: sde\.num_steps must be an "
                                             r"int in \[1, 1000000\]"):
            load(path)
    assert _peak_rss_mb() - before < 100


def test_a_crafted_net_size_is_refused_before_allocating(trained, tmp_path):
    """Defect 5: a header asking for a huge net made load_model build it first (a width
    of 10**6 is 4 TB of weights). The net is sized on the meta device against the file."""
    from scoregen.train import CheckpointBoundsError

    path = _crafted(tmp_path, trained, model_config={"dim": 2, "width": 10**6, "cond_dim": 0,
                                                     "dropout": 0.0})
    before = _peak_rss_mb()
    with pytest.raises(CheckpointBoundsError, match=r"builds a net of 1,000,00\d,\d{3},\d{3} "
                                                    r"numbers but the file holds 37\d"):
        load_model(path, TinyNet)
    assert _peak_rss_mb() - before < 100
    assert isinstance(CheckpointBoundsError("x"), ValueError)


def test_a_crafted_unet_header_is_refused_by_the_config_bounds():
    """Defect 5: base_channels 65536 would build ~150 GB of U-Net weights."""
    from scoregen.nn import UNetConfig

    saved = UNetConfig.from_preset("tiny").to_dict()
    assert UNetConfig.from_dict(saved) == UNetConfig.from_preset("tiny")
    with pytest.raises(ValueError, match=r"base_channels \* max\(channel_mults\) = \d+, above "
                                         r"the bound 8192"):
        UNetConfig.from_dict({**saved, "base_channels": 65536})
    with pytest.raises(ValueError, match="num_res_blocks = 100000"):
        UNetConfig.from_dict({**saved, "num_res_blocks": 100000})


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path):
    """Defect 5: a corrupt latest checkpoint stopped resume() (a truncated one) or was
    loaded as if sound (a flipped byte). Now resume() skips it, with a warning naming it."""
    run = tmp_path / "run"
    tr = make_trainer(run, checkpoint_every=2)
    tr.fit(make_points(), steps=6)
    ckdir = run / "checkpoints"
    _flip_byte(ckdir / "step_00000006.safetensors")
    four = ckdir / "step_00000004.safetensors"
    four.write_bytes(four.read_bytes()[:200])  # truncated
    resumed = make_trainer(run, checkpoint_every=2)
    with pytest.warns(UserWarning, match=r"(?s)skipped 2 checkpoint\(s\).*continued from "
                                         r"step_00000002.*step_00000006.safetensors: .*checksum"
                                         r".*step_00000004.safetensors: .*truncated"):
        assert resumed.resume()
    assert resumed.global_step == 2 and resumed.run_id == tr.run_id
    resumed.fit(make_points(), steps=6)  # writes over the corrupt ones
    assert [load_checkpoint(p).step for p in list_checkpoints(ckdir)] == [2, 4, 6]
    for name in ("step_00000002", "step_00000004", "step_00000006"):
        _flip_byte(ckdir / f"{name}.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint in .* loads"):
        make_trainer(run).resume()
    with pytest.raises(CheckpointError, match="checksum"):  # an explicit path: no fallback
        make_trainer(run).resume(ckdir / "step_00000006.safetensors")


# Every name scoregen.train.checkpoint exported before the file format, the RNG states and
# the non-finite check moved to modules of their own (checkpoint_file, rng_state, nonfinite).
CHECKPOINT_NAMES = [
    "Checkpoint", "CheckpointError", "CheckpointMismatchError", "CheckpointBoundsError",
    "save_checkpoint", "load_checkpoint", "load_model", "write_checkpoint", "read_checkpoint",
    "list_checkpoints", "latest_checkpoint", "prune_checkpoints", "remove_partial_checkpoints",
    "checkpoint_name", "capture_rng", "restore_rng", "load_state_checked", "read_meta",
    "run_id_of", "check_bounds", "nonfinite_tensors", "FORMAT", "VERSION", "MAX_SDE_STEPS",
]


@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_the_checkpoint_module_keeps_its_public_names(name):
    assert name in ckpt.__all__ and getattr(ckpt, name) is not None


def test_train_errors_are_importable_from_scoregen():
    import scoregen
    import scoregen.train as train

    for name in ("ExistingRunError", "OutDirInUseError", "NonFiniteWeightsError",
                 "CheckpointBoundsError"):
        assert getattr(scoregen, name) is getattr(train, name) and name in scoregen.__all__
    assert issubclass(scoregen.CheckpointBoundsError, scoregen.CheckpointError)
    assert issubclass(scoregen.NonFiniteWeightsError, scoregen.NonFiniteLossError)
