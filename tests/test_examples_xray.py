"""The X-ray examples and the segmentation benchmark, end to end on the phantom (tiny)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scoregen.segmentation import describe_augment, equalize_histogram, write_phantom_folder
from scoregen.train.checkpoint import load_checkpoint, write_checkpoint
from scoregen.train.checkpoint_dir import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--phantom-train", "48", "--phantom-val", "8", "--size", "16", "--batch-size", "16",
        "--epochs", "2", "--sampling-steps", "2", "--epoch-eval-samples", "4",
        "--epoch-eval-steps", "2", "--eval-samples", "8", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny phantom run shared by the tests below: (module, out folder, stdout)."""
    out = tmp_path_factory.mktemp("seg") / "run"
    example = _load("examples/covid_qu_seg.py")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert example.main([*TINY, "--task", "infection", "--out", str(out)]) == 0
    return example, out, buffer.getvalue()


def test_the_example_runs_on_the_phantom_and_writes_every_output(trained, capsys):
    _, out, _ = trained
    result = json.loads((out / "results.json").read_text())
    assert "phantom" in result["data"]
    assert result["steps"] == 2 * (48 // 16)
    for group in result["metrics"].values():
        assert 0.0 <= group["dice"] <= 1.0 and group["n_images"] >= 1
    assert "COVID-19" in result["metrics"]  # infection: also on COVID-19 images only
    for name in ("results.md", "epochs.json", "epochs.csv", "metrics.jsonl", "loss.png",
                 "figures/examples.png", "figures/dice.png"):
        assert (out / name).is_file(), name
    epochs = json.loads((out / "epochs.json").read_text())
    assert [row["epoch"] for row in epochs] == [0, 1]
    text = (out / "results.md").read_text()
    assert "| Dice |" in text and "seed (" not in text  # no seed column on the phantom
    # each group's table says how many images it has (COVID-19 is a part of all 8)
    n_covid = result["metrics"]["COVID-19"]["n_images"]
    assert f"[COVID-19], {n_covid} image" in text and "[all], 8 images" in text
    assert result["threads"] >= 1 and result["train_seconds"] >= 0
    assert result["seed"] == 0  # benchmarks/tables.py's seeds table groups runs by it
    assert result["recipe"] == {  # what benchmarks/tables.py compares runs by
        "preset": "tiny", "cond": "add", "prediction": "x0", "augment": False, "holdout": 0,
        "aux_loss": "none", "aux_weight": 1.0, "aux_weighting": "alpha2", "time_power": 1.0,
        "batch_size": 16,
        "lr": result["recipe"]["lr"], "ema_decay": result["recipe"]["ema_decay"]}


def test_the_run_ends_with_a_summary_of_where_everything_went(trained):
    _, out, printed = trained
    tail = printed.split("done in ", 1)[1]
    assert " s wall" in tail and "Dice" in tail
    for name in ("results.json", "figures/examples.png", "figures/dice.png", "loss.png",
                 "checkpoints/step_00000006.safetensors"):
        assert str(out / name) in tail, name
    assert f"--evaluate {out}" in tail


def test_checkpoints_carry_the_run_info_evaluate_needs(trained):
    _, out, _ = trained
    info = load_checkpoint(latest_checkpoint(out / "checkpoints")).run_info
    assert info == {"example": "covid_qu_seg", "task": "infection", "masks": "infection masks",
                    "image_size": 16, "data": "phantom", "preset": "tiny", "augment": False,
                    "holdout": {"n": 0, "seed": 0}}


def test_epoch_summaries_are_lines_of_their_own(trained):
    _, _, printed = trained
    lines = [line for line in printed.splitlines() if "val Dice" in line]
    assert len(lines) == 2 and all(line.startswith("epoch ") for line in lines)


def test_resume_continues_from_the_last_checkpoint(trained, capsys):
    example, out, _ = trained
    capsys.readouterr()
    with pytest.warns(UserWarning, match="changed TrainConfig"):  # 2 -> 3 epochs
        assert example.main([*TINY, "--task", "infection", "--epochs", "3", "--resume",
                             "--out", str(out)]) == 0
    assert "resumed from step 6" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["steps"] == 9


def test_a_saved_model_evaluates_on_any_folder_in_the_covid_qu_ex_layout(trained, tmp_path):
    example, out, _ = trained
    root = write_phantom_folder(tmp_path / "data", n_train=4, n_val=6, size=16, seed=3)
    checkpoint = sorted((out / "checkpoints").glob("*.safetensors"))[-1]
    ev = tmp_path / "ev"
    # task and size come from the checkpoint: none given here
    assert example.main(["--evaluate", str(checkpoint), "--data-root", str(root), "--split",
                         "Val", "--sampling-steps", "2", "--out", str(ev),
                         "--no-progress"]) == 0
    result = json.loads((ev / "evaluation.json").read_text())
    assert result["metrics"]["all"]["n_images"] == 6
    assert (result["task"], result["size"]) == ("infection", 16)
    assert (ev / "evaluation.md").is_file()


def test_evaluate_takes_a_run_folder_and_writes_beside_it_on_the_phantom(trained, capsys):
    example, out, _ = trained
    assert example.main(["--evaluate", str(out), "--sampling-steps", "1", "--eval-samples",
                         "4", "--no-progress"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["checkpoint"] == str(latest_checkpoint(out / "checkpoints"))
    assert "phantom" in result["data"] and result["metrics"]["all"]["n_images"] == 4


def test_evaluate_falls_back_to_the_newest_checkpoint_that_loads(trained, tmp_path, capsys):
    example, out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoints", run / "checkpoints")
    newest = latest_checkpoint(run / "checkpoints")
    good = sorted((run / "checkpoints").glob("step_*.safetensors"))[-2]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: does not load
    assert example.main(["--evaluate", str(run), "--sampling-steps", "1", "--eval-samples",
                         "2", "--no-progress"]) == 0
    assert f"skipped {newest}" in capsys.readouterr().err
    assert json.loads((run / "evaluation.json").read_text())["checkpoint"] == str(good)


@pytest.mark.parametrize(("flags", "message"), [
    (["--task", "lung"], "--task lung does not match the checkpoint"),
    (["--size", "64"], "--size 64 does not match the checkpoint"),  # a 16 px model at 64 px
    (["--cond", "concat"], "--cond concat does not match"),
    (["--prediction", "eps"], "--prediction eps does not match"),
    (["--preset", "small"], "--preset small does not match"),
    (["--image-norm", "equalize"], "--image-norm equalize does not match"),
    (["--self-condition"], "--self-condition does not match the checkpoint"),
], ids=["task", "size", "cond", "prediction", "preset", "image-norm", "self-condition"])
def test_evaluate_refuses_a_flag_that_contradicts_the_checkpoint(trained, capsys, flags,
                                                                 message):
    example, out, _ = trained
    assert example.main(["--evaluate", str(out), *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_self_conditioned_run_records_it_and_evaluates_with_it(tmp_path):
    example = _load("examples/covid_qu_seg.py")
    out = tmp_path / "sc"
    with contextlib.redirect_stdout(io.StringIO()):
        assert example.main([*TINY, "--epochs", "1", "--self-condition", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["recipe"]["self_condition"] is True
    ck = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert ck.model_config["self_condition"] is True
    with contextlib.redirect_stdout(io.StringIO()):
        assert example.main(["--evaluate", str(out), "--sampling-steps", "2", "--eval-samples",
                             "4", "--no-progress"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["self_condition"] is True and evaluation["metrics"]["all"]["n_images"] == 4


def test_a_checkpoint_without_run_info_falls_back_to_the_flags_and_says_so(trained, tmp_path,
                                                                           capsys):
    example, out, _ = trained
    ck = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    old = tmp_path / "old.safetensors"
    write_checkpoint(old, ck.tensors, {**ck.meta, "run_info": {}})
    assert example.main(["--evaluate", str(old), "--task", "infection", "--size", "16",
                         "--sampling-steps", "1", "--eval-samples", "2", "--out",
                         str(tmp_path / "ev"), "--no-progress"]) == 0
    assert "carries no run_info" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--data-root", "/nonexistent/covid"], "/nonexistent/covid does not exist"),
    (["--evaluate", "/nonexistent/run"], "no such checkpoint file or run folder"),
    (["--phantom-train", "8", "--batch-size", "16"], "--batch-size 16 exceeds the 8"),
], ids=["data-root", "evaluate-path", "batch-size"])
def test_data_and_path_errors_are_one_line(tmp_path, capsys, argv, message):
    example = _load("examples/covid_qu_seg.py")
    assert example.main([*argv, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    example = _load("examples/covid_qu_seg.py")
    with pytest.raises(FileNotFoundError):
        example.main(["--data-root", "/nonexistent/covid", "--debug", "--out", str(tmp_path)])


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--steps", "0"], ["--batch-size", "-1"], ["--lr", "inf"],
    ["--lr", "0"], ["--ema-decay", "1"], ["--threads", "0"], ["--size", "x"],
    ["--epoch-eval-samples", "0"], ["--phantom-val", "0"], ["--warmup", "-1"],
], ids=lambda a: " ".join(a))
def test_bad_flag_values_are_refused_at_parse_time_in_one_line(capsys, argv):
    example = _load("examples/covid_qu_seg.py")
    with pytest.raises(SystemExit) as exc:
        example.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"argument {argv[0]}" in err and len(err.splitlines()) == 1


def test_segmentation_benchmark_from_a_checkpoint(trained, tmp_path):
    _, out, _ = trained
    checkpoint = sorted((out / "checkpoints").glob("*.safetensors"))[-1]
    bench = _load("benchmarks/segmentation.py")
    assert bench.main(["--checkpoint", str(checkpoint), "--task", "infection", "--size", "16",
                       "--phantom-train", "32", "--phantom-val", "8", "--steps", "1,2",
                       "--samplers", "ddim,ancestral", "--ensembles", "1,3",
                       "--ensemble-steps", "1", "--ensemble-samples", "4",
                       "--baseline-steps", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    result = json.loads((tmp_path / "segmentation.json").read_text())
    assert len(result["rows"]) == 2 * 2 + 2 and result["baseline"]["steps"] == 3
    assert [r["n_images"] for r in result["rows"]] == [8] * 4 + [4] * 2
    # the ensemble subset is drawn at random, not the first (class-sorted) images, so the
    # COVID-19 group is reported for it too
    assert all(set(r["metrics"]) == {"all", "COVID-19"} for r in result["rows"])
    for name in ("segmentation.md", "dice_vs_steps.png", "dice_vs_ensemble.png"):
        assert (tmp_path / name).is_file()


def test_unconditional_example_writes_a_grid(tmp_path):
    example = _load("examples/unconditional_xray.py")
    assert example.main(["--phantom-train", "32", "--size", "16", "--batch-size", "16",
                         "--epochs", "1", "--sampling-steps", "2", "--samples", "4",
                         "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "samples.png").is_file()


def test_unconditional_example_refuses_bad_values_and_reports_data_errors_in_one_line(
        tmp_path, capsys):
    example = _load("examples/unconditional_xray.py")
    with pytest.raises(SystemExit):
        example.parse_args(["--epochs", "0"])
    assert "argument --epochs: expected an integer >= 1" in capsys.readouterr().err
    assert example.main(["--data-root", "/nonexistent/covid", "--out", str(tmp_path),
                         "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "/nonexistent/covid does not exist" in err and len(err.splitlines()) == 1


def test_segmentation_benchmark_writes_under_runs_by_default():
    bench = _load("benchmarks/segmentation.py")
    assert bench.parse_args(["--checkpoint", "x.safetensors"]).out == Path("runs/segmentation")


def test_segmentation_benchmark_refuses_a_task_the_checkpoint_was_not_trained_for(trained,
                                                                                 tmp_path):
    _, out, _ = trained
    bench = _load("benchmarks/segmentation.py")
    with pytest.raises(SystemExit, match="--task lung does not match the checkpoint"):
        bench.main(["--checkpoint", str(latest_checkpoint(out / "checkpoints")), "--task",
                    "lung", "--out", str(tmp_path), "--no-progress"])


def test_a_trained_lung_model_beats_every_model_that_learns_nothing(tmp_path):
    """Dice on the phantom above what no image-reading model can reach: the best constant
    mask (the training masks' mean, thresholded: the phantom's lungs move little) scores
    about 0.83 and all-ones about 0.34; 96 steps of the tiny model reach about 0.91."""
    from scoregen.segmentation import PhantomDataset, segmentation_metrics

    example = _load("examples/covid_qu_seg.py")
    out = tmp_path / "lung"
    with contextlib.redirect_stdout(io.StringIO()):
        assert example.main(["--phantom-train", "256", "--phantom-val", "32", "--size", "16",
                             "--batch-size", "32", "--task", "lung", "--epochs", "12",
                             "--lr", "3e-3", "--sampling-steps", "1", "--eval-every", "100",
                             "--epoch-eval-samples", "8", "--epoch-eval-steps", "1",
                             "--eval-samples", "32", "--no-progress", "--threads", "1",
                             "--out", str(out)]) == 0
    dice = json.loads((out / "results.json").read_text())["metrics"]["all"]["dice"]
    train = PhantomDataset(256, task="lung", size=16, seed=0)
    val = PhantomDataset(32, task="lung", size=16, seed=10_000)
    truth = (val.masks + 1) / 2
    mean_mask = (((train.masks + 1) / 2).mean(0, keepdim=True) > 0.5).float()
    nulls = {"mean mask": mean_mask.expand_as(truth), "all ones": torch.ones_like(truth),
             "all zeros": torch.zeros_like(truth)}
    best_null = max(segmentation_metrics(p, truth, 0.5)["dice"] for p in nulls.values())
    assert best_null < 0.86
    assert dice > max(0.88, best_null + 0.03), (dice, best_null)


def test_intensity_augmentation_reaches_the_run_info_and_the_benchmark_peers(tmp_path):
    """--intensity-augment chains RandomIntensity after the affine, is saved in the run
    info (only when on: older runs' info is unchanged) and the benchmark rebuilds it for
    the supervised peers from that info."""
    example = _load("examples/covid_qu_seg.py")
    on = example.parse_args(["--intensity-augment", "--augment"])
    off = example.parse_args(["--augment"])
    assert describe_augment(example.augment_of(on)) == "affine+intensity"
    assert example.run_info(on)["intensity_augment"] is True
    assert example.recipe_of(on)["intensity_augment"] is True
    assert "intensity_augment" not in example.run_info(off)
    assert "intensity_augment" not in example.recipe_of(off)
    train, _, _ = example.load_data(on)
    assert describe_augment(train.augment) == "affine+intensity"
    bench = _load("benchmarks/segmentation.py")
    args = bench.parse_args(["--checkpoint", "unused", "--phantom-train", "16",
                             "--phantom-val", "8", "--size", "16",
                             "--task", "lung", "--out", str(tmp_path)])
    info = {"augment": True, "intensity_augment": True, "holdout": {"n": 4, "seed": 0}}
    rest, _, _, notes = bench.load_data(args, info)
    assert describe_augment(rest.augment) == notes["augment"] == "affine+intensity"
    rest, _, _, notes = bench.load_data(args, {"augment": True, "holdout": {"n": 4, "seed": 0}})
    assert notes["augment"] == "affine"


def test_image_norm_reaches_the_run_info_evaluate_and_every_set_of_the_benchmark(tmp_path):
    """--image-norm equalize is saved in the run info and recipe (only when on), --evaluate
    takes it from the checkpoint, and the benchmark equalises train, held-out, val and the
    second domain alike from that info (a model fed raw pixels it never saw would score
    a silent wrong answer)."""
    example = _load("examples/covid_qu_seg.py")
    on = example.parse_args(["--image-norm", "equalize"])
    off = example.parse_args([])
    assert example.run_info(on)["image_norm"] == example.recipe_of(on)["image_norm"] == "equalize"
    assert "image_norm" not in example.run_info(off) and "image_norm" not in example.recipe_of(off)
    train, val, _ = example.load_data(on)
    assert train.image_norm == val.image_norm == "equalize"
    torch.testing.assert_close(val.images, equalize_histogram(example.load_data(off)[1].images))
    ck = SimpleNamespace(run_info={**example.run_info(on), "example": "covid_qu_seg"},
                         model_config={"cond_mode": "add"}, prediction="x0")
    evaluate = example.parse_args(["--evaluate", "unused"])
    example.settings_from_checkpoint(evaluate, Path("unused"), ck)
    assert evaluate.image_norm == "equalize"
    old = SimpleNamespace(run_info=example.run_info(off), model_config={}, prediction="x0")
    evaluate = example.parse_args(["--evaluate", "unused"])
    example.settings_from_checkpoint(evaluate, Path("unused"), old)
    assert evaluate.image_norm == "none"

    bench = _load("benchmarks/segmentation.py")
    args = bench.parse_args(["--checkpoint", "unused", "--phantom-train", "16",
                             "--phantom-val", "8", "--size", "16",
                             "--task", "lung", "--out", str(tmp_path)])
    info = {"augment": True, "image_norm": "equalize", "holdout": {"n": 4, "seed": 0}}
    rest, held, val, notes = bench.load_data(args, info)
    assert rest.image_norm == held.image_norm == val.image_norm == notes["image_norm"]
    assert notes["image_norm"] == "equalize"
    assert bench.image_norm_of({}) == "none"
    with pytest.raises(SystemExit, match="image_norm must be one of"):
        bench.image_norm_of({"image_norm": "clahe"})
