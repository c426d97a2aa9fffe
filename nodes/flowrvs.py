"""FlowRVS nodes (category ``AVLab/FlowRVS``, papers.md §2; issues 8 and 13): language-guided video →
mask as a one-step (or N-step) flow on a Wan 2.1 DiT.

* ``AVLab FlowRVS Loader``: the FlowRVS DiT from ``models/avlab/flowrvs`` (official ``.pth`` or our
  ``.safetensors``), renamed to ComfyUI's ``WanModel`` keys and built as a **native MODEL** with
  ``comfy.sd.load_diffusion_model_state_dict`` (detected as ``WAN21``; DVI's 32 input channels are
  fed by ``WAN21.concat_cond`` from ``concat_latent_image``, order ``[x, video]``), plus the mask
  decoder (``tuned_vae.pth``) as the pack-owned handle ``AVLAB_FLOWRVS_MASK_DECODER`` (a diffusers
  ``AutoencoderKLWan`` with a 1-channel head).
* ``AVLab FlowRVS Segment``: frames → working size (inside 480×832, multiples of 16) and 4k+1
  frames → ComfyUI Wan 2.1 VAE encode → ComfyUI's own sampler (``comfy.sample.sample_custom``, euler,
  explicit FlowRVS sigmas) so model patches such as ``AVLab LightCache`` engage → mask latent →
  mask decoder → original size and frame count → MASK.

Sampling through ComfyUI (CONST flow): ``x(σ₀) = σ₀·noise + (1−σ₀)·latent_image``; with σ₀ = 1,
``noise`` = the normalised video latent and ``latent_image`` = zeros the sampler starts exactly at
the video latent. ComfyUI returns ``process_latent_out(x)``; the mask latent is not normalised, so
``process_latent_in`` undoes that (round-off only).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..common.errors import NodeInputError
from ..flowrvs import latents as L
from ..flowrvs.sampler import DEFAULT_SHIFT, DEFAULT_STEPS, flowrvs_sigmas
from ..flowrvs.weights import (
    flowrvs_dit_to_comfy,
    load_flowrvs_dit,
    load_flowrvs_mask_vae,
)
from . import paths

logger = logging.getLogger(__name__)

MASK_DECODER = io.Custom("AVLAB_FLOWRVS_MASK_DECODER")
LOADER = "AVLab FlowRVS Loader"
SEGMENT = "AVLab FlowRVS Segment"

# Wan 2.1 VAE architecture (diffusers AutoencoderKLWan defaults): the fallback when the mask VAE's
# layout cannot be read from its keys.
WAN21_VAE_ARCH = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])

def _steps_inputs() -> list:
    """The ``steps`` / ``shift`` inputs of both segment nodes (papers.md §2, "Inference")."""
    return [io.Int.Input("steps", default=DEFAULT_STEPS, min=1, max=100,
                         tooltip="Euler steps from the video (σ=1) to the mask (σ=0); FlowRVS uses 1."),
            io.Float.Input("shift", default=DEFAULT_SHIFT, min=0.01, max=100.0, step=0.01,
                           tooltip="Timestep shift of the multi-step schedule (no effect at 1 step).")]


_DOWN_RE = re.compile(r"^encoder\.down_blocks\.(\d+)\.")


def _files() -> list[str]:
    import folder_paths

    if paths.FLOWRVS not in folder_paths.folder_names_and_paths:
        paths.register_model_folders()
    return folder_paths.get_filename_list(paths.FLOWRVS)


def _weights_file(input_name: str, filename: str) -> str:
    """Full path of ``filename`` in ``models/avlab/flowrvs`` or an error naming the input and folder."""
    try:
        return paths.model_file(LOADER, paths.FLOWRVS, filename)
    except NodeInputError as exc:
        raise NodeInputError(LOADER, input_name, exc.expected) from None


# ---------------------------------------------------------------------------------------------- mask decoder
def infer_vae_arch(sd: dict) -> dict:
    """``dim_mult`` / ``num_res_blocks`` / ``temperal_downsample`` of a diffusers ``AutoencoderKLWan``
    state dict, read from the encoder's flat ``down_blocks`` list (res blocks have ``conv1``, resamples
    ``resample.1``, temporal ones also ``time_conv``). Falls back to Wan 2.1's layout."""
    base = int(sd["encoder.conv_in.weight"].shape[0])
    idx = sorted({int(m.group(1)) for k in sd if (m := _DOWN_RE.match(k))})
    stages, temporal, count = [], [], []
    cur_out, cur_n = None, 0
    for i in idx:
        p = f"encoder.down_blocks.{i}."
        if p + "conv1.weight" in sd:
            cur_out, cur_n = int(sd[p + "conv1.weight"].shape[0]), cur_n + 1
        elif p + "resample.1.weight" in sd:
            stages.append(cur_out)
            count.append(cur_n)
            temporal.append(p + "time_conv.weight" in sd)
            cur_n = 0
    if cur_n:
        stages.append(cur_out)
        count.append(cur_n)
    if not stages or None in stages or len(set(count)) != 1 or any(s % base for s in stages) \
            or len(temporal) != len(stages) - 1:
        logger.warning("FlowRVS mask VAE: layout not readable from its keys, assuming Wan 2.1's %s", WAN21_VAE_ARCH)
        return dict(WAN21_VAE_ARCH)
    return dict(dim_mult=[s // base for s in stages], num_res_blocks=count[0], temperal_downsample=temporal)


@dataclass
class FlowRVSMaskDecoder:
    """Pack-owned handle: the FlowRVS mask VAE (diffusers ``AutoencoderKLWan``, 1-channel head); only
    its decoder is used. Kept on the CPU between runs, moved to ComfyUI's VAE device to decode."""

    vae: torch.nn.Module
    config: dict
    source: str

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mask latent ``[B,16,T',h,w]`` (not normalised) → ``[B,1,T,H,W]`` in the ``mask·2−1`` space."""
        import comfy.model_management as mm

        device = mm.vae_device()
        dtype = next(self.vae.parameters()).dtype
        self.vae.to(device)
        try:
            out = self.vae.decode(z.to(device, dtype), return_dict=False)[0]
        finally:
            self.vae.to(mm.vae_offload_device())
        return out.float().cpu()


def build_mask_decoder(path: str) -> FlowRVSMaskDecoder:
    from diffusers import AutoencoderKLWan

    sd, cfg = load_flowrvs_mask_vae(path)
    arch = infer_vae_arch(sd)
    config = dict(base_dim=cfg["base_dim"], z_dim=cfg["z_dim"], in_channels=cfg["in_channels"],
                  out_channels=1, **arch)
    vae = AutoencoderKLWan(**config)
    try:
        vae.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise NodeInputError(LOADER, "mask_vae_name", f"a Wan VAE mask decoder matching {config}",
                             f"mismatched weights ({str(exc).splitlines()[0][:200]})") from None
    return FlowRVSMaskDecoder(vae.eval().requires_grad_(False), config, path)


# ---------------------------------------------------------------------------------------------- nodes
class AVLabFlowRVSLoader(io.ComfyNode):
    """The FlowRVS DiT as a native ComfyUI MODEL (Wan 2.1) and its mask decoder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        files = _files()
        return io.Schema(
            node_id="AVLabFlowRVSLoader", display_name=LOADER, category="AVLab/FlowRVS",
            description="Loads the FlowRVS DiT (FlowRVS_dit_mevis.pth or a converted .safetensors) from "
            "models/avlab/flowrvs as a native Wan 2.1 MODEL, and the FlowRVS mask VAE (tuned_vae.pth) "
            "as the mask decoder. Nothing is downloaded.",
            inputs=[
                io.Combo.Input("model_name", options=files,
                               tooltip="FlowRVS DiT in models/avlab/flowrvs (official .pth or our .safetensors)."),
                io.Combo.Input("mask_vae_name", options=files, optional=True,
                               tooltip="FlowRVS mask VAE (tuned_vae.pth: 'vae.' keys, 1-channel head) in "
                               "models/avlab/flowrvs; needed by AVLab FlowRVS Segment."),
            ],
            outputs=[io.Model.Output(display_name="model"),
                     MASK_DECODER.Output(display_name="mask_decoder")],
            is_experimental=True,
        )

    @classmethod
    def validate_inputs(cls, model_name, mask_vae_name=None) -> bool | str:
        try:
            _weights_file("model_name", model_name)
            if mask_vae_name is not None:
                _weights_file("mask_vae_name", mask_vae_name)
        except NodeInputError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model_name, mask_vae_name=None) -> io.NodeOutput:
        import comfy.model_base
        import comfy.sd

        path = _weights_file("model_name", model_name)
        sd, config, info = load_flowrvs_dit(path)
        csd = flowrvs_dit_to_comfy(sd)
        if config["attention_head_dim"] != 128 or config["text_dim"] != 4096 or config["freq_dim"] != 256:
            raise NodeInputError(LOADER, "model_name", "a Wan 2.1 DiT ComfyUI can run (head dim 128, umT5 text "
                                 "width 4096, freq dim 256)", f"{model_name!r} with {config}")
        model = comfy.sd.load_diffusion_model_state_dict(csd)
        if model is None or not isinstance(model.model, comfy.model_base.WAN21):
            kind = type(getattr(model, "model", None)).__name__
            raise NodeInputError(LOADER, "model_name", "a FlowRVS DiT that ComfyUI detects as Wan 2.1",
                                 f"{model_name!r} detected as {kind}")
        logger.info("%s: %s (%d input channels%s, EMA %s) as %s", LOADER, model_name, config["in_channels"],
                    ", DVI" if info["dvi"] else "", info["ema_used"], type(model.model).__name__)
        decoder = None
        if mask_vae_name is not None:
            decoder = build_mask_decoder(_weights_file("mask_vae_name", mask_vae_name))
        return io.NodeOutput(model, decoder)


def _check_wan21_vae(vae) -> None:
    fsm = getattr(vae, "first_stage_model", None)
    ok = (type(fsm).__module__.endswith("ldm.wan.vae") and getattr(vae, "latent_channels", None) == 16
          and getattr(vae, "latent_dim", None) == 3)
    if not ok:
        raise NodeInputError(SEGMENT, "vae", "the Wan 2.1 VAE (16 latent channels, video; e.g. wan_2.1_vae."
                             "safetensors)", f"{type(fsm).__name__} with {getattr(vae, 'latent_channels', '?')} "
                             "latent channels")


class AVLabFlowRVSSegment(io.ComfyNode):
    """Frames + a referring sentence → per-frame masks, sampled with ComfyUI's own sampler."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabFlowRVSSegment", display_name=SEGMENT, category="AVLab/FlowRVS",
            description="Segments the object a sentence refers to in every frame (FlowRVS: Euler flow from the "
            "video latent to the mask latent on a Wan 2.1 DiT). Frames of any size and count: worked on "
            "inside 480x832 at multiples of 16 and 4k+1 frames, returned at the input's size and count.",
            inputs=[
                io.Model.Input("model", tooltip="FlowRVS MODEL (AVLab FlowRVS Loader; model patches such as "
                               "AVLab LightCache apply)."),
                io.Conditioning.Input("positive", tooltip="The referring sentence from ComfyUI's umT5 Wan "
                                      "text encoder (CLIPTextEncode with the Wan CLIP)."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (encodes the video)."),
                MASK_DECODER.Input("mask_decoder", tooltip="The FlowRVS mask decoder (AVLab FlowRVS Loader)."),
                io.Image.Input("images", tooltip="Video frames [T,H,W,3]."),
                *_steps_inputs(),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Mask probability above which a pixel is the object."),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="Binary masks [T,H,W] at the input's size."),
                     io.Mask.Output(display_name="probability",
                                    tooltip="Mask probabilities [T,H,W] (decoder output mapped to 0..1).")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, model, positive, vae, mask_decoder, images, steps, shift, threshold) -> io.NodeOutput:
        import comfy.model_management as mm
        import comfy.sample
        import comfy.samplers
        import comfy.utils
        import node_helpers

        if not isinstance(mask_decoder, FlowRVSMaskDecoder):
            raise NodeInputError(SEGMENT, "mask_decoder", "the mask decoder of AVLab FlowRVS Loader (give it "
                                 "a mask_vae_name)", type(mask_decoder).__name__)
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
            raise NodeInputError(SEGMENT, "images", "an IMAGE batch [T,H,W,3]", getattr(images, "shape", None))
        _check_wan21_vae(vae)
        t, h, w = (int(s) for s in images.shape[:3])
        wh, ww = L.working_size(h, w)
        frames, _ = L.pad_frames(L.resize_frames(images[..., :3].float(), wh, ww))

        raw = vae.encode(frames)                                      # [1,16,T',h,w], not normalised
        latent_format = model.get_model_object("latent_format")
        video = latent_format.process_in(raw.float())                 # (z − mean)/std (Wan 2.1)
        positive = node_helpers.conditioning_set_values(positive, {"concat_latent_image": raw})  # DVI input

        sigmas = flowrvs_sigmas(int(steps), float(shift))
        pbar = comfy.utils.ProgressBar(int(steps))

        def callback(step, x0, x, total):
            mm.throw_exception_if_processing_interrupted()
            pbar.update_absolute(step + 1, total)

        sampler = comfy.samplers.sampler_object("euler")
        out = comfy.sample.sample_custom(model, video, 1.0, sampler, sigmas, positive, positive,
                                         torch.zeros_like(video), callback=callback, disable_pbar=True, seed=0)
        mask_latent = latent_format.process_in(out.float())         # undo process_latent_out
        logits = mask_decoder.decode(mask_latent)                    # [1,1,T'',H',W'] in mask·2−1 space
        if logits.dim() != 5 or logits.shape[1] != 1 or logits.shape[2] < t:
            raise NodeInputError(SEGMENT, "mask_decoder", f"a decoder giving [1,1,>={t},H,W] masks",
                                 tuple(logits.shape))
        prob = ((logits[0, 0] + 1.0) / 2.0).clamp(0.0, 1.0)
        prob = L.restore(prob, t, h, w).clamp(0.0, 1.0)
        mask = (prob > float(threshold)).float()
        return io.NodeOutput(mask.to(mm.intermediate_device()), prob.to(mm.intermediate_device()))


BUILTIN = "AVLab FlowRVS Built-in (synthetic)"
_BUILTIN_CACHE: dict = {}


def _builtin_model():
    """The pack's tiny FlowRVS (``weights/flowrvs``), loaded once."""
    from ..flowrvs.tiny import TinyFlowRVS

    if "model" not in _BUILTIN_CACHE:
        _BUILTIN_CACHE["model"] = TinyFlowRVS.load()
    return _BUILTIN_CACHE["model"]


class AVLabFlowRVSBuiltin(io.ComfyNode):
    """The pack's tiny FlowRVS trained on the synthetic domain: no weights to download."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabFlowRVSBuiltin", display_name=BUILTIN, category="AVLab/FlowRVS",
            description="FlowRVS at toy scale, shipped with the pack (tiny Wan DiT + tiny Wan VAE + umT5-family text "
            "encoder, trained on AVLab's synthetic referring clips). It knows only the synthetic domain: sentences "
            "like 'the red circle moving left' (colours red, green, blue, yellow, magenta, cyan, orange, white; "
            "circle, square, triangle; moving left/right/up/down). A check of the FlowRVS pipeline without weights; "
            "for real videos use AVLab FlowRVS Loader + Segment.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames [T,H,W,3] (synthetic referring clips)."),
                io.String.Input("sentence", default="the red circle moving left",
                                tooltip="Referring sentence: '<the> <colour> <shape> moving <direction>'."),
                *_steps_inputs(),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="Binary masks [T,H,W] at the input's size."),
                     io.Mask.Output(display_name="probability", tooltip="Sigmoid of the mask decoder's logits.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, images, sentence, steps, shift) -> io.NodeOutput:
        import comfy.model_management as mm
        import comfy.utils

        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
            raise NodeInputError(BUILTIN, "images", "an IMAGE batch [T,H,W,3]", getattr(images, "shape", None))
        if not isinstance(sentence, str) or not sentence.strip():
            raise NodeInputError(BUILTIN, "sentence", "a non-empty referring sentence", repr(sentence))
        try:
            model = _builtin_model()
        except NodeInputError as exc:
            raise NodeInputError(BUILTIN, "weights", exc.expected, exc.got) from None
        pbar = comfy.utils.ProgressBar(int(steps))

        def callback(info):
            mm.throw_exception_if_processing_interrupted()
            pbar.update_absolute(int(info["i"]) + 1, int(steps))

        masks, logits = model.segment(images[..., :3].float().cpu(), sentence, steps=int(steps), shift=float(shift),
                                      callback=callback, return_logits=True)
        return io.NodeOutput(masks.to(mm.intermediate_device()), torch.sigmoid(logits).to(mm.intermediate_device()))


NODES = [AVLabFlowRVSLoader, AVLabFlowRVSSegment, AVLabFlowRVSBuiltin]
