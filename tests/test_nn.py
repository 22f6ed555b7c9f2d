"""Tests of scoregen.nn: the U-Net, its layers, its conditioning and its config (CPU, fast)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from scoregen.nn import (
    UNET_PRESETS,
    Attention,
    ConditionEncoder,
    LinearAttention,
    ResBlock,
    TimestepEmbedding,
    UNet,
    UNetConfig,
    sinusoidal_embedding,
)

#: cond-mode id -> (cond_mode, cond_channels). Two condition channels, one image channel,
#: so channel mistakes between x and cond cannot cancel out.
MODES = {"uncond": (None, 0), "add": ("add", 2), "concat": ("concat", 2), "both": ("both", 2)}
COND_MODES = ["add", "concat", "both"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny: one intra-op thread is as fast as two, and it avoids OpenMP
    barrier spinning (100x slow-downs) when other processes share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_net(preset: str = "tiny", mode: str = "uncond", **overrides) -> UNet:
    cond_mode, cond_channels = MODES[mode]
    config = UNetConfig.from_preset(
        preset, cond_mode=cond_mode, cond_channels=cond_channels, **overrides
    )
    return UNet(config).eval()


def make_inputs(net: UNet, batch: int = 2, height: int = 16, width: int = 16):
    c = net.config
    x = torch.randn(batch, c.in_channels, height, width)
    t = torch.rand(batch)
    cond = torch.randn(batch, c.cond_channels, height, width) if c.cond_mode else None
    return x, t, cond


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("preset", list(UNET_PRESETS))
def test_output_shape_every_preset_and_mode(preset: str, mode: str) -> None:
    net = make_net(preset, mode, in_channels=3, out_channels=2)
    size = 16 if preset == "tiny" else 32
    x, t, cond = make_inputs(net, batch=2, height=size, width=size)
    with torch.no_grad():
        out = net(x, t, cond)
    assert out.shape == (2, 2, size, size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mode", list(MODES))
def test_non_square_input(mode: str) -> None:
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net, batch=3, height=8, width=20)
    with torch.no_grad():
        assert net(x, t, cond).shape == (3, 1, 8, 20)


@pytest.mark.parametrize(
    "num_res_blocks, attention_resolutions, mid_attention",
    [(1, (), False), (2, (1,), True), (3, (1, 2, 4), True)],
    ids=["1block-noattn", "2blocks-attn1", "3blocks-attn-all"],
)
def test_architecture_layout(num_res_blocks, attention_resolutions, mid_attention) -> None:
    """n res blocks per level down, n + 1 up, resampling by res blocks, attention where asked."""
    net = make_net(
        num_res_blocks=num_res_blocks,
        attention_resolutions=attention_resolutions,
        mid_attention=mid_attention,
    )
    levels = len(net.config.channel_mults)
    res = [m for m in net.modules() if isinstance(m, ResBlock)]
    assert sum(m.down for m in res) == levels - 1
    assert sum(m.up for m in res) == levels - 1
    # up-sampling blocks already map to the finer level's width
    widths = net.config.level_channels
    assert sorted(m.out_channels for m in res if m.up) == sorted(widths[:-1])
    plain = levels * num_res_blocks + levels * (num_res_blocks + 1) + 2  # down, up, middle
    assert len(res) == plain + 2 * (levels - 1)
    n_linear = sum(isinstance(m, LinearAttention) for m in net.modules())
    assert n_linear == len(attention_resolutions) * (2 * num_res_blocks + 1)
    assert sum(isinstance(m, Attention) for m in net.modules()) == int(mid_attention)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("mode", list(MODES))
def test_gradient_reaches_every_parameter(mode: str) -> None:
    """At initialisation (no zero-initialised layers), before any optimiser step."""
    net = make_net("tiny", mode).train()
    x, t, cond = make_inputs(net)
    loss = (net(x, t, cond) - torch.randn_like(x)).square().mean()
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("mode", list(MODES))
def test_output_depends_on_t(mode: str) -> None:
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net)
    with torch.no_grad():
        a = net(x, torch.full((2,), 0.3), cond)
        b = net(x, torch.full((2,), 0.301), cond)  # one DDPM step apart
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-5


@pytest.mark.parametrize("mode", COND_MODES)
def test_output_depends_on_cond(mode: str) -> None:
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net)
    with torch.no_grad():
        a = net(x, t, cond)
        b = net(x, t, cond + 0.5 * torch.randn_like(cond))
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-4


@pytest.mark.parametrize("mode", list(MODES))
def test_samples_are_independent(mode: str) -> None:
    """Changing one sample of the batch leaves the other outputs unchanged."""
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net, batch=3)
    x2, t2 = x.clone(), t.clone()
    x2[0] = torch.randn_like(x2[0])
    t2[0] = 0.9
    cond2 = None
    if cond is not None:
        cond2 = cond.clone()
        cond2[0] = torch.randn_like(cond2[0])
    with torch.no_grad():
        a, b = net(x, t, cond), net(x2, t2, cond2)
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1:], b[1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", COND_MODES)
def test_missing_cond_equals_zeros(mode: str) -> None:
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net)
    with torch.no_grad():
        none = net(x, t, None)
        zeros = net(x, t, torch.zeros_like(cond))
        given = net(x, t, cond)
    torch.testing.assert_close(none, zeros, rtol=0, atol=0)
    assert not torch.allclose(none, given)


# --------------------------------------------------------------------------- inputs


def test_t_broadcasts_from_float_and_0d() -> None:
    net = make_net("tiny", "uncond")
    x, _, _ = make_inputs(net, batch=3)
    with torch.no_grad():
        full = net(x, torch.full((3,), 0.25))
        torch.testing.assert_close(net(x, 0.25), full)
        torch.testing.assert_close(net(x, torch.tensor(0.25)), full)
        torch.testing.assert_close(net(x, torch.full((3,), 0.25, dtype=torch.float64)), full)


def test_float64_input_gives_float64_output() -> None:
    net = make_net("tiny", "add")
    x, t, cond = make_inputs(net)
    with torch.no_grad():
        out32 = net(x, t, cond)
        out64 = net(x.double(), t.double(), cond.double())
        out_double = net.double()(x.double(), t.double(), cond.double())
    assert out64.dtype == torch.float64 and out_double.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32)
    torch.testing.assert_close(out_double.float(), out32, rtol=1e-4, atol=1e-5)


BAD_INPUTS = {
    # id: (mode, kwargs to change in (x, t, cond), exception, message regex)
    "x-channels": ("uncond", {"x": torch.randn(2, 3, 16, 16)}, ValueError, r"in_channels=1"),
    "x-3d": ("uncond", {"x": torch.randn(2, 16, 16)}, ValueError, r"x must have shape \(B, "),
    "x-int": ("uncond", {"x": torch.ones(2, 1, 16, 16, dtype=torch.long)}, TypeError, "floating"),
    "x-not-tensor": ("uncond", {"x": [[0.0]]}, TypeError, r"torch\.Tensor"),
    "x-indivisible": (
        "uncond",
        {"x": torch.randn(2, 1, 18, 16)},
        ValueError,
        r"divisible by 4 .*18x16.*height 16 or 20",
    ),
    "t-2d": ("uncond", {"t": torch.rand(2, 1)}, ValueError, r"t must have shape \(B,\) = \(2,\)"),
    "t-batch": ("uncond", {"t": torch.rand(3)}, ValueError, r"t must have shape \(B,\) = \(2,\)"),
    "t-int": ("uncond", {"t": torch.tensor([1, 2])}, TypeError, r"continuous times.*i / N"),
    "t-str": ("uncond", {"t": "0.5"}, TypeError, r"t must be a float tensor"),
    "cond-to-uncond": ("uncond", {"cond": torch.randn(2, 2, 16, 16)}, ValueError, "unconditional"),
    "add-cond-batch": ("add", {"cond": torch.randn(3, 2, 16, 16)}, ValueError, r"batch size 3"),
    "concat-cond-batch": (
        "concat",
        {"cond": torch.randn(1, 2, 16, 16)},
        ValueError,
        "batch size 1",
    ),
    "add-cond-channels": (
        "add",
        {"cond": torch.randn(2, 1, 16, 16)},
        ValueError,
        "cond_channels=2",
    ),
    "concat-cond-channels": (
        "concat",
        {"cond": torch.randn(2, 3, 16, 16)},
        ValueError,
        r"3 channels but cond_channels=2",
    ),
    "add-cond-size": (
        "add",
        {"cond": torch.randn(2, 2, 8, 8)},
        ValueError,
        r"spatial size \(8, 8\)",
    ),
    "concat-cond-size": (
        "concat",
        {"cond": torch.randn(2, 2, 16, 32)},
        ValueError,
        r"spatial size \(16, 32\) does not match x's \(16, 16\)",
    ),
    "cond-3d": ("concat", {"cond": torch.randn(2, 16, 16)}, ValueError, r"\(2, 2, 16, 16\)"),
    "cond-int": ("add", {"cond": torch.ones(2, 2, 16, 16, dtype=torch.int64)}, TypeError, "float"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_clear_errors(case: str) -> None:
    mode, change, exc, match = BAD_INPUTS[case]
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net)
    args = {"x": x, "t": t, "cond": cond, **change}
    with pytest.raises(exc, match=match):
        net(args["x"], args["t"], args["cond"])


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("mode", list(MODES))
def test_bf16_autocast_close_to_float32(mode: str) -> None:
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net)
    with torch.no_grad():
        ref = net(x, t, cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t, cond)
    assert out.dtype == torch.float32  # the output follows x's dtype
    assert torch.isfinite(out).all()
    rel = (out - ref).norm() / ref.norm()
    assert rel < 5e-2, f"bf16 relative error {rel:.3g}"


def test_bf16_autocast_backward_is_finite() -> None:
    net = make_net("tiny", "add").train()
    x, t, cond = make_inputs(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (net(x, t, cond) - x).square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("mode", list(MODES))
def test_channels_last_equals_contiguous(mode: str) -> None:
    net = make_net("tiny", mode)
    x, t, cond = make_inputs(net)
    with torch.no_grad():
        ref = net(x, t, cond)
        net = net.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        cond_cl = None if cond is None else cond.contiguous(memory_format=torch.channels_last)
        out = net(x_cl, t, cond_cl)
    assert net.out_conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_dropout_only_in_train_mode() -> None:
    net = make_net("tiny", "uncond", dropout=0.5)
    x, t, _ = make_inputs(net)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x, t), net(x, t), rtol=0, atol=0)
        assert not torch.allclose(net.train()(x, t), net(x, t))


def test_compiles_without_graph_breaks() -> None:
    net = make_net("tiny", "add")
    x, t, cond = make_inputs(net)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t, cond), net(x, t, cond))


def test_tiny_net_overfits_one_batch() -> None:
    """MSE to a fixed random target falls at least 10x within 200 Adam steps."""
    net = make_net("tiny", "add").train()
    x, t, cond = make_inputs(net, batch=4)
    target = torch.randn_like(x)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = F.mse_loss(net(x, t, cond), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
    assert losses[-1] < losses[0] / 10, f"loss {losses[0]:.3g} -> {losses[-1]:.3g}"


# --------------------------------------------------------------------------- patches


@pytest.mark.parametrize("mode", list(MODES))
def test_patches_move_the_finest_level_to_half_resolution(mode: str) -> None:
    """patch_size 2: the stem sees (B, 4 C, H/2, W/2) and the output is back at (H, W)."""
    net = make_net("tiny", mode, in_channels=3, out_channels=2, patch_size=2)
    assert net.config.level_factors == (2, 4, 8) and net.config.downsample_factor == 8
    seen = []
    net.stem.register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
    x, t, cond = make_inputs(net, height=16, width=24)
    with torch.no_grad():
        out = net(x, t, cond)
    assert out.shape == (2, 2, 16, 24)
    assert seen == [(2, net.config.level_channels[0], 8, 12)]
    assert net.stem.conv.in_channels == (3 + (2 if mode in ("concat", "both") else 0)) * 4


def test_patches_keep_pixel_resolution() -> None:
    """Depth-to-space gives every output pixel its own channel: a patch_size 2 net fits a
    one-pixel checkerboard (which a 2x down/up-sampling without it could not)."""
    torch.manual_seed(0)
    net = make_net("tiny", "uncond", patch_size=2).train()
    x, t, _ = make_inputs(net, batch=2)
    ii, jj = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    target = ((ii + jj) % 2).float().expand(2, 1, 16, 16) * 2 - 1  # +-1 checkerboard
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        loss = F.mse_loss(net(x, t), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.01, f"checkerboard MSE {loss.item():.3g} (1.0 for a blur)"


def test_patches_gradient_reaches_every_parameter() -> None:
    net = make_net("tiny", "add", patch_size=2).train()
    x, t, cond = make_inputs(net)
    (net(x, t, cond) - torch.randn_like(x)).square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_a_config_saved_before_patches_reads_as_patch_size_1() -> None:
    saved = UNetConfig.from_preset("tiny").to_dict()
    del saved["patch_size"]
    assert UNetConfig.from_dict(saved) == UNetConfig.from_preset("tiny")


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("preset", list(UNET_PRESETS))
def test_config_json_round_trip(preset: str, mode: str) -> None:
    cond_mode, cond_channels = MODES[mode]
    config = UNetConfig.from_preset(preset, cond_mode=cond_mode, cond_channels=cond_channels)
    restored = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert hash(restored) == hash(config)
    assert isinstance(restored.channel_mults, tuple)


def test_config_round_trip_rebuilds_same_architecture() -> None:
    net = make_net("tiny", "concat", time_embed_dim=None)
    clone = UNet(UNetConfig.from_dict(json.loads(json.dumps(net.config.to_dict()))))
    clone.load_state_dict(net.state_dict(), strict=True)
    x, t, cond = make_inputs(net)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x, t, cond), net(x, t, cond), rtol=0, atol=0)


def test_preset_overrides_apply() -> None:
    config = UNetConfig.from_preset("seed", in_channels=3, dropout=0.0)
    assert config.in_channels == 3 and config.dropout == 0.0
    assert config.base_channels == UNET_PRESETS["seed"]["base_channels"]
    assert config.downsample_factor == 8 and config.embed_dim == 256


def _full_dict(**changes):
    return {**UNetConfig().to_dict(), **changes}


BAD_CONFIGS = {
    "unknown-preset": (lambda: UNetConfig.from_preset("huge"), ValueError, r"valid presets.*tiny"),
    "unknown-override": (
        lambda: UNetConfig.from_preset("tiny", base_channel=8),
        TypeError,
        r"unknown UNetConfig fields \['base_channel'\]",
    ),
    "from-dict-unknown": (
        lambda: UNetConfig.from_dict(_full_dict(width=3)),
        ValueError,
        r"unknown UNetConfig keys \['width'\]",
    ),
    "from-dict-missing": (
        lambda: UNetConfig.from_dict({"in_channels": 1}),
        ValueError,
        r"missing UNetConfig keys \['out_channels'",
    ),
    "from-dict-not-mapping": (lambda: UNetConfig.from_dict([1, 2]), TypeError, "mapping"),
    "groups": (
        lambda: UNetConfig(base_channels=24, norm_groups=16, channel_mults=(1, 2)),
        ValueError,
        r"norm_groups=16 must divide.*\[24\]",
    ),
    "uncond-with-channels": (
        lambda: UNetConfig(cond_channels=1),
        ValueError,
        r"cond_mode=None .* needs cond_channels=0",
    ),
    "cond-without-channels": (
        lambda: UNetConfig(cond_mode="add"),
        ValueError,
        r"cond_mode='add' needs cond_channels >= 1",
    ),
    "bad-cond-mode": (
        lambda: UNetConfig(cond_mode="cross", cond_channels=1),
        ValueError,
        r"cond_mode must be one of \(None, 'concat', 'add', 'both'\)",
    ),
    "attention-factor": (
        lambda: UNetConfig(attention_resolutions=(16,)),
        ValueError,
        r"one of \(1, 2, 4, 8\).*\[16\]",
    ),
    "float-channels": (
        lambda: UNetConfig(in_channels=1.0),
        TypeError,
        r"in_channels must be an int",
    ),
    "dropout": (lambda: UNetConfig(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    "empty-mults": (lambda: UNetConfig(channel_mults=()), ValueError, "non-empty"),
    "patch-size": (lambda: UNetConfig(patch_size=0), ValueError, r"patch_size must be >= 1"),
    "patch-attention-factor": (
        lambda: UNetConfig(patch_size=2, attention_resolutions=(1,)),
        ValueError,
        r"one of \(2, 4, 8, 16\).*\[1\]",
    ),
    "patch-size-saved": (
        lambda: UNetConfig.from_dict(_full_dict(patch_size=4096)),
        ValueError,
        r"patch_size = 4096, above the bound",
    ),
    "unet-from-dict": (lambda: UNet(UNetConfig().to_dict()), TypeError, "expects a UNetConfig"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configs_raise_clear_errors(case: str) -> None:
    build, exc, match = BAD_CONFIGS[case]
    with pytest.raises(exc, match=match):
        build()


def test_config_is_frozen() -> None:
    config = UNetConfig.from_preset("tiny")
    with pytest.raises(AttributeError):
        config.base_channels = 32


# --------------------------------------------------------------------------- layers


def test_sinusoidal_embedding_values() -> None:
    s = torch.tensor([0.0, 1.0, 500.0])
    emb = sinusoidal_embedding(s, dim=4, max_period=10_000.0)  # frequencies 1 and 1e-2
    expected = torch.stack(
        [torch.cos(s), torch.cos(s / 100), torch.sin(s), torch.sin(s / 100)], dim=-1
    )
    torch.testing.assert_close(emb, expected)
    with pytest.raises(ValueError, match="even dim"):
        sinusoidal_embedding(s, dim=5)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        sinusoidal_embedding(s[:, None], dim=4)


def test_time_embedding_scales_t() -> None:
    """t = 0.25 with time_scale 1000 is embedded exactly like step 250 with time_scale 1."""
    scaled = TimestepEmbedding(16, 32, time_scale=1000.0)
    raw = TimestepEmbedding(16, 32, time_scale=1.0)
    raw.load_state_dict(scaled.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        torch.testing.assert_close(
            scaled(torch.tensor([0.25, 0.5])), raw(torch.tensor([250.0, 500.0]))
        )
    # bf16 autocast must not round t*1000 (steps 500 and 501 stay distinct)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = scaled(torch.tensor([0.500, 0.501])).float()
    assert not torch.allclose(a, b)


def _reference_attention(layer, x: torch.Tensor, linear: bool) -> torch.Tensor:
    """Attention written head by head with explicit softmaxes (no einops)."""
    b, c, h, w = x.shape
    d = layer.head_dim
    qkv = layer.to_qkv(layer.norm(x)).flatten(2)  # (B, 3*heads*d, N)
    q, k, v = qkv.chunk(3, dim=1)
    heads = []
    for i in range(layer.heads):
        qi, ki, vi = (z[:, i * d : (i + 1) * d] for z in (q, k, v))  # (B, d, N)
        if linear:
            context = ki.softmax(dim=-1) @ vi.transpose(1, 2)  # (B, d, d): sum_n k_dn v_en
            heads.append(context.transpose(1, 2) @ qi.softmax(dim=1))  # (B, d, N)
        else:
            weights = (qi.transpose(1, 2) @ ki / math.sqrt(d)).softmax(dim=-1)  # (B, N, N)
            heads.append((weights @ vi.transpose(1, 2)).transpose(1, 2))  # (B, d, N)
    out = torch.cat(heads, dim=1).reshape(b, -1, h, w)
    return x + layer.to_out(out)


@pytest.mark.parametrize("linear", [True, False], ids=["linear", "full"])
def test_attention_matches_reference(linear: bool) -> None:
    cls = LinearAttention if linear else Attention
    layer = cls(8, heads=2, head_dim=4, groups=4)
    x = torch.randn(2, 8, 4, 6)
    torch.testing.assert_close(layer(x), _reference_attention(layer, x, linear))
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        layer(torch.randn(2, 4, 4, 6))


@pytest.mark.parametrize(
    "kw, shape",
    [({}, (2, 16, 8, 8)), ({"down": True}, (2, 16, 4, 4)), ({"up": True}, (2, 16, 16, 16))],
    ids=["same", "down", "up"],
)
def test_resblock_shapes(kw, shape) -> None:
    block = ResBlock(8, 16, 32, groups=4, **kw)
    out = block(torch.randn(2, 8, 8, 8), torch.randn(2, 32))
    assert out.shape == shape


def test_resblock_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        ResBlock(8, 8, 16, groups=4, down=True, up=True)
    with pytest.raises(ValueError, match="multiple of groups=4"):
        ResBlock(6, 8, 16, groups=4)
    block = ResBlock(8, 8, 16, groups=4)
    with pytest.raises(ValueError, match=r"emb of shape \(B, embed_dim\) = \(2, 16\)"):
        block(torch.randn(2, 8, 4, 4), torch.randn(2, 8))


def test_condition_encoder_keeps_resolution() -> None:
    encoder = ConditionEncoder(3, 16, depth=2, groups=4)
    assert encoder(torch.randn(2, 3, 12, 10)).shape == (2, 16, 12, 10)
