"""Concert cutting models (papers.md §3): features, baselines, models, training, files, committed weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from avlab.common.errors import NodeInputError
from avlab.concert_edit import features as F
from avlab.concert_edit import train as T
from avlab.concert_edit.baselines import ExponentialShotModel, PoissonShotModel
from avlab.concert_edit.models import (HowToCut, HowToCutConfig, WhenToCut, WhenToCutConfig, load_concert_models,
                                       save_concert_model)
from avlab.synthetic import ConcertConfig, make_concert

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "concert"
TINY_WHEN = dict(conv_channels=2, conv_blocks=1, d_model=16, swiglu_hidden=16, heads=2, layers=1, ff=16, time_pool=8)
TINY_HOW = dict(d_model=16, heads=2, ff=16)


@pytest.fixture(scope="module")
def concert():
    return make_concert(ConcertConfig(seed=3, duration=20.0, height=36, width=64, num_cameras=5,
                                      min_phrase=3.0, max_phrase=6.0))


@pytest.fixture(scope="module")
def feats(concert):
    return T.concert_features(concert, F.ColourLayoutEncoder())


# -- features -------------------------------------------------------------------------------------------

def _tone(freq: float, seconds: float, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return 0.5 * torch.sin(2 * math.pi * freq * t)


def test_log_mel_matches_torchaudio_and_a_tone_lands_in_its_band():
    import torchaudio

    tone = _tone(1000.0, 4.0)
    mel = F.segment_log_mels(F.prepare_audio(tone, 16000))
    assert mel.shape == (1, 128, 400)
    ref = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
                                               n_mels=128, center=True, pad_mode="constant", mel_scale="slaney",
                                               window_fn=torch.hann_window)(tone)
    assert ref.shape == (128, 401)
    torch.testing.assert_close(mel[0], torch.log(ref[:, :400] + 1e-6), rtol=1e-4, atol=1e-3)
    fb = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 128, 16000, mel_scale="slaney")
    centres = torch.linspace(0, 8000, 257)[fb.argmax(0)]                 # peak frequency of every band
    band = int(mel[0, :, 10:-10].mean(1).argmax())
    assert abs(float(centres[band]) - 1000.0) <= 32.0                  # the band around 1 kHz (one FFT bin)
    assert mel[0, band, 10:-10].mean() > mel[0, :, 10:-10].mean() + 5  # far above the other bands


def test_segment_mels_equal_the_whole_file_and_resample_other_rates():
    wave = torch.randn(16000 * 10) * 0.1
    whole = F.log_mel(wave)
    assert whole.shape == (128, 1001)
    starts = [s for s, _ in F.segment_times(10.0)]
    assert starts == [0.0, 2.0, 4.0, 6.0]
    segs = F.segment_log_mels(wave, starts)
    for s, seg in zip(starts, segs):
        torch.testing.assert_close(seg, whole[:, int(s * 100):int(s * 100) + 400], rtol=1e-4, atol=1e-4)
    tone44 = _tone(1000.0, 4.0, 44100)[None].repeat(2, 1)               # stereo 44.1 kHz
    mel44 = F.segment_log_mels(F.prepare_audio(tone44, 44100))
    mel16 = F.segment_log_mels(F.prepare_audio(_tone(1000.0, 4.0), 16000))
    assert int(mel44[0, :, 10:-10].mean(1).argmax()) == int(mel16[0, :, 10:-10].mean(1).argmax())
    with pytest.raises(NodeInputError, match="audio"):
        F.prepare_audio(torch.zeros(2, 2, 100), 16000)


def test_segment_times_follow_the_synthetic_protocol(concert):
    labels = concert.segment_labels()
    assert [s for s, _ in F.segment_times(concert.config.duration)] == [s["start"] for s in labels]
    assert all(e - s == 4.0 for s, e in F.segment_times(concert.config.duration))
    table = T.window_table([T.concert_features(concert, F.ColourLayoutEncoder())], "protocol")
    assert table["label"].tolist() == [s["label"] for s in labels]
    assert table["since"].tolist() == pytest.approx([s["since_last_cut"] for s in labels])
    assert table["last_frame"].tolist() == [s["end_frame"] - 1 for s in labels]


def test_time_since_cut_scalar_on_known_shots():
    stats = F.ShotStats.fit([2.0, 4.0, 6.0])
    assert stats.mean == pytest.approx(4.0) and stats.std == pytest.approx(math.sqrt(8 / 3)) and stats.count == 3
    # segment at 10 s, current shot started at 7 s: l = ((10 - 7) - 4) / std
    assert F.since_cut_scalar(10.0, 7.0, stats) == pytest.approx(-1 / math.sqrt(8 / 3))
    assert F.since_last_cut(5.0, [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert F.since_last_cut(4.0, [2.0, 4.0]) == 0.0 and F.since_last_cut(3.0, []) == 3.0
    assert F.ShotStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(NodeInputError, match="shot_lengths"):
        F.ShotStats.fit([])


def test_colour_layout_encoder():
    enc = F.ColourLayoutEncoder(2, 2)
    frames = torch.zeros(1, 4, 6, 3)
    frames[0, :2, :3] = torch.tensor([1.0, 0.0, 0.0])                 # top-left quarter red
    e = enc.embed(frames)
    assert e.shape == (1, enc.dim) == (1, 15)
    assert e[0, :3].tolist() == [1.0, 0.0, 0.0] and e[0, 3:12].abs().sum() == 0
    assert e[0, 12:].tolist() == pytest.approx([0.25, 0.0, 0.0])
    assert isinstance(enc, F.ImageEncoder)


# -- baselines ------------------------------------------------------------------------------------------

def test_baselines_fitted_on_known_shot_lengths():
    lengths = [2.0, 4.0, 6.0]
    expo = ExponentialShotModel.fit(lengths)
    assert expo.rate == pytest.approx(0.25)                            # MLE: 1 / mean
    assert expo.prob_cut(0.0) == expo.prob_cut(7.3) == pytest.approx(1 - math.exp(-1.0))   # memoryless
    pois = PoissonShotModel.fit(lengths)
    assert pois.mu == pytest.approx(4.0) and pois.unit == 1.0          # MLE: mean / unit
    pmf = [math.exp(-4) * 4 ** k / math.factorial(k) for k in range(60)]
    assert pois.prob_cut(0.0, 4.0) == pytest.approx(sum(pmf[1:4]) / sum(pmf[1:]))     # L in {1,2,3} | L > 0
    assert pois.prob_cut(2.5, 4.0) == pytest.approx(sum(pmf[3:7]) / sum(pmf[3:]))      # L in {3..6} | L > 2.5
    assert pois.prob_cut(2.0, 1.0) == 0.0                              # no whole second strictly in (2, 3)
    assert pois.prob_cut(1000.0) == 1.0                                # overdue
    assert PoissonShotModel.fit(lengths, unit=0.5).mu == pytest.approx(8.0)
    for model, worse in ((expo, ExponentialShotModel(0.3)), (expo, ExponentialShotModel(0.2)),
                         (pois, PoissonShotModel(4.5)), (pois, PoissonShotModel(3.5))):
        assert model.log_likelihood(lengths) > worse.log_likelihood(lengths)
    assert pois.when_fn()(3, 2.5) == pois.prob_cut(2.5)
    with pytest.raises(NodeInputError, match="shot_lengths"):
        ExponentialShotModel.fit([1.0, -2.0])


# -- models ---------------------------------------------------------------------------------------------

def test_when_to_cut_shapes_and_inputs():
    torch.manual_seed(0)
    audio = WhenToCut(WhenToCutConfig(**TINY_WHEN))
    out = audio(torch.randn(3, 128, 400), torch.randn(3))
    assert out.shape == (3,) and torch.isfinite(out).all()
    multi = WhenToCut(WhenToCutConfig(**TINY_WHEN, image_dim=15))
    assert multi(torch.randn(2, 128, 400), torch.randn(2), torch.rand(2, 15)).shape == (2,)
    with pytest.raises(NodeInputError, match="image"):
        multi(torch.randn(2, 128, 400), torch.randn(2))
    with pytest.raises(NodeInputError, match="mel"):
        audio(torch.randn(2, 128, 300), torch.randn(2))
    with pytest.raises(NodeInputError, match="d_model"):
        WhenToCut(WhenToCutConfig(d_model=10, heads=4))
    pos = audio.positions
    assert pos.shape == (400, 16) and not pos.requires_grad
    torch.testing.assert_close(pos[0, 1::2], torch.ones(8))            # cos(0) = 1


def test_how_to_cut_shapes_and_a_padded_candidate_never_wins():
    torch.manual_seed(0)
    how = HowToCut(HowToCutConfig(embed_dim=15, **TINY_HOW)).eval()
    cur, cands = torch.rand(4, 15), torch.rand(4, 5, 15)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, 3:] = False
    logits = how(cur, cands, mask)
    assert logits.shape == (4, 5)
    assert torch.isinf(logits[:, 3:]).all() and torch.isfinite(logits[:, :3]).all()
    best = logits.argmax(1)
    # a padded slot holding a copy of the winner (or anything else) changes nothing and never wins
    poisoned = cands.clone()
    poisoned[:, 3] = cands[torch.arange(4), best] * 10
    poisoned[:, 4] = 1e3
    again = how(cur, poisoned, mask)
    torch.testing.assert_close(again[:, :3], logits[:, :3])
    assert (again.argmax(1) < 3).all() and (again.softmax(1)[:, 3:] == 0).all()
    with pytest.raises(NodeInputError, match="mask"):
        how(cur, cands, torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(NodeInputError, match="embeddings"):
        how(torch.rand(4, 14), cands)


# -- training -------------------------------------------------------------------------------------------

def test_a_few_training_steps_lower_the_loss(feats):
    """Loss on every window / every cut of the concert: the untrained init (same seed) vs after 60 steps."""
    bce, ce = torch.nn.functional.binary_cross_entropy_with_logits, torch.nn.functional.cross_entropy
    stats, table = T.shot_stats([feats]), T.window_table([feats])
    mel = T.gather_mels([feats], table["concert"], table["mel_start"])

    def when_loss(model):
        with torch.no_grad():
            return float(bce(model.eval()(mel, stats.normalise(table["since"])), table["label"]))

    tcfg = T.default_train_config("when", steps=60, warmup_steps=2, lr=3e-3, ema=None, log_every=0)
    mean, std = T.mel_norm([feats])
    torch.manual_seed(tcfg.seed)
    before = when_loss(WhenToCut(WhenToCutConfig(**TINY_WHEN, mel_mean=mean, mel_std=std)))
    trained, _ = T.train_when([feats], WhenToCutConfig(**TINY_WHEN), tcfg, batch_size=16)
    assert when_loss(trained) < 0.8 * before

    ex = T.how_examples([feats])

    def how_loss(model):
        with torch.no_grad():
            return float(ce(model.eval()(ex["current"], ex["candidates"], ex["mask"]), ex["target"]))

    tcfg = T.default_train_config("how", steps=40, warmup_steps=2, ema=None, log_every=0)
    torch.manual_seed(tcfg.seed)
    before = how_loss(HowToCut(HowToCutConfig(embed_dim=ex["current"].shape[1], **TINY_HOW)))
    trained, _ = T.train_how([feats], HowToCutConfig(**TINY_HOW), tcfg, batch_size=4)
    assert how_loss(trained) < 0.5 * before


def test_when_training_resumes_exactly(tmp_path, feats):
    """Stopped at step 3 and resumed to 6 == 6 steps straight (seekable windows, restored RNG for dropout)."""
    def run(out, resume=False, stop_at=None):
        tcfg = T.default_train_config("when", steps=6, warmup_steps=1, log_every=0, out_dir=str(out), resume=resume)
        return T.train_when([feats], WhenToCutConfig(**TINY_WHEN), tcfg, batch_size=4,
                            callback=lambda step, m: step != stop_at)[0]

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=3)
    resumed = run(tmp_path / "b", resume=True)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_window_batches_seek():
    feats = T.ConcertFeatures(0, 5.0, torch.randn(128, 2001).half(), torch.rand(5, 100, 15), [30, 60],
                              [0, 1, 2], [6.0, 6.0])
    table = T.window_table([feats])
    assert len(table["label"]) == 81 and table["label"].sum() == 2 * 19
    data = T.WindowBatches([feats], table, F.ShotStats(6.0, 1.0), batch_size=4, seed=3, multimodal=True, rank=0)
    first = next(data.iter_from(5))
    assert all(torch.equal(a, b) for a, b in zip(first, data.batch(5)))
    assert first[0].shape == (4, 128, 400) and first[2].shape == (4, 15)


def test_metrics():
    assert T.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert T.roc_auc([0.5, 0.5], [0, 1]) == 0.5
    m = T.binary_metrics([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0], 0.5)
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)
    assert T.best_threshold([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 0.8
    logits = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3]])
    assert T.recall_at_k(logits, torch.tensor([1, 0]), 1) == 0.5        # a tie does not count as a hit
    assert T.recall_at_k(logits, torch.tensor([2, 0]), 3) == 1.0


# -- files and factories --------------------------------------------------------------------------------

def _tiny_models(image_dim: int):
    torch.manual_seed(1)
    when = WhenToCut(WhenToCutConfig(**TINY_WHEN)).eval()
    multi = WhenToCut(WhenToCutConfig(**TINY_WHEN, image_dim=image_dim)).eval()
    how = HowToCut(HowToCutConfig(embed_dim=image_dim, **TINY_HOW)).eval()
    for m in (when, multi, how):                                      # fp16-representable: exact round trip
        m.load_state_dict({k: v.half().float() for k, v in m.state_dict().items()})
    return when, multi, how


def test_save_load_round_trip_and_factories(tmp_path, concert, feats):
    enc = F.ColourLayoutEncoder()
    when, multi, how = _tiny_models(enc.dim)
    stats = F.ShotStats(5.0, 2.0, 10)
    save_concert_model(tmp_path, "when_audio", when, shot_stats=stats, image_encoder=enc.to_dict())
    save_concert_model(tmp_path, "when_multimodal", multi, shot_stats=stats, image_encoder=enc.to_dict())
    save_concert_model(tmp_path, "how", how, image_encoder=enc.to_dict(), record={"note": "test"})
    assert json.loads((tmp_path / "how.json").read_text())["record"] == {"note": "test"}
    models = load_concert_models(tmp_path)
    assert models.variants == ["audio", "multimodal"] and models.shot_stats == stats
    for a, b in ((when, models.when["audio"]), (multi, models.when["multimodal"]), (how, models.how)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)

    # when_fn == the model on the segment's log-mel and the normalised time since the cut
    when_fn = models.make_when_fn(concert.audio, concert.sample_rate)
    mels = F.segment_log_mels(F.prepare_audio(concert.audio, concert.sample_rate))
    assert when_fn.num_segments == len(mels) == len(concert.segment_labels())
    with torch.no_grad():
        expect = torch.sigmoid(when(mels[2:3], torch.tensor([stats.normalise(3.0)])))
    assert when_fn(2, 3.0) == pytest.approx(float(expect), abs=1e-6)
    with pytest.raises(NodeInputError, match="segment_index"):
        when_fn(len(mels), 0.0)
    multi_fn = models.make_when_fn(concert.audio, concert.sample_rate, concert.views, concert.fps, variant="multimodal")
    last = F.segment_last_frames(concert.views.shape[1], concert.fps, [2.0])[0]
    with torch.no_grad():
        expect = torch.sigmoid(multi(mels[1:2], torch.tensor([stats.normalise(1.0)]),
                                     enc.embed(concert.views[0, last][None])))
    assert multi_fn(1, 1.0) == pytest.approx(float(expect), abs=1e-6)
    with pytest.raises(NodeInputError, match="cameras"):
        models.make_when_fn(concert.audio, concert.sample_rate, variant="multimodal")

    # how_fn == the model on the current shot's last frame and the candidates' frame at the cut
    how_fn = models.make_how_fn(list(concert.views), concert.fps)
    f, (_, _, cam) = concert.cut_frames[0], concert.shots[0]
    cut = f / concert.fps
    scores = how_fn(cam, cut, [1, 2, 3])
    with torch.no_grad():
        expect = how(enc.embed(concert.views[cam, f - 1][None]), enc.embed(concert.views[[1, 2, 3], f])[None])[0]
    assert scores == pytest.approx(expect.tolist(), abs=1e-5)
    assert how_fn(cam, cut, []) == []
    with pytest.raises(NodeInputError, match="image_encoder"):
        models.make_how_fn(concert.views, concert.fps, encoder=F.ColourLayoutEncoder(2, 2))
    with pytest.raises(NodeInputError, match="cameras"):
        models.make_how_fn([concert.views[0], concert.views[1, :10]], concert.fps)

    (tmp_path / "how.safetensors").unlink()
    with pytest.raises(NodeInputError, match=r"how\.safetensors in .*" + tmp_path.name):
        load_concert_models(tmp_path)
    with pytest.raises(NodeInputError, match="when_audio.safetensors"):
        load_concert_models(tmp_path / "nowhere")


def test_cli_train_concert_how(tmp_path, monkeypatch):
    from avlab import cli

    config = {"data": {"train_concerts": 2, "val_concerts": 1, "test_concerts": 1, "duration": 12.0,
                       "max_phrase": 5.0},
              "model": TINY_HOW, "train": {"log_every": 0}}
    path = tmp_path / "how.json"
    path.write_text(json.dumps(config))
    run = ["train", "concert-how", "--config", str(path), "--out", str(tmp_path / "run"), "--steps", "3"]
    assert cli.main(run) == 0
    assert (tmp_path / "run" / "how.safetensors").is_file() and (tmp_path / "run" / "how_eval.md").is_file()
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["step"] == 3
    path.write_text(json.dumps({"model": {"nope": 1}}))
    assert cli.main(["train", "concert-when", "--config", str(path), "--out", str(tmp_path / "bad")]) == 1


# -- committed weights ----------------------------------------------------------------------------------

def test_committed_weights_beat_chance_on_held_out_concerts():
    """Two test-split concerts (seeds 30000, 30001, never trained or tuned on), run through the public
    factories: both when-to-cut variants rank segments better than the Poisson baseline and chance;
    how-to-cut picks the right camera at least twice as often as chance."""
    if not (WEIGHTS / "when_audio.safetensors").is_file():
        pytest.fail(f"committed weights missing in {WEIGHTS} (run scripts/train_concert_models.py)")
    models = load_concert_models(WEIGHTS)
    data = T.ConcertDataConfig()
    stats = models.shot_stats
    poisson = PoissonShotModel.fit([stats.mean])          # same mean as the training shots
    labels, since, probs, hits, cuts = [], [], {v: [] for v in models.variants}, 0, 0
    for seed in (30000, 30001):
        c = make_concert(data.concert_config(seed))
        segs = c.segment_labels()
        fns = {v: models.make_when_fn(c.audio, c.sample_rate, c.views, c.fps, variant=v) for v in models.variants}
        for i, s in enumerate(segs):
            labels.append(s["label"])
            since.append(s["since_last_cut"])
            for v, fn in fns.items():
                probs[v].append(fn(i, s["since_last_cut"]))
        how_fn = models.make_how_fn(c.views, c.fps)
        for (_, _, before), (start, _, after) in zip(c.shots, c.shots[1:]):
            candidates = [k for k in range(c.config.num_cameras) if k != before]
            scores = how_fn(before, start, candidates)
            hits += candidates[max(range(len(scores)), key=scores.__getitem__)] == after
            cuts += 1
    base_auc = T.roc_auc([poisson.prob_cut(s) for s in since], labels)
    for v in models.variants:
        auc = T.roc_auc(probs[v], labels)
        assert auc > max(0.75, base_auc + 0.05), (v, auc, base_auc)
    chance = 1 / (data.num_cameras - 1)
    assert cuts >= 8 and hits / cuts >= 2 * chance, (hits, cuts)
