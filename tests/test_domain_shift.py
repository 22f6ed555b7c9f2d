"""benchmarks/domain_shift.py: lung boxes, box-normalised masks and the largest cells
against hand-made masks, and the script end to end on two phantom folders."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from scoregen.segmentation import write_phantom_folder

ROOT = Path(__file__).resolve().parents[1]


def _load():
    path = ROOT / "benchmarks" / "domain_shift.py"
    spec = importlib.util.spec_from_file_location("_bench_domain_shift", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_lung_boxes_are_the_inclusive_extent_of_each_mask():
    ds = _load()
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 0, 0] = masks[1, 7, 9] = True
    assert ds.lung_boxes(masks).tolist() == [[2, 4, 3, 8], [0, 7, 0, 9]]
    with pytest.raises(ValueError, match="mask 1 is empty"):
        ds.lung_boxes(torch.stack([masks[0], torch.zeros(8, 10, dtype=torch.bool)]))
    with pytest.raises(ValueError, match=r"\(N, H, W\) bool"):
        ds.lung_boxes(masks.float())


def test_box_normalised_masks_drop_position_and_size_but_keep_shape():
    ds = _load()
    small = torch.zeros(1, 32, 32, dtype=torch.bool)
    small[0, 4:12, 20:28] = True  # a filled square, somewhere
    big = torch.zeros(1, 32, 32, dtype=torch.bool)
    big[0, 0:24, 0:24] = True  # the same shape, elsewhere and 3x larger
    a, b = ds.box_normalised(small, 8), ds.box_normalised(big, 8)
    torch.testing.assert_close(a, torch.ones(1, 8, 8))  # antialias: 1 up to rounding
    torch.testing.assert_close(b, a)
    tri = torch.tril(torch.ones(16, 16, dtype=torch.bool))[None]  # lower triangle
    cells = ds.box_normalised(tri, 4)[0]
    assert cells[0, 3] < 0.05 and cells[3, 0] > 0.95  # upper right empty, lower left full
    # cells on the diagonal are about half lung (bilinear + antialias: a share, not 0/1)
    assert all(0.3 < float(cells[i, i]) < 0.8 for i in range(4))


def test_largest_cells_are_ordered_by_absolute_difference_with_box_fractions():
    ds = _load()
    diff = torch.zeros(4, 4)
    diff[0, 3], diff[2, 1] = 0.5, -0.7
    cells = ds.largest_cells(diff, n=2)
    assert cells == [{"row": 0.625, "col": 0.375, "difference": pytest.approx(-0.7)},
                     {"row": 0.125, "col": 0.875, "difference": 0.5}]


def test_the_script_on_two_phantom_folders_writes_json_markdown_and_figure(tmp_path):
    ds = _load()
    first = write_phantom_folder(tmp_path / "a", n_train=6, n_val=2, size=32, seed=0)
    second = write_phantom_folder(tmp_path / "b", n_train=6, n_val=2, size=32, seed=5)
    out = tmp_path / "out"
    assert ds.main(["--data-root", str(first), "--other", str(second), "--size", "32",
                    "--box", "8", "--no-progress", "--out", str(out)]) == 0
    result = json.loads((out / "domain_shift.json").read_text())
    assert [s["n_images"] for s in result["stats"].values()] == [8, 8]
    assert result["command"].startswith("python benchmarks/domain_shift.py")
    for s in result["stats"].values():  # equalised levels: each image's mean is 0
        assert abs(s["equalized"]["mean"]) < 1e-3 and 0 < s["lung_share"]["mean"] < 1
    assert len(result["mask_shape"]["largest_cells"]) == 5
    assert (out / "mask_shape.png").stat().st_size > 0
    assert "| COVID-QU-Ex | 8 |" in (out / "domain_shift.md").read_text()
    with pytest.raises(SystemExit, match="domain_shift.py: "):
        ds.main(["--data-root", str(tmp_path / "nowhere"), "--other", str(second),
                 "--out", str(out)])


def test_with_a_checkpoint_the_model_is_scored_on_both_domains(tmp_path):
    """A tiny phantom lung model: area ratio, sensitivity, precision and shape errors per
    domain, in the JSON, the markdown and a second figure row; an infection model is
    refused in one line."""
    import contextlib
    import io

    ds = _load()
    example_path = ROOT / "examples" / "covid_qu_seg.py"
    spec = importlib.util.spec_from_file_location("_ex_covid_qu_seg", example_path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    runs = {}
    for task in ("lung", "infection"):
        with contextlib.redirect_stdout(io.StringIO()):
            assert example.main(["--phantom-train", "32", "--phantom-val", "4", "--size", "16",
                                 "--batch-size", "16", "--epochs", "1", "--sampling-steps",
                                 "1", "--epoch-eval-samples", "4", "--epoch-eval-steps", "1",
                                 "--eval-samples", "4", "--task", task, "--no-progress",
                                 "--out", str(tmp_path / task)]) == 0
        runs[task] = sorted((tmp_path / task / "checkpoints").glob("*.safetensors"))[-1]
    first = write_phantom_folder(tmp_path / "a", n_train=4, n_val=3, size=16, seed=0)
    second = write_phantom_folder(tmp_path / "b", n_train=4, n_val=3, size=16, seed=5)
    base = ["--data-root", str(first), "--other", str(second), "--size", "16", "--box", "8",
            "--grid", "4", "--steps", "1", "--ensemble", "2", "--no-progress"]
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert ds.main([*base, "--checkpoint", str(runs["lung"]), "--out", str(out)]) == 0
    study = json.loads((out / "domain_shift.json").read_text())["model"]
    assert list(study["domains"]) == ["COVID-QU-Ex", "Montgomery/Shenzhen"]
    for d in study["domains"].values():
        assert d["n_images"] == 3 and d["area_ratio"] > 0
        assert 0 <= d["sensitivity"] <= 1 and 0 <= d["precision"] <= 1
        # Dice is the harmonic mean of sensitivity and precision
        s_, p_ = d["sensitivity"], d["precision"]
        assert d["dice"] == pytest.approx(2 * s_ * p_ / (s_ + p_) if s_ + p_ else 0.0)
        assert len(d["coarse_difference"]) == 4 and len(d["coarse_difference"][0]) == 4
    assert "predicted / true area" in (out / "domain_shift.md").read_text()
    with pytest.raises(SystemExit, match="infection model"):
        ds.main([*base, "--checkpoint", str(runs["infection"]), "--out", str(out)])
    with pytest.raises(SystemExit, match="must divide"):
        ds.main(["--data-root", str(first), "--other", str(second), "--size", "16",
                 "--box", "8", "--grid", "3", "--no-progress", "--out", str(out)])
