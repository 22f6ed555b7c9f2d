"""benchmarks/synthesis.py end to end on the phantom with tiny sizes, and its feature network
(:class:`scoregen.nn.FeatureClassifier`): shapes, config checks, that its training loop
learns a separable toy, that a saved classifier is reused exactly, and that the benchmark
tells an untrained model's noise from the real-vs-real floor."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import scoregen as sg
from scoregen.nn import ClassifierConfig, FeatureClassifier
from scoregen.train.checkpoint import save_checkpoint

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "synthesis.py"
TINY = ["--size", "16", "--phantom-train", "64", "--phantom-val", "32", "--num-samples", "16",
        "--sample-batch", "8", "--classifier-epochs", "1", "--classifier-batch", "16",
        "--kid-subsets", "3", "--grid-images", "4", "--no-progress"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("synthesis_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny unconditional model at 16x16: its samples are noise."""
    cfg = sg.UNetConfig.from_preset("tiny", in_channels=1, out_channels=1)
    torch.manual_seed(0)
    model = sg.ScoreModel(sg.UNet(cfg), sg.VPSDE.ddpm(), prediction="eps")
    path = tmp_path_factory.mktemp("ckpt") / "step_00000000.safetensors"
    return save_checkpoint(path, model, ema=sg.EMA(model), model_config=cfg.to_dict(),
                           run_info={"image_size": 16})


@pytest.fixture(scope="module")
def result(bench, checkpoint, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("synthesis")
    assert bench.main([*TINY, "--checkpoint", str(checkpoint), "--samplers", "ddim,heun,ode:heun2",
                       "--nfe", "2,3", "--out", str(out)]) == 0
    return json.loads((out / "synthesis.json").read_text()), out


# ------------------------------------------------------------------------ feature network
def test_classifier_shapes_and_feature_layer() -> None:
    net = FeatureClassifier(ClassifierConfig(num_classes=3, feature_dim=128))
    x = torch.randn(5, 1, 64, 64)
    feats = net.features(x)
    assert feats.shape == (5, 128) and net(x).shape == (5, 3)
    assert torch.allclose(net.head(feats), net(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"widths": (16, 30)}, "divide"), ({"num_classes": 0}, "num_classes"),
     ({"widths": ()}, "widths")],
    ids=["groups", "classes", "no-blocks"],
)
def test_classifier_config_refuses_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassifierConfig(**kwargs)


def test_classifier_config_round_trips_and_input_is_checked() -> None:
    cfg = ClassifierConfig(in_channels=1, num_classes=2, widths=(8, 16), feature_dim=32)
    assert ClassifierConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    net = FeatureClassifier(cfg)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 4x4"):
        net(torch.zeros(2, 1, 2, 2))


def test_training_loop_learns_a_separable_toy(bench) -> None:
    """Dark vs bright 16x16 images (means -0.5 / +0.5, noise 0.3): two epochs of a narrow
    net separate them (100 % when measured; a loop that does not learn stays near 50 %)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(128) % 2
    images = (labels.float() - 0.5).view(-1, 1, 1, 1) + 0.3 * torch.randn(128, 1, 16, 16,
                                                                          generator=g)
    net, losses = bench.train_classifier(images, labels, 2, epochs=2, batch_size=16, lr=2e-3,
                                         seed=0, device=torch.device("cpu"), progress=False,
                                         widths=(8, 16, 16, 16))
    _, logits = bench.predict(net, images)
    assert float((logits.argmax(1) == labels).float().mean()) >= 0.95
    assert losses[-1] < 0.8 * losses[0]


# -------------------------------------------------------------------------- end to end
def test_phantom_run_writes_every_output(result) -> None:
    data, out = result
    assert [(r["sampler"], r["nfe_budget"]) for r in data["rows"]] == [
        ("ddim", 2), ("ddim", 3), ("heun", 2), ("heun", 3), ("ode:heun2", 2), ("ode:heun2", 3)]
    # DDIM: one call a step; Heun: two a step, one for the last (budget 2 -> 1 step -> 1 NFE)
    assert [r["nfe"] for r in data["rows"]][:4] == [2, 3, 1, 3]
    for name in ("synthesis_nfe.png", "samples.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "Fréchet" in (out / "synthesis.md").read_text()
    assert data["classifier"]["classes"] == ["COVID-19", "Normal"]
    assert 0.0 <= data["classifier"]["val_accuracy"] <= 1.0
    assert data["floor"]["n"] == 16 and data["n_val"] == 32
    assert data["command"].startswith("python benchmarks/synthesis.py ")
    assert data["git_commit"] and data["hardware"]


def test_untrained_noise_is_far_worse_than_the_real_floor(result) -> None:
    """An untrained net's samples are clamped noise: every distance says so against the
    Train-vs-Val floor, and nothing is closer to Train than real Val images are."""
    data, _ = result
    floor = data["floor"]
    assert floor["precision"] > 0.5 and floor["recall"] > 0.5
    for r in data["rows"]:
        assert r["frechet"] > 5 * floor["frechet"]
        assert r["kid"] > floor["kid"] + 5 * floor["kid_std"]
        assert r["precision"] < floor["precision"] and r["recall"] < floor["recall"]
        pixel = r["memorisation_pixel"]
        assert pixel["generated_median"] > pixel["val_median"] and pixel["copy_fraction"] == 0
        assert r["raw_outside"] > 0.5


def test_copies_of_train_are_flagged_as_memorised(bench, result) -> None:
    """quality() on exact Train copies: distance 0 to Train, every copy below the Val p1."""
    data, out = result
    args = bench.parse_args([*TINY])
    train, val, _ = bench.load_data(args)
    net, _ = bench.load_classifier(out / "classifier.safetensors", torch.device("cpu"))
    train_feats, _ = bench.predict(net, train.images)
    val_feats, _ = bench.predict(net, val.images)
    ref = bench.reference_sets(train_feats, val_feats, train.images, val.images)
    q = bench.quality(train_feats[:16], train.images[:16], ref, args)
    assert q["memorisation_pixel"]["generated_median"] == 0.0
    assert q["memorisation_pixel"]["copy_fraction"] == 1.0
    assert q["memorisation_feature"]["copy_fraction"] == 1.0


def test_a_saved_classifier_is_reused_exactly(bench, result, tmp_path) -> None:
    data, out = result
    assert bench.main([*TINY, "--classifier", str(out / "classifier.safetensors"),
                       "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "synthesis.json").read_text())
    assert again["classifier"]["val_accuracy"] == data["classifier"]["val_accuracy"]
    assert again["floor"]["frechet"] == pytest.approx(data["floor"]["frechet"], rel=1e-12)
    assert again["rows"] == [] and not (tmp_path / "classifier.safetensors").exists()


def test_bad_arguments_are_refused(bench, checkpoint, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--samplers", "ddim,nope"])
    assert "unknown sampler" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--nfe", "5,0"])
    assert bench.main([*TINY, "--size", "32", "--checkpoint", str(checkpoint),
                       "--out", str(tmp_path)]) == 2
    assert "does not match the checkpoint" in capsys.readouterr().err


def test_the_fixed_grid_pf_ode_spends_the_budget_it_is_given(bench, result) -> None:
    """``ode:METHOD`` is the PF-ODE on a fixed grid: NFE = steps x calls + 1 (denoise)."""
    assert [bench.grid_steps("ode:heun2", n) for n in (3, 5, 10, 21)] == [1, 2, 4, 10]
    assert bench.grid_steps("ode:rk4", 9) == 2 and bench.grid_steps("ode:euler", 5) == 4
    rows = [r for r in result[0]["rows"] if r["sampler"] == "ode:heun2"]
    assert [(r["nfe_budget"], r["nfe"]) for r in rows] == [(2, 3), (3, 3)]  # at least 1 step
    with pytest.raises(SystemExit):
        bench.parse_args(["--samplers", "ode:dopri5"])  # adaptive: not a fixed grid


def test_default_output_is_under_runs(bench) -> None:
    assert bench.parse_args([]).out == Path("runs/synthesis")
