"""diffusers ⇄ original-Wan (ComfyUI) key conversion for Wan 2.1 DiTs (common/wan_convert.py)."""

from __future__ import annotations

import pytest
import torch

from avlab.common.errors import NodeInputError
from avlab.common.wan_convert import (
    comfy_to_diffusers_wan,
    detect_wan_layout,
    diffusers_to_comfy_wan,
    expand_patch_embedding,
    to_comfy_wan,
    unwrap_checkpoint,
)

diffusers = pytest.importorskip("diffusers")

DIM, FFN, TEXT, LAYERS = 128, 256, 64, 2


def _tiny_diffusers(in_channels=16, i2v=False):
    torch.manual_seed(0)
    return diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=DIM,
        in_channels=in_channels, out_channels=16, text_dim=TEXT, freq_dim=256, ffn_dim=FFN,
        num_layers=LAYERS, image_dim=32 if i2v else None, added_kv_proj_dim=DIM if i2v else None)


def _comfy_layout(in_dim=16, i2v=False):
    """A tiny state dict with the module tree of ComfyUI 0.3.64 ``comfy/ldm/wan/model.py`` WanModel."""
    g = torch.Generator().manual_seed(1)

    def t(*shape):
        return torch.randn(*shape, generator=g)

    sd = {
        "patch_embedding.weight": t(DIM, in_dim, 1, 2, 2), "patch_embedding.bias": t(DIM),
        "text_embedding.0.weight": t(DIM, TEXT), "text_embedding.0.bias": t(DIM),
        "text_embedding.2.weight": t(DIM, DIM), "text_embedding.2.bias": t(DIM),
        "time_embedding.0.weight": t(DIM, 256), "time_embedding.0.bias": t(DIM),
        "time_embedding.2.weight": t(DIM, DIM), "time_embedding.2.bias": t(DIM),
        "time_projection.1.weight": t(6 * DIM, DIM), "time_projection.1.bias": t(6 * DIM),
        "head.head.weight": t(64, DIM), "head.head.bias": t(64), "head.modulation": t(1, 2, DIM),
    }
    for i in range(LAYERS):
        b = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for lin in ("q", "k", "v", "o"):
                sd[f"{b}{attn}.{lin}.weight"] = t(DIM, DIM)
                sd[f"{b}{attn}.{lin}.bias"] = t(DIM)
            sd[f"{b}{attn}.norm_q.weight"] = t(DIM)
            sd[f"{b}{attn}.norm_k.weight"] = t(DIM)
        if i2v:
            for lin in ("k_img", "v_img"):
                sd[f"{b}cross_attn.{lin}.weight"] = t(DIM, DIM)
                sd[f"{b}cross_attn.{lin}.bias"] = t(DIM)
            sd[f"{b}cross_attn.norm_k_img.weight"] = t(DIM)
        sd[f"{b}norm3.weight"], sd[f"{b}norm3.bias"] = t(DIM), t(DIM)
        sd[f"{b}ffn.0.weight"], sd[f"{b}ffn.0.bias"] = t(FFN, DIM), t(FFN)
        sd[f"{b}ffn.2.weight"], sd[f"{b}ffn.2.bias"] = t(DIM, FFN), t(DIM)
        sd[f"{b}modulation"] = t(1, 6, DIM)
    if i2v:
        sd.update({"img_emb.proj.0.weight": t(32), "img_emb.proj.0.bias": t(32),
                   "img_emb.proj.1.weight": t(32, 32), "img_emb.proj.1.bias": t(32),
                   "img_emb.proj.3.weight": t(DIM, 32), "img_emb.proj.3.bias": t(DIM),
                   "img_emb.proj.4.weight": t(DIM), "img_emb.proj.4.bias": t(DIM)})
    return sd


@pytest.mark.parametrize("i2v", [False, True])
def test_diffusers_keys_map_exactly_onto_the_comfy_key_set(i2v):
    dsd = _tiny_diffusers(i2v=i2v).state_dict()
    csd = diffusers_to_comfy_wan(dsd)
    assert set(csd) == set(_comfy_layout(i2v=i2v))
    for k, v in csd.items():
        assert v.shape == _comfy_layout(i2v=i2v)[k].shape, k


@pytest.mark.parametrize("i2v", [False, True])
def test_comfy_keys_map_exactly_onto_the_diffusers_key_set(i2v):
    dsd = comfy_to_diffusers_wan(_comfy_layout(i2v=i2v))
    model = _tiny_diffusers(i2v=i2v)
    assert set(dsd) == set(model.state_dict())
    model.load_state_dict(dsd, strict=True)  # shapes fit too


def test_round_trip_keeps_every_tensor_identical():
    dsd = _tiny_diffusers().state_dict()
    back = comfy_to_diffusers_wan(diffusers_to_comfy_wan(dsd))
    assert set(back) == set(dsd)
    assert all(torch.equal(back[k], dsd[k]) for k in dsd)


def test_cross_attention_norm_and_ffn_norm_names_are_swapped():
    dsd = _tiny_diffusers().state_dict()
    csd = diffusers_to_comfy_wan(dsd)
    assert torch.equal(csd["blocks.0.norm3.weight"], dsd["blocks.0.norm2.weight"])
    assert "blocks.0.norm2.weight" not in csd


def test_modulation_tables_keep_order_and_shape():
    dsd = _tiny_diffusers().state_dict()
    csd = diffusers_to_comfy_wan(dsd)
    assert torch.equal(csd["head.modulation"], dsd["scale_shift_table"])
    assert torch.equal(csd["blocks.1.modulation"], dsd["blocks.1.scale_shift_table"])
    assert csd["blocks.1.modulation"].shape == (1, 6, DIM)


def test_dvi_32_input_channels_convert_and_are_detected():
    dsd = _tiny_diffusers(in_channels=32).state_dict()
    csd = diffusers_to_comfy_wan(dsd)
    assert csd["patch_embedding.weight"].shape[1] == 32
    assert detect_wan_layout(csd) == "comfy"


def test_checkpoint_wrapper_and_prefixes_are_removed():
    dsd = _tiny_diffusers().state_dict()
    wrapped = {"model": {f"module.{k}": v for k, v in dsd.items()}}
    assert set(unwrap_checkpoint(wrapped)) == set(dsd)
    assert set(to_comfy_wan(wrapped)) == set(diffusers_to_comfy_wan(dsd))
    comfy_prefixed = {f"model.diffusion_model.{k}": v for k, v in _comfy_layout().items()}
    assert detect_wan_layout(comfy_prefixed) == "comfy"
    assert set(to_comfy_wan(comfy_prefixed)) == set(_comfy_layout())


def test_unknown_key_raises_a_clear_error():
    dsd = dict(_tiny_diffusers().state_dict())
    dsd["blocks.0.mystery.weight"] = torch.zeros(1)
    with pytest.raises(NodeInputError, match="unknown keys"):
        diffusers_to_comfy_wan(dsd)
    assert "blocks.0.mystery.weight" in diffusers_to_comfy_wan(dsd, strict=False)


def test_non_wan_state_dict_is_rejected():
    with pytest.raises(NodeInputError, match="Wan 2.1 DiT"):
        detect_wan_layout({"conv_in.weight": torch.zeros(1)})


def test_wrong_modulation_shape_is_rejected():
    csd = _comfy_layout()
    csd["head.modulation"] = torch.zeros(2, 1, DIM)
    with pytest.raises(NodeInputError, match=r"\[1, 2, dim\]"):
        comfy_to_diffusers_wan(csd)


def test_expanded_patch_embedding_appends_zero_channels():
    dsd = _tiny_diffusers().state_dict()
    out = expand_patch_embedding(dsd, 32)
    w = out["patch_embedding.weight"]
    assert w.shape[1] == 32
    assert torch.equal(w[:, :16], dsd["patch_embedding.weight"])
    assert not w[:, 16:].any()
