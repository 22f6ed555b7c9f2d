"""Trainer: learning, EMA math, non-finite steps, exact resume after SIGKILL, logging, AMP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scoregen.model import ScoreModel
from scoregen.sde import VPSDE
from scoregen.train import (
    HostOptions,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    default_batch_fn,
)
from scoregen.train.checkpoint import (
    CheckpointMismatchError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from scoregen.train.ema import EMA, ema_decay_at
from scoregen.train.metrics_log import MetricsLog

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from train_helpers import (  # noqa: E402
    NaNNet,
    TinyConv,
    make_pairs,
    make_points,
    make_trainer,
    weights,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets are fastest, and bit-reproducible across processes, on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _losses(trainer: Trainer) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in trainer.read_metrics() if "event" not in r}


# ---------------------------------------------------------------------------- config
def test_config_validates_and_round_trips():
    cfg = TrainConfig(lr=1e-3, betas=[0.9, 0.99], precision="bf16")
    assert cfg.betas == (0.9, 0.99)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="unknown TrainConfig fields.*'lrr'"):
        TrainConfig.from_dict({"lrr": 1.0})
    with pytest.raises(dataclass_frozen_error()):
        cfg.lr = 1.0  # type: ignore[misc]


def test_host_options_validate_round_trip_and_are_not_train_config_fields():
    host = HostOptions(progress=False, num_workers=2, keep_last=5)
    assert HostOptions.from_dict(json.loads(json.dumps(host.to_dict()))) == host
    assert not set(HostOptions().to_dict()) & set(TrainConfig().to_dict())
    with pytest.raises(ValueError, match="HostOptions.keep_last must be a positive int"):
        HostOptions(keep_last=0)
    with pytest.raises(ValueError, match="HostOptions.progress must be a bool"):
        HostOptions(progress="yes")
    with pytest.raises(TypeError, match=r"\['progress'\] are HostOptions fields.*host="):
        TrainConfig(progress=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"\['lr'\] are TrainConfig fields"):
        HostOptions(lr=1.0)  # type: ignore[call-arg]
    import copy
    import dataclasses

    assert copy.deepcopy(host) == host
    assert dataclasses.replace(TrainConfig(), lr=1.0).lr == 1.0


def test_a_config_saved_before_the_split_is_read_by_both_halves():
    """Checkpoints written before the split hold one dict with both groups."""
    legacy = {**TrainConfig(lr=1e-3).to_dict(), **HostOptions(num_workers=3).to_dict()}
    assert TrainConfig.from_dict(legacy) == TrainConfig(lr=1e-3)
    assert HostOptions.from_dict(legacy) == HostOptions(num_workers=3)
    with pytest.raises(ValueError, match=r"unknown HostOptions fields \['lrr'\]"):
        HostOptions.from_dict({**legacy, "lrr": 1})


def dataclass_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_lr_warmup_and_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, lr_schedule="cosine", min_lr=0.1, max_steps=14)
    assert [cfg.lr_at(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cfg.lr_at(4) == pytest.approx(1.0)
    assert cfg.lr_at(9) == pytest.approx(0.55)  # half way: min + (lr - min) / 2
    assert cfg.lr_at(14) == pytest.approx(0.1) and cfg.lr_at(100) == pytest.approx(0.1)


def test_batch_contract():
    x, c = torch.zeros(2, 3), torch.ones(2, 1)
    assert default_batch_fn(x) == (x, None)
    assert default_batch_fn((x,)) == (x, None)
    assert default_batch_fn([x, c]) == (x, c)
    assert default_batch_fn({"x0": x, "cond": c}) == (x, c)
    with pytest.raises(TypeError, match="batch_fn"):
        default_batch_fn({"image": x})


# ---------------------------------------------------------------------------- learning
def _bayes_optimal_eps(centres):
    """The exact minimiser of the eps-DSM loss for data uniform on ``centres``."""

    def eps(x, t, cond=None):
        alpha, sigma = (v.float()[:, None] for v in VPSDE().alpha_sigma(t.double()))
        logw = -((x[:, None] - alpha[:, :, None] * centres[None]) ** 2).sum(-1) / (2 * sigma**2)
        x0_hat = logw.softmax(1) @ centres  # E[x0 | x_t]
        return (x - alpha * x0_hat) / sigma

    return eps


def _eval_loss(model, points, n=4096):
    """DSM loss on fixed held-out draws of (x0, t, eps)."""
    from scoregen.losses import dsm_loss, sample_times

    g = torch.Generator().manual_seed(123)
    x0 = points[torch.randint(0, len(points), (n,), generator=g)]
    t = sample_times(model, n, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return dsm_loss(model, x0, t=t, noise=noise).item()


def test_tiny_model_overfits_tiny_set(tmp_path):
    """On 4 points, 300 steps cut the DSM loss by >= 3x (measured ~4x: 1.03 -> 0.26) and
    the excess over the Bayes-optimal loss (0.128) by >= 4x (measured ~7x), for the EMA."""
    points = make_points(64)
    tr = make_trainer(tmp_path, width=64, lr=1e-2, batch_size=32, ema_decay=0.99)
    optimum = _eval_loss(ScoreModel(_bayes_optimal_eps(points[:4]), VPSDE(), "eps"), points)
    before = _eval_loss(tr.model, points)
    tr.fit(points, steps=300)
    after = _eval_loss(tr.ema_model, points)
    assert after < before / 3, (before, after)
    assert after - optimum < (before - optimum) / 4, (before, after, optimum)
    assert (tr.global_step, tr.epoch, tr.batch_in_epoch) == (300, 150, 0)  # 2 batches an epoch


def test_step_follows_adamw_and_lr_schedule(tmp_path):
    """One Trainer.step equals dsm_loss + AdamW by hand, with the warm-up lr."""
    from scoregen.losses import dsm_loss, sample_times
    from scoregen.train.batches import stable_seed

    tr = make_trainer(tmp_path, lr=0.1, warmup_steps=10, grad_clip=None, ema_decay=0.5)
    ref = ScoreModel(type(tr.model.net)(width=16), VPSDE(), "eps")
    ref.load_state_dict(tr.model.state_dict())
    opt = torch.optim.AdamW(ref.parameters(), lr=0.01, weight_decay=0.0)
    x0 = make_points(8)
    loss = tr.step(x0)
    g = torch.Generator().manual_seed(stable_seed(0, "step", 0))
    t = sample_times(ref, 8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    ref_loss = dsm_loss(ref, x0, t=t, noise=noise)
    ref_loss.backward()
    opt.step()
    assert loss == pytest.approx(ref_loss.item(), rel=1e-6)
    for (name, p), q in zip(tr.model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_conditional_step_uses_the_shared_draw_and_dropout(tmp_path):
    """Trainer.step with guidance dropout = draw_training_batch + drop_condition + dsm_loss."""
    from scoregen.losses import draw_training_batch, drop_condition, dsm_loss
    from scoregen.train.batches import stable_seed

    tr = make_trainer(tmp_path, cond_dim=2, p_uncond=0.5, seed=4)
    ref = ScoreModel(type(tr.model.net)(width=16, cond_dim=2), VPSDE(), "eps")
    ref.load_state_dict(tr.model.state_dict())
    pairs = make_pairs(8)
    x0, cond = pairs.tensors
    loss = tr.step(x0, cond)
    d = draw_training_batch(ref, x0.shape, p_uncond=0.5,
                            generator=torch.Generator().manual_seed(stable_seed(4, "step", 0)))
    assert 0 < int(d.keep.sum()) < 8
    ref_loss = dsm_loss(ref, x0, drop_condition(cond, d.keep), t=d.t, noise=d.noise)
    assert loss == pytest.approx(ref_loss.item(), rel=1e-6)


# ---------------------------------------------------------------------------- EMA
def test_ema_matches_hand_computation():
    lin = torch.nn.Linear(1, 1, bias=False)
    lin.register_buffer("count", torch.zeros(()))
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = EMA(lin, decay=0.9, warmup=True)
    expected, values = 1.0, [2.0, -1.0, 4.0, 0.5, 3.0]
    for n, v in enumerate(values, start=1):
        with torch.no_grad():
            lin.weight.fill_(v)
            lin.count.fill_(n)
        d = min(0.9, (1 + n) / (10 + n))
        assert ema.current_decay == pytest.approx(d)
        ema.update(lin)
        expected = d * expected + (1 - d) * v
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
        assert ema.module.count.item() == n  # buffers copied, not averaged
    assert ema_decay_at(1, 0.9) == pytest.approx(2 / 11)
    assert ema_decay_at(100, 0.9) == 0.9 and ema_decay_at(1, 0.9, warmup=False) == 0.9

    plain = EMA(lin, decay=0.5, warmup=False)
    w0 = lin.weight.item()
    with torch.no_grad():
        lin.weight.fill_(w0 + 2.0)
    plain.update(lin)
    assert plain.module.weight.item() == pytest.approx(w0 + 1.0)
    with pytest.raises(ValueError, match="decay"):
        EMA(lin, decay=1.0)


def test_trainer_ema_is_the_average_of_the_weight_trajectory(tmp_path):
    tr = make_trainer(tmp_path, ema_decay=0.8)
    name = "net.body.0.weight"
    hand = tr.model.state_dict()[name].clone()
    x0 = make_points(8)
    for n in range(1, 6):
        tr.step(x0)
        d = min(0.8, (1 + n) / (10 + n))
        hand = d * hand + (1 - d) * tr.model.state_dict()[name]
    torch.testing.assert_close(tr.ema_model.state_dict()[name], hand)
    assert isinstance(tr.ema_model, ScoreModel) and not tr.ema_model.training
    assert tr.ema.num_updates == 5


# ---------------------------------------------------------------------------- non-finite
def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    net = NaNNet(bad={2, 4}, width=16)  # the 3rd and 5th training calls
    tr = make_trainer(tmp_path, net=net, max_nonfinite=2)
    x0 = make_points(8)
    for step in range(1, 8):
        before = weights(tr)
        opt_before = {i: {k: v.clone() for k, v in st.items()}
                      for i, st in tr.optimizer.state_dict()["state"].items()}
        loss = tr.step(x0)
        after = weights(tr)
        changed = any(not torch.equal(before[k], after[k]) for k in before)
        if step in (3, 5):
            assert math.isnan(loss)
            assert not changed, f"skipped step {step} changed the weights or the EMA"
            for idx, st in tr.optimizer.state_dict()["state"].items():
                for key, v in st.items():
                    assert torch.equal(v, opt_before[idx][key]), (step, idx, key)
        else:
            assert math.isfinite(loss) and changed
    assert tr.skipped_steps == 2 and tr.global_step == 7
    assert tr.ema.num_updates == 5
    events = [r["step"] for r in tr.read_metrics() if r.get("event") == "nonfinite"]
    assert events == [3, 5]
    path = tr.save()
    ck = load_checkpoint(path)
    bad = [k for k, v in ck.tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    assert not bad, bad
    assert ck.state["skipped_steps"] == 2


def test_consecutive_nonfinite_steps_stop_training_naming_the_step(tmp_path):
    net = NaNNet(width=16)
    tr = make_trainer(tmp_path, net=net, max_nonfinite=3, checkpoint_every=2)
    steps_seen: list[int] = []

    def poison_after_4(trainer, step, loss):
        steps_seen.append(step)
        if step == 4:
            net.bad = {math.inf}

    with pytest.raises(NonFiniteLossError, match=r"stopped at step 7: 3 consecutive.*5\.\.7"):
        tr.fit(make_points(), steps=20, on_step_end=poison_after_4)
    assert steps_seen == [1, 2, 3, 4, 5, 6]  # step 7 raised before its hook
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step_00000002.safetensors", "step_00000004.safetensors", "step_00000006.safetensors"]
    ck = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert all(v.isfinite().all() for v in ck.tensors.values() if v.is_floating_point())


# ---------------------------------------------------------------------------- resume
def _run_script(*args: str, wait_for: str, timeout: float = 120) -> str:
    """Start train_kill.py, read stdout until ``wait_for``, SIGKILL it; returns its output."""
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "train_kill.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.strip() == wait_for:
                break
        else:
            proc.wait(timeout=timeout)
            raise AssertionError(f"script ended without {wait_for}: {''.join(out)}"
                                 f"{proc.stderr.read()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=timeout)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return "".join(out)


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    """SIGKILL after step 7 (checkpoints every 3 steps, 5 batches an epoch, dropout on):
    resuming from step 6 reproduces the losses and the final weights bit for bit."""
    steps = 12
    ref = make_trainer(tmp_path / "ref", dropout=0.1, checkpoint_every=3)
    ref.fit(make_points(), steps=steps)
    ref_losses = _losses(ref)
    assert sorted(ref_losses) == list(range(1, steps + 1))

    run = tmp_path / "killed"
    _run_script(str(run), "--steps", str(steps), "--pause-at", "7", wait_for="PAUSED")
    assert latest_checkpoint(run / "checkpoints").name == "step_00000006.safetensors"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) == 7  # the killed run logged past its checkpoint

    resumed = make_trainer(run, dropout=0.1, checkpoint_every=3)
    assert resumed.resume() and resumed.global_step == 6
    assert (resumed.epoch, resumed.batch_in_epoch) == (1, 1)
    resumed.fit(make_points(), steps=steps)
    steps_logged = [r["step"] for r in resumed.read_metrics() if "event" not in r]
    assert steps_logged == list(range(1, steps + 1))  # step 7 of the killed run dropped
    assert _losses(resumed) == ref_losses  # exact, not approximate
    w_ref, w_res = weights(ref), weights(resumed)
    for k in w_ref:
        assert torch.equal(w_ref[k], w_res[k]), k
    opt_ref, opt_res = ref.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in opt_ref:
        for key in opt_ref[i]:
            assert torch.equal(opt_ref[i][key], opt_res[i][key]), (i, key)


def test_resume_without_checkpoint_is_a_no_op_and_missing_path_raises(tmp_path):
    tr = make_trainer(tmp_path)
    assert tr.resume() is False and tr.global_step == 0
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        tr.resume(tmp_path / "nope.safetensors")


def test_train_seconds_add_up_across_resume(tmp_path, monkeypatch):
    """Wall time inside fit() is saved with the checkpoint and continues after resume,
    so a report of a killed-and-resumed run states the whole training time."""
    clock = iter(float(i) for i in range(10_000))  # each perf_counter call: +1 s
    monkeypatch.setattr("scoregen.train.trainer.time.perf_counter", lambda: next(clock))
    tr = make_trainer(tmp_path)
    first = tr.fit(make_points(), steps=2)["train_seconds"]
    assert first > 0 and tr.train_seconds == first
    saved = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints")).state
    assert 0 < saved["train_seconds"] <= first
    again = make_trainer(tmp_path)
    again.resume()
    assert again.train_seconds == saved["train_seconds"]
    assert again.fit(make_points(), steps=4)["train_seconds"] > saved["train_seconds"]


def test_resume_with_changed_train_config_warns(tmp_path):
    tr = make_trainer(tmp_path)
    tr.fit(make_points(), steps=2)
    other = make_trainer(tmp_path, lr=0.5, weight_decay=0.1)
    with pytest.warns(UserWarning, match=r"lr: 0\.01 -> 0\.5; weight_decay: 0\.0 -> 0\.1"):
        other.resume()
    assert other.optimizer.param_groups[0]["weight_decay"] == 0.1
    other.fit(make_points(), steps=3)
    assert other.optimizer.param_groups[0]["lr"] == 0.5


def test_run_info_is_saved_and_a_different_one_is_refused_on_resume(tmp_path):
    """A lung run is not continued as an infection run; a key the old run lacked is fine."""
    tr = make_trainer(tmp_path, run_info={"task": "lung", "image_size": 64})
    tr.fit(make_points(), steps=2)
    ck = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ck.run_info == {"task": "lung", "image_size": 64}
    other = make_trainer(tmp_path, run_info={"task": "infection", "image_size": 64})
    with pytest.raises(CheckpointMismatchError, match=r"run_info\.task: checkpoint 'lung'"):
        other.resume()
    assert make_trainer(tmp_path, run_info={"task": "lung", "mask": "lung"}).resume()
    with pytest.raises(TypeError, match="run_info must be a mapping"):
        make_trainer(tmp_path, run_info=["lung"])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_metadata_with_a_non_finite_number_is_refused_up_front(tmp_path, bad):
    """A NaN in run_info or model_config used to be written as a bare NaN token (not
    standard JSON: other readers of the header reject it) and, since NaN != NaN, made
    every resume of the run fail as a config mismatch."""
    with pytest.raises(ValueError, match="run_info holds a NaN or infinite number"):
        make_trainer(tmp_path, run_info={"best": bad})
    model = make_trainer(tmp_path).model
    with pytest.raises(ValueError, match="model_config holds a NaN or infinite number"):
        Trainer(model, TrainConfig(), tmp_path, model_config={"dropout": [0.1, bad]})
    with pytest.raises(TypeError, match="run_info must be JSON"):
        make_trainer(tmp_path, run_info={"path": Path("x")})
    with pytest.raises(ValueError, match="state holds a NaN"):
        save_checkpoint(tmp_path / "c.safetensors", model, state={"loss": bad})
    assert not (tmp_path / "c.safetensors").exists()


def test_resume_with_changed_host_options_is_silent(tmp_path):
    """Host options cannot change the weights: never compared, never warned about."""
    import warnings

    tr = make_trainer(tmp_path, log_every=1, keep_last=100, checkpoint_every=1)
    tr.fit(make_points(), steps=2)
    other = make_trainer(tmp_path, log_every=3, keep_last=4, checkpoint_every=5,
                         num_workers=1, max_nonfinite=2, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert other.resume()
    ck = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert ck.host_options == tr.host.to_dict()  # kept for the record
    assert ck.train_config == tr.config.to_dict()


def test_resume_from_a_checkpoint_saved_before_the_split(tmp_path):
    """Its train_config also holds the host options; those differ here and are ignored,
    a changed run field is still reported."""
    import warnings

    from scoregen.train.checkpoint import save_checkpoint

    tr = make_trainer(tmp_path)
    legacy = {**tr.config.to_dict(), **HostOptions(progress=True, keep_last=7).to_dict()}
    path = save_checkpoint(tmp_path / "old.safetensors", tr.model, ema=tr.ema,
                           optimizer=tr.optimizer, step=0, train_config=legacy,
                           model_config=tr.model_config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_trainer(tmp_path).resume(path)
    with pytest.warns(UserWarning, match=r"changed TrainConfig \(lr: 0\.01 -> 0\.5\)"):
        make_trainer(tmp_path, lr=0.5).resume(path)


# ---------------------------------------------------------------------------- fit & logging
def test_fit_epochs_hooks_logs_and_a_plot_drawn_by_the_hook(tmp_path):
    """The trainer draws no figure (not in save(), not in fit()); a hook can, from the log."""
    from scoregen.plotting import plot_curves
    from scoregen.train import loss_curve

    seen = []

    def on_epoch_end(trainer, epoch):
        seen.append((epoch, trainer.global_step))
        steps, losses = loss_curve(trainer.read_metrics())
        plot_curves({"loss": (steps, losses)}, tmp_path / "plots" / f"loss_{epoch}.png")
        return {"val_metric": float(epoch)}

    tr = make_trainer(tmp_path, log_every=2, checkpoint_every=4)
    result = tr.fit(make_points(40), epochs=3, on_epoch_end=on_epoch_end)
    assert seen == [(0, 5), (1, 10), (2, 15)]  # 40 samples / batch 8 = 5 steps an epoch
    assert result["step"] == 15 and result["epoch"] == 3
    recs = tr.read_metrics()
    assert [r["step"] for r in recs if "event" not in r] == [2, 4, 6, 8, 10, 12, 14]
    assert [r["val_metric"] for r in recs if r.get("event") == "epoch_end"] == [0.0, 1.0, 2.0]
    assert recs[0]["event"] == "run_start" and recs[0]["run_id"] == tr.run_id
    assert {"loss", "lr", "grad_norm", "it_per_s", "epoch"} <= set(recs[1])
    assert loss_curve(recs) == ([2, 4, 6, 8, 10, 12, 14],
                                [r["loss"] for r in recs if "event" not in r])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == []  # nothing drawn by the trainer
    png = (tmp_path / "plots" / "loss_2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000004.safetensors", "step_00000008.safetensors",
                     "step_00000012.safetensors", "step_00000015.safetensors"]


def test_fit_accepts_conditional_datasets_dataloaders_and_dicts(tmp_path):
    pairs = make_pairs(16)
    tr = make_trainer(tmp_path / "a", cond_dim=2, p_uncond=0.5)
    tr.fit(pairs, steps=3)
    assert tr.global_step == 3

    loader = torch.utils.data.DataLoader(pairs, batch_size=4)
    tr = make_trainer(tmp_path / "b", cond_dim=2)
    tr.fit(loader, steps=6,
           batch_fn=lambda b: default_batch_fn({"x0": b[0], "cond": b[1]}))
    assert (tr.global_step, tr.epoch, tr.batch_in_epoch) == (6, 1, 2)

    one_shot = iter([make_points(8)])
    with pytest.raises(ValueError, match="no batch in epoch 1"):
        make_trainer(tmp_path / "c").fit(one_shot, steps=5)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        make_trainer(tmp_path / "d", batch_size=64).fit(make_points(40), steps=1)


def test_keep_last_k(tmp_path):
    tr = make_trainer(tmp_path, checkpoint_every=1, keep_last=2)
    tr.fit(make_points(), steps=5)
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000004.safetensors", "step_00000005.safetensors"]
    manual = tr.save(tmp_path / "keep_me.safetensors")
    tr.fit(make_points(), steps=7)
    assert manual.exists()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step_00000006.safetensors", "step_00000007.safetensors"]


# ---------------------------------------------------------------------------- precision
def test_bf16_autocast_on_cpu_with_channels_last(tmp_path):
    torch.manual_seed(0)
    model = ScoreModel(TinyConv(), VPSDE(), "eps")
    cfg = TrainConfig(lr=1e-3, batch_size=4, precision="bf16")
    host = HostOptions(channels_last=True, progress=False, log_every=1, checkpoint_every=0)
    tr = Trainer(model, cfg, tmp_path, host=host)
    assert isinstance(tr.autocast, torch.autocast) and tr.autocast.fast_dtype == torch.bfloat16
    ctx = tr.autocast
    tr.fit(torch.randn(8, 1, 8, 8), steps=3)
    assert tr.autocast is ctx  # chosen once
    assert all(math.isfinite(v) for v in _losses(tr).values())
    w = tr.model.net.inp.weight
    assert w.dtype == torch.float32 and w.is_contiguous(memory_format=torch.channels_last)


def test_fp16_uses_a_grad_scaler(tmp_path):
    with pytest.warns(UserWarning, match="bf16"):
        tr = make_trainer(tmp_path, precision="fp16")
    assert tr.scaler.is_enabled()
    tr.fit(make_points(), steps=3)
    assert tr.global_step == 3
    ck = load_checkpoint(tr.save())
    assert ck.scaler_state()["scale"] > 0


@pytest.mark.slow
def test_torch_compile(tmp_path):
    tr = make_trainer(tmp_path, compile=True)
    tr.fit(make_points(), steps=3)
    assert tr.global_step == 3
    assert set(tr.model.state_dict()) == set(load_checkpoint(tr.save()).model_state())


# ---------------------------------------------------------------------------- trust (issue 10)
# Each test below failed on the trainer before issue 10's trust fixes (named per test).
def _names(run: Path) -> list[str]:
    return [p.name for p in list_checkpoints(run / "checkpoints")]


def test_fresh_run_refuses_a_folder_holding_another_runs_checkpoints(tmp_path):
    """Defect 1: a fresh run into a used out_dir used to prune the other run's checkpoints
    and append to its log. Now it refuses, naming resume, another out_dir and overwrite,
    and touches nothing."""
    from scoregen.train import ExistingRunError

    first = make_trainer(tmp_path, checkpoint_every=2, keep_last=2)
    first.fit(make_points(), steps=6)
    before_names, before_log = _names(tmp_path), (tmp_path / "metrics.jsonl").read_text()
    second = make_trainer(tmp_path, lr=0.5, checkpoint_every=1, keep_last=1)
    with pytest.raises(ExistingRunError, match=r"(?s)another run.*resume\(\) \(--resume\).*"
                                               r"another out_dir \(--out\).*--overwrite"):
        second.fit(make_points(), steps=3)
    assert _names(tmp_path) == before_names == ["step_00000004.safetensors",
                                                "step_00000006.safetensors"]
    assert (tmp_path / "metrics.jsonl").read_text() == before_log
    with pytest.raises(ExistingRunError):
        second.step(make_points(8))  # a manual step claims the folder too
    assert second.global_step == 0


def test_overwrite_moves_the_old_run_aside_and_resume_continues_the_new_one(tmp_path):
    """Defect 1: ``on_existing="overwrite"`` moves checkpoints/ and metrics.jsonl to
    previous-<old run id>/; a later resume continues the new run, and says which."""
    old = make_trainer(tmp_path, checkpoint_every=2)
    old.fit(make_points(), steps=4)
    new = make_trainer(tmp_path, lr=0.02, checkpoint_every=2, on_existing="overwrite")
    assert new.run_id != old.run_id
    with pytest.warns(UserWarning, match=f"moved the checkpoints and log .*previous-{old.run_id}"):
        new.fit(make_points(), steps=2)
    aside = tmp_path / f"previous-{old.run_id}"
    assert _names(aside) == ["step_00000002.safetensors", "step_00000004.safetensors"]
    assert all(load_checkpoint(p).run_id == old.run_id
               for p in list_checkpoints(aside / "checkpoints"))
    assert [r["step"] for r in MetricsLog(aside / "metrics.jsonl").read()
            if "event" not in r] == [1, 2, 3, 4]
    assert _names(tmp_path) == ["step_00000002.safetensors"]
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints")).run_id == new.run_id

    again = make_trainer(tmp_path, lr=0.02, checkpoint_every=2)
    assert again.resume() and again.run_id == new.run_id and again.global_step == 2
    events = [r for r in again.read_metrics() if "event" in r]
    assert [(e["event"], e["run_id"]) for e in events] == [("run_start", new.run_id),
                                                           ("resume", new.run_id)]
    assert events[1]["from"] == "step_00000002.safetensors"


def test_resume_never_continues_a_folder_that_mixes_two_runs(tmp_path):
    """Defect 1: a checkpoint of another run beside the run's own used to be resumed
    silently (the highest step wins). Now resume names the mix."""
    import shutil

    from scoregen.train import ExistingRunError

    ours = make_trainer(tmp_path / "ours", checkpoint_every=2)
    ours.fit(make_points(), steps=4)
    theirs = make_trainer(tmp_path / "theirs", checkpoint_every=0)
    theirs.fit(make_points(), steps=6)
    shutil.copy(latest_checkpoint(tmp_path / "theirs" / "checkpoints"),
                tmp_path / "ours" / "checkpoints" / "step_00000006.safetensors")
    with pytest.raises(ExistingRunError, match=rf"another run.*run {ours.run_id}"):
        make_trainer(tmp_path / "ours").resume()


def test_pruning_deletes_only_the_runs_own_checkpoints(tmp_path):
    """Defect 1: keep_last used to keep the highest step numbers of the folder, whoever
    wrote them. A file of another run that appears beside a live run survives its pruning."""
    import shutil

    other = make_trainer(tmp_path / "other")
    other.fit(make_points(), steps=1)
    tr = make_trainer(tmp_path / "run", checkpoint_every=1, keep_last=1)
    tr.fit(make_points(), steps=2)
    foreign = tmp_path / "run" / "checkpoints" / "step_00000099.safetensors"
    shutil.copy(latest_checkpoint(tmp_path / "other" / "checkpoints"), foreign)
    tr.fit(make_points(), steps=5)
    assert _names(tmp_path / "run") == ["step_00000005.safetensors", foreign.name]


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path):
    """Defect 1: two trainers on one folder at once both ran and overwrote each other."""
    from scoregen.train import OutDirInUseError

    errors = []

    def start_another(trainer, step, loss):
        if step == 2:
            intruder = make_trainer(tmp_path, on_existing="overwrite")
            with pytest.raises(OutDirInUseError) as err:
                intruder.fit(make_points(), steps=3)
            errors.append(str(err.value))
            with pytest.raises(OutDirInUseError):
                make_trainer(tmp_path).resume()

    tr = make_trainer(tmp_path, checkpoint_every=1)
    tr.fit(make_points(), steps=3, on_step_end=start_another)
    assert len(errors) == 1
    assert f"pid {os.getpid()}" in errors[0] and tr.run_id in errors[0]
    assert "--out" in errors[0]
    assert {load_checkpoint(p).run_id for p in list_checkpoints(tmp_path / "checkpoints")} \
        == {tr.run_id}
    assert make_trainer(tmp_path).resume()  # released when fit returned


def test_a_hand_written_step_loop_holds_the_folder_until_close(tmp_path):
    """A loop of step() calls (no fit) used to lock the folder only while its first step
    claimed it: another trainer could start writing between two steps."""
    from scoregen.train import OutDirInUseError

    x = make_points()[:8]
    with make_trainer(tmp_path) as tr:
        tr.step(x)
        with pytest.raises(OutDirInUseError, match=rf"{tr.run_id}.*call its close\(\)"):
            make_trainer(tmp_path, on_existing="overwrite").fit(make_points(), steps=1)
        tr.step(x)
        tr.save()  # nests inside the held folder
        with pytest.raises(OutDirInUseError):
            make_trainer(tmp_path).resume()
        tr.fit(make_points(), steps=4)  # fit inside the hold: still held after it returns
        with pytest.raises(OutDirInUseError):
            make_trainer(tmp_path).resume()
    after = make_trainer(tmp_path)  # closed by the with block: free
    assert after.resume() and after.global_step == 4 and after.run_id == tr.run_id
    tr.close()  # twice is harmless

    def steps_then_drop(folder):  # no close(): the trainer is garbage when this returns
        dropped = make_trainer(folder)
        dropped.step(x)
        dropped.save()
        return dropped.run_id

    run_id = steps_then_drop(tmp_path / "dropped")
    again = make_trainer(tmp_path / "dropped")  # the lock of a dropped trainer is let go
    assert again.resume() and again.run_id == run_id


def test_the_lock_of_a_killed_trainer_is_free_and_a_live_one_refuses_another_process(tmp_path):
    """Kill inside the lock path: while train_kill.py pauses inside fit (holding the
    lock) a second process is refused; after SIGKILL the lock is gone with the process
    (the .lock file stays) and the run resumes, continuing the same run id."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen([sys.executable, str(SCRIPTS / "train_kill.py"), str(run),
                               "--steps", "12", "--pause-at", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "PAUSED", holder.stderr.read()
        second = subprocess.run([sys.executable, str(SCRIPTS / "train_kill.py"), str(run),
                                 "--steps", "12", "--on-existing", "resume"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 3, second.stdout + second.stderr
        assert second.stdout.startswith("REFUSED OutDirInUseError")
        assert f"pid {holder.pid}" in second.stdout
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        holder.stdout.close()
        holder.stderr.close()
    assert (run / ".lock").exists()
    killed_run = load_checkpoint(latest_checkpoint(run / "checkpoints")).run_id
    resumed = make_trainer(run, dropout=0.1, checkpoint_every=3)
    assert resumed.resume() and resumed.global_step == 3 and resumed.run_id == killed_run
    resumed.fit(make_points(), steps=6)
    assert {load_checkpoint(p).run_id for p in list_checkpoints(run / "checkpoints")} \
        == {killed_run}


def test_a_kill_while_moving_the_old_run_aside_loses_nothing(tmp_path):
    """Kill inside the identity path: SIGKILL after checkpoints/ was moved aside but
    before metrics.jsonl was. Running again with overwrite finishes the move into the
    same previous-<run id>/ and starts a clean run."""
    run = tmp_path / "run"
    old = make_trainer(run, checkpoint_every=2)
    old.fit(make_points(), steps=4)
    old_log = (run / "metrics.jsonl").read_text()
    _run_script(str(run), "--steps", "6", "--on-existing", "overwrite", "--stall-move",
                wait_for="MOVING")
    aside = run / f"previous-{old.run_id}"
    assert _names(aside) == ["step_00000002.safetensors", "step_00000004.safetensors"]
    assert (run / "metrics.jsonl").read_text() == old_log  # not moved yet
    new = make_trainer(run, checkpoint_every=2, on_existing="overwrite")
    with pytest.warns(UserWarning, match=f"the log .*previous-{old.run_id}"):
        new.fit(make_points(), steps=2)
    assert (aside / "metrics.jsonl").read_text() == old_log
    assert _names(aside) == ["step_00000002.safetensors", "step_00000004.safetensors"]
    recs = new.read_metrics()
    assert recs[0]["event"] == "run_start" and recs[0]["run_id"] == new.run_id
    assert [r["step"] for r in recs if "event" not in r] == [1, 2]


@pytest.mark.parametrize("field,value", [
    ("lr", math.inf), ("lr", math.nan), ("weight_decay", math.inf), ("grad_clip", math.inf),
    ("min_lr", math.nan), ("ema_decay", math.nan), ("betas", (0.9, math.nan)),
], ids=["lr-inf", "lr-nan", "weight_decay-inf", "grad_clip-inf", "min_lr-nan",
        "ema_decay-nan", "betas-nan"])
def test_config_refuses_non_finite_numbers(field, value):
    """Defect 2: TrainConfig(lr=inf) and weight_decay=inf were accepted."""
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
        TrainConfig(**{field: value})


def test_weights_made_non_finite_by_an_update_are_never_saved(tmp_path):
    """Defect 2: an lr of inf (refused by TrainConfig now, forced here) wrote NaN into
    every weight and EMA tensor, those checkpoints were kept and fit returned normally."""
    from scoregen.train import NonFiniteWeightsError

    tr = make_trainer(tmp_path, checkpoint_every=1, max_nonfinite=100)
    tr.fit(make_points(), steps=2)
    object.__setattr__(tr.config, "lr", math.inf)  # what TrainConfig(lr=inf) used to be
    with pytest.raises(NonFiniteWeightsError, match=r"after step 3 the EMA and weights hold "
                                                    r"NaN or inf: refusing to save"):
        tr.fit(make_points(), steps=6)
    assert _names(tmp_path) == ["step_00000001.safetensors", "step_00000002.safetensors"]
    for p in list_checkpoints(tmp_path / "checkpoints"):
        ck = load_checkpoint(p)
        assert all(v.isfinite().all() for v in ck.tensors.values() if v.is_floating_point())
    with pytest.raises(NonFiniteWeightsError):
        tr.save()


def test_weights_are_checked_after_a_skipped_step_without_a_save(tmp_path):
    """Defect 2: with no checkpoint due, NaN weights make the next loss NaN; that skip
    checks the weights and names the divergence at once (not after max_nonfinite skips)."""
    from scoregen.train import NonFiniteWeightsError

    tr = make_trainer(tmp_path, max_nonfinite=100, check_finite_every=0)
    x0 = make_points(8)
    tr.step(x0)
    with torch.no_grad():
        next(tr.model.parameters())[0, 0] = math.nan
    with pytest.raises(NonFiniteWeightsError, match="after step 2 the weights hold NaN"):
        tr.step(x0)


def test_a_diverging_run_keeps_its_last_good_checkpoint_and_says_it_is_not_ok(tmp_path):
    """Defect 2: lr 1e6 on the tiny MLP: from step 2 on every gradient is inf while the
    weights stay huge but finite. keep_last used to prune the good checkpoint and keep
    only diverged ones, and fit reported nothing."""
    tr = make_trainer(tmp_path, lr=1e6, checkpoint_every=1, keep_last=2, max_nonfinite=1000)
    result = tr.fit(make_points(), steps=12)
    assert tr.first_skipped_step == 2 and tr.skipped_steps == 11
    assert _names(tmp_path) == ["step_00000001.safetensors", "step_00000011.safetensors",
                                "step_00000012.safetensors"]
    good = tmp_path / "checkpoints" / "step_00000001.safetensors"
    assert not load_checkpoint(good).state["suspect"]
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints")).state["suspect"]
    assert result["ok"] is False
    assert result["status"].startswith(f"NOT OK: run {tr.run_id} skipped 11 step")
    assert "first at step 2" in result["status"] and "step_00000001" in result["status"]
    assert make_trainer(tmp_path / "fine").fit(make_points(), steps=2)["ok"] is True


def test_resume_keeps_the_epoch_row_of_the_checkpoints_step(tmp_path):
    """Defect 3: the epoch_end row logged at the checkpoint's own step was dropped on
    resume (9 of 60 validation rows lost over 20 kills)."""
    def hook(trainer, epoch):
        return {"val": float(epoch)}

    tr = make_trainer(tmp_path, checkpoint_every=5, log_every=5)  # 5 steps an epoch
    tr.fit(make_points(), steps=10, on_epoch_end=hook)
    at_5 = tmp_path / "checkpoints" / "step_00000005.safetensors"
    resumed = make_trainer(tmp_path, checkpoint_every=5, log_every=5)
    assert resumed.resume(at_5) and resumed.epoch == 1
    assert [r["epoch"] for r in resumed.read_metrics() if r.get("event") == "epoch_end"] == [0]
    resumed.fit(make_points(), steps=10, on_epoch_end=hook)
    rows = resumed.read_metrics()
    assert [(r["epoch"], r["val"]) for r in rows if r.get("event") == "epoch_end"] == [
        (0, 0.0), (1, 1.0)]
    assert [r["step"] for r in rows if "event" not in r] == [5, 10]


def test_a_failing_epoch_hook_still_leaves_the_epochs_checkpoint(tmp_path):
    """Defect 4: an exception in the epoch hook aborted fit before the epoch's checkpoint
    was written. Now the checkpoint is written (the epoch's row records the error) and a
    resumed run starts the next epoch: no epoch runs twice, no row is lost."""
    calls = []

    def flaky(trainer, epoch):
        calls.append(epoch)
        if epoch == 1 and len(calls) == 2:
            raise RuntimeError("torch.cat(): expected a non-empty list")
        return {"val": float(epoch)}

    tr = make_trainer(tmp_path)  # checkpoint_every=0: only at the end of fit()
    with pytest.raises(RuntimeError, match="non-empty list"):
        tr.fit(make_points(), epochs=3, on_epoch_end=flaky)
    ck = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert (ck.step, ck.state["epoch"], ck.state["batch_in_epoch"]) == (10, 2, 0)
    resumed = make_trainer(tmp_path)
    assert resumed.resume() and resumed.global_step == 10
    resumed.fit(make_points(), epochs=3, on_epoch_end=flaky)
    assert calls == [0, 1, 2]
    rows = [r for r in resumed.read_metrics() if r.get("event") == "epoch_end"]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[1]["error"] == "RuntimeError: torch.cat(): expected a non-empty list"


def test_metrics_jsonl_is_strict_json_and_reads_back_non_finite_values(tmp_path):
    """Defect 5: metrics.jsonl held bare NaN / Infinity tokens (not JSON)."""
    def strict(text):
        def refuse(token):
            raise ValueError(f"bare {token} in metrics.jsonl")
        return json.loads(text, parse_constant=refuse)

    tr = make_trainer(tmp_path, net=NaNNet(bad={1}, width=16))
    tr.fit(make_points(), steps=3, on_epoch_end=lambda t, e: {"inf_metric": -math.inf})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    parsed = [strict(line) for line in lines]
    nonfinite = [r for r in parsed if r.get("event") == "nonfinite"]
    assert nonfinite and nonfinite[0]["loss"] == "NaN"
    back = [r for r in tr.read_metrics() if r.get("event") == "nonfinite"][0]
    assert math.isnan(back["loss"]) and math.isnan(back["grad_norm"])
    assert [r["loss"] for r in tr.read_metrics() if r.get("step") == 2 and "event" not in r] \
        != [] and math.isnan(_losses(tr)[2])


def test_on_existing_resume_makes_fit_continue_the_run_there(tmp_path):
    """``on_existing="resume"``: fit() resumes what the folder holds, or starts fresh."""
    first = make_trainer(tmp_path, on_existing="resume", checkpoint_every=2)
    first.fit(make_points(), steps=4)
    again = make_trainer(tmp_path, on_existing="resume", checkpoint_every=2)
    assert again.fit(make_points(), steps=6)["run_id"] == first.run_id
    assert again.resumed_from.name == "step_00000004.safetensors"
    assert [r["step"] for r in again.read_metrics() if "event" not in r] == list(range(1, 7))
    with pytest.raises(ValueError, match=r"on_existing must be one of \('refuse', 'resume', "
                                         r"'overwrite'\), got 'append'"):
        make_trainer(tmp_path, on_existing="append")


def test_a_run_id_read_from_a_file_never_names_a_path_outside_out_dir(tmp_path):
    from scoregen.train.run_dir import move_run_aside

    (tmp_path / "metrics.jsonl").write_text("{}\n")
    dest = move_run_aside(tmp_path, "../../escape", ("metrics.jsonl",))
    assert dest == tmp_path / "previous-unknown" and (dest / "metrics.jsonl").is_file()


def test_a_checkpoint_written_before_run_ids_is_refused_fresh_and_resumed_as_its_own(tmp_path):
    """A folder of an older scoregen (checkpoints without a run id): a fresh run refuses
    it; a resumed run adopts those files as its own (and may prune them)."""
    from scoregen.train import ExistingRunError
    from scoregen.train.checkpoint import save_checkpoint

    tr = make_trainer(tmp_path / "src")
    tr.fit(make_points(), steps=2)
    old = save_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000002.safetensors",
                          tr.model, ema=tr.ema, optimizer=tr.optimizer, step=2,
                          train_config=tr.config.to_dict(), model_config=tr.model_config,
                          state={"epoch": 0, "batch_in_epoch": 2})
    assert load_checkpoint(old).run_id is None
    with pytest.raises(ExistingRunError, match="run unknown"):
        make_trainer(tmp_path / "run").fit(make_points(), steps=3)
    resumed = make_trainer(tmp_path / "run", checkpoint_every=1, keep_last=1)
    assert resumed.resume() and resumed.global_step == 2
    resumed.fit(make_points(), steps=4)
    assert _names(tmp_path / "run") == ["step_00000004.safetensors"]


def test_after_leave_distributed_the_models_still_sample_but_step_refuses(tmp_path):
    """leave_distributed() drops the DDP wrapper before the process group is destroyed;
    a later step would train without syncing gradients, so it is refused in one line."""
    x = make_points()[:8]
    tr = make_trainer(tmp_path)
    tr.fit(make_points(), steps=2)
    tr.leave_distributed()
    with pytest.raises(RuntimeError, match="left the process group"):
        tr.step(x)
    out = tr.ema_model.eval()(x, torch.full((8,), 0.5))  # the models are untouched
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert tr.save().is_file()  # and the run folder still takes a checkpoint
