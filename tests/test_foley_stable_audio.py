"""The host-free Stable Audio Open DiT (papers.md §4): shapes, config validation, the ControlNet hook,
the single-file checkpoint layout and the v-objective helpers / DDIM sampler. Numerical equivalence
with ComfyUI's implementation is in tests/host/test_stable_audio_equivalence.py."""

from __future__ import annotations

import math

import pytest
import torch

from avlab.foley.controlnet import EnvelopeControlNet
from avlab.foley.stable_audio import (
    SAO_OPEN, StableAudioConditioner, StableAudioDiT, StableAudioDiTConfig, checkpoint_state_dict, noisy, sample,
    split_checkpoint_state_dict, v_target, x0_from_v,
)

TINY = StableAudioDiTConfig(io_channels=8, embed_dim=64, depth=3, num_heads=2, cond_token_dim=48,
                            global_cond_dim=40, project_cond_tokens=True)


def _inputs(cfg=TINY, b=2, n=7, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, cfg.io_channels, n, generator=g), torch.rand(b, generator=g),
            torch.randn(b, m, cfg.cond_token_dim, generator=g), torch.randn(b, cfg.global_cond_dim, generator=g))


def _model(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    model = StableAudioDiT(cfg)
    with torch.no_grad():                                   # make the zero-initialised residual convs matter
        model.preprocess_conv.weight.normal_(std=0.1)
        model.postprocess_conv.weight.normal_(std=0.1)
    return model


def test_shapes_keys_and_sao_config():
    model = _model()
    x, t, ctx, glob = _inputs()
    v = model(x, t, ctx, glob)
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert model(x, 0.3, ctx, glob).shape == x.shape                        # scalar t broadcasts
    assert model.transformer.dim == model.dim == 64 and len(model.blocks) == 3
    sd = model.state_dict()
    assert sd["timestep_features.weight"].shape == (128, 1)
    assert sd["transformer.rotary_pos_emb.inv_freq"].shape == (16,)        # max(32 // 2, 32) = 32 → 16 frequencies
    torch.testing.assert_close(sd["transformer.rotary_pos_emb.inv_freq"],
                               1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32))
    assert sd["transformer.layers.2.ff.ff.0.proj.weight"].shape == (2 * 4 * 64, 64)
    assert sd["transformer.layers.0.cross_attn.to_kv.weight"].shape == (128, 64)
    assert "to_cond_embed.0.bias" not in sd and "to_timestep_embed.0.bias" in sd
    assert SAO_OPEN.kv_heads == 12 and SAO_OPEN.head_width == 64 and SAO_OPEN.rotary_dim == 32
    unet = SAO_OPEN.comfy_unet_config()
    assert unet["audio_model"] == "dit1.0" and unet["global_cond_type"] == "prepend" and unet["embed_dim"] == 1536
    assert StableAudioDiTConfig.from_dict(unet) == SAO_OPEN
    assert StableAudioDiTConfig.from_dict(TINY.to_dict()) == TINY


@pytest.mark.parametrize("kwargs, match", [
    (dict(embed_dim=100, num_heads=3), "not divisible"),
    (dict(embed_dim=128, num_heads=2, cond_token_dim=768), r"12 key/value heads .* 2 query heads"),
    (dict(embed_dim=256, num_heads=4, cond_token_dim=192), r"3 key/value heads .* 4 query heads"),
    (dict(embed_dim=128, num_heads=2, cond_token_dim=100), "not a multiple of the head width"),
    (dict(embed_dim=64, num_heads=4), "at least 32"),
    (dict(project_global_cond=False, global_cond_dim=768), "global_cond_dim"),
    (dict(depth=0), "positive integer"),
    (dict(StableAudioDiTConfig.from_dict(TINY.to_dict()).to_dict(), spare=1), "unsupported"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        if "spare" in kwargs:
            StableAudioDiTConfig.from_dict(kwargs)
        else:
            StableAudioDiTConfig(**kwargs)


def test_zero_control_is_bit_identical_and_controlnet_trains_through_hook():
    model = _model().eval()
    x, t, ctx, glob = _inputs()
    with torch.no_grad():
        ref = model(x, t, ctx, glob)
        out = model(x, t, ctx, glob, control=lambda h, run: [torch.zeros_like(h) for _ in range(2)])
        assert torch.equal(out, ref)
        cn = EnvelopeControlNet.from_base(model.blocks, model.transformer.dim, envelope_channels=1, fraction=0.5)
        env = torch.rand(1, 1, x.shape[-1])
        assert torch.equal(model(x, t, ctx, glob, control=lambda h, run: cn.residuals(h, env, run)), ref)

    # a non-zero residual changes the output, and its gradient reaches the residual source
    for p in model.parameters():
        p.requires_grad_(False)
    seen = {}
    res = torch.zeros(2, 1 + x.shape[-1], model.dim, requires_grad=True)

    def control(h, run_block):
        seen["h"] = h.shape
        r1 = run_block(model.blocks[0], h) - h                  # run_block is differentiable too
        return [res, r1]

    out = model(x, t, ctx, glob, control=control)
    assert seen["h"] == (2, 1 + x.shape[-1], model.dim)
    out.square().mean().backward()
    assert res.grad is not None and res.grad.abs().sum() > 0

    with torch.no_grad():
        cn.zero_convs[0].weight.normal_(std=0.1)
    out = model(x, t, ctx, glob, control=lambda h, run: cn.residuals(h, env, run))
    assert not torch.allclose(out, ref)
    out.square().mean().backward()
    assert cn.zero_convs[0].weight.grad.abs().sum() > 0 and cn.envelope_in.weight.grad.abs().sum() > 0

    with pytest.raises(ValueError, match="residuals"):
        model(x, t, ctx, glob, control=lambda h, run: [torch.zeros_like(h)] * 4)


def test_conditioner_and_checkpoint_round_trip():
    torch.manual_seed(1)
    model, cond = _model(), StableAudioConditioner()
    tokens = torch.randn(3, 4, 768)
    context, glob = cond(tokens, 0.0, torch.tensor([1.0, 30.0, 600.0]))
    assert context.shape == (3, 6, 768) and glob.shape == (3, 1536)
    torch.testing.assert_close(context[:, :4], tokens)
    torch.testing.assert_close(context[:, 4], glob[:, :768])
    torch.testing.assert_close(context[:, 5], glob[:, 768:])
    torch.testing.assert_close(context[0, 4], context[2, 4])                 # scalar start: same for every item
    assert not torch.allclose(context[0, 5], context[1, 5])
    torch.testing.assert_close(cond.seconds_total(600.0), cond.seconds_total(512.0))   # clamped to max_val
    assert set(cond.state_dict()) == {f"seconds_{w}.embedder.embedding.{k}" for w in ("start", "total")
                                      for k in ("0.weights", "1.weight", "1.bias")}

    sd = checkpoint_state_dict(model, cond)
    assert all(k.startswith(("model.diffusion_model.", "conditioner.conditioners.seconds_")) for k in sd)
    assert "conditioner.conditioners.seconds_total.embedder.embedding.0.weights" in sd
    dit_sd, cond_sd = split_checkpoint_state_dict(dict(sd, **{"pretransform.model.x": torch.zeros(1)}))
    model2, cond2 = StableAudioDiT(TINY), StableAudioConditioner()
    model2.load_state_dict(dit_sd, strict=True)
    cond2.load_state_dict(cond_sd, strict=True)
    x, t, ctx, g = _inputs()
    assert torch.equal(model2(x, t, ctx, g), model(x, t, ctx, g))
    assert torch.equal(cond2(tokens, 2.0, 5.0)[0], cond(tokens, 2.0, 5.0)[0])

    # stable-audio-tools' own prefix with its all-zero norm biases also loads
    sat = checkpoint_state_dict(model, cond, dit_prefix="model.model.")
    sat["model.model.transformer.layers.0.pre_norm.beta"] = torch.zeros(model.dim)
    model3 = StableAudioDiT(TINY)
    model3.load_state_dict(split_checkpoint_state_dict(sat)[0], strict=True)
    with pytest.raises(ValueError, match="no DiT keys"):
        split_checkpoint_state_dict({"conditioner.conditioners.seconds_start.x": torch.zeros(1)})


def test_v_helpers_and_oracle_sampler():
    g = torch.Generator().manual_seed(0)
    x0, n = torch.randn(4, 3, 10, generator=g), torch.randn(4, 3, 10, generator=g)
    t = torch.tensor([0.0, 0.3, 0.77, 1.0])
    xt = noisy(x0, n, t)
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[3], n[3], atol=1e-6, rtol=0)
    torch.testing.assert_close(x0_from_v(xt, v_target(x0, n, t), t), x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(x0_from_v(noisy(x0, n, 0.4), v_target(x0, n, 0.4), 0.4), x0, atol=1e-5, rtol=0)
    # v is the time derivative of x_t (up to π/2): d/dt x_t = π/2 · v
    eps = 1e-3
    fd = (noisy(x0, n, 0.5 + eps) - noisy(x0, n, 0.5 - eps)) / (2 * eps)
    torch.testing.assert_close(fd, math.pi / 2 * v_target(x0, n, 0.5), atol=1e-3, rtol=1e-3)

    calls = []

    def oracle(x_t, t_b):                                      # data distribution = the single point x0
        calls.append(float(t_b[0]))
        a = t_b.reshape(-1, 1, 1) * math.pi / 2
        n_hat = (x_t - a.cos() * x0) / a.sin()
        return a.cos() * n_hat - a.sin() * x0

    out = sample(oracle, n, steps=10)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert len(calls) == 10 and calls[0] == 1.0 and calls[-1] > 0
    calls.clear()
    out = sample(oracle, n, steps=7, t_max=0.9987, t_min=0.02)                 # ComfyUI-like σ range
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert len(calls) == 7 and abs(calls[-1] - 0.02) < 1e-6
    with pytest.raises(ValueError):
        sample(oracle, n, steps=0)
