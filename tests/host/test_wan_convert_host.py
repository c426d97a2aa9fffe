"""Host tier: diffusers Wan weights converted by ``avlab.common.wan_convert`` run identically in ComfyUI.

Imports ComfyUI 0.3.64 in-process (``--cpu``) from ``COMFYUI_PATH``; skips without it.
"""

from __future__ import annotations

import os

import pytest
import torch

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.host,
              pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH not set: no ComfyUI to load into")]


@pytest.fixture(scope="module")
def comfy_sd():
    """ComfyUI's ``comfy.sd`` imported in-process on the CPU."""
    from tiny_checkpoints import import_comfy

    import_comfy(COMFYUI_PATH)
    import comfy.sd

    return comfy.sd


def _tiny_diffusers_wan(in_channels: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    # ComfyUI derives the head count as dim // 128, so the head dim must be 128; text_dim 4096 is fixed.
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
                                  in_channels=in_channels, out_channels=16, text_dim=4096, freq_dim=256,
                                  ffn_dim=512, num_layers=2).eval()
    with torch.no_grad():  # the zero-ish default init would hide mapping errors
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("in_channels", [16, 32])
def test_converted_weights_give_the_diffusers_output_in_comfyui(comfy_sd, in_channels):
    from avlab.common.wan_convert import diffusers_to_comfy_wan

    model = _tiny_diffusers_wan(in_channels)
    csd = {k: v.clone() for k, v in diffusers_to_comfy_wan(model.state_dict()).items()}
    patcher = comfy_sd.load_diffusion_model_state_dict(csd, model_options={"dtype": torch.float32})
    wan = patcher.model.diffusion_model
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, in_channels, 3, 8, 12, generator=g)
    t = torch.tensor([637.0])
    ctx = torch.randn(1, 7, 4096, generator=g)
    with torch.no_grad():
        ref = model(x, t, ctx, return_dict=False)[0]
        out = wan(x, t, ctx)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-4


def test_converted_weights_are_detected_as_wan21_t2v(comfy_sd):
    from avlab.common.wan_convert import diffusers_to_comfy_wan

    csd = diffusers_to_comfy_wan(_tiny_diffusers_wan(16).state_dict())
    patcher = comfy_sd.load_diffusion_model_state_dict(csd, model_options={"dtype": torch.float32})
    assert type(patcher.model.model_config).__name__ == "WAN21_T2V"
