"""Envelopes and FoleyGRAM metrics (papers.md §4; issue 10) on signals with hand-computed answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from avlab.foley.envelope import (STABLE_AUDIO_RATE, Envelope, motion_envelope, rms_envelope,
                                  video_foley_envelope)
from avlab.foley.metrics import e_l1, favd, frechet_distance, onset_error_ms, onset_times

SR = 1000   # small rates keep the hand computations readable


def test_silence_has_a_zero_envelope():
    env = rms_envelope(torch.zeros(2, 2000), SR, rate=10.0, window_s=0.1)
    assert env.values.shape == (20,) and float(env.values.abs().max()) == 0.0 and env.rate == 10.0


def test_single_click_gives_one_window_of_sqrt_1_over_w():
    """A unit click at sample 500, window 100 samples: RMS = sqrt(1/100) = 0.1 exactly while the
    causal window (the 100 samples ending at frame k's instant) holds it, 0 elsewhere."""
    x = torch.zeros(2000)
    x[500] = 1.0
    env = rms_envelope(x, SR, rate=100.0, window_s=0.1, smooth_frames=1)   # frame k ↔ sample 10k
    v = env.values
    expected = torch.zeros(20 * 10)
    for k in range(200):
        end = 10 * k + 1                      # the window is samples [end − 100, end)
        if end - 100 <= 500 < end:
            expected[k] = 0.1
    torch.testing.assert_close(v, expected, atol=1e-6, rtol=0)
    assert int((v > 0).sum()) == 10           # 100 samples of window / 10 samples per frame
    assert float(v[50]) == pytest.approx(0.1) and float(v[49]) == 0.0   # causal: nothing before the click


def test_sine_burst_rms_is_amplitude_over_sqrt2():
    t = torch.arange(3000) / SR
    x = 0.8 * torch.sin(2 * math.pi * 50 * t) * ((t >= 1.0) & (t < 2.0))
    env = rms_envelope(x, SR, rate=20.0, window_s=0.2, smooth_frames=1)
    steady = env.values[(torch.arange(60) / 20.0 >= 1.2) & (torch.arange(60) / 20.0 < 2.0)]
    torch.testing.assert_close(steady, torch.full_like(steady, 0.8 / math.sqrt(2)), atol=1e-3, rtol=0)
    assert float(env.values[:20].max()) == 0.0 and float(env.values[-15:].max()) == 0.0


def test_default_rate_is_the_stable_audio_latent_rate_and_stereo_is_averaged():
    x = torch.randn(2, 44100) * 0.1
    env = rms_envelope(x, 44100)
    assert env.rate == pytest.approx(44100 / 2048) and env.values.shape == (math.ceil(STABLE_AUDIO_RATE),)
    torch.testing.assert_close(env.values, rms_envelope(x.mean(0), 44100).values)


def test_smoothing_keeps_a_constant_and_spreads_a_step():
    x = torch.ones(4000) * 0.5
    env = rms_envelope(x, SR, rate=10.0, window_s=0.1, smooth_frames=5)
    torch.testing.assert_close(env.values[3:], torch.full((37,), 0.5), atol=1e-6, rtol=0)
    # frame 0's causal window holds one sample (RMS 0.05): the smoothing spreads that step over 2 frames
    raw = rms_envelope(x, SR, rate=10.0, window_s=0.1, smooth_frames=1).values
    assert float(raw[0]) == pytest.approx(0.05) and float(raw[1]) == pytest.approx(0.5)
    assert float(raw[0]) < float(env.values[0]) < float(env.values[1]) < 0.5


def test_resample_keeps_time():
    env = Envelope(torch.tensor([0.0, 1.0, 2.0, 3.0]), rate=2.0)          # values at 0, .5, 1, 1.5 s
    r = env.resample(4.0)
    torch.testing.assert_close(r.values, torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]))
    assert r.rate == 4.0 and env.resample(1.0, length=2).values.tolist() == [0.0, 2.0]
    with pytest.raises(ValueError, match="rate"):
        Envelope(torch.zeros(3), rate=0)


def test_video_foley_envelope_levels():
    full = torch.ones(16000)          # RMS 1 → μ-law 1 → level 63/63
    assert video_foley_envelope(full, 16000).values.unique().tolist() == [1.0]
    assert video_foley_envelope(torch.zeros(16000), 16000).values.unique().tolist() == [0.0]
    half = video_foley_envelope(torch.full((16000,), 0.5), 16000)
    level = round(math.log1p(255 * 0.5) / math.log1p(255) * 63) / 63
    assert half.values.unique().tolist() == [pytest.approx(level)] and half.rate == 125.0
    # frames of 512 with hop 128 over 1 s: 1 + (16000 − 512) // 128
    assert half.values.shape == (1 + (16000 - 512) // 128,)


def test_e_l1_known_values():
    a, b = torch.ones(16000), torch.zeros(16000)
    assert e_l1(a, a, 16000) == 0.0 and e_l1(a, b, 16000) == pytest.approx(1.0)


def test_frechet_distance_known_answers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 4, generator=g)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # same covariance, mean shifted by (3, 4, 0, 0): distance = 25
    assert frechet_distance(x, x + torch.tensor([3.0, 4.0, 0, 0])) == pytest.approx(25.0, rel=1e-6)
    # scaled copy: Σ₂ = 4Σ₁ → tr(Σ₁ + 4Σ₁ − 2·2Σ₁) = tr(Σ₁)
    cov = torch.cov(x.double().T)
    assert frechet_distance(x, 2 * x) == pytest.approx(float(torch.trace(cov)) + float((x.double().mean(0)).pow(2).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(x[:1], x)


def test_favd_of_identical_audio_is_zero():
    g = torch.Generator().manual_seed(1)
    v, a = torch.randn(50, 3, generator=g), torch.randn(50, 2, generator=g)
    assert favd(v, a, a) == pytest.approx(0.0, abs=1e-8)
    assert favd(v, a + 1.0, a) == pytest.approx(2.0, rel=1e-6)


def test_onsets_and_timing_error():
    v = torch.zeros(100)
    v[[10, 40, 41, 70]] = 1.0
    env = Envelope(v, rate=100.0)
    assert onset_times(env) == [0.1, 0.4, 0.7]
    assert onset_error_ms([0.11, 0.4, 0.68], [0.1, 0.4, 0.7]) == pytest.approx(10.0)
    assert onset_times(Envelope(torch.zeros(10), 10.0)) == []


def test_motion_envelope():
    frames = torch.zeros(4, 8, 8, 3)
    frames[2] = 1.0
    env = motion_envelope(frames, fps=12.5)
    assert env.values.tolist() == [0.0, 0.0, 1.0, 1.0] and env.rate == 12.5
    with pytest.raises(ValueError, match="fps"):
        motion_envelope(frames, 0)
    with pytest.raises(ValueError, match="T ≥ 1"):
        motion_envelope(frames[:0], 8)


def _tiny_clap(folder):
    """A tiny random CLAP (HTSAT audio + RoBERTa text) saved as a local transformers folder."""
    import json

    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              ClapTextConfig, RobertaTokenizer)

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "Ġa": 6, "Ġb": 7, "<mask>": 8}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer).save_pretrained(folder)
    text = ClapTextConfig(vocab_size=9, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, projection_dim=8, max_position_embeddings=40)
    audio = ClapAudioConfig(hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 2],
                            projection_dim=8, window_size=8, spec_size=256, num_mel_bins=64)
    torch.manual_seed(0)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)).save_pretrained(folder)


def test_clap_score_is_the_mean_audio_text_cosine(tmp_path):
    from transformers import ClapModel, ClapProcessor

    from avlab.foley.metrics import clap_score

    _tiny_clap(tmp_path)
    g = torch.Generator().manual_seed(0)
    clips, texts = [torch.randn(48000, generator=g) * 0.1, torch.randn(48000, generator=g) * 0.1], ["a b", "b a"]
    score = clap_score(clips, texts, 48000, str(tmp_path))
    # independent path: the model's own forward gives logit_scale · cosine for every (audio, text) pair
    model = ClapModel.from_pretrained(str(tmp_path)).eval()
    processor = ClapProcessor.from_pretrained(str(tmp_path))
    feats = processor.feature_extractor([c.numpy() for c in clips], sampling_rate=48000, return_tensors="pt")
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    input_features=feats["input_features"], is_longer=feats.get("is_longer"))
    expected = float((out.logits_per_audio.diagonal() / model.logit_scale_a.exp()).mean())
    assert score == pytest.approx(expected, abs=1e-5)
    # a 44.1 kHz stereo clip is resampled and averaged to mono, not refused
    assert -1.0 <= clap_score([torch.randn(2, 44100) * 0.1], ["a"], 44100, str(tmp_path)) <= 1.0
    with pytest.raises(ValueError, match="one caption per audio"):
        clap_score(clips, ["a"], 48000, str(tmp_path))


def test_rms_mapper_shapes_round_trip_and_refusals(tmp_path):
    from avlab.foley.rms_mapper import RMSMapper, RMSMapperConfig, target_envelope

    torch.manual_seed(0)
    model = RMSMapper(RMSMapperConfig(size=32, width=8)).eval()
    frames = torch.rand(7, 40, 48, 3)
    env = model.envelope(frames, 12.0)
    assert env.values.shape == (7,) and env.rate == 12.0 and float(env.values.max()) == pytest.approx(1.0)
    path = tmp_path / "mapper.safetensors"
    model.save(path, extra={"seed": 0})
    back = RMSMapper.load(path)
    torch.testing.assert_close(back.envelope(frames, 12.0).values, env.values, atol=2e-2, rtol=0)   # fp16 file
    with pytest.raises(ValueError, match="T ≥ 1"):
        model.envelope(frames[:0], 12.0)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an AVLab RMS mapper"):
        RMSMapper.load(tmp_path / "other.safetensors")
    # the target: a click at 0.5 s read at 10 fps with a 0.1 s causal window is 1 at frame 5 only
    audio = torch.zeros(1000)
    audio[500] = 1.0
    t = target_envelope(audio, 1000, 10.0, 10)
    assert t.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]


MAPPER = Path(__file__).resolve().parents[1] / "weights" / "foley" / "rms_mapper.safetensors"


@pytest.mark.skipif(not MAPPER.is_file(), reason="no trained RMS mapper committed (scripts/train_rms_mapper.py)")
def test_committed_rms_mapper_beats_motion_energy_on_held_out_scenes():
    from avlab.foley.rms_mapper import RMSMapper, target_envelope
    from avlab.synthetic import make_scene

    mapper = RMSMapper.load(MAPPER)
    l1 = {"mapper": [], "motion": []}
    for i in range(8):
        s = make_scene(seed=900_000 + i, frames=48, height=64, width=64, fps=24.0, num_objects=3, sample_rate=16000)
        true = target_envelope(s.audio, s.sample_rate, s.fps, 48)
        l1["mapper"].append(float((mapper.envelope(s.frames, s.fps).values - true).abs().mean()))
        l1["motion"].append(float((motion_envelope(s.frames, s.fps).values - true).abs().mean()))
    assert sum(l1["mapper"]) < 0.8 * sum(l1["motion"])


def test_fad_with_a_pluggable_embedder():
    from avlab.foley.metrics import fad

    def embedder(wave, sr):                      # any callable (waveform, sample_rate) -> [D]
        w = wave.float().reshape(-1)
        return torch.stack([w.mean(), w.std(), w.abs().max()])

    g = torch.Generator().manual_seed(2)
    clips = [torch.randn(1, 800, generator=g) * (0.1 + 0.05 * i) for i in range(12)]
    assert fad(clips, clips, 16000, embedder) == pytest.approx(0.0, abs=1e-9)
    louder = [c * 3 for c in clips]
    assert fad(louder, clips, 16000, embedder) > fad([c * 1.1 for c in clips], clips, 16000, embedder) > 0
