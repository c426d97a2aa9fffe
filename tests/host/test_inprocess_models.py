"""Host model classes built or loaded inside the pytest process (``comfy_inprocess`` fixture).

Covers what the HTTP graphs cannot: ComfyUI's own detection of the tiny files (``WAN21_T2V``,
``SVD_img2vid``) and a small Stable Audio DiT, whose detection is fixed-size (host-notes.md).
"""

from __future__ import annotations

import torch

from tiny_stable_audio import TINY_STABLE_AUDIO, apply_once, build_tiny_stable_audio


def test_tiny_checkpoints_detect_as_their_official_model_types(tiny_checkpoints):
    detected = {name: f["detected"] for name, f in tiny_checkpoints["manifest"]["files"].items()}
    assert detected == {"sd15": "SD15", "wan21_t2v": "WAN21_T2V", "wan21_vae": "wan21_vae",
                        "svd_unet": "SVD_img2vid"}


def test_wan21_file_loads_as_wan21_t2v_and_denoises_a_video_latent(comfy_inprocess, tiny_checkpoints):
    patcher = comfy_inprocess.sd.load_diffusion_model(str(tiny_checkpoints["files"]["wan21_t2v"]))
    assert type(patcher.model.model_config).__name__ == "WAN21_T2V"
    x = torch.randn(1, 16, 2, 8, 8)
    out = apply_once(patcher, x, sigma=0.5, cross_attn=torch.randn(1, 8, 4096))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_svd_unet_file_loads_as_svd_img2vid_and_denoises_two_frames(comfy_inprocess, tiny_checkpoints):
    patcher = comfy_inprocess.sd.load_diffusion_model(str(tiny_checkpoints["files"]["svd_unet"]))
    assert type(patcher.model.model_config).__name__ == "SVD_img2vid"
    x = torch.randn(2, 4, 8, 8)  # SVD batches frames: [frames, 4, H/8, W/8]
    out = apply_once(patcher, x, sigma=1.0, cross_attn=torch.randn(1, 1, 1024), fps=6, motion_bucket_id=127)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_tiny_stable_audio_dit_runs_every_block_through_the_dit_replace_hook(comfy_inprocess):
    patcher = build_tiny_stable_audio(depth=2)
    assert type(patcher.model).__name__ == "StableAudio1"
    calls = []

    def make_patch(i):
        def patch(args, extra):
            calls.append(i)
            return extra["original_block"](args)
        return patch

    opts = {"patches_replace": {"dit": {("double_block", i): make_patch(i) for i in range(2)}}}
    x = torch.randn(1, TINY_STABLE_AUDIO["io_channels"], 32)
    out = apply_once(patcher, x, sigma=1.0, cross_attn=torch.randn(1, 4, 768), transformer_options=opts,
                     seconds_total=2)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert calls == [0, 1]
