"""GRAM weights: the pack's safetensors format and the official GRAM checkpoint (papers.md §4).

Pack format (``save_gram`` / ``load_gram``): one ``.safetensors`` whose tensors use the GRAM key
names (``vision_encoder.visual.*``, ``multimodal_encoder.bert.*``, ``audio_encoder.*``,
``contra_head_{v,t,a}.linear.weight``) and whose metadata ``avlab_gram`` (JSON) holds the tower
configs, the text tokenizer's vocabulary (tiny towers) and the pooling settings — self-contained.

Official GRAM checkpoint (``ckpt/model_step_N.pt`` of ispamm/GRAM): a ``torch.save``d state dict
(keys often under ``module.``; sometimes wrapped in ``{"model": ...}``), opened with
``torch.load(weights_only=True)`` only. It holds the three towers and the heads but not BERT's
tokenizer or config, so ``load_gram(..., text_folder=...)`` needs a ``bert-base-uncased`` folder
(``config.json`` + ``vocab.txt``). The text tower in GRAM is a ``BertForMaskedLM`` with cross-attention
layers (VAST's multimodal encoder); embedding text alone never runs them, so ``crossattention.*`` and
the MLM head ``cls.*`` are skipped — every other key loads strictly.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .beats import BEATs, BEATsConfig, _fill_shared_bias, beats_config_from_state_dict
from .eva_vit import (GRAM_VISION_PREFIX, EVAViTConfig, EVAVisionTransformer, _normalise_key, _unwrap,
                      config_from_state_dict)
from .model import GramModel
from .text import TextTower, word_tokenizer

FORMAT_KEY = "avlab_gram"
#: The pack's trained tiny GRAM (``scripts/train_gram_synthetic.py``).
BUILTIN_GRAM = Path(__file__).resolve().parents[1] / "weights" / "gram" / "gram_synthetic.safetensors"
#: Mel bins GRAM's audio config feeds its BEATs (``audio_melbins`` 64; BEATs itself was trained on 128).
GRAM_MEL_BINS = 64
VISION_PREFIX = GRAM_VISION_PREFIX
TEXT_PREFIX = "multimodal_encoder.bert."
AUDIO_PREFIX = "audio_encoder."
HEADS = {"video": "contra_head_v.linear.weight", "text": "contra_head_t.linear.weight",
         "audio": "contra_head_a.linear.weight"}
#: Text-tower keys of a GRAM checkpoint that text-only embedding never uses.
_TEXT_SKIP = re.compile(r"(^|\.)crossattention\.|^pooler\.")


def _strip(state: dict, where: str) -> dict[str, torch.Tensor]:
    """Unwrap and normalise a GRAM state dict the way the vision loader does (``model`` wrapper, DDP
    ``module.``, VAST's ``evaclip_model.``), refusing non-tensor entries."""
    out = {}
    for k, v in _unwrap(state, where).items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"GRAM checkpoint: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[_normalise_key(str(k))] = v
    return out


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _load_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not match the architecture — missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"{where}: tensor shapes differ: {bad[:5]}")
    module.load_state_dict(sd, strict=True)


def _heads(model: GramModel, state: dict[str, torch.Tensor], where: str) -> None:
    for modality, key in HEADS.items():
        if model.has(modality):
            if key not in state:
                raise ValueError(f"{where}: no projection head {key!r} for the {modality} tower")
            head = getattr(model, key.split(".")[0]).linear
            if state[key].shape != head.weight.shape:
                raise ValueError(f"{where}: {key} has shape {tuple(state[key].shape)}, expected {tuple(head.weight.shape)}")
            head.weight.data.copy_(state[key])


def save_gram(model: GramModel, path: str | os.PathLike, extra: dict | None = None, dtype=torch.float16) -> None:
    """Write the pack format (module docstring); tied tensors are cloned, weights cast to ``dtype``."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    meta: dict = {"dim": model.dim, "frames": model.frames, "frame_rate": model.frame_rate, "crop": model.crop}
    if model.has("video"):
        meta["vision"] = asdict(model.vision_encoder.visual.cfg)
    if model.has("audio"):
        meta["audio"] = model.audio_encoder.cfg.to_dict()
        meta["audio_mel_bins"] = model.audio_encoder.n_mels
    if model.has("text"):
        tower = model.multimodal_encoder
        vocab = [tok for tok, _ in sorted(tower.tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
        meta["text"] = {"config": tower.bert.config.to_dict(), "vocab": vocab, "pooling": tower.pooling,
                        "max_length": tower.max_length, "lower_case": bool(getattr(tower.tokenizer, "do_lower_case", True))}
    meta.update(extra or {})
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).clone().contiguous()
               for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={FORMAT_KEY: json.dumps(meta, default=str)})


def _text_from_meta(meta: dict) -> TextTower:
    from transformers import BertConfig, BertModel

    tokenizer = word_tokenizer(meta["vocab"], meta.get("lower_case", True))
    config = BertConfig.from_dict(meta["config"])
    return TextTower(BertModel(config, add_pooling_layer=False), tokenizer, meta.get("pooling", "cls"),
                     meta.get("max_length", 40))


def load_gram(path: str | os.PathLike, text_folder: str | os.PathLike | None = None,
              modalities: tuple[str, ...] = ("video", "text", "audio"), device="cpu",
              dtype: torch.dtype = torch.float32) -> GramModel:
    """Load a pack ``.safetensors`` or an official GRAM ``.pt``/``.pth`` (module docstring) with the
    towers in ``modalities``; eval mode, on ``device`` in ``dtype``."""
    path = Path(path)
    where = path.name
    if not path.is_file():
        raise FileNotFoundError(f"GRAM weights {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as f:
            raw_meta = (f.metadata() or {}).get(FORMAT_KEY)
        if raw_meta is None:
            raise ValueError(f"{where}: not an AVLab GRAM safetensors file (no '{FORMAT_KEY}' metadata); "
                             "official GRAM checkpoints are .pt files")
        meta = json.loads(raw_meta)
        state = load_file(str(path))
        vision = EVAVisionTransformer(EVAViTConfig(**meta["vision"])) if "video" in modalities and "vision" in meta else None
        audio = (BEATs(BEATsConfig.from_dict(meta["audio"]), n_mels=meta.get("audio_mel_bins", 128))
                 if "audio" in modalities and "audio" in meta else None)
        text = _text_from_meta(meta["text"]) if "text" in modalities and "text" in meta else None
        settings = dict(frames=meta.get("frames", 8), frame_rate=meta.get("frame_rate"), crop=meta.get("crop", "center_crop"))
        dim = meta["dim"]
    elif path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the unpickler's message is appended
            raise ValueError(f"{where}: cannot be read as a weights-only checkpoint (AVLab never unpickles "
                             f"code): {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a GRAM state dict, got a {type(raw).__name__}")
        state = _strip(raw, where)
        vision = audio = text = None
        if "video" in modalities:
            vsd = _sub(state, VISION_PREFIX)
            if not vsd:
                raise ValueError(f"{where}: no vision tower under '{VISION_PREFIX}'")
            vision = EVAVisionTransformer(config_from_state_dict(vsd))
        if "audio" in modalities:
            asd = _sub(state, AUDIO_PREFIX)
            if not asd:
                raise ValueError(f"{where}: no audio tower under '{AUDIO_PREFIX}'")
            audio = BEATs(beats_config_from_state_dict(asd), n_mels=GRAM_MEL_BINS)
        if "text" in modalities:
            if text_folder is None:
                raise ValueError(f"{where}: the text tower needs a bert-base-uncased folder (config.json + vocab.txt)")
            text = _bert_shell(Path(text_folder))
            state = {k: v for k, v in state.items()
                     if not (k.startswith(TEXT_PREFIX) and _TEXT_SKIP.search(k[len(TEXT_PREFIX):]))}
        dim = state[HEADS["text"] if "text" in modalities else HEADS[modalities[0]]].shape[0]
        settings = dict(frames=8, frame_rate=None, crop="center_crop")
    else:
        raise ValueError(f"{where}: expected a .safetensors (AVLab) or .pt/.pth (official GRAM) file")
    model = GramModel(vision, text, audio, dim=dim, **settings)
    if vision is not None:
        _load_strict(model.vision_encoder.visual, _sub(state, VISION_PREFIX), f"{where} (vision tower)")
    if audio is not None:
        asd = _sub(state, AUDIO_PREFIX)
        _fill_shared_bias(asd, audio.cfg.encoder_layers)
        _load_strict(audio, asd, f"{where} (audio tower)")
    if text is not None:
        _load_strict(text.bert, _sub(state, TEXT_PREFIX), f"{where} (text tower)")
    _heads(model, state, where)
    return model.to(device, dtype).eval()


def _bert_shell(folder: Path) -> TextTower:
    """An untrained BERT with the folder's config and tokenizer (weights come from the GRAM file)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: needs config.json and vocab.txt of bert-base-uncased")
    config = BertConfig.from_pretrained(str(folder), local_files_only=True)
    config.is_decoder = False
    config.add_cross_attention = False
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return TextTower(BertModel(config, add_pooling_layer=False), tokenizer, "cls")
