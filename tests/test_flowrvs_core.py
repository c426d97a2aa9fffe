"""FlowRVS core: sampler, schedule, DVI, frame geometry and latent conventions (papers.md §2, issue 8)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from avlab.common.errors import NodeInputError
from avlab.flowrvs.latents import (WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, denormalise_video_latent,
                                   encode_mask, mask_to_vae_input, normalise_video_latent, pad_frames,
                                   padded_length, restore, video_latent, working_size)
from avlab.flowrvs.model import FlowRVSModel, build_transformer, enable_dvi, tiny_config
from avlab.flowrvs.sampler import flowrvs_sigmas, sample, segment_latent, shift_sigma


# ---------------------------------------------------------------------------------------------- sampler
def test_one_step_euler_is_video_minus_v_exactly():
    torch.manual_seed(0)
    video = torch.randn(1, 16, 2, 4, 4)
    v = torch.randn_like(video)
    seen = []

    def model_fn(x, sigma):
        seen.append(sigma.clone())
        return v
    out = sample(model_fn, video, flowrvs_sigmas())
    assert torch.equal(out, video - v)
    assert len(seen) == 1 and torch.equal(seen[0], torch.ones(1))


def test_default_schedule_is_one_step():
    assert flowrvs_sigmas().tolist() == [1.0, 0.0]


@pytest.mark.parametrize("steps,shift", [(1, 3.0), (4, 3.0), (10, 1.0), (7, 5.0)])
def test_schedule_endpoints_monotone_and_shift(steps, shift):
    s = flowrvs_sigmas(steps, shift)
    assert s.shape == (steps + 1,)
    assert s[0].item() == 1.0 and s[-1].item() == 0.0
    assert torch.all(s[1:] < s[:-1])
    t = torch.linspace(1.0, 0.001, steps + 1, dtype=torch.float64)[:-1]
    expected = shift * t / (1 + (shift - 1) * t)
    assert torch.allclose(s[:-1].double(), expected, atol=1e-6)


def test_shift_formula_values():
    assert shift_sigma(0.5, 3.0) == pytest.approx(1.5 / 2.0)  # 3t/(1+2t) at t=0.5 → 0.75
    assert shift_sigma(0.0, 3.0) == 0.0 and shift_sigma(1.0, 3.0) == 1.0
    assert shift_sigma(0.3, 1.0) == pytest.approx(0.3)


def test_bad_schedule_inputs():
    with pytest.raises(NodeInputError):
        flowrvs_sigmas(0)
    with pytest.raises(NodeInputError):
        flowrvs_sigmas(4, 0.0)


def test_multistep_euler_and_callback():
    # constant velocity field: any Euler schedule from 1 to 0 lands on x - v exactly-ish
    torch.manual_seed(1)
    x0 = torch.randn(2, 16, 1, 2, 2)
    v = torch.randn_like(x0)
    calls = []
    sig = flowrvs_sigmas(4)
    out = sample(lambda x, s, scale: scale * v, x0, sig, callback=calls.append, extra_args={"scale": 1.0})
    assert torch.allclose(out, x0 - v, atol=1e-6)
    assert [c["i"] for c in calls] == [0, 1, 2, 3]
    for c in calls:
        assert set(c) >= {"i", "x", "sigma", "denoised"}
        assert torch.allclose(c["denoised"], x0 - v, atol=1e-6)
    assert torch.equal(calls[-1]["x"], out)


def test_callback_exception_cancels():
    calls = []

    class Stop(Exception):
        pass

    def cb(d):
        calls.append(d["i"])
        if d["i"] == 1:
            raise Stop

    n = []
    with pytest.raises(Stop):
        sample(lambda x, s: (n.append(1), torch.zeros_like(x))[1], torch.zeros(1, 16, 1, 2, 2),
               flowrvs_sigmas(5), callback=cb)
    assert calls == [0, 1] and len(n) == 2


# ---------------------------------------------------------------------------------------------- model
def _tiny_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    video = torch.randn(1, 16, 2, 4, 4, generator=g)
    text = torch.randn(1, 5, 32, generator=g)
    return x, video, text


def test_dvi_zero_init_equals_16_channel_model():
    torch.manual_seed(0)
    base = FlowRVSModel(build_transformer(tiny_config())).eval()
    x, video, text = _tiny_inputs()
    with torch.no_grad():
        ref = base(x, 0.7, text)
    assert ref.shape == x.shape and ref.abs().sum() > 0
    w16 = base.transformer.patch_embedding.weight.detach().clone()
    enable_dvi(base)
    assert base.dvi and base.in_channels == 32 and base.transformer.config.in_channels == 32
    pe = base.transformer.patch_embedding
    assert torch.equal(pe.weight[:, :16], w16) and torch.all(pe.weight[:, 16:] == 0)
    with torch.no_grad():
        out = base(x, 0.7, text, video=video)
    assert torch.equal(out, ref)
    # the extra channels do matter once trained
    with torch.no_grad():
        pe.weight[:, 16:].normal_()
        assert not torch.allclose(base(x, 0.7, text, video=video), ref)


def test_dvi_input_order_is_xt_then_video():
    torch.manual_seed(0)
    m = FlowRVSModel.from_config(tiny_config(), dvi=True).eval()
    pe = m.transformer.patch_embedding
    with torch.no_grad():  # only the video half is live: output must depend on `video`, not `x_t`
        pe.weight[:, 16:].copy_(pe.weight[:, :16])
        pe.weight[:, :16].zero_()
    x, video, text = _tiny_inputs(1)
    with torch.no_grad():
        a = m(x, 0.5, text, video=video)
        b = m(torch.randn_like(x), 0.5, text, video=video)
    assert torch.equal(a, b)


def test_dvi_model_requires_video_and_rejects_double_enable():
    m = FlowRVSModel.from_config(dvi=True)
    x, _, text = _tiny_inputs()
    with pytest.raises(NodeInputError):
        m(x, 1.0, text)
    with pytest.raises(NodeInputError):
        enable_dvi(m)


def test_segment_latent_one_step_with_model():
    torch.manual_seed(0)
    m = FlowRVSModel.from_config(tiny_config()).eval()
    _, video, text = _tiny_inputs(2)
    with torch.no_grad():
        v = m(video, 1.0, text)
    assert torch.equal(segment_latent(m, video, text), video - v)


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("hw,expected", [
    ((720, 1280), (464, 832)),   # scale 0.65 (width-bound) → 468×832 → floor 16
    ((480, 832), (480, 832)),
    ((1080, 1920), (464, 832)),  # 0.4333.. → 468×832
    ((240, 320), (240, 320)),    # never upscaled
    ((250, 330), (240, 320)),    # just floored
    ((1280, 720), (480, 256)),   # portrait: height-bound 0.375 → 480×270
    ((8, 8), (16, 16)),          # at least one multiple of 16
])
def test_working_size(hw, expected):
    h, w = hw
    nh, nw = working_size(h, w)
    assert (nh, nw) == expected
    assert nh % 16 == 0 and nw % 16 == 0 and nh <= 480 and nw <= 832
    s = min(1.0, 480 / h, 832 / w)
    if h >= 16 and w >= 16:
        assert nh == max(16, math.floor(h * s + 1e-9) // 16 * 16)


def test_pad_and_restore_round_trip():
    for t in range(1, 11):
        assert padded_length(t) % 4 == 1 and 0 <= padded_length(t) - t < 4
        frames = torch.rand(t, 6, 10, 3)
        padded, t0 = pad_frames(frames)
        assert t0 == t and padded.shape[0] == padded_length(t)
        assert torch.equal(padded[:t], frames)
        assert torch.all(padded[t:] == frames[-1])
        masks = padded[..., 0]
        assert torch.equal(restore(masks, t0, 6, 10), frames[..., 0])
    assert padded_length(5) == 5 and padded_length(6) == 9 and padded_length(1) == 1


def test_restore_resizes_back():
    masks = torch.zeros(5, 16, 32)
    masks[:, 4:12, 8:24] = 1.0
    out = restore(masks, 3, 32, 64)
    assert out.shape == (3, 32, 64)
    assert out[:, 8:24, 16:48].min() > 0.5 and out[:, :6].max() < 0.5
    with pytest.raises(NodeInputError):
        restore(masks, 6, 32, 64)


# ---------------------------------------------------------------------------------------------- latents
def test_wan_constants_match_diffusers_defaults():
    import inspect

    from diffusers import AutoencoderKLWan
    params = inspect.signature(AutoencoderKLWan.__init__).parameters
    assert list(WAN21_LATENTS_MEAN) == pytest.approx(params["latents_mean"].default)
    assert list(WAN21_LATENTS_STD) == pytest.approx(params["latents_std"].default)
    assert len(WAN21_LATENTS_MEAN) == len(WAN21_LATENTS_STD) == 16


def test_normalise_round_trip_and_values():
    z = torch.randn(1, 16, 2, 3, 3, dtype=torch.float64)
    n = normalise_video_latent(z)
    mean = torch.tensor(WAN21_LATENTS_MEAN, dtype=torch.float64)
    std = torch.tensor(WAN21_LATENTS_STD, dtype=torch.float64)
    assert torch.allclose(n[0, :, 1, 2, 0], (z[0, :, 1, 2, 0] - mean) / std)
    assert torch.allclose(denormalise_video_latent(n), z)
    with pytest.raises(NodeInputError):
        normalise_video_latent(torch.zeros(1, 4, 1, 2, 2))


def test_mask_to_vae_input_values():
    mask = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])  # [T=1,H=2,W=2]
    x = mask_to_vae_input(mask)
    assert x.shape == (1, 3, 1, 2, 2)
    expected = torch.tensor([[-1.0, 1.0], [0.0, -0.5]])
    for c in range(3):
        assert torch.equal(x[0, c, 0], expected)
    bool_in = mask_to_vae_input(torch.tensor([[[True, False]]]))
    assert torch.equal(bool_in, torch.tensor([1.0, -1.0]).view(1, 1, 1, 1, 2).expand(1, 3, 1, 1, 2))
    assert mask_to_vae_input(mask[None, None]).shape == (1, 3, 1, 2, 2)


class _FakeVAE:
    """Diffusers-style VAE: mean = 4× spatial average pool of the first channel, repeated to 16;
    ``sample()`` differs from the mean (so using it would be caught)."""

    def __init__(self):
        self.inputs = []

    def encode(self, x):
        self.inputs.append(x)
        b, _, t, h, w = x.shape
        tt = (t - 1) // 4 + 1
        m = torch.nn.functional.avg_pool3d(x[:, :1, ::4], (1, 2, 2)).expand(b, 16, tt, h // 2, w // 2)
        m = m + torch.arange(16.0).view(1, 16, 1, 1, 1)
        dist = SimpleNamespace(mean=m, sample=lambda generator=None: m + 100.0, mode=lambda: m)
        return SimpleNamespace(latent_dist=dist)


def test_encode_mask_uses_mean_not_normalised():
    vae = _FakeVAE()
    mask = torch.ones(5, 4, 4)
    z = encode_mask(vae, mask)
    assert torch.equal(vae.inputs[0], torch.ones(1, 3, 5, 4, 4))
    assert z.shape == (1, 16, 2, 2, 2)
    assert torch.equal(z, vae.encode(mask_to_vae_input(mask)).latent_dist.mean)  # mean, raw
    assert z.max() < 50  # not the sample (+100)


def test_video_latent_is_normalised_mean():
    vae = _FakeVAE()
    frames = torch.rand(5, 4, 4, 3)  # ComfyUI IMAGE in 0..1
    z = video_latent(vae, frames)
    x = frames.permute(3, 0, 1, 2)[None] * 2 - 1
    assert torch.equal(vae.inputs[0], x)
    raw = vae.encode(x).latent_dist.mean
    assert torch.allclose(z, normalise_video_latent(raw))
    assert torch.allclose(video_latent(vae, x), z)


def test_non_wan_vae_rejected():
    class FourChannel(_FakeVAE):
        def encode(self, x):
            out = super().encode(x)
            out.latent_dist.mean = out.latent_dist.mean[:, :4]
            return out
    with pytest.raises(NodeInputError, match="Wan 2.1 VAE"):
        encode_mask(FourChannel(), torch.ones(1, 4, 4))
    with pytest.raises(NodeInputError):
        video_latent(object(), torch.rand(1, 4, 4, 3))
