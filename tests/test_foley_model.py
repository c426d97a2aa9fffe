"""The GRAM model and its weights (papers.md §4): the official checkpoint layout (all towers +
heads, DDP ``module.`` prefix, VAST's cross-attention BERT), the pack's safetensors round trip,
frame sampling by time and the bad inputs the nodes rely on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avlab.foley.beats import TINY_BEATS, BEATs
from avlab.foley.eva_vit import TINY_EVA_VIT, EVAVisionTransformer
from avlab.foley.model import GramModel, sample_frame_indices
from avlab.foley.text import TextTower
from avlab.foley.weights import beats_config_from_state_dict, load_gram, save_gram

sys.path.insert(0, str(Path(__file__).resolve().parent / "host"))      # shared tiny-checkpoint helpers
from tiny_gram import WORDS, bert_folder, official_layout_checkpoint  # noqa: E402

def test_official_gram_checkpoint_loads_all_towers(tmp_path):
    folder = bert_folder(tmp_path)
    path, state = official_layout_checkpoint(tmp_path, folder)
    gram = load_gram(path, text_folder=folder)
    assert gram.dim == 16 and gram.audio_encoder.n_mels == 64           # GRAM feeds BEATs 64 mel bins
    torch.testing.assert_close(gram.contra_head_v.linear.weight, state["contra_head_v.linear.weight"])
    torch.testing.assert_close(gram.vision_encoder.visual.pos_embed, state["vision_encoder.visual.pos_embed"])
    torch.testing.assert_close(gram.multimodal_encoder.bert.encoder.layer[1].output.dense.weight,
                               state["multimodal_encoder.bert.encoder.layer.1.output.dense.weight"])
    # text = CLS of the bidirectional BERT (cross-attention unused) → head → unit vector
    t = gram.embed_text(["a red metal ball bouncing"])
    ids = gram.multimodal_encoder.tokenize(["a red metal ball bouncing"])
    cls = gram.multimodal_encoder.bert(**ids).last_hidden_state[:, 0]
    torch.testing.assert_close(t, F.normalize(cls @ state["contra_head_t.linear.weight"].T, dim=-1))
    v = gram.embed_video(torch.rand(5, 40, 48, 3), fps=10)
    a = gram.embed_audio(torch.randn(2, 8000) * 0.1, 16000)
    for e in (v, a):
        assert e.shape == (16,) and abs(float(e.norm()) - 1) < 1e-5
    audio_only = load_gram(path, modalities=("audio",))
    assert not audio_only.has("video") and not audio_only.has("text")
    torch.testing.assert_close(audio_only.embed_audio(torch.randn(8000), 16000).shape, torch.Size([16]))


def test_beats_config_from_shapes():
    sd = BEATs(TINY_BEATS).state_dict()
    cfg = beats_config_from_state_dict(sd)
    for field in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
                  "embed_dim", "conv_pos", "conv_pos_groups", "num_buckets"):
        assert getattr(cfg, field) == getattr(TINY_BEATS, field), field


def test_refuses_non_weights(tmp_path):
    import argparse

    bad = tmp_path / "gram.pt"
    torch.save({"args": argparse.Namespace(x=1)}, bad)
    with pytest.raises(ValueError, match="weights-only"):
        load_gram(bad)
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ValueError, match="not an AVLab GRAM"):
        load_gram(plain)
    no_text = tmp_path / "no_text.pt"
    torch.save({"contra_head_t.linear.weight": torch.zeros(4, 4)}, no_text)
    with pytest.raises(ValueError, match="bert-base-uncased"):
        load_gram(no_text, modalities=("text",))


def tiny_model(seed=0) -> GramModel:
    torch.manual_seed(seed)
    text = TextTower.tiny(WORDS, width=32, layers=1, heads=2)
    return GramModel(EVAVisionTransformer(TINY_EVA_VIT), text, BEATs(TINY_BEATS), dim=24, crop="squash")


def test_pack_safetensors_round_trip(tmp_path):
    gram = tiny_model()
    path = tmp_path / "gram.safetensors"
    save_gram(gram, path, extra={"note": "test"}, dtype=torch.float32)
    back = load_gram(path)
    frames, audio = torch.rand(6, 32, 32, 3), torch.randn(1, 6000) * 0.2
    torch.testing.assert_close(back.embed_video(frames, 6), gram.embed_video(frames, 6))
    torch.testing.assert_close(back.embed_audio(audio, 16000), gram.embed_audio(audio, 16000))
    torch.testing.assert_close(back.embed_text(["red ball sliding"]), gram.embed_text(["red ball sliding"]))
    assert back.crop == "squash" and back.dim == 24


def test_frame_sampling_by_time():
    assert sample_frame_indices(8, 8.0, count=8).tolist() == list(range(8))
    # 4 s at 25 fps: the middles of 8 half-second segments
    assert sample_frame_indices(100, 25.0, count=8).tolist() == [6, 18, 31, 43, 56, 68, 81, 93]
    # the same 4 s at 50 fps picks the same instants
    assert (sample_frame_indices(200, 50.0, count=8) // 2).tolist() == [6, 18, 31, 43, 56, 68, 81, 93]
    assert sample_frame_indices(100, 25.0, count=8, rate=1.0).tolist() == [12, 37, 62, 87]
    assert sample_frame_indices(1, 30.0, count=8).tolist() == [0] * 8


def test_bad_inputs_have_clear_errors():
    gram = tiny_model()
    with pytest.raises(ValueError, match="0 frames"):
        gram.embed_video(torch.rand(0, 32, 32, 3), 8)
    with pytest.raises(ValueError, match="fps"):
        gram.embed_video(torch.rand(4, 32, 32, 3), 0)
    with pytest.raises(ValueError, match="0 samples"):
        gram.embed_audio(torch.zeros(2, 0), 16000)
    with pytest.raises(ValueError, match="empty"):
        gram.embed_text(["  "])
    # very short audio (less than one BEATs patch) is padded and masked, not refused
    assert gram.embed_audio(torch.randn(1, 500), 44100).shape == (24,)


def test_tiny_text_tower_knows_its_words():
    tower = TextTower.tiny(WORDS, width=32, layers=1, heads=2)
    ids = tower.tokenize(["a red metal ball bouncing"])["input_ids"][0].tolist()
    assert tower.tokenizer.unk_token_id not in ids and len(ids) == 7


def test_word_tokenizer_leaves_no_temporary_vocabulary_behind(tmp_path, monkeypatch):
    """Every TextTower.tiny / load used to leave a /tmp/avlab-vocab-* folder (hundreds over a session)."""
    import tempfile

    from avlab.foley.text import word_tokenizer

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tok = word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "ball"])
    assert list(tmp_path.iterdir()) == []
    assert tok("red ball", add_special_tokens=False)["input_ids"] == [5, 6]    # still usable after the cleanup
