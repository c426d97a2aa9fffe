"""The pack's trained tiny Stable Audio inside ComfyUI (papers.md §4; issue 10): ``AVLab Tiny Stable
Audio`` builds ComfyUI's own ``StableAudio1`` and audio ``VAE`` from the committed files, and they
compute what the host-free training path computes (the model was trained there): the denoiser under
ComfyUI's V_PREDICTION_CONTINUOUS sampling and the Oobleck decode. Nothing stays patched on ComfyUI."""

from __future__ import annotations

import math

import pytest
import torch

from tiny_stable_audio import apply_once


@pytest.fixture(scope="module")
def builtin(comfy_inprocess):
    from avlab.foley import generator_train as G

    if not (G.BUILTIN_BASE.is_file() and G.BUILTIN_AUDIO_AE.is_file()):
        pytest.skip("no tiny Stable Audio committed (scripts/train_foley_generator.py)")
    from avlab.nodes.foley import build_tiny_stable_audio

    return build_tiny_stable_audio(G.BUILTIN_BASE, G.BUILTIN_AUDIO_AE)


def test_the_comfyui_denoiser_equals_the_host_free_base(builtin):
    from avlab.foley import generator_train as G

    patcher, _ = builtin
    base = G.load_base(G.BUILTIN_BASE)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 64, 44, generator=g), torch.randn(2, 64, 44, generator=g)
    tokens = torch.randn(1, 1, 768, generator=g)
    for sigma in (0.1, 1.0, 20.0):
        x = x0 + sigma * noise                                          # ComfyUI's (EDM-scaled) input
        denoised = apply_once(patcher, x, sigma, cross_attn=tokens, seconds_start=0, seconds_total=2)
        t = torch.full((2,), math.atan(sigma) * 2 / math.pi)
        with torch.no_grad():
            v = base.v(x / math.sqrt(1 + sigma ** 2), t, tokens.expand(2, -1, -1), 2.0)
        ours = x / (1 + sigma ** 2) - sigma / math.sqrt(1 + sigma ** 2) * v
        torch.testing.assert_close(denoised, ours, rtol=1e-4, atol=1e-4)


def test_the_comfyui_audio_vae_decodes_like_the_host_free_one(builtin):
    import comfy.sd
    from avlab.foley import generator_train as G
    from avlab.foley.oobleck import load_oobleck

    _, vae = builtin
    assert comfy.sd.AudioOobleckVAE.__name__ == "AudioOobleckVAE"
    assert comfy.sd.AudioOobleckVAE.__module__ == "comfy.ldm.audio.autoencoder"    # restored after the build
    ours = load_oobleck(G.BUILTIN_AUDIO_AE)
    z = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ours.decode(z)
    decoded = vae.decode(z).movedim(-1, 1)                               # ComfyUI returns [B, samples, C]
    assert decoded.shape == expected.shape == (1, 2, 8 * 2048)
    torch.testing.assert_close(decoded.float(), expected, rtol=1e-3, atol=1e-4)
