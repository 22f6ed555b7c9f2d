"""Generic figures: sampler accuracy, 2-D scatter panels, image grids, curves.

Every function builds its own :class:`matplotlib.figure.Figure` on an Agg canvas, writes
one PNG atomically (a temporary file, then ``os.replace``) and drops the figure. Nothing
goes through ``matplotlib.pyplot``, so no global state (current figure, backend, open
figure list) is touched: safe in scripts, tests, threads and on headless servers.

Sizes are deterministic (``figsize * DPI``, no tight bounding box), stated per function:

| function                | PNG width x height in pixels                             |
|-------------------------|-----------------------------------------------------------|
| plot_sampler_accuracy   | ``100 (4.5 panels + 1.5)`` x ``350``                      |
| scatter_panels          | ``100 PANEL * ncols`` x ``100 PANEL * rows``              |
| plot_curves             | ``100 CURVE_PANEL[0] * panels`` x ``100 CURVE_PANEL[1]``  |
| image_grid              | ``ncol (W + pad) + pad`` x ``rows (H + pad) + pad``, exact |

with ``PANEL = 3`` inches, ``DPI = 100``. Application figures (the X-ray panels of
:mod:`scoregen.segmentation.panels`) are built from the same pieces: :func:`new_figure`,
:func:`image_array`, :func:`png_path` and :func:`save_png`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

__all__ = [
    "plain_ticks",
    "plot_sampler_accuracy", "scatter_panels", "image_grid", "plot_curves",
    "new_figure", "image_array", "png_path", "save_png", "DPI", "PANEL", "ACC_PANEL",
    "CURVE_PANEL", "plot_reliability", "RELIABILITY_PANEL",
]

#: Resolution of every matplotlib figure written here.
DPI = 100
#: Side of one plot panel, in inches.
PANEL = 3.0
#: (width, height) of one panel of :func:`plot_sampler_accuracy`, in inches.
ACC_PANEL = (4.5, 3.5)
#: (width, height) of one panel of :func:`plot_curves`, in inches: wide enough for a
#: readable title, axis labels and legend (500 x 360 pixels).
CURVE_PANEL = (5.0, 3.6)
#: Extra width for the legend of :func:`plot_sampler_accuracy`, in inches.
_LEGEND_W = 1.5

PathLike = str | os.PathLike
ArrayLike = Any  # torch.Tensor, np.ndarray or nested sequences


# ---------------------------------------------------------------------------- helpers
def png_path(path: PathLike) -> Path:
    """``path`` as a ``Path`` ending in ``.png`` (else ValueError), its folder created."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png (PNG is the only format written), got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def new_figure(width_in: float, height_in: float) -> Figure:
    """A constrained-layout figure of ``width_in`` x ``height_in`` inches on an Agg canvas."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary file, then ``os.replace``); clears it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        fig.clear()
        if tmp.exists():
            tmp.unlink()
    return path


def plain_ticks(ax: Any) -> None:
    """Ticks of both axes as plain numbers (1-2-5 on log axes, no minor labels), not
    ``2x10^-1`` labels that overlap on a narrow panel."""
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_minor_formatter(NullFormatter())
        axis.set_major_formatter(FormatStrFormatter("%g"))
    ax.tick_params(which="both", labelsize=7)


def _numpy(x: ArrayLike, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}") \
            from err


def _grid_shape(n: int, ncols: int | None) -> tuple[int, int]:
    ncols = min(n, 4) if ncols is None else ncols
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols


def _xy(series: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``values`` or ``(x, values)`` → two equal-length 1-D arrays."""
    pair = isinstance(series, tuple) and len(series) == 2
    if pair:
        x, y = _numpy(series[0], f"{name} x"), _numpy(series[1], f"{name} values")
        pair = x.ndim == 1  # a tuple of two numbers is two values, not a pair
    if not pair:
        y = _numpy(series, name)
        x = np.arange(y.shape[0], dtype=np.float64) if y.ndim == 1 else y
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"series {name!r} must be a non-empty 1-D sequence of values or a pair (x, values) "
            f"of equal length; got shapes {x.shape} and {y.shape}"
        )
    return x, y


# ---------------------------------------------------------------------------- plots
def plot_sampler_accuracy(
    series: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    floors: Mapping[str, float],
    path: PathLike,
    *,
    ylabel: str = "sliced W2 to the target",
    logy: bool = True,
    max_ratio: float | None = None,
) -> Path:
    """Distance vs NFE, one panel per target, with the noise floor as a dashed line.

    Args:
        series: ``{panel: {name: (nfe, distance)}}``, e.g. ``{"ring2d": {"ddim": ([10,
            20], [0.09, 0.06])}}``; a series with one point is drawn as a marker.
        floors: ``{panel: floor}``, the same distance between two independent true samples
            of the same size (:func:`scoregen.metrics.distances.sliced_wasserstein_floor`).
        path: the PNG to write, ``100 (4.5 panels + 1.5)`` x ``350`` pixels.
        ylabel, logy: the y-axis label and scale.
        max_ratio: clip each panel's y-axis at ``max_ratio * floor`` so diverging series do
            not squash the rest (their lines leave the top of the panel).
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not isinstance(series, Mapping) or not series:
        raise ValueError("series must be a non-empty mapping {panel: {name: (nfe, values)}}")
    missing = [p for p in series if p not in floors]
    if missing:
        raise ValueError(f"floors has no value for panel(s) {missing}")
    if max_ratio is not None and not max_ratio > 1:
        raise ValueError(f"max_ratio must be > 1, got {max_ratio!r}")
    path = png_path(path)
    names = list(dict.fromkeys(n for panel in series.values() for n in panel))
    styles = _styles(names)
    fig = new_figure(ACC_PANEL[0] * len(series) + _LEGEND_W, ACC_PANEL[1])
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (panel, curves) in zip(axes, series.items(), strict=True):
        for name, pair in curves.items():
            nfe, value = _xy(pair, name)
            if (nfe <= 0).any():
                raise ValueError(f"NFE must be positive in series {name!r}, got {nfe.tolist()}")
            order = np.argsort(nfe, kind="stable")
            color, marker, line = styles[name]
            ax.plot(nfe[order], value[order], marker=marker, ls=line, color=color, lw=1.2,
                    ms=4, label=name)
        floor = float(floors[panel])
        ax.axhline(floor, color="black", ls="--", lw=1, label="noise floor")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        if max_ratio is not None:
            values = np.concatenate([_xy(pair, name)[1] for name, pair in curves.items()])
            values = values[np.isfinite(values) & (values > 0)]
            low = min(values.min(initial=floor), floor)
            high = min(max_ratio * floor, 1.1 * values.max(initial=floor))
            ax.set_ylim(0.9 * low, max(high, 1.1 * floor))
        plain_ticks(ax)
        ax.set_title(panel)
        ax.set_xlabel("NFE")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="outside right center", fontsize=6,
               frameon=False)
    return save_png(fig, path)


def _styles(names: Sequence[str]) -> dict[str, tuple[Any, str, str]]:
    """A distinct (colour, marker, line style) per series name."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    markers = "osD^v<>pPX*h"
    lines = ("-", "--", "-.", ":")
    return {name: (cmap(i % 20), markers[i % len(markers)], lines[(i // 10) % len(lines)])
            for i, name in enumerate(names)}


def scatter_panels(
    panels: Mapping[str, ArrayLike],
    path: PathLike,
    *,
    ncols: int | None = None,
    lim: float | None = None,
    point_size: float = 1.0,
) -> Path:
    """2-D point clouds side by side, one panel per entry, on common square axes.

    Args:
        panels: ``{title: points (N, 2)}`` (tensor or array); non-finite points are
            dropped and counted in the title.
        ncols: panels per row (default up to 4).
        lim: axes span ``[-lim, lim]``; default 1.25 x the largest |coordinate| of the
            first panel (put the true samples first).
        path: the PNG, ``100 PANEL * ncols`` x ``100 PANEL * rows`` pixels.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError("panels must be a non-empty mapping {title: points (N, 2)}")
    clouds = {}
    for title, pts in panels.items():
        arr = _numpy(pts, f"panel {title!r}")
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"panel {title!r} must have shape (N, 2), got {arr.shape}")
        clouds[str(title)] = arr
    path = png_path(path)
    if lim is None:
        first = next(iter(clouds.values()))
        finite = first[np.isfinite(first).all(1)]
        biggest = float(np.abs(finite).max()) if finite.size else 0.0
        lim = 1.25 * biggest if biggest > 0 else 1.0
    if not (lim > 0 and math.isfinite(lim)):
        raise ValueError(f"lim must be a positive finite number, got {lim!r}")
    rows, ncols = _grid_shape(len(clouds), ncols)
    fig = new_figure(PANEL * ncols, PANEL * rows)
    axes = fig.subplots(rows, ncols, squeeze=False).ravel()
    for ax, (title, arr) in zip(axes, clouds.items(), strict=False):
        ok = np.isfinite(arr).all(1)
        ax.scatter(arr[ok, 0], arr[ok, 1], s=point_size, lw=0, alpha=0.6, rasterized=True)
        dropped = int((~ok).sum())
        ax.set_title(title + (f" ({dropped} non-finite)" if dropped else ""), fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    for ax in axes[len(clouds):]:
        ax.set_axis_off()
    return save_png(fig, path)


def plot_curves(
    curves: Mapping[str, ArrayLike | tuple[ArrayLike, ArrayLike]],
    path: PathLike,
    *,
    panels: Mapping[str, Sequence[str]] | None = None,
    xlabel: str = "step",
    ylabel: str | None = None,
    logy: Sequence[str] = (),
) -> Path:
    """Named series vs step or epoch (e.g. loss and Dice), one panel per group.

    Args:
        curves: ``{name: values}`` (x = 0, 1, ...) or ``{name: (x, values)}``; NaNs leave gaps.
        panels: ``{panel title: [series names]}`` to group series; default one panel per
            series (so a loss and a Dice in [0, 1] do not share an axis).
        xlabel: the x-axis label ("step", "epoch", ...).
        ylabel: the y-axis label of every panel; default the series' name in a panel of
            one series, "value" otherwise.
        logy: panel titles to draw with a logarithmic y-axis.
        path: the PNG, ``100 CURVE_PANEL[0] * panels`` x ``100 CURVE_PANEL[1]`` pixels.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty mapping {name: values or (x, values)}")
    data = {name: _xy(series, name) for name, series in curves.items()}
    groups = {name: [name] for name in data} if panels is None else dict(panels)
    unknown = sorted({n for names in groups.values() for n in names} - set(data))
    if unknown:
        raise ValueError(f"panels name series that are not in curves: {unknown}")
    if not groups or any(not names for names in groups.values()):
        raise ValueError("every panel must list at least one series")
    bad_logy = sorted(set(logy) - set(groups))
    if bad_logy:
        raise ValueError(f"logy names unknown panels {bad_logy}; panels: {list(groups)}")
    path = png_path(path)
    fig = new_figure(CURVE_PANEL[0] * len(groups), CURVE_PANEL[1])
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, names) in zip(axes, groups.items(), strict=True):
        for name in names:
            x, y = data[name]
            ax.plot(x, y, lw=1.2, label=name, marker="o" if x.size < 30 else None, ms=3)
        if title in logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        if all(np.allclose(data[n][0], np.round(data[n][0])) for n in names):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, steps: no 0.2
        ax.set_ylabel(ylabel if ylabel is not None else (names[0] if len(names) == 1
                                                         else "value"))
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=7)
    return save_png(fig, path)


# ---------------------------------------------------------------------------- images
def image_array(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a finite float64 array of shape (N, C, H, W); ValueError naming ``name``."""
    arr = _numpy(x, name)
    if arr.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def image_grid(
    images: ArrayLike,
    path: PathLike,
    *,
    nrow: int = 8,
    padding: int = 2,
) -> Path:
    """Save a grid of images ``(N, C, H, W)`` in [-1, 1] (C = 1 grey or 3 RGB) as a PNG.

    Values are clipped to [-1, 1] and mapped to 0..255 by ``round((x + 1) * 127.5)``;
    ``nrow`` images per row, ``padding`` black pixels between and around them. The PNG
    has exactly ``ncol (W + padding) + padding`` by ``rows (H + padding) + padding``
    pixels, ``ncol = min(nrow, N)``, ``rows = ceil(N / ncol)``.
    """
    from PIL import Image

    arr = image_array(images, "images")
    n, c, h, w = arr.shape
    if n == 0 or c not in (1, 3):
        raise ValueError(f"images must be (N >= 1, C in {{1, 3}}, H, W), got {arr.shape}")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    path = png_path(path)
    rows, ncol = _grid_shape(n, nrow)
    pixels = np.rint((np.clip(arr, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    grid = np.zeros((c, rows * (h + padding) + padding, ncol * (w + padding) + padding),
                    dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top:top + h, left:left + w] = pixels[k]
    img = Image.fromarray(grid[0] if c == 1 else grid.transpose(1, 2, 0))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


#: Side of the square reliability diagram of :func:`plot_reliability`, in inches.
RELIABILITY_PANEL = 5.0


def plot_reliability(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike, str]],
    path: PathLike,
    *,
    title: str | None = None,
) -> Path:
    """A reliability diagram: observed foreground frequency vs mean predicted probability
    per bin, every model on one plot, with the diagonal of perfect calibration.

    Args:
        curves: ``{label: (confidence, frequency, linestyle)}`` — per-bin values (NaN for
            empty bins, skipped) and a matplotlib line style (e.g. ``"-"`` raw, ``"--"``
            temperature-scaled). Labels sharing the text before `` [`` share a colour
            (``"MONAI [raw]"`` and ``"MONAI [T=1.3]"``).
        path: the PNG, ``100 RELIABILITY_PANEL`` x ``100 RELIABILITY_PANEL`` pixels.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty mapping {label: (confidence, "
                         "frequency, linestyle)}")
    path = png_path(path)
    fig = new_figure(RELIABILITY_PANEL, RELIABILITY_PANEL)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="perfect calibration")
    bases = list(dict.fromkeys(label.split(" [")[0] for label in curves))
    colors = {b: f"C{i % 10}" for i, b in enumerate(bases)}
    for label, item in curves.items():
        if not isinstance(item, tuple) or len(item) != 3:
            raise ValueError(f"curve {label!r} must be (confidence, frequency, linestyle)")
        conf = _numpy(item[0], f"{label} confidence").ravel()
        freq = _numpy(item[1], f"{label} frequency").ravel()
        if conf.shape != freq.shape:
            raise ValueError(f"curve {label!r}: confidence {conf.shape} and frequency "
                             f"{freq.shape} differ")
        keep = np.isfinite(conf) & np.isfinite(freq)
        ax.plot(conf[keep], freq[keep], ls=item[2], marker="o", ms=3,
                color=colors[label.split(" [")[0]], label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed foreground frequency")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return save_png(fig, path)
