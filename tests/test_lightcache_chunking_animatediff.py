"""Feature chunking of AnimateDiff-Evolved motion modules and of frame-coupled GroupNorms (CI tier).

AnimateDiff-Evolved (a ComfyUI node pack, GPL, never imported here) is recognised by class name and
module (``<pack>.animatediff.motion_module_ad``). These stand-ins are written from the layout its
``TemporalTransformer3DModel`` / ``TemporalTransformerBlock`` have (GroupNorm and projections around
blocks that take ``[(B·T), H·W, C]`` and attend over frames per pixel, with the same ``forward``
arguments); the real classes run in ``tests/host/test_lightcache_animatediff_host.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avlab.lightcache import chunking
from avlab.lightcache.chunking import SPATIAL, TEMPORAL, chunkable_sites, chunked

ADE_MODULE = "ComfyUI-AnimateDiff-Evolved.animatediff.motion_module_ad"
OPENAI = "comfy.ldm.modules.diffusionmodules.openaimodel"


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class TemporalTransformerBlock(nn.Module):
    """Per pixel: its frames attend to each other (positional encoding per frame); norms/FFN per token."""

    def __init__(self, dim: int, heads: int = 2, max_len: int = 16):
        super().__init__()
        self.heads = heads
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.qkv = nn.ModuleList([nn.Linear(dim, 3 * dim, bias=False) for _ in range(2)])
        self.out = nn.ModuleList([nn.Linear(dim, dim) for _ in range(2)])
        self.register_buffer("pe", torch.randn(1, max_len, dim) * 0.1)
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, video_length=None,
                scale_masks=None, cameractrl_effect=None, view_options=None, mm_kwargs=None,
                transformer_options=None):
        bf, d, c = hidden_states.shape
        f = video_length
        scale_masks = scale_masks or [None, None]
        for norm, qkv, out, mask in zip(self.norms, self.qkv, self.out, scale_masks):
            x = norm(hidden_states).reshape(bf // f, f, d, c).transpose(1, 2).reshape(-1, f, c)  # (b d) f c
            x = x + self.pe[:, :f]
            q, k, v = qkv(x).chunk(3, dim=-1)
            if mask is not None:
                k = k * mask
            if torch.is_tensor(cameractrl_effect):
                v = v * cameractrl_effect.reshape(-1, 1, 1)[: v.shape[0]]
            if mm_kwargs and mm_kwargs.get("camera_feature") is not None:
                v = v + mm_kwargs["camera_feature"]
            h = self.heads
            q, k, v = (t.reshape(t.shape[0], f, h, c // h).transpose(1, 2) for t in (q, k, v))
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, f, c)
            a = out(a).reshape(bf // f, d, f, c).transpose(1, 2).reshape(bf, d, c)
            hidden_states = hidden_states + a
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer3DModel(nn.Module):
    def __init__(self, dim: int, video_length: int):
        super().__init__()
        self.video_length = video_length
        self.scale_masks = None
        self.norm = nn.GroupNorm(4, dim)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(dim)])
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, hidden_states, camera=None, cameractrl_effect=None):
        bf, c, hh, ww = hidden_states.shape
        x = self.norm(hidden_states).permute(0, 2, 3, 1).reshape(bf, hh * ww, c)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, video_length=self.video_length, scale_masks=self.scale_masks,
                      cameractrl_effect=cameractrl_effect, mm_kwargs={"camera_feature": camera} if camera is not None
                      else None)
        x = self.proj_out(x).reshape(bf, hh, ww, c).permute(0, 3, 1, 2)
        return x + hidden_states


for _cls in (FeedForward, TemporalTransformerBlock, TemporalTransformer3DModel):
    _cls.__module__ = ADE_MODULE


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


@pytest.fixture()
def motion():
    return _seeded(TemporalTransformer3DModel(16, video_length=5), 1)


def _input(frames=5, batch=2, hw=(3, 4), seed=2):
    return torch.randn(batch * frames, 16, *hw, generator=torch.Generator().manual_seed(seed))


def test_motion_module_blocks_are_chunked_on_the_pixel_axis(motion):
    assert chunkable_sites(motion) == {SPATIAL: 1, TEMPORAL: 1}  # the block; its FFN
    x = _input()
    with torch.no_grad():
        ref = motion(x)
        with chunked(motion, temporal_chunks=2, spatial_chunks=5) as handle:
            out = motion(x)
    # the block on 5 pixel chunks, and its FFN (inside each of them) on 2 chunks of that chunk's pixels
    assert handle.stats.by_kind == {SPATIAL: 1, TEMPORAL: 5}
    assert handle.stats.chunk_runs == 5 + 5 * 2 and handle.stats.fallbacks == 0
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert "forward" not in motion.transformer_blocks[0].__dict__


def test_scale_masks_are_sliced_with_their_pixels(motion):
    x = _input()
    b, f, d = 2, 5, 12
    motion.scale_masks = [torch.rand(b * d, f, 1, generator=torch.Generator().manual_seed(3)) + 0.5, None]
    with torch.no_grad():
        ref = motion(x)
        with chunked(motion, temporal_chunks=1, spatial_chunks=4) as handle:
            out = motion(x)
    assert handle.stats.chunked_calls == 1 and handle.stats.fallbacks == 0
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_camera_inputs_make_the_block_run_whole(motion):
    x = _input()
    with torch.no_grad():
        for kwargs in ({"camera": torch.randn(1, 5, 16)}, {"cameractrl_effect": torch.rand(24)}):
            ref = motion(x, **kwargs)
            with chunked(motion, temporal_chunks=1, spatial_chunks=3) as handle:
                out = motion(x, **kwargs)
            assert handle.stats.fallbacks == 1 and handle.stats.chunked_calls == 0
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_other_packs_classes_of_the_same_name_are_not_chunked():
    class TemporalTransformer3DModel(nn.Module):  # noqa: N801 - same name, another module
        def __init__(self):
            super().__init__()
            self.transformer_blocks = nn.ModuleList([nn.Linear(4, 4)])

    assert chunkable_sites(TemporalTransformer3DModel()) == {SPATIAL: 0, TEMPORAL: 0}


# ------------------------------------------------------------------------------------------------
# GroupNorm swapped for one that normalises the frames of a video together
# ------------------------------------------------------------------------------------------------

class ResBlock(nn.Module):
    """ComfyUI's ``ResBlock`` shape: ``forward`` calls ``self._forward(x, emb)`` (GroupNorm inside)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.norm = nn.GroupNorm(2, dim)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.emb = nn.Linear(4, dim)

    def forward(self, x, emb):
        return self._forward(x, emb)

    def _forward(self, x, emb):
        return x + self.conv(torch.nn.functional.silu(self.norm(x) + self.emb(emb)[..., None, None]))


ResBlock.__module__ = OPENAI


def _frames_together(full_length: int):
    """What AnimateDiff-Evolved installs for v1 / PIA / "improper" v2 motion modules (same math)."""
    def groupnorm_frames_forward(self, x):
        b = x.shape[0] // full_length
        y = x.reshape(b, full_length, *x.shape[1:]).transpose(1, 2)  # (b f) c h w -> b c f h w
        y = torch.nn.functional.group_norm(y, self.num_groups, self.weight, self.bias, self.eps)
        return y.transpose(1, 2).reshape(x.shape)
    return groupnorm_frames_forward


@pytest.mark.parametrize("n_chunks", [2, 3])
def test_frame_chunks_fall_back_while_groupnorm_couples_frames(monkeypatch, n_chunks):
    block = _seeded(ResBlock(), 4)
    x, emb = torch.randn(8, 8, 4, 4), torch.randn(8, 4)  # cond + uncond of 4 frames
    with torch.no_grad():
        with chunked(block, temporal_chunks=n_chunks, spatial_chunks=1) as handle:
            plain = block(x, emb)
        assert handle.stats.chunked_calls == 1 and handle.stats.fallbacks == 0
        monkeypatch.setattr(nn.GroupNorm, "forward", _frames_together(4))
        ref = block(x, emb)
        assert not torch.equal(ref, plain)
        with chunked(block, temporal_chunks=n_chunks, spatial_chunks=1) as handle:
            out = block(x, emb)
        assert handle.stats.fallbacks == 1 and handle.stats.chunked_calls == 0
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        # what the guard prevents: 2 chunks of 4 rows happen to be whole videos, 3 chunks are not
        monkeypatch.setattr(chunking, "_group_norm_replaced", lambda norms: False)
        with chunked(block, temporal_chunks=n_chunks, spatial_chunks=1):
            if n_chunks == 2:
                torch.testing.assert_close(block(x, emb), ref, rtol=0, atol=0)
            else:
                with pytest.raises((ZeroDivisionError, RuntimeError)):
                    block(x, emb)


def test_a_replaced_comfy_cast_path_counts_as_coupled(monkeypatch):
    class GroupNorm(nn.GroupNorm):  # ComfyUI ops shape: a class-level cast path that may be swapped
        def forward_comfy_cast_weights(self, x):
            return super().forward(x)

    norm = GroupNorm(2, 8)
    assert not chunking._group_norm_replaced([norm])
    monkeypatch.setattr(GroupNorm, "forward_comfy_cast_weights", _frames_together(4))
    assert chunking._group_norm_replaced([norm])
    assert not chunking._group_norm_replaced([])
