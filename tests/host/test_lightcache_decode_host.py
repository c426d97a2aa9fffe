"""Host tier for LightCache feature chunking and sliced decoding with ComfyUI's own classes.

In-process (``comfy_inprocess``): tiny ``UNetModel`` (SD-like and SVD-like) and ``WanModel`` run
chunked ≡ unchunked, also through ComfyUI's ``DIFFUSION_MODEL`` wrapper executor; ComfyUI's Wan
2.1/2.2 VAEs decode sliced ≡ whole; ``AVLabSlicedVAEDecode`` on ``comfy.sd.VAE`` objects equals
``VAE.decode`` and rejects mismatched latents. Server (``comfy_client``): the node runs through
``POST /prompt`` on the tiny SD1.5 and Wan 2.1 checkpoints and saves the same frames as ``VAEDecode``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from host_graphs import sd15_txt2img, wan21_t2v
from tiny_checkpoints import init_random

from avlab.common.errors import NodeInputError
from avlab.lightcache.chunking import SPATIAL, TEMPORAL, chunked, make_chunking_wrapper
from avlab.lightcache.sliced_decode import decode_causal, decode_temporal_blend

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny ops gain nothing from threads, and on shared cores 2 threads are many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ops():
    import comfy.ops

    return comfy.ops.disable_weight_init


def _built(module, seed):
    init_random(module, seed)
    return module.eval()


_UNET = dict(image_size=None, in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1,
             channel_mult=(1, 2), use_spatial_transformer=True, transformer_depth=[1, 1],
             transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, context_dim=16,
             num_head_channels=16, use_linear_in_transformer=True, dtype=torch.float32)


@pytest.fixture(scope="module")
def sd_unet(comfy_inprocess):
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return _built(UNetModel(**_UNET, operations=_ops()), 11)


@pytest.fixture(scope="module")
def svd_unet(comfy_inprocess):
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg = dict(_UNET, in_channels=8, use_temporal_resblock=True, use_temporal_attention=True,
               extra_ff_mix_layer=True, use_spatial_context=True, merge_strategy="learned_with_images",
               merge_factor=0.0, video_kernel_size=[3, 1, 1], num_classes="sequential", adm_in_channels=12,
               disable_temporal_crossattention=False)
    model = _built(UNetModel(**cfg, operations=_ops()), 12)
    with torch.no_grad():  # non-zero mix factors, so the temporal paths matter
        for name, p in model.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(0.3)
    return model


@pytest.fixture(scope="module")
def wan_model(comfy_inprocess):
    from comfy.ldm.wan.model import WanModel

    return _built(WanModel(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, in_dim=4,
                           out_dim=4, operations=_ops(), dtype=torch.float32), 13)


def _sd_inputs(frames=6):
    g = torch.Generator().manual_seed(21)
    return (torch.randn(frames, 4, 16, 16, generator=g), torch.full((frames,), 500.0),
            torch.randn(frames, 5, 16, generator=g))


def _svd_inputs(frames=6):
    g = torch.Generator().manual_seed(22)
    return (torch.randn(frames, 8, 16, 16, generator=g), torch.full((frames,), 500.0),
            torch.randn(frames, 1, 16, generator=g), torch.randn(frames, 12, generator=g),
            {"num_video_frames": frames, "image_only_indicator": torch.zeros(1, frames)})


# ------------------------------------------------------------------------------- chunking


def test_chunked_comfy_sd_unet_equals_unchunked(sd_unet):
    x, t, ctx = _sd_inputs()
    with torch.no_grad():
        ref = sd_unet(x, t, ctx)
        with chunked(sd_unet, temporal_chunks=4, spatial_chunks=2) as handle:
            out = sd_unet(x, t, ctx)
    assert handle.stats.chunked_calls == handle.stats.calls > 0
    assert (out - ref).abs().max().item() <= TOL


def test_chunked_comfy_svd_unet_equals_unchunked(svd_unet):
    x, t, ctx, y, kw = _svd_inputs()
    with torch.no_grad():
        ref = svd_unet(x, t, ctx, y, **kw)
        with chunked(svd_unet, temporal_chunks=9, spatial_chunks=2) as handle:
            out = svd_unet(x, t, ctx, y, **kw)
    assert handle.stats.by_kind[TEMPORAL] > 0 and handle.stats.by_kind[SPATIAL] > 0
    assert handle.stats.fallbacks == 0
    assert (out - ref).abs().max().item() <= TOL


def test_comfy_video_resblock_chunks_its_spatial_part_and_leaves_time_stack_whole(svd_unet):
    from comfy.ldm.modules.diffusionmodules.openaimodel import VideoResBlock

    block = next(m for m in svd_unet.modules() if isinstance(m, VideoResBlock))
    spatial, temporal = [], []
    h1 = block.in_layers[0].register_forward_pre_hook(lambda m, a: spatial.append(a[0].shape[0]))
    h2 = block.time_stack.in_layers[0].register_forward_pre_hook(
        lambda m, a: temporal.append(tuple(a[0].shape[:3])))
    x, t, ctx, y, kw = _svd_inputs()
    try:
        with torch.no_grad(), chunked(svd_unet, temporal_chunks=3, spatial_chunks=2):
            svd_unet(x, t, ctx, y, **kw)
    finally:
        h1.remove()
        h2.remove()
    assert spatial == [2, 2, 2]  # 6 frames in 3 chunks
    assert len(temporal) == 1 and temporal[0][0] == 1 and temporal[0][2] == 6  # [B, C, T, ...] whole


def test_chunked_comfy_wan_equals_unchunked_with_token_chunks(wan_model):
    g = torch.Generator().manual_seed(23)
    x, t = torch.randn(1, 4, 3, 8, 8, generator=g), torch.tensor([500.0])
    ctx = torch.randn(1, 5, 32, generator=g)
    sizes = []
    hook = wan_model.blocks[0].ffn[0].register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[1]))
    try:
        with torch.no_grad():
            ref = wan_model(x, t, ctx)
            with chunked(wan_model, temporal_chunks=4):
                out = wan_model(x, t, ctx)
    finally:
        hook.remove()
    assert sizes == [48, 12, 12, 12, 12]  # whole, then 3 × 4 × 4 tokens in 4 chunks
    assert (out - ref).abs().max().item() <= TOL


def test_chunking_wrapper_runs_inside_comfy_diffusion_model_executor(sd_unet):
    import comfy.patcher_extension as pe

    wrapper = make_chunking_wrapper(temporal_chunks=3, spatial_chunks=2)
    opts = {"wrappers": {pe.WrappersMP.DIFFUSION_MODEL: {"avlab_test": [wrapper]}}}
    before = [dict(m.__dict__) for m in sd_unet.modules()]
    x, t, ctx = _sd_inputs()
    with torch.no_grad():
        ref = sd_unet(x, t, ctx)
        out = sd_unet(x, t, ctx, transformer_options=opts)
    assert wrapper.stats.chunked_calls > 0
    assert [dict(m.__dict__) for m in sd_unet.modules()] == before
    assert (out - ref).abs().max().item() <= TOL


def test_attention_patches_make_transformers_run_whole(sd_unet):
    seen = []

    def attn2_patch(n, context, value, extra):
        seen.append(n.shape[0])
        return n, context, value

    x, t, ctx = _sd_inputs()
    opts = {"patches": {"attn2_patch": [attn2_patch]}}
    with torch.no_grad():
        ref = sd_unet(x, t, ctx, transformer_options={"patches": {"attn2_patch": [attn2_patch]}})
        seen.clear()
        with chunked(sd_unet, temporal_chunks=3) as handle:
            out = sd_unet(x, t, ctx, transformer_options=opts)
    assert seen and all(n == 6 for n in seen)  # the patch saw the full batch
    assert handle.stats.fallbacks == len(seen)
    assert (out - ref).abs().max().item() <= TOL


# ------------------------------------------------------------------------------- decoders


def test_sliced_decode_of_comfy_wan21_vae_equals_its_decode(comfy_inprocess):
    from comfy.ldm.wan.vae import WanVAE

    vae = _built(WanVAE(dim=8, z_dim=4, dim_mult=[1, 1, 1], num_res_blocks=1,
                        temperal_downsample=[True, True]), 31)
    z = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(32))
    with torch.no_grad():
        full = vae.decode(z)
    sliced = decode_causal(vae, z)
    assert sliced.shape == full.shape == (1, 3, 9, 32, 32)
    assert (sliced - full).abs().max().item() <= 1e-6


def test_sliced_decode_of_comfy_wan22_vae_equals_its_decode(comfy_inprocess):
    from comfy.ldm.wan.vae2_2 import WanVAE, unpatchify

    vae = _built(WanVAE(dim=16, dec_dim=16, z_dim=4, dim_mult=[1, 1, 1], num_res_blocks=1,
                        temperal_downsample=[True, True]), 33)
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(34))
    with torch.no_grad():
        full = vae.decode(z)
    sliced = decode_causal(vae, z, unpatchify=lambda x: unpatchify(x, patch_size=2))
    assert sliced.shape == full.shape
    assert (sliced - full).abs().max().item() <= 1e-6


def test_comfy_svd_decoder_overlap_blend_beats_hard_cuts(comfy_inprocess):
    from comfy.ldm.modules.temporal_ae import VideoDecoder

    dec = _built(VideoDecoder(ch=32, out_ch=3, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[],
                              in_channels=3, resolution=64, z_channels=4, video_kernel_size=[3, 1, 1],
                              alpha=0.0), 35)
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(0.5)
    g = torch.Generator().manual_seed(36)
    base, drift = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    z = base + 0.0125 * torch.arange(16.0).view(-1, 1, 1, 1) * drift
    with torch.no_grad():
        full = dec(z)  # timesteps = decode batch: the whole clip

    def psnr(a):
        return 10 * math.log10(4.0 / ((a.clamp(-1, 1) - full.clamp(-1, 1)) ** 2).mean().item())

    hard = decode_temporal_blend(dec, z, 8, 0)
    blend = decode_temporal_blend(dec, z, 8, 4)
    assert psnr(blend) > psnr(hard)
    assert psnr(blend) >= 30.0


# ------------------------------------------------------------------------------- the node, in process


@pytest.fixture(scope="module")
def image_vae(comfy_inprocess):
    from comfy.ldm.models.autoencoder import AutoencoderKL

    params = {"embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3,
                                           "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                                           "attn_resolutions": [], "dropout": 0.0}}
    model = _built(AutoencoderKL(**params), 41)
    return comfy_inprocess.sd.VAE(sd=model.state_dict(), config={"params": params}, dtype=torch.float32)


@pytest.fixture(scope="module")
def wan_vae(comfy_inprocess):
    from comfy.ldm.wan.vae import WanVAE

    # comfy.sd builds the Wan 2.1 VAE at its fixed size whatever the file holds.
    model = _built(WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                          temperal_downsample=[False, True, True]), 42)
    return comfy_inprocess.sd.VAE(sd=model.state_dict(), dtype=torch.float32)


@pytest.fixture(scope="module")
def svd_vae(comfy_inprocess):
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    # The SVD layout comfy.sd detects (decoder.mid.block_1.mix_factor) and builds at a fixed size.
    enc = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
           "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    dec = dict(enc, video_kernel_size=[3, 1, 1], alpha=0.0)
    model = AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": enc},
        decoder_config={"target": "comfy.ldm.modules.temporal_ae.VideoDecoder", "params": dec})
    model = _built(model, 45)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(0.5)
    return comfy_inprocess.sd.VAE(sd=model.state_dict(), dtype=torch.float32)


@pytest.fixture(scope="module")
def node():
    from avlab.nodes.lightcache_decode import AVLabSlicedVAEDecode

    return AVLabSlicedVAEDecode


def _images(output):
    return output.result[0] if hasattr(output, "result") else output[0]


def test_node_decodes_an_image_vae_latent_like_vae_decode(node, image_vae):
    z = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(43))
    ref = image_vae.decode(z)
    images = _images(node.execute(vae=image_vae, samples={"samples": z}, frames_per_slice=2, overlap=0))
    assert images.shape == ref.shape == (5, 16, 16, 3)  # ch_mult [1, 2]: 2× upsampling
    assert (images - ref).abs().max().item() <= TOL


def test_node_decodes_a_wan_video_latent_like_vae_decode(node, wan_vae):
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(44))
    ref = wan_vae.decode(z)
    ref = ref.reshape(-1, *ref.shape[-3:])
    images = _images(node.execute(vae=wan_vae, samples={"samples": z}, frames_per_slice=1, overlap=0))
    assert images.shape == ref.shape == (5, 32, 32, 3)
    assert (images - ref).abs().max().item() <= 1e-6


def test_node_decodes_svd_frames_in_overlapping_windows(node, svd_vae):
    from avlab.nodes.lightcache_decode import SVD_VAE, vae_kind

    g = torch.Generator().manual_seed(46)
    base, drift = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    z = base + 0.02 * torch.arange(6.0).view(-1, 1, 1, 1) * drift
    ref = svd_vae.decode(z)  # one clip

    def psnr(images):  # IMAGE range [0, 1]
        return 10 * math.log10(1.0 / max(((images - ref) ** 2).mean().item(), 1e-12))

    whole = _images(node.execute(vae=svd_vae, samples={"samples": z}, frames_per_slice=6, overlap=2))
    hard = _images(node.execute(vae=svd_vae, samples={"samples": z}, frames_per_slice=4, overlap=0))
    blend = _images(node.execute(vae=svd_vae, samples={"samples": z}, frames_per_slice=4, overlap=2))
    assert vae_kind(svd_vae) == SVD_VAE
    assert (whole - ref).abs().max().item() <= TOL
    assert blend.shape == ref.shape == (6, 32, 32, 3)
    # A random full-size temporal decoder (time convs with a ±28-frame receptive field, zero padded)
    # sees every frame of a 4-frame window near a clip edge, so no window decode is close to the
    # 6-frame clip here (≈ 23 dB); the cross-fade must still beat hard cuts clearly (≈ 18 dB).
    assert psnr(blend) > psnr(hard) + 3.0


def test_node_reports_one_progress_step_per_slice(node, image_vae):
    import comfy.utils

    steps = []
    saved = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: steps.append((value, total)))
    try:
        node.execute(vae=image_vae, samples={"samples": torch.zeros(5, 4, 8, 8)}, frames_per_slice=2,
                     overlap=0)
    finally:
        comfy.utils.set_progress_bar_global_hook(saved)
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_node_rejects_a_wan_latent_for_an_image_vae(node, image_vae):
    with pytest.raises(NodeInputError, match="samples"):
        node.execute(vae=image_vae, samples={"samples": torch.zeros(1, 16, 2, 4, 4)}, frames_per_slice=2,
                     overlap=0)


def test_node_rejects_a_video_latent_for_an_image_vae(node, image_vae):
    with pytest.raises(NodeInputError, match="4-D latent"):
        node.execute(vae=image_vae, samples={"samples": torch.zeros(1, 4, 2, 8, 8)}, frames_per_slice=2, overlap=0)


def test_node_rejects_an_image_latent_for_the_wan_vae(node, wan_vae):
    with pytest.raises(NodeInputError, match="5-D video latent"):
        node.execute(vae=wan_vae, samples={"samples": torch.zeros(2, 16, 4, 4)}, frames_per_slice=2, overlap=0)


def test_node_rejects_frames_per_slice_below_one(node, image_vae):
    with pytest.raises(NodeInputError, match="frames_per_slice"):
        node.execute(vae=image_vae, samples={"samples": torch.zeros(2, 4, 8, 8)}, frames_per_slice=0, overlap=0)


# ------------------------------------------------------------------------------- the node, over HTTP


def _pixels(paths):
    out = []
    for p in sorted(paths):
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.int16))
    return out


def test_node_runs_in_comfyui_on_the_tiny_sd15_checkpoint(comfy_host, comfy_client):
    prompt = sd15_txt2img("lightcache_decode/sd15_native")
    prompt["latent"]["inputs"]["batch_size"] = 3
    prompt["sliced"] = {"class_type": "AVLabSlicedVAEDecode", "inputs": {
        "vae": ["ckpt", 2], "samples": ["sample", 0], "frames_per_slice": 2, "overlap": 0}}
    prompt["save_sliced"] = {"class_type": "SaveImage", "inputs": {
        "images": ["sliced", 0], "filename_prefix": "lightcache_decode/sd15_sliced"}}
    history = comfy_client.run(prompt, timeout=600)
    native = _pixels(comfy_host.output_files(history, "save"))
    sliced = _pixels(comfy_host.output_files(history, "save_sliced"))
    assert len(native) == len(sliced) == 3
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(native, sliced))


def test_node_runs_in_comfyui_on_the_tiny_wan21_checkpoint(comfy_host, comfy_client):
    prompt = wan21_t2v("lightcache_decode/wan_native", width=32, height=32, length=5)
    prompt["sliced"] = {"class_type": "AVLabSlicedVAEDecode", "inputs": {
        "vae": ["vae", 0], "samples": ["sample", 0], "frames_per_slice": 1, "overlap": 0}}
    prompt["save_sliced"] = {"class_type": "SaveImage", "inputs": {
        "images": ["sliced", 0], "filename_prefix": "lightcache_decode/wan_sliced"}}
    history = comfy_client.run(prompt, timeout=600)
    native = _pixels(comfy_host.output_files(history, "save"))
    sliced = _pixels(comfy_host.output_files(history, "save_sliced"))
    assert len(native) == len(sliced) == 5
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(native, sliced))
