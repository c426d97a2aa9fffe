"""Host tier: ``avlab.foley.oobleck`` (papers.md §4, Stable Audio Open's autoencoder) against ComfyUI's own
``comfy.ldm.audio.autoencoder.AudioOobleckVAE`` — the same state dict loads strictly into ComfyUI's
module, encode (mean / scale) and decode agree in fp32, and ``comfy.sd.VAE`` detects the keys as the
audio VAE (built tiny here: ComfyUI itself only builds the full-size SAO widths)."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torch.nn.functional as F

from avlab.foley.oobleck import OobleckConfig, OobleckVAE

DETECTION_KEY = "decoder.layers.1.layers.0.beta"


def _perturbed(cfg: OobleckConfig, seed: int) -> OobleckVAE:
    """Our VAE, randomly initialised, then moved well away from the init: snake alpha/beta (0 at init)
    get random log-scales, weight-norm magnitudes random factors, directions and biases noise."""
    torch.manual_seed(seed)
    vae = OobleckVAE(cfg)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith(".alpha") or name.endswith(".beta"):
                p.copy_(0.5 * torch.randn_like(p))
            elif name.endswith("original0"):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
            else:
                p.add_(0.1 * p.abs().mean() * torch.randn_like(p))
    return vae.eval()


def _comfy_vae(comfy, channels: int, latent_dim: int):
    from comfy.ldm.audio.autoencoder import AudioOobleckVAE

    return AudioOobleckVAE(channels=channels, latent_dim=latent_dim)


@pytest.mark.parametrize("channels,latent_dim", [(4, 64), (8, 64), (4, 8)])
def test_state_dict_loads_strictly_and_outputs_match(comfy_inprocess, channels, latent_dim):
    cfg = OobleckConfig(channels=channels, latent_dim=latent_dim)
    ours = _perturbed(cfg, seed=channels + latent_dim)
    theirs = _comfy_vae(comfy_inprocess, channels, latent_dim).eval()

    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in theirs_sd.items()}
    assert float(theirs_sd[DETECTION_KEY].abs().max()) == 0.0      # ComfyUI's init: log-scale 0
    theirs.load_state_dict(ours_sd, strict=True)
    # the snake parameters really are perturbed now (not the trivial alpha = beta = 0)
    assert float(theirs.state_dict()[DETECTION_KEY].abs().max()) > 0.1

    g = torch.Generator().manual_seed(1)
    x = 0.3 * torch.randn(2, 2, 2 * 2048, generator=g)
    with torch.no_grad():
        mean, std = ours.encode_dist(x)
        raw = theirs.encoder(x)
        c_mean, c_scale = raw.chunk(2, dim=1)
        torch.testing.assert_close(mean, c_mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(std, F.softplus(c_scale) + 1e-4, rtol=0, atol=1e-5)
        assert float(mean.abs().max()) > 1e-3    # not a trivially tiny output

        z = torch.randn(2, latent_dim, 3, generator=g)
        out = ours.decode(z)
        c_out = theirs.decode(z)
        assert out.shape == c_out.shape == (2, 2, 3 * 2048)
        torch.testing.assert_close(out, c_out, rtol=0, atol=1e-5)
        assert float(out.abs().max()) > 1e-3

        # a length that is not a multiple of hop: ours pads with zeros on the right, as done by hand here
        y = x[..., :3000]
        torch.testing.assert_close(ours.encode(y), theirs.encoder(F.pad(y, (0, 4096 - 3000))).chunk(2, 1)[0],
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.decode(ours.encode(y), length=3000),
                                   theirs.decode(theirs.encoder(F.pad(y, (0, 1096))).chunk(2, 1)[0])[..., :3000],
                                   rtol=0, atol=1e-5)

        # ComfyUI's bottleneck samples with torch.randn_like; same RNG state -> same latent as ours
        torch.manual_seed(7)
        c_sample = theirs.encode(x)
        eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(c_sample, mean + std * eps, rtol=0, atol=1e-5)


def test_comfy_sd_vae_detects_our_keys_as_the_audio_vae(comfy_inprocess, monkeypatch):
    import comfy.ldm.audio.autoencoder as autoencoder
    import comfy.sd

    # the detection line in comfy/sd.py class VAE is still the one this pack's keys rely on
    assert f'"{DETECTION_KEY}" in sd' in inspect.getsource(comfy.sd.VAE.__init__)
    ours = _perturbed(OobleckConfig(channels=4), seed=3)
    sd = ours.state_dict()           # ComfyUI's VAE loader takes the keys with no prefix
    assert DETECTION_KEY in sd

    # build it through the real detection path, at our width (the full size is not built)
    monkeypatch.setattr(comfy.sd, "AudioOobleckVAE", functools.partial(autoencoder.AudioOobleckVAE, channels=4))
    vae = comfy.sd.VAE(sd={k: v.clone() for k, v in sd.items()})
    assert isinstance(vae.first_stage_model, autoencoder.AudioOobleckVAE)
    assert vae.latent_channels == 64 and vae.upscale_ratio == 2048
    z = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(0))
    audio = vae.decode(z)             # comfy.sd.VAE.decode returns channels last: [B, samples, channels]
    with torch.no_grad():
        ref = ours.decode(z)
    assert tuple(audio.shape) == (1, 4096, 2)
    torch.testing.assert_close(audio.movedim(-1, 1).float().cpu(), ref, rtol=0, atol=1e-4)
