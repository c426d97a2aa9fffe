"""The tiny Stable-Audio-family generator and ControlNet training (papers.md §4; issue 10): the latent
scale fold, the file formats, the ControlNet's envelope normalisation and the three training stages
end to end at toy sizes."""

from __future__ import annotations

import json

import pytest
import torch

from avlab.foley import generator_train as G
from avlab.foley.conditioning import GramTokenProjection
from avlab.foley.controlnet import EnvelopeControlNet, read_controlnet_file
from avlab.foley.oobleck import OobleckConfig, OobleckVAE
from avlab.foley.stable_audio import StableAudioConditioner, StableAudioDiT, StableAudioDiTConfig

TINY_VAE = OobleckConfig(channels=2, latent_dim=8, c_mults=(1, 2), strides=(4, 8))
TINY_DIT = StableAudioDiTConfig(io_channels=8, embed_dim=64, depth=5, num_heads=1, project_cond_tokens=True)


def _randomise(module, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_fold_latent_scale_divides_the_latents_and_keeps_the_autoencoder():
    torch.manual_seed(0)
    vae = OobleckVAE(TINY_VAE).eval()
    _randomise(vae)
    audio = torch.randn(2, 2, 4 * 32) * 0.3
    with torch.no_grad():
        mean, std = vae.encode_dist(audio)
        out = vae.decode(mean)
        G.fold_latent_scale(vae, 4.0)
        mean2, std2 = vae.encode_dist(audio)
        out2 = vae.decode(mean2)
    torch.testing.assert_close(mean2, mean / 4.0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out2, out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(std2, std)          # the sampling noise is not rescaled (documented)


def _base(seed=0):
    torch.manual_seed(seed)
    dit = StableAudioDiT(TINY_DIT)
    _randomise(dit, seed)
    return G.StableAudioBase(dit, StableAudioConditioner(), GramTokenProjection(16, 768, ("text",)))


def test_base_file_is_the_stable_audio_single_file_layout_and_round_trips(tmp_path):
    base = _base()
    G.save_base(base, tmp_path / "sa.safetensors", extra={"seconds": 2.0})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "sa.safetensors"), "pt") as f:
        keys = set(f.keys())
        meta = json.loads(f.metadata()[G.BASE_META])
        assert {f.get_tensor(k).dtype for k in keys} == {torch.float16}
    assert "model.diffusion_model.transformer.layers.4.ff.ff.2.weight" in keys
    assert "conditioner.conditioners.seconds_total.embedder.embedding.1.weight" in keys
    assert "gram_to_tokens.weight" in keys and meta["seconds"] == 2.0
    loaded = G.load_base(tmp_path / "sa.safetensors")
    x, t, tok = torch.randn(2, 8, 6), torch.rand(2), torch.randn(2, 1, 768)
    with torch.no_grad():
        torch.testing.assert_close(loaded.v(x, t, tok, 2.0), base.half().float().v(x, t, tok, 2.0), rtol=1e-3, atol=1e-3)


def test_controlnet_file_holds_the_projection_and_round_trips_in_fp16(tmp_path):
    base = _base()
    net = EnvelopeControlNet.from_base(base.dit.transformer.layers, base.dit.transformer.dim)
    _randomise(net, 1)
    proj = GramTokenProjection(16, 768, ("video",))
    G.save_controlnet(net, proj, tmp_path / "cn.safetensors")
    meta, tensors = read_controlnet_file(tmp_path / "cn.safetensors")
    assert meta["copied"] == 1 and meta["base_dim"] == 64
    assert {v.dtype for v in tensors.values()} == {torch.float16} and "gram_to_tokens.weight" in tensors
    net2, proj2 = G.load_controlnet(tmp_path / "cn.safetensors", base)
    torch.testing.assert_close(net2.zero_convs[0].weight, net.zero_convs[0].weight.half().float())
    assert proj2.modalities == ("video",)


def test_controlnet_reads_the_envelope_shape_not_its_level():
    base = _base()
    net = EnvelopeControlNet.from_base(base.dit.transformer.layers, base.dit.transformer.dim)
    _randomise(net, 2)
    x = torch.randn(1, 7, 64)
    env = torch.rand(1, 1, 6)

    def run(block, h):
        return block(h)

    with torch.no_grad():
        a = net.residuals(x, env, run)
        b = net.residuals(x, 3.7 * env, run)
        silent = net.residuals(x, torch.zeros(1, 1, 6), run)
        net.envelope_in.weight.zero_()                 # what silence must amount to: no envelope signal
        no_signal = net.residuals(x, env, run)
    torch.testing.assert_close(a[0], b[0])
    assert torch.isfinite(silent[0]).all()
    torch.testing.assert_close(silent[0], no_signal[0])


def test_latent_envelopes_are_peak_normalised_and_follow_the_sound():
    audio = torch.zeros(1, 2, 44100)
    audio[..., 22050:24000] = torch.sin(torch.arange(1950) * 0.3)      # a burst at 0.5 s
    env = G.latent_envelopes(audio, 44100, 22)
    assert env.shape == (1, 1, 22) and float(env.max()) == pytest.approx(1.0)
    assert float(env[0, 0, :10].max()) == 0.0 and int(env[0, 0].argmax()) in range(11, 17)


def test_three_stages_train_and_evaluate_end_to_end_at_toy_size(tmp_path, monkeypatch):
    data = {"frames": 8, "fps": 16.0, "train_clips": 8, "val_clips": 2, "test_clips": 2}
    quick = {"steps": 2, "progress": False, "warmup_steps": 0}
    ae = G.train_audio_ae({"data": data, "batch_size": 2, "train": quick,
                           "model": {"channels": 2, "latent_dim": 8, "c_mults": [1, 2], "strides": [4, 8],
                                     "crop_latents": 4}}, tmp_path / "ae")
    assert ae["latent_std"] == pytest.approx(1.0, rel=1e-3)
    vae = str(tmp_path / "ae" / "oobleck.safetensors")
    base = G.train_base({"data": data, "vae": vae, "batch_size": 4, "train": quick,
                         "model": {"embed_dim": 64, "depth": 5, "num_heads": 1}}, tmp_path / "base")
    assert base["steps"] == 2
    cn = G.train_controlnet({"data": data, "vae": vae, "base": str(tmp_path / "base" / "stable_audio.safetensors"),
                             "batch_size": 4, "train": quick, "eval_clips": 1, "eval_steps": 2}, tmp_path / "cn")
    ev = cn["evaluation"]
    assert set(ev["results"]) == {"autoencoder reconstruction (floor)", "without ControlNet",
                                  "ControlNet, envelope of the real sound"}
    assert all(r["e_l1"] >= 0 for r in ev["results"].values())
    meta, _ = read_controlnet_file(tmp_path / "cn" / "envelope_controlnet.safetensors", tensors=False)
    assert meta["copied"] == 1 and meta["base_depth"] == 5


@pytest.mark.skipif(not G.BUILTIN_AUDIO_AE.is_file(), reason="no committed tiny Oobleck")
def test_committed_autoencoder_keeps_the_stereo_image_and_the_mono_loudness():
    """Regression guard for ``weights/foley/oobleck_tiny.safetensors``: the synthetic sounds are mono as
    stereo, so the reconstruction's L and R must agree (the first shipped file had R ≈ −L, correlation
    −0.998, and its mono downmix cancelled) and E-L1 of the reconstruction stays near the per-channel floor."""
    from avlab.foley.metrics import e_l1
    from avlab.foley.oobleck import load_oobleck

    torch.set_num_threads(1)
    vae = load_oobleck(G.BUILTIN_AUDIO_AE).float().eval()
    clips = G.render_clips("val", 4, G.FoleyAudioData(), motions=("bouncing",))
    with torch.no_grad():
        mean, _ = vae.encode_dist(clips.audio)
        recon = vae.decode(mean)[..., : clips.audio.shape[-1]]
    corr = torch.nn.functional.cosine_similarity(recon[:, 0], recon[:, 1], dim=-1)
    assert float(corr.min()) > 0.9, corr
    el1 = sum(e_l1(r, a, 44100) for r, a in zip(recon, clips.audio)) / len(recon)
    assert el1 < 0.2, el1
