"""A small Stable Audio Open DiT built *inside* a ComfyUI process, for host tests (host-notes.md).

ComfyUI detects Stable Audio from a fixed marker (``audio_model: dit1.0``) and builds the full 1.1 B
model, so a tiny checkpoint file cannot be loaded through the native loaders. Tests that need the
DiT (LightCache's ``("double_block", i)`` hook, StereoSync / FoleyGRAM conditioning) build the real
classes — ``comfy.supported_models.StableAudio`` → ``comfy.model_base.StableAudio1`` →
``comfy.ldm.audio.dit.AudioDiffusionTransformer`` — with small dims and wrap them in a
``comfy.model_patcher.ModelPatcher``, exactly what ``CheckpointLoaderSimple`` would hand a node.

Needs ``comfy`` importable with ``--cpu`` already parsed (the ``comfy_inprocess`` fixture does it).
The cross-attention width (768, T5-base) and the global width (2 × 768 seconds embeddings) are what
``StableAudio1.extra_conds`` produces, so they stay at their real size; everything else shrinks. The
tokens are projected to the DiT's width (``project_cond_tokens``): unprojected 768-d tokens need a
width ≥ 768 (ComfyUI's cross-attention groups 768 / 64 = 12 key/value heads onto the query heads and
silently degenerates below that).
"""

from __future__ import annotations

import torch

from tiny_checkpoints import init_random

#: Real-model values: io 64 latent channels, head width 64, cond tokens 768, global cond 1536.
TINY_STABLE_AUDIO = dict(
    audio_model="dit1.0", io_channels=64, patch_size=1, embed_dim=128, cond_token_dim=768,
    project_cond_tokens=True, global_cond_dim=1536, project_global_cond=True, input_concat_dim=0,
    prepend_cond_dim=0, depth=2, num_heads=2, transformer_type="continuous_transformer",
    global_cond_type="prepend",
)


def build_tiny_stable_audio(depth: int = 2, embed_dim: int = 128, num_heads: int = 2, seed: int = 0):
    """Return a ``ModelPatcher`` around a random ``StableAudio1`` with a ``depth``-block DiT (fp32, CPU)."""
    import comfy.ldm.audio.embedders
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = dict(TINY_STABLE_AUDIO, depth=depth, embed_dim=embed_dim, num_heads=num_heads)
    config = comfy.supported_models.StableAudio(unet_config)
    config.set_inference_dtype(torch.float32, None)

    def seconds_embedder_weights(offset: int) -> dict:
        emb = comfy.ldm.audio.embedders.NumberConditioner(768, min_val=0, max_val=512)
        init_random(emb, seed + offset)
        return emb.state_dict()

    model = comfy.model_base.StableAudio1(
        config,
        seconds_start_embedder_weights=seconds_embedder_weights(1),
        seconds_total_embedder_weights=seconds_embedder_weights(2),
        device=torch.device("cpu"),
    )
    init_random(model.diffusion_model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def apply_once(patcher, x: torch.Tensor, sigma: float, cross_attn: torch.Tensor | None = None,
               transformer_options: dict | None = None, **cond_kwargs) -> torch.Tensor:
    """One denoiser call the way the samplers make it: ``extra_conds`` then ``apply_model``.

    Works for any ComfyUI ``BaseModel`` (Stable Audio, SVD, Wan...); ``cond_kwargs`` go to
    ``extra_conds`` (e.g. ``seconds_total=2``).
    """
    model = patcher.model
    conds = model.extra_conds(noise=x, device=x.device, cross_attn=cross_attn, **cond_kwargs)
    batch = x.shape[0]
    args = {name: c.process_cond(batch_size=batch, area=None, device=x.device).cond for name, c in conds.items()}
    sigmas = torch.full((x.shape[0],), float(sigma))
    return model.apply_model(x, sigmas, transformer_options=transformer_options or {}, **args)
