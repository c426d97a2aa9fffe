"""The envelope ControlNet inside ComfyUI's native Stable Audio model (papers.md §4; issue 10).

Duck-typed against ComfyUI (no ``comfy`` import): the model is a ``ModelPatcher`` whose diffusion
model is ``comfy.ldm.audio.dit.AudioDiffusionTransformer``; its ``ContinuousTransformer`` calls
``transformer_options["patches_replace"]["dit"][("double_block", i)](args, {"original_block": fn})``
with ``args = {"img": x, "txt": context, "vec": global_cond, "pe": rotary, "transformer_options"}`` and
``x`` already holding the prepended global token (host-notes.md).

:func:`apply_envelope_controlnet` returns ``model.clone()`` with blocks ``0..K−1`` replaced: at block 0
the ControlNet runs its copies on the current hidden state (+ the envelope) and keeps the K residuals
of this call; block j adds ``strength · r_j`` to its input, inside ``[start_percent, end_percent]`` of
the schedule. A patch already on those blocks (e.g. AVLab LightCache) is chained, never dropped. The
original model is never modified (a clone carries the patches), so removing the node restores it.
"""

from __future__ import annotations

import logging

import torch

from .controlnet import EnvelopeControlNet
from .envelope import STABLE_AUDIO_RATE, Envelope

logger = logging.getLogger(__name__)
NODE = "AVLab Envelope ControlNet Apply"


def stable_audio_parts(model) -> tuple[object, object]:
    """``(AudioDiffusionTransformer, its ContinuousTransformer)`` or a clear error."""
    dm = model.get_model_object("diffusion_model")
    transformer = getattr(dm, "transformer", None)
    if transformer is None or not hasattr(transformer, "layers") or not hasattr(dm, "global_cond_type"):
        raise ValueError(f"{NODE}: the model is not a Stable Audio DiT (got {type(dm).__name__}); load Stable "
                         "Audio Open with ComfyUI's checkpoint loader")
    return dm, transformer


def envelope_for_latent(envelope: Envelope, length: int) -> torch.Tensor:
    """``[1, C, length]`` envelope values at the latent rate; a different rate or length is resampled,
    with a logged notice."""
    values = envelope.values
    if values.dim() == 1:
        values = values[None]
    if abs(envelope.rate - STABLE_AUDIO_RATE) > 1e-6 or values.shape[-1] != length:
        logger.info("%s: envelope of %d values at %.3f Hz resampled to the latent's %d frames at %.3f Hz", NODE,
                    values.shape[-1], envelope.rate, length, STABLE_AUDIO_RATE)
        values = Envelope(values, envelope.rate).resample(STABLE_AUDIO_RATE, length).values
    return values.float().reshape(1, -1, length)


def _make_patch(i: int, state: dict, previous=None):
    def envelope_controlnet_block(args: dict, extra: dict) -> dict:
        opts = args.get("transformer_options") or {}
        x = args["img"]
        if i == 0:
            state["residuals"] = None
            sigmas = opts.get("sigmas")
            sigma = float(sigmas.max()) if isinstance(sigmas, torch.Tensor) and sigmas.numel() else None
            if sigma is None or state["sigma_end"] <= sigma <= state["sigma_start"]:
                net: EnvelopeControlNet = state["net"]
                if next(net.parameters()).device != x.device:
                    net.to(x.device)
                length = x.shape[1] - state["prepend"]
                cache = state.setdefault("envelopes", {})
                if length not in cache:              # resampled (and the notice logged) once per length
                    cache[length] = envelope_for_latent(state["envelope"], length)
                env = cache[length].to(x.device)

                def run_block(block, h):
                    return block(h, rotary_pos_emb=args["pe"], global_cond=args["vec"], context=args["txt"],
                                 transformer_options=opts)

                with torch.no_grad():
                    state["residuals"] = net.residuals(x, env, run_block)
        residuals = state.get("residuals")
        if residuals is not None:
            args = dict(args, img=x + state["strength"] * residuals[i].to(x.dtype))
        if previous is not None:
            return previous(args, extra)
        return extra["original_block"](args)

    envelope_controlnet_block.avlab_envelope_controlnet = True
    return envelope_controlnet_block


def apply_envelope_controlnet(model, net: EnvelopeControlNet, envelope: Envelope, strength: float = 1.0,
                              start_percent: float = 0.0, end_percent: float = 1.0):
    """``model.clone()`` with the ControlNet patched in (module docstring)."""
    dm, transformer = stable_audio_parts(model)
    if int(transformer.dim) != net.base_dim:
        raise ValueError(f"{NODE}: the ControlNet was trained for a Stable Audio DiT of width {net.base_dim}, the "
                         f"model has width {transformer.dim}")
    if net.copied > len(transformer.layers):
        raise ValueError(f"{NODE}: the ControlNet copies {net.copied} blocks, the model has {len(transformer.layers)}")
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"{NODE}: need 0 ≤ start_percent ≤ end_percent ≤ 1, got {start_percent}, {end_percent}")
    sampling = model.get_model_object("model_sampling")
    state = {"net": net, "envelope": envelope, "strength": float(strength), "residuals": None,
             "prepend": 1 if dm.global_cond_type == "prepend" else 0,
             "sigma_start": float(sampling.percent_to_sigma(start_percent)),
             "sigma_end": float(sampling.percent_to_sigma(end_percent))}
    m = model.clone()
    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for i in range(net.copied):
        m.set_model_patch_replace(_make_patch(i, state, existing.get(("double_block", i))), "dit", "double_block", i)
    return m
