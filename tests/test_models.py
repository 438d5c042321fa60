"""Fast tests for the denoiser, the value network and their layers (tiny configs, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from diffuser.models import (
    AttentionBlock,
    ChannelLayerNorm,
    Conv1dBlock,
    Downsample1d,
    LinearAttention,
    ResidualTemporalBlock,
    SinusoidalPosEmb,
    TemporalUnet,
    UNetConfig,
    Upsample1d,
    ValueConfig,
    ValueNet,
)

TINY = dict(dim=8, dim_mults=(1, 2, 4))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a busy machine OpenMP threads
    # waiting on each other can make a millisecond forward take a second.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- layers
def test_sinusoidal_embedding_values_and_buffer():
    emb = SinusoidalPosEmb(16)
    t = torch.tensor([0, 1, 7])
    out = emb(t)
    assert out.shape == (3, 16)
    half = 8
    freqs = torch.exp(-torch.arange(half) * torch.log(torch.tensor(10000.0)) / (half - 1))
    expected = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], dim=-1)
    torch.testing.assert_close(out, expected)
    assert torch.equal(emb(t.float()), out)  # int and float steps agree
    assert "freqs" not in emb.state_dict()  # precomputed, but not checkpointed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mish_matches_its_definition_and_gradient(dtype):
    from diffuser.models import mish

    x = torch.cat([torch.linspace(-120, 120, 2001, dtype=dtype), torch.tensor([-1e4, 1e4, 0.0], dtype=dtype)])
    x.requires_grad_(True)
    exact = x * torch.tanh(torch.nn.functional.softplus(x))  # the definition, not PyTorch's kernel
    (g_exact,) = torch.autograd.grad(exact.sum(), x)
    out = mish(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(out).all() and torch.isfinite(g).all()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, exact, **tol)
    torch.testing.assert_close(g, g_exact, **tol)


def test_layer_shapes():
    x = torch.randn(3, 16, 12)
    emb = torch.randn(3, 8)
    assert Conv1dBlock(16, 24, 5)(x).shape == (3, 24, 12)
    assert ResidualTemporalBlock(16, 24, 8, 5)(x, emb).shape == (3, 24, 12)
    assert ResidualTemporalBlock(16, 16, 8, 3)(x, emb).shape == (3, 16, 12)
    assert Downsample1d(16)(x).shape == (3, 16, 6)
    assert Downsample1d(16)(torch.randn(3, 16, 7)).shape == (3, 16, 4)
    assert Upsample1d(16)(x).shape == (3, 16, 24)
    assert AttentionBlock(16)(x).shape == (3, 16, 12)
    with pytest.raises(ValueError, match="odd"):
        Conv1dBlock(4, 8, 4)


def test_attention_math_against_explicit_formulas():
    x = torch.randn(2, 16, 10)
    norm = ChannelLayerNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    expected = (x - mean) / (var + 1e-5).sqrt() * norm.weight[:, None] + norm.bias[:, None]
    torch.testing.assert_close(norm(x), expected)

    attn = LinearAttention(16, heads=2, dim_head=4)
    q, k, v = attn.to_qkv(x).reshape(2, 3, 2, 4, 10).unbind(1)  # each (b, heads, c, n)
    context = torch.einsum("bhdn,bhen->bhde", k.softmax(-1), v)
    out = torch.einsum("bhde,bhdn->bhen", context, q * 4**-0.5).reshape(2, 8, 10)
    torch.testing.assert_close(attn(x), attn.to_out(out))


def test_residual_block_uses_embedding_and_skip():
    block = ResidualTemporalBlock(4, 8, 6, 5)
    x = torch.randn(2, 4, 10)
    e1, e2 = torch.randn(2, 6), torch.randn(2, 6)
    assert not torch.allclose(block(x, e1), block(x, e2))
    assert isinstance(block.skip, torch.nn.Conv1d)
    assert isinstance(ResidualTemporalBlock(8, 8, 6, 5).skip, torch.nn.Identity)


# ---------------------------------------------------------------- U-Net
@pytest.mark.parametrize(
    "cfg, horizons",
    [
        (UNetConfig(**TINY), [4, 8, 12, 32]),
        (UNetConfig(dim=8, dim_mults=(1, 2, 4, 8)), [8, 16, 24]),
        (UNetConfig(dim=16, dim_mults=(1, 4, 8), kernel_size=3), [4, 20]),
        (UNetConfig(dim=8, dim_mults=(1,)), [1, 5, 7]),
        (UNetConfig(dim=8, dim_mults=(2, 4)), [6]),
        (UNetConfig(**TINY, attention=True), [4, 16]),
    ],
)
def test_unet_output_shapes(cfg, horizons):
    net = TemporalUnet(5, cfg)
    for h in horizons:  # fully convolutional: one network, several horizons
        x = torch.randn(3, h, 5)
        assert net(x, torch.randint(0, 100, (3,))).shape == (3, h, 5)
    assert net(x, 4).shape == x.shape  # python int step
    assert net(x, torch.tensor(2.5)).shape == x.shape  # scalar float step


def test_unet_conditional_shapes_and_masking():
    net = TemporalUnet(4, UNetConfig(**TINY, cond_dim=3)).eval()
    x, t, cond = torch.randn(4, 8, 4), torch.randint(0, 50, (4,)), torch.randn(4, 3)
    out_none = net(x, t)
    out_cond = net(x, t, cond)
    assert out_cond.shape == (4, 8, 4)
    assert not torch.allclose(out_none, out_cond)
    # a dropped condition (mask 0) is exactly "no condition"; mask 1 keeps it
    torch.testing.assert_close(net(x, t, cond, torch.zeros(4)), out_none)
    torch.testing.assert_close(net(x, t, cond, torch.ones(4)), out_cond)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mixed = net(x, t, cond, mask)
    torch.testing.assert_close(mixed[mask == 1], out_cond[mask == 1])
    torch.testing.assert_close(mixed[mask == 0], out_none[mask == 0])
    torch.testing.assert_close(net(x, t, cond, mask.bool()), mixed)
    with pytest.raises(ValueError, match="cond of shape"):
        net(x, t, torch.randn(4, 2))
    with pytest.raises(ValueError, match="unconditional"):
        TemporalUnet(4, UNetConfig(**TINY))(x, t, cond)


def test_unet_param_count_at_paper_configs():
    hopper = n_params(TemporalUnet(14, UNetConfig(dim=32, dim_mults=(1, 2, 4, 8))))
    maze = n_params(TemporalUnet(6, UNetConfig(dim=32, dim_mults=(1, 4, 8))))
    assert 3_500_000 <= hopper <= 4_500_000, hopper
    assert 3_500_000 <= maze <= 4_500_000, maze
    assert hopper == 3_956_302 and maze == 3_682_118  # the original architecture's counts


def test_horizon_errors_list_valid_horizons():
    net = TemporalUnet(6, UNetConfig(dim=8, dim_mults=(1, 2, 4, 8)))
    assert net.num_downsamples == 3
    assert net.valid_horizons(40) == [8, 16, 24, 32, 40]
    net.check_horizon(32)
    with pytest.raises(ValueError) as err:
        net.check_horizon(30)
    msg = str(err.value)
    assert "horizon 30 is not divisible by 8" in msg and "24, 32" in msg and "(1, 2, 4, 8)" in msg
    with pytest.raises(ValueError, match="valid horizons near it: 8"):
        net(torch.randn(1, 5, 6), torch.zeros(1))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, 6\)"):
        net(torch.randn(1, 8, 7), torch.zeros(1))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, 6\)"):
        net(torch.randn(8, 6), torch.zeros(1))
    with pytest.raises(ValueError, match="expected t"):
        net(torch.randn(2, 8, 6), torch.zeros(3))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(dim=0), "dim"),
        (dict(dim=12), "dim=12"),
        (dict(dim_mults=()), "dim_mults"),
        (dict(dim=8, dim_mults=(1, 0)), "dim_mults"),
        (dict(kernel_size=4), "kernel_size"),
        (dict(cond_dim=-1), "cond_dim"),
    ],
)
def test_unet_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        UNetConfig(**kwargs)


def test_unet_config_json_round_trip():
    cfg = UNetConfig(dim=16, dim_mults=(1, 4, 8), attention=True, cond_dim=2)
    back = UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.dim_mults, tuple)
    assert TemporalUnet(3, cfg.to_dict()).config == cfg
    with pytest.raises(ValueError, match="unknown UNetConfig field"):
        UNetConfig.from_dict({"dims": 32})


def _assert_all_grads_nonzero(net):
    for name, p in net.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"


@pytest.mark.parametrize("cfg", [UNetConfig(**TINY, attention=True, cond_dim=3), UNetConfig(**TINY)])
def test_unet_gradients_reach_every_parameter(cfg):
    net = TemporalUnet(4, cfg)
    x = torch.randn(3, 8, 4)
    cond = torch.randn(3, 3) if cfg.cond_dim else None
    net(x, torch.randint(0, 10, (3,)), cond).square().mean().backward()
    _assert_all_grads_nonzero(net)


def test_unet_batch_independence():
    net = TemporalUnet(5, UNetConfig(**TINY, attention=True, cond_dim=2))
    x, t, cond = torch.randn(6, 16, 5), torch.randint(0, 30, (6,)), torch.randn(6, 2)
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1])
    full = net(x, t, cond, mask)
    for i in (0, 4):
        alone = net(x[i : i + 1], t[i : i + 1], cond[i : i + 1], mask[i : i + 1])
        torch.testing.assert_close(alone, full[i : i + 1], rtol=1e-4, atol=1e-5)
    # changing the other samples leaves sample 0 untouched
    x2 = x.clone()
    x2[1:] = torch.randn(5, 16, 5) * 10
    torch.testing.assert_close(net(x2, t, cond, mask)[0], full[0], rtol=1e-4, atol=1e-5)


def test_unet_frequency_buffer_follows_dtype():
    net = TemporalUnet(3, UNetConfig(**TINY)).double()
    assert net(torch.randn(2, 8, 3, dtype=torch.float64), torch.tensor([1, 2])).dtype == torch.float64


# ---------------------------------------------------------------- value network
@pytest.mark.parametrize("mults", [(1, 4, 8), (1, 2, 4, 8)])
@pytest.mark.parametrize("horizon", [4, 8, 32, 64, 128])
def test_value_net_horizons(mults, horizon):
    net = ValueNet(horizon, 6, ValueConfig(dim=8, dim_mults=mults))
    out = net(torch.randn(3, horizon, 6), torch.randint(0, 20, (3,)))
    assert out.shape == (3, 1)


def test_value_net_paper_width_at_original_failure_case():
    # H=32 with (1, 4, 8) crashed in the original implementation (wrong flattened size)
    net = ValueNet(32, 6, ValueConfig(dim=32, dim_mults=(1, 4, 8)))
    assert net.flat_dim == 64 * 1
    assert net(torch.randn(2, 32, 6), torch.tensor([0, 5])).shape == (2, 1)


@pytest.mark.parametrize("horizon", [1, 3, 7, 33])
def test_value_net_odd_horizons_and_out_dim(horizon):
    net = ValueNet(horizon, 4, ValueConfig(dim=8, dim_mults=(1, 4), out_dim=3))
    assert net(torch.randn(2, horizon, 4), torch.tensor([1, 2])).shape == (2, 3)


def test_value_net_errors_and_config():
    net = ValueNet(16, 5, ValueConfig(dim=8, dim_mults=(1, 4)))
    with pytest.raises(ValueError, match="built for horizon 16"):
        net(torch.randn(2, 32, 5), torch.zeros(2))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 16, 5\)"):
        net(torch.randn(2, 16, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="horizon"):
        ValueNet(0, 5)
    with pytest.raises(ValueError, match="divisible by 32"):
        ValueConfig(dim=8, dim_mults=(1, 2))
    cfg = ValueConfig(dim=16, dim_mults=(1, 2, 4, 8), out_dim=2)
    assert ValueConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_value_net_gradients_and_batch_independence():
    net = ValueNet(16, 4, ValueConfig(dim=8, dim_mults=(1, 4)))
    x = torch.randn(5, 16, 4, requires_grad=True)
    t = torch.randint(0, 10, (5,))
    out = net(x, t)
    out.sum().backward()
    _assert_all_grads_nonzero(net)
    assert x.grad is not None and x.grad.abs().sum() > 0  # value guidance needs dV/dx
    torch.testing.assert_close(net(x[2:3], t[2:3]), out[2:3], rtol=1e-4, atol=1e-5)
