"""Oobleck audio VAE (papers.md §4: Stable Audio Open's autoencoder, trained tiny for FoleyGRAM's
proof): config, shapes and padding, the KL and MR-STFT formulas on hand-computed values, safetensors
round trip and refusals, and a short training run that must reduce the reconstruction loss."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F

from avlab.foley.oobleck import (
    META_KEY,
    SAO_VAE,
    OobleckConfig,
    OobleckVAE,
    load_oobleck,
    multi_resolution_stft_loss,
    reconstruction_loss,
    save_oobleck,
)

TINY = OobleckConfig(channels=4, latent_dim=8)


def _vae(cfg=TINY, seed=0) -> OobleckVAE:
    torch.manual_seed(seed)
    return OobleckVAE(cfg)


def _sine_bursts(n=2048, sr=44100) -> torch.Tensor:
    t = torch.arange(n) / sr
    idx = torch.arange(n)
    clips = []
    for freq, on in ((220.0, 0), (440.0, 512), (880.0, 1024), (330.0, 256)):
        s = 0.5 * torch.sin(2 * math.pi * freq * t) * ((idx >= on) & (idx < on + 1024)).float()
        clips.append(torch.stack([s, 0.8 * s]))
    return torch.stack(clips)      # [4, 2, n]


def test_sao_config_and_dict_round_trip():
    assert SAO_VAE.hop == 2048 and SAO_VAE.latent_rate == pytest.approx(44100 / 2048)
    assert (SAO_VAE.in_channels, SAO_VAE.channels, SAO_VAE.latent_dim) == (2, 128, 64)
    d = TINY.to_dict()
    assert d["strides"] == [2, 4, 4, 8, 8] and json.loads(json.dumps(d)) == d
    assert OobleckConfig.from_dict(d) == TINY
    with pytest.raises(ValueError, match="unknown keys"):
        OobleckConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="strides"):
        OobleckConfig(strides=(2, 3, 4, 8, 8))
    with pytest.raises(ValueError, match="strides"):
        OobleckConfig(strides=(2, 4))


def test_comfy_key_layout_for_the_tiny_config():
    sd = _vae().state_dict()
    # the key comfy.sd.VAE detects the audio VAE by, and the weight-norm / snake naming
    assert sd["decoder.layers.1.layers.0.beta"].shape == (64,)          # 4 * 16 channels into block 1
    assert sd["encoder.layers.0.parametrizations.weight.original0"].shape == (4, 1, 1)
    assert sd["encoder.layers.0.parametrizations.weight.original1"].shape == (4, 2, 7)
    assert sd["encoder.layers.1.layers.0.layers.1.parametrizations.weight.original1"].shape == (4, 4, 7)
    assert sd["encoder.layers.5.layers.4.parametrizations.weight.original1"].shape == (64, 32, 16)
    assert sd["encoder.layers.7.parametrizations.weight.original1"].shape == (16, 64, 3)   # 2 * latent_dim
    # transposed conv: weight [in, out, k], weight-norm magnitude over dim 0
    assert sd["decoder.layers.1.layers.1.parametrizations.weight.original0"].shape == (64, 1, 1)
    assert sd["decoder.layers.1.layers.1.parametrizations.weight.original1"].shape == (64, 32, 16)
    assert "decoder.layers.7.bias" not in sd and "decoder.layers.7.parametrizations.weight.original1" in sd
    assert not any(k.endswith(".weight") for k in sd)   # every conv is weight-normed
    # log-scale snake parameters start at zero
    assert float(sd["encoder.layers.1.layers.0.layers.0.alpha"].abs().max()) == 0.0


@pytest.mark.parametrize("length", [2048, 4096, 3000, 1, 2047])
def test_shapes_and_non_multiple_lengths(length):
    vae = _vae().eval()
    x = torch.randn(2, 2, length) * 0.1
    frames = math.ceil(length / 2048)
    with torch.no_grad():
        mean, std = vae.encode_dist(x)
        z = vae.encode(x)
        full = vae.decode(z)
        cropped = vae.decode(z, length=length)
        recon, m2, s2 = vae(x)
    assert mean.shape == std.shape == z.shape == (2, 8, frames)
    assert float(std.min()) >= 1e-4
    torch.testing.assert_close(z, mean, rtol=0, atol=0)
    assert full.shape == (2, 2, frames * 2048) and cropped.shape == recon.shape == (2, 2, length)
    torch.testing.assert_close(cropped, full[..., :length], rtol=0, atol=0)
    # padding is zeros on the right: the same as encoding an explicitly zero-padded signal
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(F.pad(x, (0, frames * 2048 - length))), z)
    torch.testing.assert_close(m2, mean)


def test_sampling_uses_the_generator_and_the_std():
    vae = _vae().eval()
    x = torch.randn(1, 2, 4096) * 0.1
    with torch.no_grad():
        mean, std = vae.encode_dist(x)
        a = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
        b = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
        c = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(4))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, mean + std * eps)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_kl_matches_a_hand_computed_value():
    # B=1, C=2, T=2. mean = [[1, 0], [0, 2]], std = [[1, 2], [0.5, 1]]
    mean = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    std = torch.tensor([[[1.0, 2.0], [0.5, 1.0]]])
    # per element: m² + s² − log s² − 1
    #   (1,1): 1 + 1 − 0 − 1 = 1          (0,2): 0 + 4 − log 4 − 1 = 3 − log 4
    #   (0,.5): 0 + .25 − log .25 − 1     (2,1): 4 + 1 − 0 − 1 = 4
    t0 = 1.0 + (0.25 + math.log(4.0) - 1.0)          # frame 0 summed over channels
    t1 = (3.0 - math.log(4.0)) + 4.0                 # frame 1
    assert float(OobleckVAE.kl(mean, std)) == pytest.approx((t0 + t1) / 2, rel=1e-6)
    assert float(OobleckVAE.kl(torch.zeros(2, 3, 4), torch.ones(2, 3, 4))) == 0.0


def test_std_is_softplus_of_the_scale_channels_plus_floor():
    vae = _vae().eval()
    x = torch.randn(1, 2, 2048) * 0.1
    with torch.no_grad():
        raw = vae.encoder(x)
        mean, std = vae.encode_dist(x)
    torch.testing.assert_close(mean, raw[:, :8])
    torch.testing.assert_close(std, F.softplus(raw[:, 8:]) + 1e-4)


def test_mr_stft_loss_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 2, 4096, generator=g)
    assert float(multi_resolution_stft_loss(a, a.clone())) == 0.0
    assert float(multi_resolution_stft_loss(torch.zeros(1, 2, 3000), torch.zeros(1, 2, 3000))) == 0.0
    b = a + 0.1 * torch.randn(2, 2, 4096, generator=g)
    small, big = float(multi_resolution_stft_loss(b, a)), float(multi_resolution_stft_loss(0.1 * a, a))
    assert 0.0 < small < big
    # 0.1·a: log-magnitude L1 is exactly log 10 at every bin (clamp far below), SC exactly 0.9
    assert big == pytest.approx(0.9 + math.log(10.0), rel=1e-4)
    # works on short clips (zero padding) and gives finite gradients through silence
    p = torch.zeros(1, 2, 200, requires_grad=True)
    loss = reconstruction_loss(p, torch.randn(1, 2, 200, generator=g))
    loss.backward()
    assert float(loss.detach()) > 0 and torch.isfinite(p.grad).all()
    assert float(reconstruction_loss(a, a)) == 0.0
    l1 = float((b - a).abs().mean())
    assert float(reconstruction_loss(b, a)) == pytest.approx(small + 0.1 * l1, rel=1e-5)


def test_save_load_round_trip(tmp_path):
    vae = _vae(seed=1)
    with torch.no_grad():   # move off the init so the round trip is not trivially zeros
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "tiny_oobleck.safetensors"
    save_oobleck(vae, path, extra_meta={"steps": 60, "note": "tiny"})
    loaded = load_oobleck(path)
    assert not loaded.training and loaded.cfg == vae.cfg
    ref = vae.state_dict()
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, ref[k]), k
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta[META_KEY]) == vae.cfg.to_dict() and meta["steps"] == "60" and meta["note"] == "tiny"

    half = tmp_path / "tiny_half.safetensors"
    save_oobleck(vae, half, half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded_h = load_oobleck(half)
    x = torch.randn(1, 2, 4096) * 0.1
    with torch.no_grad():
        for k, v in loaded_h.state_dict().items():
            assert v.dtype == torch.float32
            torch.testing.assert_close(v, ref[k], rtol=2e-3, atol=1e-4)
        vae.eval()
        torch.testing.assert_close(loaded_h.encode(x), vae.encode(x), rtol=2e-2, atol=2e-3)


def test_load_refusals_name_the_file(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in _vae().state_dict().items()}
    bare = tmp_path / "no_meta.safetensors"
    save_file(sd, str(bare))
    with pytest.raises(ValueError, match=r"avlab_oobleck.*no_meta\.safetensors"):
        load_oobleck(bare)

    wrong = tmp_path / "wrong_keys.safetensors"
    sd2 = dict(sd)
    sd2.pop("decoder.layers.1.layers.0.beta")
    sd2["encoder.layers.0.bias"] = torch.zeros(5)
    sd2["extra.weight"] = torch.zeros(1)
    save_file(sd2, str(wrong), metadata={META_KEY: json.dumps(TINY.to_dict())})
    with pytest.raises(ValueError, match="wrong_keys.safetensors") as err:
        load_oobleck(wrong)
    msg = str(err.value)
    assert "1 missing" in msg and "decoder.layers.1.layers.0.beta" in msg
    assert "1 unexpected" in msg and "1 wrong shape" in msg

    # a config that doesn't match the tensors
    other = tmp_path / "other_cfg.safetensors"
    save_file(sd, str(other), metadata={META_KEY: json.dumps(OobleckConfig(channels=8, latent_dim=8).to_dict())})
    with pytest.raises(ValueError, match="other_cfg.safetensors"):
        load_oobleck(other)
    with pytest.raises(ValueError, match="missing.safetensors"):
        load_oobleck(tmp_path / "missing.safetensors")


def test_bad_inputs_are_refused():
    vae = _vae()
    with pytest.raises(ValueError, match="audio"):
        vae.encode(torch.zeros(1, 1, 2048))
    with pytest.raises(ValueError, match="audio"):
        vae.encode(torch.zeros(2, 2048))
    with pytest.raises(ValueError, match="latent"):
        vae.decode(torch.zeros(1, 4, 2))


def test_training_reduces_the_reconstruction_loss():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        before, after, elapsed = _train_60_steps()
    finally:
        torch.set_num_threads(threads)
    assert math.isfinite(after) and after < 0.8 * before, (before, after)
    assert elapsed < 30.0   # ~5 s on 2 CPU cores; generous for slow CI machines


def _train_60_steps() -> tuple[float, float, float]:
    vae = _vae(seed=0)
    x = _sine_bursts()
    g = torch.Generator().manual_seed(0)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(reconstruction_loss(vae.decode(vae.encode(x), length=x.shape[-1]), x))

    before = eval_loss()
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    vae.train()
    for _ in range(60):
        recon, mean, std = vae(x, generator=g)
        loss = reconstruction_loss(recon, x) + 1e-4 * vae.kl(mean, std)
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    vae.eval()
    return before, eval_loss(), elapsed


def test_loudness_envelope_and_log_mel_losses_know_where_and_in_which_band_the_energy_is():
    import torchaudio

    from avlab.foley.oobleck import LogMelLoss, loudness_envelope_loss

    sr, n = 44100, 8192
    t = torch.arange(n) / sr
    tone = (0.3 * torch.sin(2 * math.pi * 440 * t)).expand(1, 2, n)
    late = tone.clone()
    late[..., : n // 2] = 0                                     # same tone, only in the second half
    hiss = torch.randn(1, 2, n, generator=torch.Generator().manual_seed(0))
    hiss = torchaudio.functional.highpass_biquad(hiss, sr, 12000)
    hiss = hiss * tone.pow(2).mean().sqrt() / hiss.pow(2).mean().sqrt()       # same loudness, above 12 kHz
    assert float(loudness_envelope_loss(tone, tone)) == 0.0
    assert float(loudness_envelope_loss(late, tone)) > 1.0      # silence where the tone plays
    assert float(loudness_envelope_loss(hiss, tone)) < 0.1      # broadband loudness cannot tell them apart...
    log_mel = LogMelLoss(sr)
    assert float(log_mel(tone, tone)) == 0.0
    assert float(log_mel(hiss, tone)) > 1.0                     # ...the per-band term can


def test_stereo_image_loss_catches_a_phase_inverted_channel_that_per_channel_spectra_miss():
    from avlab.common.errors import NodeInputError
    from avlab.foley.oobleck import stereo_image_loss, sum_and_difference

    g = torch.Generator().manual_seed(0)
    left = torch.randn(1, 1, 4096, generator=g) * 0.1
    target = torch.cat([left, left], 1)                      # mono as stereo (the synthetic domain)
    inverted = torch.cat([left, -left], 1)                   # what the first autoencoder recipe learnt
    assert torch.equal(sum_and_difference(target), torch.cat([2 * left, torch.zeros_like(left)], 1))
    assert float(multi_resolution_stft_loss(inverted, target)) == 0.0      # per-channel magnitudes: blind
    assert float(stereo_image_loss(target, target.clone())) == 0.0
    assert float(stereo_image_loss(inverted, target, log_floor=0.1)) > 1.0
    with pytest.raises(NodeInputError, match="stereo"):
        sum_and_difference(left)
