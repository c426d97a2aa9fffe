"""GRAM embeddings → Stable Audio Open conditioning (papers.md §4, "Generator").

FoleyGRAM replaces Stable Audio's T5 tokens by GRAM embeddings: each embedding goes through one
``Linear(512 → 768)`` and becomes one cross-attention token; ``seconds_start`` / ``seconds_total``
stay the global conditioning (ComfyUI's ``StableAudio1.extra_conds`` appends their embeddings to the
tokens and builds the global embedding from them). The token order is fixed: video, text, audio
(the modalities present). The unconditional branch of CFG is the same number of zero tokens — the
"null" input that CFG dropout trains.

Weights (issue 13): the projection is trained with the envelope ControlNet and lives beside it, as
tensors ``gram_to_tokens.weight`` [768, dim] / ``gram_to_tokens.bias`` [768] in a safetensors file
whose metadata ``avlab_gram_projection`` (JSON) says ``{"dim", "width", "modalities"}``. The file
may also hold the ControlNet's own tensors.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

META_KEY = "avlab_gram_projection"
PREFIX = "gram_to_tokens."
TOKEN_ORDER = ("video", "text", "audio")
STABLE_AUDIO_WIDTH = 768


class GramTokenProjection(nn.Module):
    """``Linear(dim → width)`` applied to each GRAM embedding (one cross-attention token each)."""

    def __init__(self, dim: int = 512, width: int = STABLE_AUDIO_WIDTH, modalities: tuple[str, ...] = TOKEN_ORDER):
        super().__init__()
        self.modalities = tuple(modalities)
        self.gram_to_tokens = nn.Linear(dim, width)

    @property
    def dim(self) -> int:
        return self.gram_to_tokens.in_features

    @property
    def width(self) -> int:
        return self.gram_to_tokens.out_features

    def tokens(self, embeds: dict[str, torch.Tensor], item: int = 0) -> torch.Tensor:
        """``[1, k, width]`` tokens from item ``item`` of each modality in ``embeds`` (order video, text,
        audio; modalities the projection was not trained on are refused)."""
        present = [m for m in TOKEN_ORDER if m in embeds]
        if not present:
            raise ValueError("GRAM conditioning: the embeds hold no video, text or audio embedding")
        unknown = [m for m in present if m not in self.modalities]
        if unknown:
            raise ValueError(f"GRAM conditioning: this projection was trained on {list(self.modalities)}, "
                             f"not on {unknown}")
        rows = []
        for m in present:
            e = embeds[m]
            if e.shape[-1] != self.dim:
                raise ValueError(f"GRAM conditioning: {m} embedding has {e.shape[-1]} dimensions, the projection "
                                 f"expects {self.dim}")
            rows.append(e[min(item, e.shape[0] - 1)])
        w = self.gram_to_tokens.weight
        return self.gram_to_tokens(torch.stack(rows).to(w.device, w.dtype))[None]


def projection_parts(proj: GramTokenProjection) -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a projection in the file format above, for :func:`save_projection`
    and for files that hold it beside a ControlNet."""
    tensors = {f"{PREFIX}{k}": v.detach().cpu().contiguous() for k, v in proj.gram_to_tokens.state_dict().items()}
    meta = {"dim": proj.dim, "width": proj.width, "modalities": list(proj.modalities)}
    return tensors, {META_KEY: json.dumps(meta)}


def save_projection(proj: GramTokenProjection, path: str | os.PathLike, extra_tensors: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors, meta = projection_parts(proj)
    tensors.update(extra_tensors or {})
    save_file(tensors, str(path), metadata=meta)


def load_projection(path: str | os.PathLike) -> GramTokenProjection:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = (f.metadata() or {}).get(META_KEY)
        if meta is None or f"{PREFIX}weight" not in f.keys():
            raise ValueError(f"{os.path.basename(path)}: no GRAM token projection in it (tensors "
                             f"'{PREFIX}weight'/'bias' and metadata '{META_KEY}', written by the Foley "
                             "ControlNet training)")
        meta = json.loads(meta)
        proj = GramTokenProjection(meta["dim"], meta["width"], tuple(meta.get("modalities", TOKEN_ORDER)))
        proj.gram_to_tokens.load_state_dict({"weight": f.get_tensor(f"{PREFIX}weight"),
                                             "bias": f.get_tensor(f"{PREFIX}bias")})
    return proj.eval()
