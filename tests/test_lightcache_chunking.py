"""LightCache feature chunking (paper 1 "Feature chunking"): exact, really runs, fully reversible.

Tiny diffusers models (AnimateDiff ``UNetMotionModel``, SVD ``UNetSpatioTemporalConditionModel``,
``WanTransformer3DModel``) with seeded, perturbed weights; fp32 on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avlab.common.errors import NodeInputError
from avlab.lightcache.chunking import (
    SPATIAL,
    TEMPORAL,
    chunkable_sites,
    chunked,
    install_chunking,
    make_chunking_wrapper,
)

diffusers = pytest.importorskip("diffusers")



TOL = 1e-5


def _perturbed(model: nn.Module, seed: int) -> nn.Module:
    """Random, non-degenerate weights (diffusers zero-inits several output layers)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def motion_unet():
    torch.manual_seed(0)
    model = diffusers.UNetMotionModel(
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
        cross_attention_dim=16, num_attention_heads=2, in_channels=4, out_channels=4,
        motion_max_seq_length=16, motion_num_attention_heads=2)
    return _perturbed(model, 1)


@pytest.fixture(scope="module")
def motion_inputs():
    g = torch.Generator().manual_seed(2)
    b, f = 2, 5  # CFG-like batch; 10 frame-samples split unevenly by 9 chunks
    return (torch.randn(b, 4, f, 8, 8, generator=g), torch.tensor(500),
            torch.randn(b * f, 7, 16, generator=g))


@pytest.fixture(scope="module")
def svd_unet():
    torch.manual_seed(0)
    model = diffusers.UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24, layers_per_block=1, cross_attention_dim=16,
        transformer_layers_per_block=1, num_attention_heads=(2, 4), num_frames=6)
    return _perturbed(model, 3)


@pytest.fixture(scope="module")
def svd_inputs():
    g = torch.Generator().manual_seed(4)
    b, f = 2, 6
    return (torch.randn(b, f, 8, 8, 8, generator=g), torch.tensor(20.0),
            torch.randn(b, 1, 16, generator=g), torch.randn(b, 3, generator=g))


@pytest.fixture(scope="module")
def wan_dit():
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
        out_channels=4, text_dim=32, freq_dim=32, ffn_dim=96, num_layers=2)
    return _perturbed(model, 5)


@pytest.fixture(scope="module")
def wan_inputs():
    g = torch.Generator().manual_seed(6)
    return torch.randn(1, 4, 3, 8, 10, generator=g), torch.tensor([637.0]), torch.randn(1, 5, 32, generator=g)


def _run_motion(model, inputs):
    x, t, ctx = inputs
    with torch.no_grad():
        return model(x, t, ctx).sample


def _run_svd(model, inputs):
    x, t, ctx, added = inputs
    with torch.no_grad():
        return model(x, t, ctx, added).sample


def _run_wan(model, inputs):
    x, t, ctx = inputs
    with torch.no_grad():
        return model(x, t, ctx, return_dict=False)[0]


def _module_state(model: nn.Module) -> list[tuple[str, dict]]:
    return [(name, dict(m.__dict__)) for name, m in model.named_modules()]


def _record_leading_sizes(module: nn.Module, dim: int = 0):
    sizes: list[int] = []
    handle = module.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[dim]))
    return sizes, handle


# ---------------------------------------------------------------------------- exactness


def test_chunked_animatediff_unet_equals_unchunked(motion_unet, motion_inputs):
    ref = _run_motion(motion_unet, motion_inputs)
    with chunked(motion_unet, temporal_chunks=9, spatial_chunks=2) as handle:
        out = _run_motion(motion_unet, motion_inputs)
    assert handle.stats.chunked_calls > 0
    assert (out - ref).abs().max().item() <= TOL


def test_chunked_svd_unet_equals_unchunked(svd_unet, svd_inputs):
    ref = _run_svd(svd_unet, svd_inputs)
    with chunked(svd_unet, temporal_chunks=4, spatial_chunks=3) as handle:
        out = _run_svd(svd_unet, svd_inputs)
    assert handle.stats.by_kind[SPATIAL] > 0 and handle.stats.by_kind[TEMPORAL] > 0
    assert (out - ref).abs().max().item() <= TOL


def test_chunked_wan_transformer_equals_unchunked(wan_dit, wan_inputs):
    ref = _run_wan(wan_dit, wan_inputs)
    with chunked(wan_dit, temporal_chunks=7) as handle:
        out = _run_wan(wan_dit, wan_inputs)
    assert handle.stats.chunked_calls == 2  # one FFN per block
    assert (out - ref).abs().max().item() <= TOL


# ---------------------------------------------------------------------------- it really runs


def test_spatial_ops_run_on_frame_chunks(motion_unet, motion_inputs):
    resnet = motion_unet.down_blocks[0].resnets[0]
    sizes, hook = _record_leading_sizes(resnet.conv1)
    try:
        _run_motion(motion_unet, motion_inputs)
        assert sizes == [10]  # batch 2 × 5 frames in one go
        sizes.clear()
        with chunked(motion_unet, temporal_chunks=4, spatial_chunks=1):
            _run_motion(motion_unet, motion_inputs)
    finally:
        hook.remove()
    assert sizes == [2, 3, 2, 3]


def test_temporal_ops_run_on_pixel_chunks(motion_unet, motion_inputs):
    block = motion_unet.down_blocks[0].motion_modules[0].transformer_blocks[0]
    sizes, hook = _record_leading_sizes(block.norm1)
    try:
        with chunked(motion_unet, temporal_chunks=1, spatial_chunks=2) as handle:
            _run_motion(motion_unet, motion_inputs)
    finally:
        hook.remove()
    assert sizes == [64, 64]  # (batch 2 × 8 × 8 pixels) in two chunks
    assert handle.stats.by_kind[TEMPORAL] == 0


def test_svd_time_mixing_runs_on_pixel_chunks(svd_unet, svd_inputs):
    block = svd_unet.down_blocks[0].attentions[0].temporal_transformer_blocks[0]
    sizes, hook = _record_leading_sizes(block.norm_in)  # sees [(B·pixels), T, C]
    try:
        with chunked(svd_unet, temporal_chunks=1, spatial_chunks=4):
            _run_svd(svd_unet, svd_inputs)
    finally:
        hook.remove()
    assert sizes == [32, 32, 32, 32]  # 2 videos × 64 pixels, 4 chunks


def test_wan_ffn_runs_on_token_chunks(wan_dit, wan_inputs):
    sizes, hook = _record_leading_sizes(wan_dit.blocks[0].ffn.net[0], dim=1)
    try:
        with chunked(wan_dit, temporal_chunks=4):
            _run_wan(wan_dit, wan_inputs)
    finally:
        hook.remove()
    assert sizes == [15, 15, 15, 15]  # 3 × 4 × 5 tokens


def test_temporal_block_ffn_runs_on_frame_chunks(motion_unet, motion_inputs):
    ff = motion_unet.down_blocks[0].motion_modules[0].transformer_blocks[0].ff
    sizes, hook = _record_leading_sizes(ff.net[0], dim=1)  # sees [pixels, frames, C]
    try:
        with chunked(motion_unet, temporal_chunks=3, spatial_chunks=2):
            _run_motion(motion_unet, motion_inputs)
    finally:
        hook.remove()
    assert sizes == [1, 2, 2] * 2  # 5 frames in 3 chunks, in each of the 2 pixel chunks


def test_stats_count_each_call_of_the_original_forward(motion_unet, motion_inputs):
    with chunked(motion_unet, temporal_chunks=4, spatial_chunks=2) as handle:
        sites = handle.sites
        _run_motion(motion_unet, motion_inputs)
    motion_blocks = sites[SPATIAL]  # each has one FFN site, called once per pixel chunk
    frame_site_calls = sites[TEMPORAL] + motion_blocks
    assert handle.stats.calls == handle.stats.chunked_calls == frame_site_calls + sites[SPATIAL]
    # 10 frame-samples (or 5 frames inside a motion FFN) in 4 chunks; 2 chunks of the pixel axis
    assert handle.stats.chunk_runs == 4 * frame_site_calls + 2 * sites[SPATIAL]
    assert handle.stats.fallbacks == 0


# ---------------------------------------------------------------------------- reversibility


def test_remove_restores_every_module_exactly(motion_unet, motion_inputs):
    before = _module_state(motion_unet)
    ref = _run_motion(motion_unet, motion_inputs)
    handle = install_chunking(motion_unet, 9, 2)
    assert handle.num_sites > 0
    assert _module_state(motion_unet) != before
    handle.remove()
    assert _module_state(motion_unet) == before
    assert all("forward" not in m.__dict__ for m in motion_unet.modules())
    assert torch.equal(_run_motion(motion_unet, motion_inputs), ref)


def test_remove_keeps_a_pre_existing_instance_forward(wan_dit, wan_inputs):
    ffn = wan_dit.blocks[0].ffn
    calls = []
    original = ffn.forward

    def own_forward(x, *args, **kwargs):
        calls.append(x.shape[1])
        return original(x, *args, **kwargs)

    ffn.forward = own_forward
    try:
        with chunked(wan_dit, temporal_chunks=2):
            _run_wan(wan_dit, wan_inputs)
        assert ffn.__dict__["forward"] is own_forward
        assert calls == [30, 30]  # the earlier override ran inside the chunks
    finally:
        del ffn.forward


def test_context_manager_restores_after_an_error(svd_unet, svd_inputs):
    before = _module_state(svd_unet)
    with pytest.raises(RuntimeError, match="boom"):
        with chunked(svd_unet, 9, 2):
            raise RuntimeError("boom")
    assert _module_state(svd_unet) == before


def test_diffusion_model_wrapper_chunks_only_during_the_call(motion_unet, motion_inputs):
    class Executor:  # the shape of ComfyUI's WrapperExecutor: callable, with class_obj
        def __init__(self, model, seen):
            self.class_obj, self.seen = model, seen

        def __call__(self, *inputs):
            self.seen.append(sum("forward" in m.__dict__ for m in self.class_obj.modules()))
            return _run_motion(self.class_obj, inputs)

    wrapper = make_chunking_wrapper(temporal_chunks=3, spatial_chunks=2)
    seen: list[int] = []
    before = _module_state(motion_unet)
    out = wrapper(Executor(motion_unet, seen), *motion_inputs)
    assert seen[0] > 0
    assert _module_state(motion_unet) == before
    assert wrapper.stats.chunked_calls > 0
    assert (out - _run_motion(motion_unet, motion_inputs)).abs().max().item() <= TOL


# ---------------------------------------------------------------------------- inputs


def test_count_of_one_leaves_that_axis_unchunked(motion_unet):
    with chunked(motion_unet, temporal_chunks=1, spatial_chunks=2) as handle:
        assert handle.sites[TEMPORAL] == 0 and handle.sites[SPATIAL] > 0


def test_covered_modules_are_reported_per_axis(motion_unet, svd_unet, wan_dit):
    motion_blocks = sum(len(m.transformer_blocks) for m in motion_unet.modules()
                        if type(m).__name__ == "AnimateDiffTransformer3D")
    assert chunkable_sites(motion_unet)[SPATIAL] == motion_blocks > 0
    assert chunkable_sites(svd_unet)[SPATIAL] > 0
    assert chunkable_sites(wan_dit) == {TEMPORAL: 2, SPATIAL: 0}


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, None])
def test_bad_chunk_counts_raise_a_node_input_error(motion_unet, bad):
    with pytest.raises(NodeInputError, match="temporal_chunks"):
        install_chunking(motion_unet, temporal_chunks=bad)
    with pytest.raises(NodeInputError, match="spatial_chunks"):
        install_chunking(motion_unet, spatial_chunks=bad)


def test_model_without_chunkable_blocks_passes_through():
    model = nn.Sequential(nn.Linear(4, 4))
    handle = install_chunking(model)
    assert handle.num_sites == 0
    handle.remove()


def test_strict_install_names_the_unsupported_model_class():
    with pytest.raises(NodeInputError, match="Sequential"):
        install_chunking(nn.Sequential(nn.Linear(4, 4)), strict=True)
