"""AVLab Sliced VAE Decode: LightCache's sliced decoding (paper 1 "Sliced decoding") on ComfyUI's VAE.

Adapts ``comfy.sd.VAE`` to :mod:`avlab.lightcache.sliced_decode`: picks the strategy from the
VAE's decoder (per-frame image VAE → exact slices; SVD ``VideoDecoder`` → overlapping windows with a
linear cross-fade; Wan 2.1/2.2 causal VAE → one latent frame at a time with its causal cache,
exact), loads the VAE the way ``VAE.decode`` does (``load_models_gpu``), and keeps only one slice
on the compute device: each decoded slice goes straight into a preallocated IMAGE on ComfyUI's
intermediate device. One progress-bar step per slice; each step is a cancel point.
Other video VAEs (Hunyuan, LTXV, Mochi, Cosmos ...) fall back to ``vae.decode`` with a log line.
"""

from __future__ import annotations

import logging

import torch
import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..common.errors import NodeInputError
from ..lightcache import sliced_decode as slicing

logger = logging.getLogger(__name__)

NODE = "AVLab Sliced VAE Decode"

IMAGE_VAE, SVD_VAE, WAN_VAE, WAN22_VAE, OTHER_VAE = "image", "svd", "wan", "wan2.2", "other"


def vae_kind(vae) -> str:
    """Which slicing strategy a ``comfy.sd.VAE`` needs."""
    model = getattr(vae, "first_stage_model", None)
    if model is None:
        raise NodeInputError(NODE, "vae", "a loaded VAE", "a VAE without weights")
    mod = type(model).__module__
    if type(model).__name__ == "WanVAE" and mod == "comfy.ldm.wan.vae":
        return WAN_VAE
    if type(model).__name__ == "WanVAE" and mod == "comfy.ldm.wan.vae2_2":
        return WAN22_VAE
    if type(getattr(model, "decoder", None)).__name__ == "VideoDecoder":
        return SVD_VAE
    if getattr(vae, "latent_dim", None) == 1 or getattr(vae, "extra_1d_channel", None) is not None:
        raise NodeInputError(NODE, "vae", "an image or video VAE", "an audio VAE")
    if getattr(vae, "latent_dim", 2) == 2:
        return IMAGE_VAE
    return OTHER_VAE


def _check_latent(vae, kind: str, latent: torch.Tensor) -> None:
    channels = getattr(vae, "latent_channels", None)
    if kind in (WAN_VAE, WAN22_VAE):
        if latent.ndim != 5:
            raise NodeInputError(NODE, "samples", f"a 5-D video latent [B, {channels}, T, h, w] for this "
                                 "Wan VAE", f"a {latent.ndim}-D latent {tuple(latent.shape)}")
    elif kind in (IMAGE_VAE, SVD_VAE):
        if latent.ndim != 4:
            raise NodeInputError(NODE, "samples", f"a 4-D latent [frames, {channels}, h, w] for this "
                                 "image VAE (a 5-D video latent needs its video VAE)",
                                 f"a {latent.ndim}-D latent {tuple(latent.shape)}")
    if channels is not None and kind != OTHER_VAE and latent.shape[1] != channels:
        raise NodeInputError(NODE, "samples", f"a {channels}-channel latent to match the VAE",
                             f"{latent.shape[1]} channels (latent from a different model family?)")


def sliced_vae_decode(vae, latent: torch.Tensor, frames_per_slice: int, overlap: int,
                      callback=None) -> torch.Tensor:
    """Decode a LATENT tensor with ``vae`` slice by slice; returns IMAGE ``[N, H, W, C]``."""
    if isinstance(frames_per_slice, bool) or not isinstance(frames_per_slice, int) or frames_per_slice < 1:
        raise NodeInputError(NODE, "frames_per_slice", "an integer >= 1", frames_per_slice)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise NodeInputError(NODE, "overlap", "an integer >= 0", overlap)
    if not torch.is_tensor(latent):
        raise NodeInputError(NODE, "samples", "a LATENT with a 'samples' tensor", type(latent).__name__)
    vae.throw_exception_if_invalid()
    kind = vae_kind(vae)
    _check_latent(vae, kind, latent)
    out_device = vae.output_device

    if kind == OTHER_VAE:
        logger.warning("%s: no sliced path for %s; decoding it whole with VAE.decode", NODE,
                       type(vae.first_stage_model).__name__)
        images = vae.decode(latent)
        if callback is not None:
            callback({"i": 0, "total": 1, "start": 0, "stop": latent.shape[0]})
        return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images

    model = vae.first_stage_model
    if kind in (WAN_VAE, WAN22_VAE):
        step_shape = (latent.shape[0], latent.shape[1], 1, *latent.shape[3:])
        mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_decode(step_shape, vae.vae_dtype),
                           force_full_load=vae.disable_offload)
        unpatchify = None
        if kind == WAN22_VAE:
            from comfy.ldm.wan.vae2_2 import unpatchify as _unpatchify

            unpatchify = lambda x: _unpatchify(x, patch_size=2)  # noqa: E731
        z = latent.to(vae.vae_dtype).to(vae.device)

        def post(pixels):  # [B, 3, t, H, W] -> [B, t, H, W, 3] in 0..1
            return vae.process_output(pixels.float()).movedim(1, -1)

        video = slicing.decode_causal(model, z, postprocess=post, frame_dim=1, callback=callback,
                                 output_device=out_device, unpatchify=unpatchify)
        return video.reshape(-1, *video.shape[-3:])

    slice_shape = (min(frames_per_slice, latent.shape[0]), *latent.shape[1:])
    mm.load_models_gpu([vae.patcher], memory_required=vae.memory_used_decode(slice_shape, vae.vae_dtype),
                       force_full_load=vae.disable_offload)

    def decode_fn(z):  # [f, C, h, w] -> [f, H, W, 3] in 0..1, on the compute device
        pixels = model.decode(z.to(vae.vae_dtype).to(vae.device))
        return vae.process_output(pixels.float()).movedim(1, -1)

    if kind == SVD_VAE:
        return slicing.decode_temporal_blend(decode_fn, latent, frames_per_slice, overlap,
                                        callback=callback, output_device=out_device)
    return slicing.decode_frames(decode_fn, latent, frames_per_slice, callback=callback,
                            output_device=out_device)


class AVLabSlicedVAEDecode(io.ComfyNode):
    """VAE + LATENT → IMAGE, a few frames at a time (LightCache sliced decoding)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabSlicedVAEDecode",
            display_name=NODE,
            category="AVLab/LightCache",
            description="Decodes a video latent a few frames at a time, moving each decoded slice off the "
                        "GPU at once. Exact for image VAEs (SD/AnimateDiff) and Wan's causal VAE; SVD's "
                        "temporal decoder uses overlapping windows with a linear cross-fade.",
            is_experimental=True,
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE to decode with: an image VAE (SD/SDXL/AnimateDiff), "
                                            "the SVD video VAE or the Wan 2.1/2.2 VAE."),
                io.Latent.Input("samples", tooltip="The latent to decode: frames in the batch for image and "
                                                   "SVD VAEs, a [B, 16, T, h, w] video latent for Wan."),
                io.Int.Input("frames_per_slice", default=8, min=1, max=4096,
                             tooltip="Latent frames decoded per call. Lower = less peak memory. Ignored by "
                                     "Wan's causal VAE, which always steps one latent frame at a time."),
                io.Int.Input("overlap", default=2, min=0, max=4096,
                             tooltip="SVD only: frames shared by consecutive slices, cross-faded linearly to "
                                     "hide seams (must be < frames_per_slice). Ignored by exact VAEs."),
            ],
            outputs=[io.Image.Output(tooltip="The decoded frames.")],
        )

    @classmethod
    def execute(cls, vae, samples, frames_per_slice: int, overlap: int) -> io.NodeOutput:
        latent = samples.get("samples") if isinstance(samples, dict) else None
        pbar = None

        def progress(info: dict) -> None:
            nonlocal pbar
            if pbar is None:
                pbar = comfy.utils.ProgressBar(info["total"])
            pbar.update_absolute(info["i"] + 1, info["total"])
            mm.throw_exception_if_processing_interrupted()

        images = sliced_vae_decode(vae, latent, frames_per_slice, overlap, callback=progress)
        return io.NodeOutput(images)


NODES = [AVLabSlicedVAEDecode]
