"""scoregen.plotting: every function writes a valid PNG of the documented size, rejects bad
shapes with a clear error, and leaves pyplot's global state alone."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scoregen import plotting
from scoregen.plotting import ACC_PANEL, CURVE_PANEL, DPI, PANEL
from scoregen.segmentation.panels import SEG_PANEL, segmentation_panels, uncertainty_scale

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def _px(inches: float) -> int:
    return round(inches * DPI)


def _seg_inputs(n=2, h=16, w=12):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, h, w, generator=gen) * 2 - 1
    truths = torch.where(images > 0, 1.0, -1.0)
    samples = (torch.rand(8, n, 1, h, w, generator=gen) > 0.5).float()
    pred, var = samples.mean(0), samples.var(0, correction=0)
    return images, truths, pred, var


def test_sampler_accuracy_plot(tmp_path):
    series = {
        "ring2d": {"ddim": ([10, 20, 50, 100], [0.1, 0.07, 0.055, 0.05]),
                   "ode (adaptive)": ([93], [0.05])},
        "mix64": {"ddim": (np.array([10, 20]), torch.tensor([0.2, 0.1]))},
    }
    path = plotting.plot_sampler_accuracy(series, {"ring2d": 0.05, "mix64": 0.08},
                                          tmp_path / "acc.png")
    assert _png_size(path) == (_px(ACC_PANEL[0] * 2 + 1.5), _px(ACC_PANEL[1]))
    series["ring2d"]["langevin"] = ([10, 20], [30.0, 5.0])  # far above: clipped at 4x
    path = plotting.plot_sampler_accuracy(series, {"ring2d": 0.05, "mix64": 0.08},
                                          tmp_path / "clipped.png", max_ratio=4)
    assert _png_size(path) == (_px(ACC_PANEL[0] * 2 + 1.5), _px(ACC_PANEL[1]))


def test_scatter_panels(tmp_path):
    pts = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    bad = pts.clone()
    bad[0, 0] = float("nan")  # dropped, not fatal
    panels = {"true": pts, "ddim": pts.numpy() * 0.9, "diverged": bad, "four": pts, "five": pts}
    path = plotting.scatter_panels(panels, tmp_path / "sub" / "scatter.png", ncols=3)
    assert _png_size(path) == (_px(PANEL * 3), _px(PANEL * 2))


@pytest.mark.parametrize("n, c, nrow", [(10, 3, 4), (3, 1, 8), (1, 1, 1)])
def test_image_grid_exact_pixels(tmp_path, n, c, nrow):
    h, w, pad = 16, 12, 2
    images = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images[0, :, 0, 0] = 1.0
    path = plotting.image_grid(images, tmp_path / "grid.png", nrow=nrow, padding=pad)
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    assert _png_size(path) == (ncol * (w + pad) + pad, rows * (h + pad) + pad)
    with Image.open(path) as img:
        arr = np.asarray(img)
        assert img.mode == ("L" if c == 1 else "RGB")
    assert arr[pad, pad].max() == 255 and arr[0, 0].max() == 0  # x = 1 is white; padding black


def test_plot_curves_grouped_and_default_panels(tmp_path):
    curves = {"loss": [1.0, 0.5, float("nan"), 0.3], "dice": ([0, 5, 10], [0.2, 0.5, 0.7]),
              "val loss": (0.9, 0.6)}
    path = plotting.plot_curves(curves, tmp_path / "c.png",
                                panels={"loss": ["loss", "val loss"], "Dice": ["dice"]},
                                logy=["loss"], xlabel="epoch", ylabel="value")
    assert _png_size(path) == (_px(CURVE_PANEL[0] * 2), _px(CURVE_PANEL[1]))
    path = plotting.plot_curves(curves, tmp_path / "d.png")
    assert _png_size(path) == (_px(CURVE_PANEL[0] * 3), _px(CURVE_PANEL[1]))
    assert min(CURVE_PANEL) * DPI >= 360  # readable: not the 300 x 300 of a thumbnail


def test_segmentation_panels(tmp_path):
    images, truths, pred, var = _seg_inputs(n=3)
    path = segmentation_panels(images, truths, pred, var, tmp_path / "seg.png",
                                        titles=["a", "b", "c"])
    assert _png_size(path) == (_px(SEG_PANEL * 4 + 0.6), _px(SEG_PANEL * 3 + 0.3))
    hard = (pred > 0.5).float()  # a {0, 1} prediction is fine too
    path = segmentation_panels(images[:1], truths[:1], hard[:1], var[:1],
                                        tmp_path / "one.png")
    assert _png_size(path) == (_px(SEG_PANEL * 4 + 0.6), _px(SEG_PANEL + 0.3))
    path = segmentation_panels(images[:1], truths[:1], hard[:1], var[:1],
                               tmp_path / "titled.png", title="synthetic phantom")
    assert _png_size(path) == (_px(SEG_PANEL * 4 + 0.6), _px(SEG_PANEL + 0.6))


@pytest.mark.parametrize(("top", "expected"), [(0.02, 0.02), (0.25, 0.25), (0.0, 0.25)],
                         ids=["small-disagreement", "largest", "all-certain"])
def test_the_uncertainty_scale_ends_at_the_largest_variance_shown(top, expected):
    var = torch.zeros(2, 1, 8, 8)
    var[1, 0, 3:5, 3:5] = top
    assert uncertainty_scale(var) == pytest.approx(expected)


def test_no_pyplot_state_is_touched(tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    plotting.scatter_panels({"a": torch.zeros(4, 2)}, tmp_path / "a.png")
    plotting.plot_curves({"a": [1, 2]}, tmp_path / "b.png")
    if had_pyplot:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
    else:
        assert "matplotlib.pyplot" not in sys.modules


# ----------------------------------------------------------------------------- bad input
def test_bad_shapes_and_values_are_rejected(tmp_path):
    images, truths, pred, var = _seg_inputs()
    out = tmp_path / "x.png"
    with pytest.raises(ValueError, match=r"must have shape \(N, C, H, W\)"):
        plotting.image_grid(torch.zeros(3, 8, 8), out)
    with pytest.raises(ValueError, match=r"C in \{1, 3\}"):
        plotting.image_grid(torch.zeros(2, 2, 8, 8), out)
    with pytest.raises(ValueError, match="non-finite"):
        plotting.image_grid(torch.full((1, 1, 4, 4), float("nan")), out)
    with pytest.raises(ValueError, match=r"must have shape \(N, 2\)"):
        plotting.scatter_panels({"a": torch.zeros(5, 3)}, out)
    with pytest.raises(ValueError, match="must end in .png"):
        plotting.scatter_panels({"a": torch.zeros(5, 2)}, tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="non-empty mapping"):
        plotting.scatter_panels({}, out)
    with pytest.raises(ValueError, match="equal length"):
        plotting.plot_curves({"loss": ([0, 1, 2], [1.0, 2.0])}, out)
    with pytest.raises(ValueError, match="not in curves"):
        plotting.plot_curves({"loss": [1.0]}, out, panels={"p": ["dice"]})
    with pytest.raises(ValueError, match="floors has no value"):
        plotting.plot_sampler_accuracy({"ring": {"ddim": ([10], [0.1])}}, {}, out)
    with pytest.raises(ValueError, match="max_ratio must be > 1"):
        plotting.plot_sampler_accuracy({"ring": {"ddim": ([10], [0.1])}}, {"ring": 0.1}, out,
                                       max_ratio=0.5)
    with pytest.raises(ValueError, match="NFE must be positive"):
        plotting.plot_sampler_accuracy({"ring": {"ddim": ([0], [0.1])}}, {"ring": 0.1}, out)
    with pytest.raises(ValueError, match=r"shape \(N >= 1, 1, H, W\)"):
        segmentation_panels(images.repeat(1, 3, 1, 1), truths, pred, var, out)
    with pytest.raises(ValueError, match="truths must have the shape of images"):
        segmentation_panels(images, truths[:, :, :8], pred, var, out)
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 1\].*\(x \+ 1\) / 2"):
        segmentation_panels(images, truths, pred * 2 - 1, var, out)
    with pytest.raises(ValueError, match=r"uncertainty must lie in \[0, 0.25\]"):
        segmentation_panels(images, truths, pred, var + 0.5, out)
    with pytest.raises(ValueError, match="one entry per image"):
        segmentation_panels(images, truths, pred, var, out, titles=["only one"])
    assert not out.exists()
