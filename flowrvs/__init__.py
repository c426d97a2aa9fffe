"""FlowRVS — referring video object segmentation as flow matching (arXiv 2510.06139, papers.md §2).

Host-free core (no ComfyUI imports). It exports the DAVIS evaluation metric
(:mod:`.metrics`): :func:`region_j`, :func:`boundary_f`, :func:`j_and_f`, :func:`mean_j_and_f`,
the latent conventions (:mod:`.latents`), the flow network with DVI (:mod:`.model`), the Euler
sampler (:mod:`.sampler`), and the official-weight loaders (:mod:`.weights`): :func:`load_flowrvs_dit`,
:func:`load_flowrvs_mask_vae`, :func:`convert_flowrvs_to_safetensors`, :func:`flowrvs_dit_to_comfy`.
"""

from .latents import (WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, denormalise_video_latent, encode_mask,
                      mask_to_vae_input, normalise_video_latent, pad_frames, restore, video_latent,
                      working_size)
from .metrics import boundary_f, boundary_map, boundary_prf, dilate_disk, j_and_f, mean_j_and_f, region_j
from .model import FlowRVSModel, enable_dvi, tiny_config
from .sampler import flowrvs_sigmas, sample, segment_latent
from .weights import (convert_flowrvs_to_safetensors, flowrvs_dit_to_comfy, infer_dit_config,
                      load_flowrvs_dit, load_flowrvs_mask_vae)

__all__ = ["boundary_f", "boundary_map", "boundary_prf", "dilate_disk", "j_and_f", "mean_j_and_f",
           "region_j", "convert_flowrvs_to_safetensors", "flowrvs_dit_to_comfy", "infer_dit_config",
           "load_flowrvs_dit", "load_flowrvs_mask_vae",
           "WAN21_LATENTS_MEAN", "WAN21_LATENTS_STD", "denormalise_video_latent", "encode_mask",
           "mask_to_vae_input", "normalise_video_latent", "pad_frames", "restore", "video_latent",
           "working_size", "FlowRVSModel", "enable_dvi", "tiny_config", "flowrvs_sigmas", "sample",
           "segment_latent"]
