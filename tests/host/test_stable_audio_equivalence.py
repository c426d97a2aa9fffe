"""avlab.foley.stable_audio against ComfyUI's own Stable Audio classes (papers.md §4): the host-free DiT's
state dict loads strictly into ``comfy.ldm.audio.dit.AudioDiffusionTransformer`` and both compute the
same v (fp32); the seconds embedders / conditioner match ``NumberConditioner`` / ``StableAudio1.extra_conds``;
the single-file layout is what ComfyUI's loader splits."""

from __future__ import annotations

import pytest
import torch

from avlab.foley.stable_audio import (
    StableAudioConditioner, StableAudioDiT, StableAudioDiTConfig, checkpoint_state_dict,
)

CONFIGS = {
    "projected_tokens": StableAudioDiTConfig(embed_dim=128, num_heads=2, depth=3, project_cond_tokens=True,
                                             global_cond_dim=96),
    "grouped_kv_heads": StableAudioDiTConfig(embed_dim=256, num_heads=4, depth=2, cond_token_dim=128,
                                             project_cond_tokens=False),
}


def _ours(cfg: StableAudioDiTConfig, seed: int) -> StableAudioDiT:
    torch.manual_seed(seed)
    model = StableAudioDiT(cfg)
    with torch.no_grad():   # O(1) activations everywhere (the trainable init is small, its residual convs 0)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(std=0.1)
            elif p.ndim >= 2 and "timestep_features" not in name:
                p.normal_(std=p[0].numel() ** -0.5)
    return model.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dit_matches_comfy(comfy_inprocess, name):
    import comfy.ldm.audio.dit
    import comfy.ops

    cfg = CONFIGS[name]
    ours = _ours(cfg, seed=3)
    theirs = comfy.ldm.audio.dit.AudioDiffusionTransformer(**cfg.comfy_unet_config(),
                                                           operations=comfy.ops.disable_weight_init)
    sd = ours.state_dict()
    assert set(sd) == set(theirs.state_dict())
    assert all(sd[k].shape == v.shape for k, v in theirs.state_dict().items())
    theirs.load_state_dict(sd, strict=True)
    theirs.eval()

    g = torch.Generator().manual_seed(7)
    b, n, m = 2, 19, 6
    x = torch.randn(b, cfg.io_channels, n, generator=g)
    t = torch.rand(b, generator=g)
    ctx = torch.randn(b, m, cfg.cond_token_dim, generator=g)
    glob = torch.randn(b, cfg.global_cond_dim, generator=g)
    with torch.no_grad():
        ref = theirs(x, t, context=ctx, global_embed=glob)
        out = ours(x, t, ctx, glob)
    assert out.shape == ref.shape == x.shape
    assert ref.abs().mean() > 0.1
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_seconds_embedder_and_conditioner_match_comfy(comfy_inprocess):
    import comfy.ldm.audio.embedders
    import comfy.model_base
    import comfy.supported_models

    torch.manual_seed(11)
    cond = StableAudioConditioner()
    for which in (cond.seconds_start, cond.seconds_total):
        theirs = comfy.ldm.audio.embedders.NumberConditioner(768, min_val=0, max_val=512)
        assert set(theirs.state_dict()) == set(which.state_dict())
        theirs.load_state_dict(which.state_dict(), strict=True)
        values = [0.0, 1.5, 30.0, 600.0]
        ref = theirs(values)[0]                                   # [4, 1, 768]
        torch.testing.assert_close(which(values), ref[:, 0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(which(600.0), which(512.0))

    # StableAudio1.extra_conds built from our conditioner's weights (through the checkpoint layout)
    cfg = StableAudioDiTConfig(embed_dim=128, num_heads=2, depth=1, project_cond_tokens=True)
    sd = checkpoint_state_dict(_ours(cfg, seed=0), cond)
    config = comfy.supported_models.StableAudio(cfg.comfy_unet_config())
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model(sd, device=torch.device("cpu"))
    assert isinstance(model, comfy.model_base.StableAudio1)

    tokens = torch.randn(2, 5, 768)
    noise = torch.zeros(2, 64, 40)
    for start, total in ((0, 3), (1.5, 30.0), (7, 600)):
        conds = model.extra_conds(noise=noise, device=torch.device("cpu"), cross_attn=tokens,
                                  seconds_start=start, seconds_total=total)
        ctx_ref, glob_ref = conds["c_crossattn"].cond, conds["global_embed"].cond
        context, glob = cond(tokens, start, total)
        torch.testing.assert_close(context, ctx_ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(glob, glob_ref.expand(2, -1), atol=1e-6, rtol=1e-6)

    # per-item values agree with one extra_conds call per item
    context, glob = cond(tokens, torch.tensor([0.0, 2.0]), torch.tensor([10.0, 47.0]))
    for i, (start, total) in enumerate(((0.0, 10.0), (2.0, 47.0))):
        conds = model.extra_conds(noise=noise, device=torch.device("cpu"), cross_attn=tokens[i:i + 1],
                                  seconds_start=start, seconds_total=total)
        torch.testing.assert_close(context[i:i + 1], conds["c_crossattn"].cond, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(glob[i:i + 1], conds["global_embed"].cond, atol=1e-6, rtol=1e-6)
