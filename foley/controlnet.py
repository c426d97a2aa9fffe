"""The envelope ControlNet for the Stable Audio Open DiT (papers.md §4, "Envelope ControlNet";
stable-audio-controlnet / Stable-V2A lineage; issue 10).

Structure: trainable copies of the base DiT's first ``K = round(0.2 · depth)`` blocks (5 of 24),
initialised from the base; a zero-initialised 1×1 convolution brings the envelope features (``C``
channels at the latent rate, one value per latent frame) into the width of the DiT; K
zero-initialised 1×1 convolutions read the copies' outputs. With ``h₀ = x + pad(conv_in(envelope))``
(zeros at the prepended global-token positions: the envelope only lines up with the latent frames;
the envelope is peak-normalised first, so only its shape matters)
and ``h_{j+1} = copy_j(h_j)``, residual ``r_j = conv_out_j(h_{j+1})`` is added to the main DiT's hidden
state **before** its block j. At initialisation every residual is exactly 0, so the base model's
output is bit-identical (tested).

Host-free: the blocks are whatever modules the base uses (ComfyUI's ``TransformerBlock`` here) and
the caller says how to run one (``run_block(block, h)``); :mod:`avlab.foley.controlnet_glue` wires it
into ComfyUI's ``patches_replace["dit"]``.

File format (safetensors): ``blocks.{j}.*`` (the copied blocks, the base's own key names),
``envelope_in.{weight,bias}``, ``zero_convs.{j}.{weight,bias}``; metadata ``avlab_envelope_controlnet``
(JSON) = ``{"format": 1, "base_dim", "base_depth", "copied", "envelope_channels", "fraction"}``. The same
file may carry the GRAM→token projection (:mod:`avlab.foley.conditioning`).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

META_KEY = "avlab_envelope_controlnet"
FRACTION = 0.2


def copied_blocks(depth: int, fraction: float = FRACTION) -> int:
    """``round(fraction · depth)``, at least 1 (5 of Stable Audio Open's 24)."""
    return max(1, int(round(fraction * depth)))


def _zero_conv(cin: int, cout: int) -> nn.Conv1d:
    conv = nn.Conv1d(cin, cout, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class EnvelopeControlNet(nn.Module):
    def __init__(self, blocks: list[nn.Module], dim: int, base_depth: int, envelope_channels: int = 1,
                 fraction: float = FRACTION):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.base_dim, self.base_depth, self.fraction = int(dim), int(base_depth), float(fraction)
        self.envelope_channels = int(envelope_channels)
        self.envelope_in = _zero_conv(envelope_channels, dim)
        self.zero_convs = nn.ModuleList([_zero_conv(dim, dim) for _ in blocks])

    @classmethod
    def from_base(cls, layers, dim: int, envelope_channels: int = 1, fraction: float = FRACTION) -> "EnvelopeControlNet":
        """Copies of the first ``round(fraction · len(layers))`` base blocks (weights included)."""
        k = copied_blocks(len(layers), fraction)
        return cls([copy.deepcopy(layers[j]) for j in range(k)], dim, len(layers), envelope_channels, fraction)

    @property
    def copied(self) -> int:
        return len(self.blocks)

    def residuals(self, x: torch.Tensor, envelope: torch.Tensor,
                  run_block: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """``x`` ``[B, P + N, dim]`` (P prepended tokens first), ``envelope`` ``[B or 1, C, N]`` →
        one residual ``[B, P + N, dim]`` per copied block. The envelope is peak-normalised per item and
        channel first (the ControlNet reads its shape: an envelope from a sound, from the RMS mapper or
        drawn by hand all arrive on one scale; silence stays all zero)."""
        n = envelope.shape[-1]
        envelope = envelope / envelope.abs().amax(-1, keepdim=True).clamp(min=1e-8)
        prepend = x.shape[1] - n
        if prepend < 0:
            raise ValueError(f"EnvelopeControlNet: the envelope has {n} values but the sequence only {x.shape[1]} tokens")
        w = self.envelope_in.weight
        feat = self.envelope_in(envelope.to(w.device, w.dtype)).transpose(1, 2)        # [b, N, dim]
        h = x + F.pad(feat, (0, 0, prepend, 0)).to(x.dtype)
        out = []
        for block, conv in zip(self.blocks, self.zero_convs):
            h = run_block(block, h)
            out.append(conv(h.transpose(1, 2).to(conv.weight.dtype)).transpose(1, 2).to(x.dtype))
        return out

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict:
        return {"format": 1, "base_dim": self.base_dim, "base_depth": self.base_depth, "copied": self.copied,
                "envelope_channels": self.envelope_channels, "fraction": self.fraction}

    def save(self, path: str | os.PathLike, extra_tensors: dict | None = None, extra_meta: dict | None = None,
             dtype: torch.dtype | None = None) -> None:
        """Write the file format above (``dtype``: cast every tensor, e.g. fp16 for shipped weights)."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        tensors.update(extra_tensors or {})
        if dtype is not None:
            tensors = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
        meta = {META_KEY: json.dumps(self.metadata())}
        meta.update(extra_meta or {})
        save_file(tensors, str(path), metadata=meta)


def read_controlnet_file(path: str | os.PathLike, tensors: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a ControlNet file (``tensors=False``: the header only, e.g. for a
    loader that only checks the file), or a clear error naming the file."""
    from safetensors import safe_open

    name = os.path.basename(str(path))
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            if raw is None:
                raise ValueError(f"{name}: not an AVLab envelope ControlNet (no '{META_KEY}' metadata)")
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or non-safetensors file
        raise ValueError(f"{name}: cannot be read as safetensors ({exc})") from None
    return json.loads(raw), out


def controlnet_for_base(path: str | os.PathLike, layers, dim: int) -> EnvelopeControlNet:
    """Build the ControlNet of file ``path`` on a base whose blocks are ``layers`` (width ``dim``):
    block structure copied from the base, weights from the file. A file trained for another base
    width or with more copied blocks than the base has is refused."""
    meta, tensors = read_controlnet_file(path)
    name = os.path.basename(str(path))
    if int(meta["base_dim"]) != int(dim):
        raise ValueError(f"{name}: this ControlNet was trained for a Stable Audio DiT of width {meta['base_dim']}, "
                         f"the model given has width {dim}")
    if int(meta["copied"]) > len(layers):
        raise ValueError(f"{name}: copies {meta['copied']} blocks, the model has only {len(layers)}")
    net = EnvelopeControlNet([copy.deepcopy(layers[j]) for j in range(int(meta["copied"]))], dim, len(layers),
                             int(meta.get("envelope_channels", 1)), float(meta.get("fraction", FRACTION)))
    own = net.state_dict()
    state = {k: v for k, v in tensors.items() if k in own}
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{name}: missing ControlNet tensors {missing[:5]}")
    bad = [k for k in own if state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{name}: tensors {bad[:5]} do not fit the model's blocks (another base architecture?)")
    net.load_state_dict(state)
    return net.eval()
