"""benchmarks/likelihood.py (issue 11): its estimators against known answers, then one
cheap end-to-end run on untrained tiny checkpoints (the files and tables it writes)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import scoregen as sg

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("likelihood_bench",
                                                  ROOT / "benchmarks" / "likelihood.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load()


def _args(**kw) -> argparse.Namespace:
    base = dict(probes=4, batch_size=64, rtol=1e-5, atol=1e-5, t_eps=None, no_progress=True)
    return argparse.Namespace(**{**base, **kw})


def test_bits_per_dim_of_8bit_data_under_a_gaussian_is_the_discrete_answer():
    """D = 36 > 32, so Hutchinson; the mean over images matches the exact discrete bits/dim
    (normal CDF differences over the bins) within the standard errors the study reports."""
    dim = 36
    mu = torch.linspace(-0.3, 0.3, dim)
    target = sg.GaussianMixture(means=mu[None], stds=0.35)
    model = target.model(sg.VPSDE())
    gen = torch.Generator().manual_seed(0)
    x = (mu + 0.35 * torch.randn(24, dim, generator=gen)).clamp(-1, 0.999)
    k = bench.to_8bit(x).clamp(max=255)
    normal = torch.distributions.Normal(mu.double(), 0.35)
    lo = 2 * k.double() / 256 - 1
    exact = -torch.log2(normal.cdf(lo + 2 / 256) - normal.cdf(lo)).sum(1) / dim
    bpd, probe_se, nfe = bench.bits_per_dim(model, k, None, _args(), num_bins=256,
                                            desc="", seed=1)
    assert nfe > 0 and (probe_se > 0).all()  # Hutchinson: the probes differ
    err = (bpd - exact.float()).abs()
    assert (err < 4 * probe_se + 0.01).all(), (bpd, exact, probe_se)
    summary = bench.summarise(bpd, probe_se)
    assert summary["n"] == 24 and math.isclose(summary["bits_per_dim"], float(bpd.mean()))


def test_a_shifted_domain_gets_higher_bits_per_dim_and_auroc_near_one():
    target = sg.GaussianMixture(means=torch.zeros(1, 8), stds=0.3)
    model = target.model(sg.VPSDE())
    gen = torch.Generator().manual_seed(0)
    inside = target.sample(16, gen)
    outside = target.sample(16, gen) + 0.6
    args = _args(probes=1)
    b_in, _, _ = bench.bits_per_dim(model, inside, None, args, num_bins=None, desc="", seed=2)
    b_out, _, _ = bench.bits_per_dim(model, outside, None, args, num_bins=None, desc="", seed=3)
    labels = torch.cat([torch.zeros(16), torch.ones(16)])
    assert bench.auroc(torch.cat([b_in, b_out]), labels) > 0.95
    assert bench.auroc(torch.cat([b_out, b_in]), labels) < 0.05
    assert math.isnan(bench.auroc(b_in, torch.zeros(16)))  # one class: undefined


def test_rank_and_linear_correlations():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert bench.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert bench.spearman(a, a**3) == pytest.approx(1.0)  # monotone, not linear
    assert bench.pearson(a, a**3) < 0.99
    assert bench.spearman(a, -a) == pytest.approx(-1.0)
    # ties get the mean rank: ranks (1.5, 1.5, 3) vs (1, 2, 3) -> r = sqrt(3)/2
    assert bench.spearman(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])
                          ) == pytest.approx(math.sqrt(3) / 2)


def test_to_8bit_inverts_the_datasets_scaling():
    k = torch.arange(256.0)
    assert torch.equal(bench.to_8bit(k / 255 * 2 - 1), k)


def _tiny_checkpoint(path: Path, **cond) -> Path:
    torch.manual_seed(0)
    config = sg.UNetConfig.from_preset("tiny", **cond)
    model = sg.ScoreModel(sg.UNet(config), sg.VPSDE.ddpm(), prediction="x0")
    info = {"image_size": 16, **({"task": "lung"} if cond else {})}
    return sg.save_checkpoint(path, model, model_config=config.to_dict(), run_info=info)


def test_end_to_end_on_tiny_checkpoints_writes_json_markdown_and_figures(tmp_path):
    unc = _tiny_checkpoint(tmp_path / "unc.safetensors")
    seg = _tiny_checkpoint(tmp_path / "seg.safetensors", cond_channels=1, cond_mode="add")
    out = tmp_path / "out"
    assert bench.main(["--unconditional", str(unc), "--segmentation", str(seg), "--n", "3",
                       "--phantom-val", "3", "--probes", "1", "--rtol", "0.05", "--atol",
                       "0.05", "--t-eps", "0.05", "--ensemble", "1", "--sampling-steps", "1",
                       "--no-progress", "--out", str(out)]) == 0
    result = json.loads((out / "likelihood.json").read_text())
    phantom = result["unconditional"]["domains"]["phantom"]
    assert phantom["n"] == 3 and math.isfinite(phantom["bits_per_dim"])
    s = result["conditional"]["sets"]["phantom val"]
    assert len(s["per_image"]["dice"]) == 3 and s["nfe"] > 0
    assert result["conditional"]["t_eps"] == 0.05
    text = (out / "likelihood.md").read_text()
    assert "## Bits/dim of X-rays" in text and "## log p(mask | X-ray)" in text
    for name in ("bits_per_dim.png", "likelihood_vs_dice.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_it_asks_for_a_checkpoint():
    with pytest.raises(SystemExit):
        bench.parse_args([])
