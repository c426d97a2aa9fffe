"""GRAM training (papers.md §4; issue 9): the synthetic Foley triples, the two CLI stages on tiny
towers (towers pretraining → heads-only alignment), folders of real (video, caption, sound) files,
the alignment warm-up, and the committed built-in model's held-out retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avlab.foley import train as G
from avlab.foley.gram import GramLoss
from avlab.synthetic import foley as synth

TINY_MODEL = {"vision": dict(image_size=32, patch_size=16, width=32, depth=1, heads=2, mlp_dim=64, embed_dim=0),
              "audio": dict(encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                            embed_dim=16, conv_pos=8, conv_pos_groups=4),
              "text": dict(width=32, layers=1, heads=2), "dim": 16}
TINY_DATA = {"train_clips": 16, "val_clips": 0, "test_clips": 0, "size": 32, "group": 4}


def test_synthetic_triples_are_deterministic_and_held_out():
    a, b = synth.split_clips("test", 2), synth.split_clips("test", 2)
    assert a[0].caption == b[0].caption and torch.equal(a[0].frames, b[0].frames) and torch.equal(a[0].audio, b[0].audio)
    held = set(synth.heldout_combos())
    assert len(held) == 32 and not held & set(synth.split_combos("train"))
    for position, values in enumerate((synth.COLORS, synth.SHAPES, synth.MATERIALS, synth.MOTIONS)):
        assert {c[position] for c in synth.split_combos("train")} == set(values)   # every value seen in training
    clip = a[0]
    assert clip.frames.shape == (8, 64, 64, 3) and clip.audio.shape == (16000,)
    assert all(word in clip.caption for word in clip.attributes.values())
    # a group of 32 consecutive test clips holds 32 distinct combinations (the retrieval protocol)
    combos = [tuple(c.attributes.values()) for c in synth.split_clips("test", 32)]
    assert len(set(combos)) == 32


def test_caption_vocabulary_covers_every_caption():
    vocab = set(G.caption_vocabulary())
    for clip in synth.split_clips("train", 20):
        assert set(clip.caption.replace(",", " , ").split()) <= vocab


def test_towers_then_heads_cli_chain(tmp_path):
    config = tmp_path / "towers.json"        # through the `python -m avlab train gram-towers` entry
    config.write_text(json.dumps({"data": TINY_DATA, "model": TINY_MODEL, "train": {"steps": 2, "progress": False},
                                  "batch_size": 8}))
    G.cli_train("gram-towers", str(config), str(tmp_path / "towers"))
    towers = tmp_path / "towers" / "towers.safetensors"
    assert towers.is_file()
    report = G.train_gram({"towers": str(towers), "data": dict(TINY_DATA, val_clips=8), "batch_size": 8,
                           "loss": {"align_warmup_steps": 1}, "train": {"steps": 3, "progress": False}},
                          tmp_path / "gram")
    assert report["steps"] == 3 and report["config"]["freeze"] == ["video", "text", "audio"]
    assert set(report["val"]) >= {"text→video", "video→audio", "text→(video,audio)"}
    saved = json.loads((tmp_path / "gram" / "evaluation.json").read_text())
    assert saved["val"]["groups"] == 2
    from avlab.foley.weights import load_gram

    gram = load_gram(tmp_path / "gram" / "gram.safetensors")
    (clip,) = synth.split_clips("test", 1)
    assert gram.embed_video(clip.frames, clip.fps).shape == (16,)


def test_alignment_warmup_switches_from_cosine_to_volume():
    torch.manual_seed(0)
    from avlab.foley.train import HeadTrainee, build_model

    gram = build_model(G.GramModelConfig(**TINY_MODEL))
    seen = []

    class Spy(GramLoss):
        def forward(self, *args, similarity=None, **kw):
            seen.append(similarity or self.similarity)
            return super().forward(*args, similarity=similarity, **kw)

    trainee = HeadTrainee(gram, Spy(dim=16, matching_weight=0), align_warmup_steps=2).train()
    batch = (torch.randn(4, 32), torch.randn(4, 32), torch.randn(4, 32))
    for _ in range(4):
        trainee(batch)
    assert seen == ["cosine", "cosine", "volume", "volume"]


def test_folder_of_real_triples(tmp_path):
    from avlab.common import media

    data = G.GramDataConfig(frames=4, size=32, fps=8.0)
    for i, caption in enumerate(["a dog barks", "glass breaks", "a door closes"]):
        media.write_video(tmp_path / f"clip{i}.mp4", torch.rand(10, 24, 40, 3), 10.0,
                          audio=torch.randn(2, 44100) * 0.1, sample_rate=44100)
        (tmp_path / f"clip{i}.txt").write_text(caption + "\n")
    media.write_video(tmp_path / "no_caption.mp4", torch.rand(4, 24, 40, 3), 10.0)
    triples = G.folder_triples(tmp_path, data)
    assert triples.frames.shape == (3, 4, 32, 32, 3) and triples.frames.dtype == torch.uint8
    assert triples.audio.shape == (3, 8000)                     # 4 frames / 8 fps = 0.5 s at 16 kHz
    assert triples.captions == ["a dog barks", "glass breaks", "a door closes"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        G.folder_triples(tmp_path / "nope", data)


BUILTIN = Path(G.__file__).resolve().parents[1] / "weights" / "gram" / "gram_synthetic.safetensors"


@pytest.mark.skipif(not BUILTIN.is_file(), reason="no trained tiny GRAM committed (scripts/train_gram_synthetic.py)")
def test_committed_gram_retrieves_held_out_triples():
    """Guard on the committed weights: one group of 32 held-out triples (chance R@1 = 0.031)."""
    from avlab.foley.weights import load_gram

    gram = load_gram(BUILTIN)
    report = G.evaluate(gram, G.render_split("test", 64, G.GramDataConfig()), 32)
    assert report["text→video"]["R@1"] >= 0.7 and report["text→(video,audio)"]["R@1"] >= 0.7
    assert report["video→audio"]["R@1"] >= 0.5


def test_partially_unfrozen_towers():
    from avlab.foley.train import GramModelConfig, build_model

    cfg = dict(TINY_MODEL, vision=dict(TINY_MODEL["vision"], depth=3), freeze=["video", "text", "audio"],
               unfreeze_last={"video": 1, "audio": 1})
    gram = build_model(GramModelConfig(**cfg))
    vit, beats = gram.vision_encoder.visual, gram.audio_encoder
    trainable = {n for n, p in gram.named_parameters() if p.requires_grad}
    assert all(p.requires_grad for p in vit.blocks[2].parameters()) and all(p.requires_grad for p in vit.norm.parameters())
    assert not any(p.requires_grad for p in vit.blocks[1].parameters()) and not vit.pos_embed.requires_grad
    assert all(p.requires_grad for p in beats.encoder.layers[0].parameters())      # 1 layer: its last = all
    assert not any("multimodal_encoder" in n for n in trainable)
    assert all(p.requires_grad for p in gram.contra_head_v.parameters())
    with pytest.raises(ValueError, match="unfreeze_last"):
        build_model(GramModelConfig(**dict(cfg, unfreeze_last={"depth": 1})))
