"""LightCache — training-free acceleration of video diffusion (arXiv 2510.05367, papers.md §1).

Host-free core (torch only; diffusers only duck-typed). Public API:

* :class:`LightCacheConfig` — the settings (``cache_interval``, ``cache_depth``, ``start_percent``,
  ``end_percent``, ``schedule``, ``swap``, ``temporal_chunks``, ``spatial_chunks``, ``verbose``,
  ``adaptive_error``; default schedule ``"adaptive"``);
  ``.validated()`` raises :class:`~avlab.common.errors.NodeInputError` on bad values.
* :func:`apply` ``(module, config=None, **overrides) -> LightCacheHandle`` — block caching (+ optional
  feature chunking) on a diffusers ``UNetSpatioTemporalConditionModel`` / ``UNetMotionModel`` /
  ``UNet2DConditionModel`` / ``WanTransformer3DModel``. Sample inside ``with handle.run(num_steps):``;
  ``handle.set_step(i)`` for loops whose timestep does not change once per step; ``handle.remove()``
  restores the model exactly.
* :func:`full_step_mask` / :func:`step_index` / :data:`SCHEDULES` — the cache schedule (pure).

Where the parts live: :mod:`.schedule` (which steps are full), :mod:`.adaptive` (the per-call reuse
decision of the adaptive schedule), :mod:`.cache` (config, keys, the state holder), :mod:`.unet_cache` (U-Net branch caching, DeepCache semantics), :mod:`.dit_cache` (DiT block
residual caching), :mod:`.swap` (asynchronous cache swap to pinned CPU memory), :mod:`.chunking`
(feature chunking), :mod:`.sliced_decode` (sliced VAE decoding), :mod:`.comfy_glue` (ComfyUI wrappers,
duck-typed; used by ``nodes/lightcache.py``).
"""

from .api import LightCacheHandle, apply
from .cache import LightCacheConfig
from .schedule import SCHEDULES, full_step_mask, step_index

__all__ = ["LightCacheConfig", "LightCacheHandle", "apply", "full_step_mask", "step_index", "SCHEDULES"]
