"""AVLab LightCache (MODEL → MODEL): block caching, asynchronous cache swap and feature chunking
(paper 1, LightCache) on a ComfyUI model.

Thin adapter: settings → :class:`avlab.lightcache.LightCacheConfig`; the wiring (``model.clone()``,
wrappers with key ``"avlab_lightcache"``, DiT ``patches_replace``) is
:func:`avlab.lightcache.comfy_glue.apply_to_model_patcher`, given the host's ``WrappersMP``.

Unsupported models are an **error** naming the model class (raised when the node runs, before any
sampling), not a logged pass-through: a graph that silently runs uncached would look accelerated and
make speed comparisons meaningless, and the fix (bypass the node) costs the user one click.
"""

from __future__ import annotations

from comfy.patcher_extension import WrappersMP
from comfy_api.latest import io

from ..common.errors import NodeInputError
from ..lightcache.cache import NODE, LightCacheConfig
from ..lightcache.comfy_glue import apply_to_model_patcher
from ..lightcache.schedule import SCHEDULES
from ..lightcache.swap import SWAP_MODES

DEFAULTS = LightCacheConfig()  # the node's defaults are the library's (one place, chosen on the zoo)


ADAPTIVE_ERROR_TOOLTIP = (
    "Adaptive schedule only: the largest predicted relative L1 error of a reused feature (0.1 = the cached "
    "features may be 10 % off). Lower = more full steps, higher quality. 0 = never reuse (identical output). "
    "Measured on the pack's benchmark zoo: see README.")


class AVLabLightCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AVLabLightCache",
            display_name="AVLab LightCache",
            category="AVLab/LightCache",
            description="Training-free acceleration of video diffusion: reuse the deep U-Net features / DiT "
                        "block residuals between full steps, keep the cache in pinned CPU memory between "
                        "steps, optionally chunk features to lower peak memory.",
            is_experimental=True,
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to accelerate (U-Net: SD1.5/SDXL/SVD/"
                               "AnimateDiff; DiT: Wan 2.1/2.2, Stable Audio)."),
                io.Int.Input("cache_interval", default=DEFAULTS.cache_interval, min=1, max=50, step=1,
                             tooltip="Adaptive schedule: a full step at least every this many steps (the "
                                     "default 6 suits it). Uniform / non-uniform: run the whole network every "
                                     "this many steps and reuse the cached features in between — use 2–3 there "
                                     "(4+ fell below 30 dB on some test models). 1 = no caching (identical "
                                     "output)."),
                io.Int.Input("cache_depth", default=DEFAULTS.cache_depth, min=0, max=64, step=1,
                             tooltip="U-Net: branch id — skip connections 0..cache_depth (input blocks) form "
                                     "the shallow path that always runs; 0 is fastest (DeepCache branch 0). "
                                     "DiT: number of leading and of trailing blocks that always run; the "
                                     "blocks between are cached (0 = the whole stack)."),
                io.Float.Input("start_percent", default=DEFAULTS.start_percent, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the sampling steps before which every step is full."),
                io.Float.Input("end_percent", default=DEFAULTS.end_percent, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the sampling steps after which every step is full."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default=DEFAULTS.schedule,
                               tooltip="adaptive: each step reuses the cache only while the predicted error "
                                       "stays under adaptive_error (safe on unseen models). uniform: a full "
                                       "step every cache_interval steps. non-uniform: the same number of full "
                                       "steps, dense early and sparse late (measured worse than uniform)."),
                io.Combo.Input("swap", options=list(SWAP_MODES), default="auto",
                               tooltip="Keep cached features in pinned CPU memory between steps and copy them "
                                       "back asynchronously one step ahead. auto = on when the model runs on "
                                       "CUDA; off = keep them on the compute device."),
                io.Int.Input("temporal_chunks", default=1, min=1, max=64, step=1,
                             tooltip="Feature chunking: split the batch×frames axis through spatial layers "
                                     "(and the token axis of feed-forwards, e.g. Wan's FFN) into this many "
                                     "chunks (lower peak memory, same result). 1 = off; the paper uses 9."),
                io.Int.Input("spatial_chunks", default=1, min=1, max=64, step=1,
                             tooltip="Feature chunking: split the pixel axis through temporal layers (motion "
                                     "modules, SVD time mixing) into this many chunks. 1 = off; the paper "
                                     "uses 2."),
                io.Boolean.Input("verbose", default=False,
                                 tooltip="Log the full/cache decision of every model call (and time calls "
                                         "exactly on CUDA)."),
                # optional and last: prompts and workflows saved before it existed keep loading
                io.Float.Input("adaptive_error", default=DEFAULTS.adaptive_error, min=0.0, max=10.0, step=0.01,
                               optional=True, tooltip=ADAPTIVE_ERROR_TOOLTIP),
            ],
            outputs=[io.Model.Output(tooltip="The model with LightCache applied (the input model is unchanged).")],
        )

    @classmethod
    def validate_inputs(cls, cache_interval, cache_depth, start_percent, end_percent, temporal_chunks,
                        spatial_chunks, adaptive_error=DEFAULTS.adaptive_error) -> bool | str:
        values = dict(cache_interval=cache_interval, cache_depth=cache_depth, start_percent=start_percent,
                      end_percent=end_percent, temporal_chunks=temporal_chunks, spatial_chunks=spatial_chunks,
                      adaptive_error=adaptive_error)
        if any(v is None for v in values.values()):  # linked inputs are checked in execute
            return True
        try:
            LightCacheConfig(**values).validated(NODE)
        except NodeInputError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model, cache_interval, cache_depth, start_percent, end_percent, schedule, swap,
                temporal_chunks, spatial_chunks, verbose,
                adaptive_error=DEFAULTS.adaptive_error) -> io.NodeOutput:
        config = LightCacheConfig(cache_interval=cache_interval, cache_depth=cache_depth,
                                  start_percent=start_percent, end_percent=end_percent, schedule=schedule,
                                  swap=swap, temporal_chunks=temporal_chunks, spatial_chunks=spatial_chunks,
                                  verbose=verbose, adaptive_error=adaptive_error)
        return io.NodeOutput(apply_to_model_patcher(model, config, WrappersMP, NODE))


NODES = [AVLabLightCache]
