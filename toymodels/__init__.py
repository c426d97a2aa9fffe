"""Toy video diffusion models trained on the synthetic domain (LightCache benchmarks, papers.md §1).

Host-free (torch + diffusers). Public API:

* :class:`ToyModelConfig`, :func:`default_config` — one config per toy family (``"unet_motion"``:
  diffusers ``UNetMotionModel``; ``"wan_dit"``: diffusers ``WanTransformer3DModel``).
* :class:`ToyVideoModel` — config + model + :class:`ToyLatentCodec` + fixed toy text encoder, with
  ``predict`` / ``loss`` / ``sample`` / ``decode`` / ``save`` / ``load`` (committed weights live in
  ``weights/toy/``, made by ``scripts/train_toy_video_models.py``).
* :func:`train_toy`, :func:`heldout_loss` — the training loop and its held-out metric.
* :func:`synthetic_clips` — synthetic-domain clips and labels for training/evaluation.
"""

from .codec import ToyLatentCodec
from .data import synthetic_clips
from .models import KINDS, UNET, WAN, ToyModelConfig, build_model, default_config
from .toy import WEIGHTS_DIR, ToyVideoModel
from .train import heldout_loss, train_toy

__all__ = ["KINDS", "UNET", "WAN", "WEIGHTS_DIR", "ToyLatentCodec", "ToyModelConfig", "ToyVideoModel",
           "build_model", "default_config", "heldout_loss", "synthetic_clips", "train_toy"]
