"""examples/toy_2d.py runs end to end (quick mode) and writes its PNG; the sampler
benchmark's pipeline (estimator, tables, plot) runs on a tiny configuration."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from PIL import Image

import scoregen as sg
from scoregen.metrics.distances import _directions, sliced_wasserstein

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str) -> dict:
    return runpy.run_path(str(ROOT / relative), run_name="scoregen_test_module")


def test_toy_2d_quick_writes_one_png_with_a_panel_per_sampler(tmp_path, capsys):
    toy = _load("examples/toy_2d.py")
    out = tmp_path / "figs" / "toy.png"
    path = toy["main"](["--quick", "--n", "64", "--out", str(out)])
    assert path == out and out.is_file()
    with Image.open(out) as img:
        assert img.format == "PNG"
        rows = math.ceil((len(toy["RUNS"]) + 1) / 3)  # + the true-samples panel, 3 per row
        assert img.size == (900, 300 * rows)
    printed = capsys.readouterr().out
    assert f"saved {out.resolve()}" in printed
    assert set(toy["RUNS"]) <= {line[:22].strip() for line in printed.splitlines()}
    assert {name for name, *_ in toy["RUNS"].values()} == set(sg.SAMPLERS)  # every sampler


def test_toy_2d_writes_under_runs_by_default_not_into_the_working_folder(tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy = _load("examples/toy_2d.py")
    path = toy["main"](["--quick", "--n", "16"])
    assert path == Path("runs/toy_2d.png") and (tmp_path / "runs" / "toy_2d.png").is_file()
    assert not (tmp_path / "toy_2d.png").exists()


@pytest.fixture(scope="module")
def bench():
    return _load("benchmarks/samplers.py")


def test_benchmark_exact_net_and_estimator(bench):
    ring, _ = bench["targets"]()["ring2d"]
    mix, _ = bench["targets"]()["mix64"]
    for target in (ring, mix):
        for sde in (sg.VPSDE.ddpm(), sg.VESDE()):
            x = torch.randn(32, target.dim, generator=torch.Generator().manual_seed(0))
            t = torch.linspace(0.01, 1.0, 32)
            torch.testing.assert_close(bench["ExactEps"](target, sde)(x, t),
                                       target.net(sde, "eps")(x, t), rtol=1e-4, atol=1e-5)
    # the cached-projection estimator is sliced_wasserstein with the repeat's directions
    rep = bench["make_repeat"](ring, 200, 0, 64, 1, 1)
    gen = torch.Generator().manual_seed(10_000)  # make_repeat: directions, then references
    _directions(2, 64, gen)
    y = ring.sample(200, gen)
    x = ring.sample(200, torch.Generator().manual_seed(5))
    expected = sliced_wasserstein(x, y, num_projections=64,
                                  generator=torch.Generator().manual_seed(10_000)) ** 2
    assert bench["sw2_squared"](x, rep) == pytest.approx(expected, rel=1e-10)
    x[0, 0] = math.nan
    assert bench["sw2_squared"](x, rep) == math.inf


def test_benchmark_tiny_run_writes_json_markdown_and_png(bench, tmp_path):
    written = bench["main"]([
        "--quick", "--n", "64", "--repeats", "2", "--budgets", "10", "50", "--projections", "16",
        "--refs", "1", "--floor-samples", "1", "--targets", "ring2d", "--timing-repeats", "1",
        "--only", r"^(ddim/uniform|ancestral|ode/dopri5)", "--out", str(tmp_path),
    ])
    assert sorted(p.suffix for p in written) == [".json", ".md", ".png"]
    result = json.loads((tmp_path / "samplers_ddpm_quick.json").read_text())
    rows = result["targets"]["ring2d"]["rows"]
    assert {r["series"] for r in rows} == {"ddim/uniform", "ancestral", "ode/dopri5"}
    assert {r["nfe"] for r in rows if r["series"] == "ddim/uniform"} == {10, 50}
    assert all(r["ratio"] > 0 and r["overhead_us"] >= 0 for r in rows)  # warm timing on ring
    assert [c["limit"] for c in result["checks"]][:3] == [1.3, 1.1, 1.1]
    md = (tmp_path / "samplers_ddpm_quick.md").read_text()
    assert "## ring2d" in md and "| ddim/uniform |" in md
    with Image.open(tmp_path / "samplers_ddpm_quick.png") as img:
        assert img.format == "PNG"
    (tmp_path / "samplers_ddpm_quick.md").unlink()
    bench["main"](["--replot", str(tmp_path / "samplers_ddpm_quick.json")])
    assert (tmp_path / "samplers_ddpm_quick.md").read_text() == md
