"""Test-only ComfyUI nodes the host tier links into ``custom_nodes/`` beside the pack (never shipped).

``HostTestConditioning`` makes a CONDITIONING of any width. The host tier needs it for Wan 2.1: the
Wan DiT's text projection is fixed at 4096 inputs, and the only text encoder ComfyUI 0.3.64 accepts
for ``CLIPLoader`` type ``wan`` is the full-size umT5-XXL (fixed config, ~5.7 B parameters, detected
by ``encoder.block.23`` with d_model 4096), so no tiny native text encoder can produce it. No native
node creates a conditioning without a text/vision encoder of the right width either.
"""

from __future__ import annotations

import torch
from comfy_api.latest import ComfyExtension, io


class HostTestConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HostTestConditioning",
            display_name="Host Test Conditioning",
            category="_for_testing/avlab_host",
            description="Zero or seeded-normal cross-attention conditioning [1, tokens, width] (tests only).",
            inputs=[
                io.Int.Input("width", default=4096, min=1, max=16384, tooltip="Feature width of the context."),
                io.Int.Input("tokens", default=8, min=1, max=4096, tooltip="Number of context tokens."),
                io.Combo.Input("fill", options=["normal", "zeros"], default="normal",
                               tooltip="Seeded standard normal values, or zeros."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed for 'normal'."),
            ],
            outputs=[io.Conditioning.Output()],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, width: int, tokens: int, fill: str, seed: int) -> io.NodeOutput:
        if fill == "zeros":
            ctx = torch.zeros(1, tokens, width)
        else:
            ctx = torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))
        return io.NodeOutput([[ctx, {}]])


class HostTestMaskDigest(io.ComfyNode):
    """SHA-256 of a MASK's float32 bytes + its shape, so a test can compare two runs bit for bit."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HostTestMaskDigest",
            display_name="Host Test Mask Digest",
            category="_for_testing/avlab_host",
            inputs=[io.Mask.Input("mask", tooltip="Any MASK.")],
            outputs=[io.String.Output()],
            is_output_node=True,
            is_experimental=True,
        )

    @classmethod
    def execute(cls, mask) -> io.NodeOutput:
        import hashlib

        data = mask.detach().float().cpu().contiguous().numpy().tobytes()
        text = f"{tuple(mask.shape)} {hashlib.sha256(data).hexdigest()} sum={float(mask.double().sum())!r}"
        return io.NodeOutput(text, ui={"text": [text]})


class HostTestStableAudioLoader(io.ComfyNode):
    """A small Stable Audio Open (MODEL: ComfyUI's own ``StableAudio1`` / ``AudioDiffusionTransformer``
    with a few narrow blocks) and a small Oobleck audio VAE (ComfyUI's ``AudioOobleckVAE`` with 4 base
    channels, real strides: 2048 samples per latent frame, 44.1 kHz stereo). ComfyUI detects Stable
    Audio only at full size (1.1 B DiT, fixed Oobleck widths), so tests build it in-process
    (issue 13; ``tests/host/tiny_stable_audio.py``)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HostTestStableAudioLoader",
            display_name="Host Test Stable Audio Loader",
            category="_for_testing/avlab_host",
            inputs=[io.Int.Input("depth", default=2, min=1, max=24), io.Int.Input("seed", default=0, min=0, max=2**31 - 1)],
            outputs=[io.Model.Output(), io.Vae.Output()],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, depth: int, seed: int) -> io.NodeOutput:
        import functools
        import sys
        from pathlib import Path

        import comfy.ldm.audio.autoencoder as autoencoder
        import comfy.sd

        here = str(Path(__file__).resolve().parents[1])
        if here not in sys.path:
            sys.path.insert(0, here)
        from tiny_stable_audio import build_tiny_stable_audio

        patcher = build_tiny_stable_audio(depth=depth, seed=seed)
        torch.manual_seed(seed)
        small = functools.partial(autoencoder.AudioOobleckVAE, channels=4)
        sd = small().state_dict()
        original = comfy.sd.AudioOobleckVAE
        comfy.sd.AudioOobleckVAE = small          # only while this VAE is built
        try:
            vae = comfy.sd.VAE(sd=sd)
        finally:
            comfy.sd.AudioOobleckVAE = original
        return io.NodeOutput(patcher, vae)


class HostTestExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [HostTestConditioning, HostTestMaskDigest, HostTestStableAudioLoader]


async def comfy_entrypoint() -> HostTestExtension:
    return HostTestExtension()
