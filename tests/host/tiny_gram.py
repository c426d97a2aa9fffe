"""Tiny GRAM checkpoints in the official layout (ispamm/GRAM ``ckpt/model_step_N.pt``) and a tiny
``bert-base-uncased``-shaped folder, for the CI tier (``tests/test_foley_model.py``) and the host tier
(``test_foley_host.py``, ``test_workflows_host.py``)."""

from __future__ import annotations

import json

import torch

from avlab.foley.beats import TINY_BEATS, BEATs
from avlab.foley.eva_vit import TINY_EVA_VIT, EVAVisionTransformer

WORDS = ["a", "red", "blue", "metal", "wood", "ball", "bouncing", "sliding"]


def bert_folder(tmp_path):
    """A bert-base-uncased-shaped folder (config.json + vocab.txt), tiny."""
    from transformers import BertConfig

    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    BertConfig(vocab_size=13, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=32).save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    return folder


def official_layout_checkpoint(tmp_path, folder) -> tuple[str, dict]:
    """A tiny GRAM ``model_step_N.pt``: DDP-prefixed, VAST's BertForMaskedLM with cross-attention,
    EVA-CLIP's text tower and the other heads present too (the loader must skip them)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    state = {}
    for k, v in EVAVisionTransformer(TINY_EVA_VIT).state_dict().items():
        state[f"vision_encoder.visual.{k}"] = v.clone()
    state["vision_encoder.text.token_embedding.weight"] = torch.randn(10, 8)
    state["vision_encoder.logit_scale"] = torch.tensor(4.6)
    for k, v in BEATs(TINY_BEATS).state_dict().items():
        state[f"audio_encoder.{k}"] = v.clone()
    cfg = BertConfig.from_pretrained(folder)
    cfg.is_decoder, cfg.add_cross_attention = True, True
    for k, v in BertForMaskedLM(cfg).state_dict().items():
        state[f"multimodal_encoder.{k}"] = v.clone()
    heads = {"contra_head_t.linear.weight": torch.randn(16, 32), "contra_head_v.linear.weight": torch.randn(16, 64),
             "contra_head_a.linear.weight": torch.randn(16, 64)}
    state.update(heads)
    state.update({"contra_head_va.linear.weight": torch.randn(16, 16), "contra_head_va.linear.bias": torch.zeros(16),
                  "contra_temp": torch.tensor(0.07), "itm_head.linear.weight": torch.randn(2, 32)})
    path = tmp_path / "model_step_1000.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return str(path), state


def build_gram_files(folder) -> dict:
    """Two tiny pack-format GRAMs (dims 32 and 24) over the synthetic caption vocabulary, the 32→768
    GRAM token projection, and an official-layout .pt without a tokenizer folder; name → path."""
    from pathlib import Path

    from avlab.foley.conditioning import GramTokenProjection, save_projection
    from avlab.foley.model import GramModel
    from avlab.foley.text import TextTower
    from avlab.foley.train import caption_vocabulary
    from avlab.foley.weights import save_gram

    folder = Path(folder)
    torch.manual_seed(0)
    files = {}
    for name, dim in (("tiny_gram.safetensors", 32), ("tiny_gram_24.safetensors", 24)):
        text = TextTower.tiny(caption_vocabulary(), width=32, layers=1, heads=2)
        save_gram(GramModel(EVAVisionTransformer(TINY_EVA_VIT), text, BEATs(TINY_BEATS), dim=dim, crop="squash"),
                  folder / name)
        files[name] = folder / name
    save_projection(GramTokenProjection(32, 768), folder / "tiny_projection.safetensors")
    files["tiny_projection.safetensors"] = folder / "tiny_projection.safetensors"
    torch.save({"module.contra_head_t.linear.weight": torch.zeros(4, 4)}, folder / "model_step_1.pt")
    files["model_step_1.pt"] = folder / "model_step_1.pt"
    return files


def build_controlnet_file(folder, seed: int = 7):
    """An envelope ControlNet for the test-only Stable Audio (HostTestStableAudioLoader, depth 2: one
    copied block) with non-zero convs, holding the 32→768 GRAM projection too. Needs ``comfy``."""
    from pathlib import Path

    from avlab.foley.conditioning import GramTokenProjection, projection_parts
    from avlab.foley.controlnet import EnvelopeControlNet
    from tiny_stable_audio import build_tiny_stable_audio

    transformer = build_tiny_stable_audio(depth=2).model.diffusion_model.transformer
    net = EnvelopeControlNet.from_base(transformer.layers, transformer.dim)
    g = torch.Generator().manual_seed(seed)
    for conv in [net.envelope_in, *net.zero_convs]:
        conv.weight.data = torch.randn(conv.weight.shape, generator=g) * 0.05
    tensors, meta = projection_parts(GramTokenProjection(32, 768))
    path = Path(folder) / "tiny_envelope_controlnet.safetensors"
    net.save(path, extra_tensors=tensors, extra_meta=meta)
    return path
