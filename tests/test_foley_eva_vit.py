"""EVA-CLIP ViT-g/14 video encoder in the GRAM/VAST layout (papers.md §4 (FoleyGRAM: EVA-CLIP
ViT-g/14 video encoder, GRAM/VAST layout)): strict loading of a hand-written tiny checkpoint,
shapes, position-embedding interpolation, preprocessing and refusals."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from avlab.foley.eva_vit import (
    CLIP_MEAN,
    CLIP_STD,
    EVA_VIT_G14,
    GRAM_VISION_PREFIX,
    TINY_EVA_VIT,
    EVAViTConfig,
    EVAVisionTransformer,
    config_from_state_dict,
    load_eva_vit,
    preprocess,
    resize_pos_embed,
)

# Tiny tower: image 32, patch 8 (4×4 grid → 1 + 16 tokens), width 64, 2 blocks, MLP 128, CLIP head 32.
# Written out by hand from the GRAM/EVA-CLIP layout (eva_vit_model.py), not from model.state_dict().
_BLOCK_SHAPES = {
    "norm1.weight": (64,),
    "norm1.bias": (64,),
    "attn.q_bias": (64,),
    "attn.v_bias": (64,),
    "attn.qkv.weight": (192, 64),
    "attn.proj.weight": (64, 64),
    "attn.proj.bias": (64,),
    "norm2.weight": (64,),
    "norm2.bias": (64,),
    "mlp.fc1.weight": (128, 64),
    "mlp.fc1.bias": (128,),
    "mlp.fc2.weight": (64, 128),
    "mlp.fc2.bias": (64,),
}
TINY_SHAPES: dict[str, tuple[int, ...]] = {
    "cls_token": (1, 1, 64),
    "pos_embed": (1, 17, 64),
    "patch_embed.proj.weight": (64, 3, 8, 8),
    "patch_embed.proj.bias": (64,),
    **{f"blocks.0.{k}": s for k, s in _BLOCK_SHAPES.items()},
    **{f"blocks.1.{k}": s for k, s in _BLOCK_SHAPES.items()},
    "norm.weight": (64,),
    "norm.bias": (64,),
    "head.weight": (32, 64),
    "head.bias": (32,),
}

# Other towers of a GRAM checkpoint that the loader must skip.
OTHER_KEYS = {
    "vision_encoder.text.transformer.resblocks.0.attn.in_proj_weight": (96, 32),
    "vision_encoder.logit_scale": (),
    "multimodal_encoder.bert.embeddings.word_embeddings.weight": (10, 8),
    "multimodal_encoder.bert.encoder.layer.0.attention.self.query.weight": (8, 8),
    "audio_encoder.patch_embedding.weight": (8, 1, 16, 16),
    "audio_encoder.encoder.layers.0.self_attn.q_proj.weight": (8, 8),
    "contra_head_v.linear.weight": (16, 64),
    "contra_head_t.linear.weight": (16, 8),
    "contra_temp": (),
}


def tiny_tower(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {k: 0.05 * torch.randn(s, generator=g) for k, s in TINY_SHAPES.items()}
    for k in sd:  # LayerNorm weights near 1, as trained ones are
        if k.endswith(("norm1.weight", "norm2.weight")) or k == "norm.weight":
            sd[k] = 1.0 + sd[k]
    return sd


def gram_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """Flat dict as GRAM's ModelSaver writes it from the DDP-wrapped model (``module.`` prefix)."""
    ckpt = {f"module.{GRAM_VISION_PREFIX}{k}": v for k, v in tiny_tower(seed).items()}
    ckpt.update({f"module.{k}": torch.randn(s) for k, s in OTHER_KEYS.items()})
    return ckpt


def test_module_layout_is_the_gram_tower_layout():
    model = EVAVisionTransformer(TINY_EVA_VIT)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == TINY_SHAPES


def test_config_from_hand_written_state_dict():
    assert config_from_state_dict(tiny_tower()) == TINY_EVA_VIT
    cfg = config_from_state_dict(tiny_tower(), heads=2)
    assert cfg.heads == 2 and cfg.head_dim == 32


@pytest.mark.parametrize("wrapping", ["flat", "model", "safetensors"])
def test_load_gram_checkpoint_strictly(tmp_path, wrapping):
    ckpt = gram_checkpoint()
    if wrapping == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "gram.safetensors"
        save_file({k: v.contiguous() for k, v in ckpt.items()}, str(path))
    else:
        path = tmp_path / "model_step_1000.pt"
        torch.save(ckpt if wrapping == "flat" else {"model": ckpt}, path)

    model = load_eva_vit(path)
    assert model.cfg == TINY_EVA_VIT
    assert not model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ckpt[f"module.{GRAM_VISION_PREFIX}{k}"], rtol=0, atol=0)

    # same from an in-memory dict, and from a bare tower with prefix=""
    assert load_eva_vit(ckpt).cfg == TINY_EVA_VIT
    assert load_eva_vit(tiny_tower(), prefix="").cfg == TINY_EVA_VIT


def test_load_older_vast_name_and_dtype():
    old = {f"evaclip_model.visual.{k}": v for k, v in tiny_tower().items()}
    model = load_eva_vit(old, dtype=torch.float16)
    assert model.pos_embed.dtype == torch.float16


def test_forward_shapes_and_cls_pooling():
    torch.manual_seed(0)
    model = load_eva_vit(gram_checkpoint())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model(x)
        assert tokens.shape == (3, 17, 64)
        assert torch.isfinite(tokens).all()
        video = model.encode_video(x)  # [T, 3, S, S] → [width]: mean of per-frame CLS
        torch.testing.assert_close(video, tokens[:, 0].mean(0))
        batch = model.encode_video(x.view(1, 3, 3, 32, 32).expand(2, -1, -1, -1, -1), chunk_size=2)
        assert batch.shape == (2, 64)
        torch.testing.assert_close(batch[1], video, rtol=1e-5, atol=1e-6)


def test_block_matches_hand_computation():
    """One block, written out: pre-norm, qkv with (q_bias, 0, v_bias), softmax(q·kᵀ/√d)·v, GELU MLP."""
    sd = tiny_tower(seed=3)
    model = load_eva_vit(sd, prefix="")
    x = torch.randn(2, 17, 64)
    p = {k[len("blocks.0."):]: v for k, v in sd.items() if k.startswith("blocks.0.")}
    h = F.layer_norm(x, (64,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
    qkv = h @ p["attn.qkv.weight"].T + torch.cat([p["attn.q_bias"], torch.zeros(64), p["attn.v_bias"]])
    q, k, v = (t.reshape(2, 17, 4, 16).transpose(1, 2) for t in qkv.split(64, dim=-1))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), dim=-1)
    o = (att @ v).transpose(1, 2).reshape(2, 17, 64)
    x1 = x + o @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    h2 = F.layer_norm(x1, (64,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
    m = F.gelu(h2 @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]) @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    with torch.no_grad():
        torch.testing.assert_close(model.blocks[0](x), x1 + m, rtol=1e-5, atol=1e-5)


def test_position_embedding_interpolation():
    model = load_eva_vit(gram_checkpoint())
    pos = model.pos_embed.detach()
    # bicubic resize to the trained grid is the identity
    torch.testing.assert_close(resize_pos_embed(pos, 4, 4), pos, rtol=1e-5, atol=1e-6)
    assert model.position_embedding(4, 4) is model.pos_embed
    big = model.position_embedding(6, 6)
    assert big.shape == (1, 37, 64)
    torch.testing.assert_close(big[:, 0], pos[:, 0])  # CLS entry untouched
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 48)).shape == (2, 37, 64)
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 1 + 4 * 6, 64)
        # trained size: same result as without any resize path
        x = torch.randn(1, 3, 32, 32)
        ref = torch.cat([model.cls_token, model.patch_embed(x)], 1) + pos
        for blk in model.blocks:
            ref = blk(ref)
        torch.testing.assert_close(model(x), model.norm(ref))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 30, 32))


def test_preprocess_shapes_and_range():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(5, 40, 60, 3, generator=g)
    for mode in ("center_crop", "squash"):
        out = preprocess(frames, 32, mode=mode)
        assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
        lo = (0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        hi = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        assert (out.amin(dim=(0, 2, 3)) >= lo - 1e-5).all()
        assert (out.amax(dim=(0, 2, 3)) <= hi + 1e-5).all()
    grey = preprocess(torch.full((2, 20, 30, 3), 0.5), 16)
    expect = (0.5 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(grey[0, :, 3, 7], expect)
    # center crop: a frame already S×(2S) keeps its middle S columns unchanged
    wide = torch.rand(1, 16, 32, 3, generator=g)
    crop = preprocess(wide, 16)
    torch.testing.assert_close(
        crop, preprocess(wide[:, :, 8:24].contiguous(), 16, mode="squash"), rtol=0, atol=1e-6
    )
    # uint8 frames, model method, [T, H, W, 3] only
    u8 = (frames * 255).round().to(torch.uint8)
    assert EVAVisionTransformer(TINY_EVA_VIT).preprocess(u8).shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="T, H, W, 3"):
        preprocess(torch.rand(5, 3, 40, 60), 32)


def test_zero_frames_are_refused():
    model = EVAVisionTransformer(TINY_EVA_VIT)
    with pytest.raises(ValueError, match="0 frames"):
        preprocess(torch.rand(0, 40, 60, 3), 32)
    with pytest.raises(ValueError, match="0 frames"):
        model(torch.rand(0, 3, 32, 32))
    with pytest.raises(ValueError, match="0 frames"):
        model.encode_video(torch.rand(0, 3, 32, 32))


def test_missing_key_is_named(tmp_path):
    ckpt = gram_checkpoint()
    del ckpt[f"module.{GRAM_VISION_PREFIX}blocks.1.attn.v_bias"]
    path = tmp_path / "broken_gram.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as err:
        load_eva_vit(path)
    msg = str(err.value)
    assert "broken_gram.pt" in msg and "missing 1 key" in msg
    assert "vision_encoder.visual.blocks.1.attn.v_bias" in msg


def test_unexpected_key_and_wrong_prefix(tmp_path):
    ckpt = gram_checkpoint()
    ckpt[f"module.{GRAM_VISION_PREFIX}blocks.0.gamma_1"] = torch.ones(64)  # layer scale: not EVA01-g
    with pytest.raises(ValueError, match=r"unexpected 1 key.*blocks\.0\.gamma_1"):
        load_eva_vit(ckpt)
    with pytest.raises(ValueError, match="no keys under prefix 'visual.'"):
        load_eva_vit(gram_checkpoint(), prefix="visual.")


def test_non_tensor_pickle_is_refused(tmp_path):
    ckpt = gram_checkpoint()
    ckpt["args"] = argparse.Namespace(lr=1e-4)  # arbitrary object: needs full unpickling
    path = tmp_path / "with_args.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="with_args.pt.*weights_only"):
        load_eva_vit(path)
    other = tmp_path / "weights.npz"
    other.write_bytes(b"0")
    with pytest.raises(ValueError, match="unsupported checkpoint type"):
        load_eva_vit(other)


def test_g14_config_on_meta_device():
    assert (EVA_VIT_G14.width, EVA_VIT_G14.depth, EVA_VIT_G14.heads, EVA_VIT_G14.head_dim) == (1408, 40, 16, 88)
    assert EVA_VIT_G14.mlp_dim == int(1408 * 4.3637) == 6144
    with torch.device("meta"):
        model = EVAVisionTransformer(EVA_VIT_G14)
    sd = model.state_dict()
    assert len(sd) == 40 * 13 + 8
    assert sd["pos_embed"].shape == (1, 257, 1408)
    assert sd["patch_embed.proj.weight"].shape == (1408, 3, 14, 14)
    assert sd["head.weight"].shape == (1024, 1408)
    assert config_from_state_dict(sd) == EVA_VIT_G14
    per_block = 3 * 1408**2 + 2 * 1408 + 1408**2 + 1408 + 2 * 1408 * 6144 + 6144 + 1408 + 4 * 1408
    total = sum(p.numel() for p in model.parameters())
    assert total == 40 * per_block + 1408 * 3 * 196 + 1408 + 258 * 1408 + 2 * 1408 + 1024 * 1409


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        EVAViTConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="divisible by heads"):
        EVAViTConfig(width=64, heads=5)
