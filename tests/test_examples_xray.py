"""The X-ray examples and the segmentation benchmark, end to end on the phantom (tiny)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from scoregen.segmentation import write_phantom_folder

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
    """One tiny phantom run shared by the tests below."""
    out = tmp_path_factory.mktemp("seg") / "run"
    example = _load("examples/covid_qu_seg.py")
    assert example.main([*TINY, "--task", "infection", "--out", str(out)]) == 0
    return example, out


def test_the_example_runs_on_the_phantom_and_writes_every_output(trained, capsys):
    _, out = trained
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
    assert "| DICE index |" in text and "seed (" not in text  # no seed column on the phantom


def test_resume_continues_from_the_last_checkpoint(trained, capsys):
    example, out = trained
    capsys.readouterr()
    with pytest.warns(UserWarning, match="changed TrainConfig"):  # 2 -> 3 epochs
        assert example.main([*TINY, "--task", "infection", "--epochs", "3", "--resume",
                             "--out", str(out)]) == 0
    assert "resumed from step 6" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["steps"] == 9


def test_a_saved_model_evaluates_on_any_folder_in_the_covid_qu_ex_layout(trained, tmp_path):
    example, out = trained
    root = write_phantom_folder(tmp_path / "data", n_train=4, n_val=6, size=16, seed=3)
    checkpoint = sorted((out / "checkpoints").glob("*.safetensors"))[-1]
    ev = tmp_path / "ev"
    assert example.main(["--evaluate", str(checkpoint), "--data-root", str(root), "--split",
                         "Val", "--task", "infection", "--sampling-steps", "2", "--out",
                         str(ev), "--no-progress"]) == 0
    result = json.loads((ev / "evaluation.json").read_text())
    assert result["metrics"]["all"]["n_images"] == 6
    with pytest.raises(SystemExit):
        example.main(["--evaluate", str(checkpoint)])  # needs --data-root


def test_segmentation_benchmark_from_a_checkpoint(trained, tmp_path):
    _, out = trained
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
