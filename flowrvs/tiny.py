"""The pack's tiny FlowRVS for the synthetic domain (papers.md §2 at toy scale; issues 8 and 13).

Same families as the paper, small widths: a **Wan 2.1 DiT** (diffusers ``WanTransformer3DModel``) as
the flow network, a **Wan VAE** (diffusers ``AutoencoderKLWan``: 8× spatial / 4× temporal, 16 latent
channels) trained on the domain, its **mask decoder** (the same VAE with a 1-channel ``conv_out``,
saved in the layout of the official ``tuned_vae.pth``) and a **umT5-family text encoder**
(transformers ``UMT5EncoderModel``) over a closed word vocabulary (:class:`WordTokenizer`; the real
umT5 uses a SentencePiece model that cannot be downloaded here). The paper freezes a pretrained
umT5; ours starts from random weights, so it is trained together with the DiT.

:class:`TinyFlowRVS` bundles them with the domain's latent statistics (the video latent is normalised
with them, as the paper normalises with the Wan VAE's) and runs the whole inference of §2:
frames → working size + 4k+1 frames → VAE posterior mean → normalise → Euler flow (1 step by
default) → mask latent → mask decoder → logits → original size → threshold at logit 0.

Files (``weights/flowrvs/``, fp16 safetensors + one JSON, written by :meth:`TinyFlowRVS.save`):
``flowrvs_dit.safetensors`` (diffusers keys, loadable by :func:`.weights.load_flowrvs_dit`),
``mask_vae.safetensors`` (loadable by :func:`.weights.load_flowrvs_mask_vae`), ``vae.safetensors``,
``text_encoder.safetensors``, ``flowrvs_tiny.json`` (configs, vocabulary, latent statistics, record).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from torch import nn

from ..common.errors import NodeInputError, check
from . import latents as L
from .model import FlowRVSModel, enable_dvi
from .sampler import DEFAULT_SHIFT, DEFAULT_STEPS, flowrvs_sigmas, sample

logger = logging.getLogger(__name__)

NODE = "FlowRVS (tiny)"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "flowrvs"
BUNDLE_JSON = "flowrvs_tiny.json"

#: Tiny Wan DiT: dim 128 = 2 heads × 64, 6 layers (papers.md §2 full size: 1536, 12 × 128, 30 layers).
TINY_DIT = dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=64, in_channels=16,
                out_channels=16, text_dim=64, freq_dim=64, ffn_dim=512, num_layers=6, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)
#: Tiny Wan VAE with Wan 2.1's compression (8× spatial, 4× temporal, z 16) and 1/12 of its width.
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                temperal_downsample=[False, True, True])
#: umT5-family encoder (UMT5Config fields), text width 64.
TINY_TEXT = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                 relative_attention_max_distance=16, dropout_rate=0.0, feed_forward_proj="gated-gelu")
TEXT_LENGTH = 8
#: The flow network the synthetic proof trains (:class:`..train.FlowConfig` ``dit``): dim 192 = 3 heads × 64,
#: 8 layers. TINY_DIT (dim 128, 6 layers) underfits the 6930 training examples (train J&F = held-out J&F
#: = 0.64 after 8000 steps); TINY_DIT stays the test-size network.
SYNTHETIC_DIT = {**TINY_DIT, "num_attention_heads": 3, "ffn_dim": 768, "num_layers": 8}


class WordTokenizer:
    """Closed-vocabulary word tokenizer: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, then the words.
    Lower-cases, splits on non-letters, appends ``</s>``, pads / truncates to ``length``."""

    SPECIAL = ("<pad>", "</s>", "<unk>")

    def __init__(self, words, length: int = TEXT_LENGTH):
        self.words = list(dict.fromkeys(w.lower() for w in words))
        self.index = {w: i + len(self.SPECIAL) for i, w in enumerate(self.words)}
        self.length = int(length)

    @property
    def vocab_size(self) -> int:
        return len(self.SPECIAL) + len(self.words)

    def split(self, sentence: str) -> list[str]:
        return re.findall(r"[a-z]+", str(sentence).lower())

    def unknown(self, sentence: str) -> list[str]:
        return [w for w in self.split(sentence) if w not in self.index]

    def __call__(self, sentences) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B,length] long, attention_mask [B,length] long)``."""
        if isinstance(sentences, str):
            sentences = [sentences]
        ids = torch.zeros(len(sentences), self.length, dtype=torch.long)
        for b, s in enumerate(sentences):
            words = self.split(s)
            check(bool(words), NODE, "sentence", "a non-empty referring sentence", repr(s))
            toks = [self.index.get(w, 2) for w in words][: self.length - 1] + [1]
            ids[b, : len(toks)] = torch.tensor(toks)
        return ids, (ids != 0).long()


class TinyTextEncoder(nn.Module):
    """``UMT5EncoderModel`` over :class:`WordTokenizer` ids; padded positions are zeroed (as Wan's
    context beyond the sentence is zero)."""

    def __init__(self, vocab_size: int, config: dict | None = None):
        super().__init__()
        from transformers import UMT5Config, UMT5EncoderModel

        cfg = UMT5Config(vocab_size=vocab_size, **(config or TINY_TEXT))
        self.encoder = UMT5EncoderModel(cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state
        return h * attention_mask[..., None].to(h.dtype)


class FlowRVSSystem(nn.Module):
    """What the flow stage trains: the text encoder and the flow network, together."""

    def __init__(self, text_encoder: TinyTextEncoder, flow: FlowRVSModel):
        super().__init__()
        self.text_encoder = text_encoder
        self.flow = flow

    def forward(self, x_t, t, ids, attention_mask, video=None):
        return self.flow(x_t, t, self.text_encoder(ids, attention_mask), video=video)


def save_fp16(module: nn.Module, path) -> None:
    """``module``'s weights as fp16 safetensors (the pack's committed-weight format)."""
    from safetensors.torch import save_file

    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()},
              str(path))


def load_fp16(module: nn.Module, path) -> nn.Module:
    """Load safetensors written by :func:`save_fp16` into ``module`` as float32 (strict)."""
    from safetensors.torch import load_file

    module.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return module


def build_vae(config: dict | None = None, out_channels: int = 3):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(**dict(config or TINY_VAE), out_channels=out_channels)


def build_system(vocab, dvi: bool = True, dit_config: dict | None = None, text_config: dict | None = None,
                 text_length: int = TEXT_LENGTH) -> tuple[WordTokenizer, FlowRVSSystem]:
    tok = WordTokenizer(vocab, text_length)
    flow = FlowRVSModel.from_config(dict(dit_config or TINY_DIT))
    if dvi:
        enable_dvi(flow)
    return tok, FlowRVSSystem(TinyTextEncoder(tok.vocab_size, text_config), flow)


def mask_vae_from(vae) -> nn.Module:
    """A 1-channel-head copy of an RGB Wan VAE (the FlowRVS mask decoder's starting point): every
    weight copied, ``decoder.conv_out`` initialised to the mean of the RGB rows."""
    cfg = dict(vae.config)
    mask_vae = build_vae({k: cfg[k] for k in TINY_VAE}, out_channels=1)
    sd = {k: v for k, v in vae.state_dict().items() if not k.startswith("decoder.conv_out.")}
    missing, unexpected = mask_vae.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) == {"decoder.conv_out.weight", "decoder.conv_out.bias"}, (missing, unexpected)
    with torch.no_grad():
        mask_vae.decoder.conv_out.weight.copy_(vae.decoder.conv_out.weight.mean(0, keepdim=True))
        mask_vae.decoder.conv_out.bias.copy_(vae.decoder.conv_out.bias.mean(0, keepdim=True))
    return mask_vae


def decode_unclamped(vae, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode(z)`` before diffusers' final ``clamp(-1, 1)``: the decoder's per-latent-frame outputs,
    collected by a forward hook and concatenated in time. Training needs it (a clamped pixel on the wrong
    side of ±1 gets no gradient and stays wrong), and the mask decoder's logits are unbounded."""
    outs: list[torch.Tensor] = []
    hook = vae.decoder.register_forward_hook(lambda _m, _a, out: outs.append(out))
    try:
        vae.decode(z, return_dict=False)
    finally:
        hook.remove()
    return torch.cat(outs, dim=2)


def posterior(vae, x: torch.Tensor):
    """``(mean, std)`` of the Wan VAE posterior of ``x`` ``[B,3,T,H,W]`` in [-1, 1]."""
    dist = vae.encode(x).latent_dist
    return dist.mean, dist.std


class TinyFlowRVS:
    """The trained tiny FlowRVS (see module docstring). ``segment(frames, sentence)`` → masks."""

    def __init__(self, tokenizer: WordTokenizer, system: FlowRVSSystem, vae, mask_vae, latent_mean, latent_std,
                 record: dict | None = None):
        self.tokenizer, self.system, self.vae, self.mask_vae = tokenizer, system, vae, mask_vae
        self.latent_mean = [float(v) for v in latent_mean]
        self.latent_std = [float(v) for v in latent_std]
        self.record = dict(record or {})
        for m in (system, vae, mask_vae):
            m.eval().requires_grad_(False)

    # --------------------------------------------------------------------------------- latents
    @torch.no_grad()
    def encode_text(self, sentences) -> torch.Tensor:
        if isinstance(sentences, str):
            sentences = [sentences]
        for s in sentences:
            check(isinstance(s, str) and s.strip() != "", NODE, "sentence", "a non-empty referring sentence", repr(s))
            unknown = self.tokenizer.unknown(s)
            if unknown:
                logger.warning("%s: words outside the synthetic vocabulary are unknown to the tiny text encoder: %s",
                               NODE, unknown)
        ids, att = self.tokenizer(sentences)
        return self.system.text_encoder(ids, att)

    @torch.no_grad()
    def video_latent(self, frames: torch.Tensor) -> torch.Tensor:
        """IMAGE-style frames ``[T,H,W,3]`` already at the working size and 4k+1 frames → normalised latent."""
        z, _ = posterior(self.vae, L.frames_to_vae_input(frames.float()))
        return L.normalise_video_latent(z, self.latent_mean, self.latent_std)

    @torch.no_grad()
    def decode_mask(self, mask_latent: torch.Tensor) -> torch.Tensor:
        """Mask latent ``[B,16,T',h,w]`` → logits ``[B,T,H,W]`` (object where > 0)."""
        return decode_unclamped(self.mask_vae, mask_latent)[:, 0]

    def velocity_fn(self, text: torch.Tensor, video: torch.Tensor):
        def fn(x, sigma):
            return self.system.flow(x, sigma, text, video=video)
        return fn

    # --------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def segment(self, frames: torch.Tensor, sentence: str, steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT,
                callback=None, return_logits: bool = False):
        """Frames ``[T,H,W,3]`` in 0..1 (any size and count) + sentence → binary masks ``[T,H,W]``
        (papers.md §2 "Inference"); with ``return_logits`` also the restored logits."""
        check(torch.is_tensor(frames) and frames.dim() == 4 and frames.shape[-1] == 3 and frames.shape[0] >= 1,
              NODE, "frames", "[T,H,W,3] frames in 0..1", getattr(frames, "shape", type(frames)))
        t, h, w = (int(s) for s in frames.shape[:3])
        wh, ww = L.working_size(h, w)
        work, _ = L.pad_frames(L.resize_frames(frames.float(), wh, ww))
        text = self.encode_text(sentence)
        video = self.video_latent(work)
        mask_latent = sample(self.velocity_fn(text, video), video, flowrvs_sigmas(steps, shift), callback=callback)
        logits = L.restore(self.decode_mask(mask_latent)[0], t, h, w)
        masks = (logits > 0).float()
        return (masks, logits) if return_logits else masks

    def with_mask_decoder(self, mask_vae) -> TinyFlowRVS:
        """The same model (flow, text encoder, VAE, statistics, record) with another mask decoder."""
        return TinyFlowRVS(self.tokenizer, self.system, self.vae, mask_vae, self.latent_mean, self.latent_std,
                           self.record)

    # --------------------------------------------------------------------------------- files
    def save(self, out: str | Path, record: dict | None = None) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_fp16(self.system.flow.transformer, out / "flowrvs_dit.safetensors")
        save_fp16(self.system.text_encoder, out / "text_encoder.safetensors")
        save_fp16(self.vae, out / "vae.safetensors")
        save_fp16(self.mask_vae, out / "mask_vae.safetensors")
        dit_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.system.flow.transformer.config.items()
                   if k in TINY_DIT}
        meta = {"kind": "flowrvs_tiny", "dit": dit_cfg, "dvi": self.system.flow.dvi,
                "text": {k: getattr(self.system.text_encoder.encoder.config, k) for k in TINY_TEXT},
                "vae": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.vae.config.items() if k in TINY_VAE},
                "vocabulary": self.tokenizer.words, "text_length": self.tokenizer.length,
                "latent_mean": self.latent_mean, "latent_std": self.latent_std,
                "record": {**self.record, **(record or {})}}
        (out / BUNDLE_JSON).write_text(json.dumps(meta, indent=1, default=str))
        # the DiT's own JSON, so load_flowrvs_dit / the loader node read its config (head count)
        (out / "flowrvs_dit.json").write_text(json.dumps({"kind": "flowrvs_dit", "layout": "diffusers",
                                                          "config": dit_cfg, "dvi": self.system.flow.dvi}, indent=1))
        return out

    @classmethod
    def load(cls, folder: str | Path | None = None) -> TinyFlowRVS:
        folder = Path(folder) if folder else WEIGHTS_DIR
        meta_path = folder / BUNDLE_JSON
        if not meta_path.is_file():
            raise NodeInputError(NODE, "weights", f"{BUNDLE_JSON} and its safetensors in {folder} (made by "
                                 "`python scripts/train_flowrvs_synthetic.py`)", "missing")
        meta = json.loads(meta_path.read_text())
        tok, system = build_system(meta["vocabulary"], dvi=False, dit_config=meta["dit"], text_config=meta["text"],
                                   text_length=meta["text_length"])
        if meta["dvi"] != system.flow.dvi:      # the DiT config holds in_channels (32 with DVI)
            raise NodeInputError(NODE, "weights", "a DiT config whose in_channels agree with 'dvi'",
                                 f"dvi={meta['dvi']}, in_channels={system.flow.in_channels}")

        load_fp16(system.flow.transformer, folder / "flowrvs_dit.safetensors")
        load_fp16(system.text_encoder, folder / "text_encoder.safetensors")
        vae = load_fp16(build_vae(meta["vae"]), folder / "vae.safetensors")
        mask_vae = load_fp16(build_vae(meta["vae"], out_channels=1), folder / "mask_vae.safetensors")
        return cls(tok, system, vae, mask_vae, meta["latent_mean"], meta["latent_std"], meta.get("record"))
