"""LightCache sliced decoding (paper 1 "Sliced decoding") on tiny diffusers VAEs, fp32 on the CPU.

Per-frame ``AutoencoderKL`` and causal ``AutoencoderKLWan``: sliced ≡ full decode. SVD's
``AutoencoderKLTemporalDecoder`` mixes over the whole clip, so slicing is approximate: the overlap
cross-fade must stay close to the full decode and beat hard cuts.
"""

from __future__ import annotations

import math

import pytest
import torch

from avlab.common.errors import NodeInputError
from avlab.lightcache.sliced_decode import (
    blend_weights,
    decode_causal,
    decode_frames,
    decode_temporal_blend,
    plan_slices,
)

diffusers = pytest.importorskip("diffusers")




class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def image_vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
        norm_num_groups=32).eval()


@pytest.fixture(scope="module")
def wan_vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 1, 1], num_res_blocks=1, temperal_downsample=[True, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()


@pytest.fixture(scope="module")
def svd_vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2, latent_channels=4,
        layers_per_block=1).eval()


def _latent(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _coherent_video_latent(frames: int) -> torch.Tensor:
    """A still latent with slow drift: real video latents are strongly correlated over time."""
    base, drift = _latent(1, 4, 8, 8, seed=2), _latent(1, 4, 8, 8, seed=3)
    t = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1, 1)
    return base + 0.0125 * t * drift


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean().item()
    return 10 * math.log10(4.0 / mse)  # data range 2 ([-1, 1])


# ---------------------------------------------------------------------------- planning


def test_slices_cover_every_frame_once_without_overlap():
    assert plan_slices(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert plan_slices(3, 8) == [(0, 3)]


def test_overlapping_windows_share_exactly_overlap_frames():
    windows = plan_slices(14, 8, 2)
    assert windows == [(0, 8), (6, 14)]
    windows = plan_slices(20, 6, 2)
    assert windows[0] == (0, 6) and windows[-1][1] == 20
    assert all(b[0] == a[1] - 2 for a, b in zip(windows[:-2], windows[1:-1]))


def test_crossfade_weights_sum_to_one_on_shared_frames():
    n, ov = 14, 4
    (a0, b0), (a1, b1) = plan_slices(n, 9, ov)
    total = torch.zeros(n)
    total[a0:b0] += blend_weights(a0, b0, n, ov)
    total[a1:b1] += blend_weights(a1, b1, n, ov)
    assert torch.allclose(total, torch.ones(n))


@pytest.mark.parametrize("fps, overlap, name", [(0, 0, "frames_per_slice"), (4, -1, "overlap"),
                                                 (4, 4, "overlap"), (2.5, 0, "frames_per_slice")])
def test_bad_slice_arguments_raise_a_node_input_error(fps, overlap, name):
    with pytest.raises(NodeInputError, match=name):
        plan_slices(10, fps, overlap)


# ---------------------------------------------------------------------------- per-frame VAE


def test_per_frame_sliced_decode_equals_full_decode(image_vae):
    z = _latent(7, 4, 8, 8)
    with torch.no_grad():
        full = image_vae.decode(z).sample
    sliced = decode_frames(lambda s: image_vae.decode(s).sample, z, 3)
    assert sliced.shape == full.shape
    assert (sliced - full).abs().max().item() <= 1e-5  # conv kernels differ by batch size only


def test_decoder_sees_at_most_frames_per_slice_frames(image_vae):
    seen, done = [], []

    def decode(s):
        seen.append(s.shape[0])
        return image_vae.decode(s).sample

    decode_frames(decode, _latent(7, 4, 8, 8), 3, callback=lambda info: done.append((info["start"], info["stop"])))
    assert seen == [3, 3, 1]
    assert done == [(0, 3), (3, 6), (6, 7)]


def test_slices_land_in_one_preallocated_output_on_the_output_device(image_vae):
    outputs = []
    out = decode_frames(lambda s: outputs.append(image_vae.decode(s).sample) or outputs[-1],
                        _latent(4, 4, 8, 8), 2, output_device="cpu", output_dtype=torch.float64)
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    assert torch.equal(out[2:4], outputs[1].double())


def test_raising_callback_cancels_the_decode(image_vae):
    calls = []

    def decode(s):
        calls.append(s.shape[0])
        return image_vae.decode(s).sample

    def cancel(info):
        if info["i"] == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        decode_frames(decode, _latent(8, 4, 8, 8), 2, callback=cancel)
    assert len(calls) == 2


# ---------------------------------------------------------------------------- Wan causal VAE


def test_wan_causal_sliced_decode_equals_full_decode(wan_vae):
    z = _latent(1, 4, 4, 8, 8)
    with torch.no_grad():
        full = wan_vae.decode(z).sample  # [1, 3, 13, 32, 32]
    steps = []
    sliced = decode_causal(wan_vae, z, callback=steps.append)
    assert sliced.shape == full.shape == (1, 3, 13, 32, 32)
    assert (sliced - full).abs().max().item() <= 1e-6
    assert [s["i"] for s in steps] == [0, 1, 2, 3]


def test_wan_causal_decode_with_channels_last_postprocess(wan_vae):
    z = _latent(1, 4, 3, 8, 8, seed=5)
    with torch.no_grad():
        full = wan_vae.decode(z).sample
    video = decode_causal(wan_vae, z, postprocess=lambda x: ((x + 1) / 2).movedim(1, -1), frame_dim=1)
    assert torch.allclose(video, ((full + 1) / 2).movedim(1, -1), atol=1e-6)


def test_wan_causal_decode_of_a_single_latent_frame(wan_vae):
    z = _latent(1, 4, 1, 8, 8, seed=6)
    with torch.no_grad():
        full = wan_vae.decode(z).sample
    assert torch.allclose(decode_causal(wan_vae, z), full, atol=1e-6)


def test_cancelled_wan_decode_clears_the_causal_cache(wan_vae):
    def cancel(info):
        if info["i"] == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        decode_causal(wan_vae, _latent(1, 4, 4, 8, 8), callback=cancel)
    assert all(entry is None for entry in wan_vae._feat_map)


def test_causal_decode_rejects_an_image_latent(wan_vae):
    with pytest.raises(NodeInputError, match="5-D"):
        decode_causal(wan_vae, _latent(4, 4, 8, 8))


# ---------------------------------------------------------------------------- SVD temporal decoder


def _svd_decode(vae):
    return lambda s: vae.decode(s, num_frames=s.shape[0]).sample


def test_temporal_blend_with_one_window_is_the_full_decode(svd_vae):
    z = _coherent_video_latent(6)
    with torch.no_grad():
        full = _svd_decode(svd_vae)(z)
    assert torch.allclose(decode_temporal_blend(_svd_decode(svd_vae), z, 8, 2), full, atol=1e-6)


def test_temporal_blend_stays_close_to_the_full_decode_and_beats_hard_cuts(svd_vae):
    z = _coherent_video_latent(16)
    with torch.no_grad():
        full = _svd_decode(svd_vae)(z)
    hard = decode_temporal_blend(_svd_decode(svd_vae), z, 8, 0)
    blend = decode_temporal_blend(_svd_decode(svd_vae), z, 8, 4)
    assert _psnr(blend, full) >= 30.0
    assert _psnr(blend, full) > _psnr(hard, full) + 3.0
