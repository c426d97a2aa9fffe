"""LightCache inside ComfyUI: wrapper functions and patches that only duck-type the host's objects.

Nothing here imports ``comfy``; the node (``nodes/lightcache.py``) passes the host's ``WrappersMP``
constants to :func:`apply_to_model_patcher`. The wiring follows ComfyUI's own EasyCache
(``comfy_extras/nodes_easycache.py``):

* ``model.clone()``; a :class:`~.cache.CacheState` template goes into the clone's
  ``model_options["transformer_options"]["avlab_lightcache"]``; wrappers are added with key
  ``"avlab_lightcache"``. The shared torch module is never modified (feature chunking, when asked
  for, is installed per model call and removed in ``finally`` by the chunking wrapper).
* ``OUTER_SAMPLE`` (:func:`outer_sample_wrapper`): swaps in a fresh clone of the state for this
  sampling run, starts it with the run's step count and device, and in ``finally`` logs the one
  summary line, resets the state and restores the guider's options — an interrupt
  (``InterruptProcessingException`` from a callback) or any error leaves nothing behind.
* ``APPLY_MODEL`` (:func:`apply_model_wrapper`): times whole model calls for the speed-up estimate.
* U-Net: ``DIFFUSION_MODEL`` (:func:`unet_diffusion_model_wrapper`) — plans each call and runs the
  host forward (full) or the shallow forward (cache), see :mod:`.unet_cache`.
* DiT: ``patches_replace["dit"][("double_block", i)]`` for the cached range, set on the clone with
  ``set_model_patch_replace`` (an existing patch for that block is chained, not dropped).

The step index comes from ``transformer_options["sigmas"]`` within ``["sample_sigmas"]``
(:func:`~.schedule.step_index`); the keys from ``uuids`` / ``cond_or_uncond``, the latent shape and
``context_window`` (see :mod:`.cache`).
"""

from __future__ import annotations

import logging
from typing import Any

from ..common.errors import NodeInputError
from .cache import CACHE, FULL, NODE, CacheState, LightCacheConfig
from .dit_cache import COMFY_DIT_BLOCKS, DIT_FEATURE, comfy_dit_blocks, dit_range, run_cached_block
from .unet_cache import (UNET_FEATURE, comfy_unet_cached_forward, comfy_unet_full_forward,
                         comfy_unet_max_depth, comfy_unet_wants_fresh, is_comfy_unet)

logger = logging.getLogger(__name__)

KEY = "avlab_lightcache"
UNET = "unet"
DIT = "dit"


# -- model detection ---------------------------------------------------------------------------------
def detect(diffusion_model: Any) -> tuple[str, int] | None:
    """``("unet", max_depth + 1)`` / ``("dit", num_blocks)`` for a cacheable ComfyUI model, else None."""
    if is_comfy_unet(diffusion_model):
        return UNET, comfy_unet_max_depth(diffusion_model) + 1
    blocks = comfy_dit_blocks(diffusion_model)
    if blocks is not None and len(blocks) > 0:
        return DIT, len(blocks)
    return None


def make_state(diffusion_model: Any, config: LightCacheConfig, node: str = NODE) -> CacheState:
    """Validate ``config`` against ``diffusion_model`` and build the state template.

    Raises :class:`NodeInputError` naming the model class when it cannot be cached, or naming
    ``cache_depth`` with the valid range.
    """
    config = config.validated(node)
    found = detect(diffusion_model)
    name = type(diffusion_model).__name__
    if found is None:
        raise NodeInputError(
            node, "model",
            "a model LightCache can cache: a U-Net (ComfyUI UNetModel: SD1.5/SDXL/SVD/AnimateDiff) or a DiT "
            f"with a pure block chain ({', '.join(sorted(COMFY_DIT_BLOCKS))})", f"{name}")
    kind, n = found
    if kind == UNET:
        if config.cache_depth > n - 1:
            raise NodeInputError(node, "cache_depth", f"a U-Net branch id in [0, {n - 1}] for this {name}",
                                 config.cache_depth)
        return CacheState(config, names=(UNET_FEATURE,), description=f"{name} branch {config.cache_depth}",
                          info={"kind": UNET, "depth": config.cache_depth})
    try:
        first, last = dit_range(n, config.cache_depth)
    except ValueError:
        raise NodeInputError(node, "cache_depth", f"leading/trailing blocks in [0, {(n - 1) // 2}] for this "
                             f"{name} with {n} blocks", config.cache_depth) from None
    return CacheState(config, names=(DIT_FEATURE,), description=f"{name} blocks {first}-{last} of {n}",
                      info={"kind": DIT, "first": first, "last": last})


# -- keys ---------------------------------------------------------------------------------------------
def call_keys(transformer_options: dict, x) -> tuple[list, tuple, Any]:
    """``(slots, shape_key, window_key)`` of one model call (see :mod:`.cache`)."""
    batch = int(x.shape[0])
    slots: list | None = None
    uuids = transformer_options.get("uuids")
    if uuids and batch % len(uuids) == 0 and len(set(map(str, uuids))) == len(uuids):
        slots = [("uuid", str(u)) for u in uuids]
    else:
        cou = transformer_options.get("cond_or_uncond")
        if cou and batch % len(cou) == 0 and len(set(cou)) == len(cou):
            slots = [("cond_or_uncond", int(c)) for c in cou]
    if slots is None:
        slots = [("batch", batch)]
    per = batch // len(slots)
    shape_key = (per,) + tuple(int(v) for v in x.shape[1:]) + (str(x.dtype),)
    return slots, shape_key, window_key(transformer_options)


def window_key(transformer_options: dict) -> Any:
    """What identifies the context window of this call (``None`` without context windows)."""
    win = transformer_options.get("context_window")
    if win is not None:
        idx = getattr(win, "index_list", None)
        if idx is not None:
            return ("context_window", getattr(win, "dim", None), tuple(int(i) for i in idx))
        return ("context_window", id(win))
    ad = transformer_options.get("ad_params")
    if isinstance(ad, dict) and ad.get("sub_idxs") is not None:
        return ("ad_params", tuple(int(i) for i in ad["sub_idxs"]))
    return None


def _state(transformer_options: Any) -> CacheState | None:
    if not isinstance(transformer_options, dict):
        return None
    st = transformer_options.get(KEY)
    return st if isinstance(st, CacheState) and st.running else None


def _start_call(st: CacheState, to: dict, x):
    """Start a call; ``x`` is also the adaptive schedule's probe (U-Net: the model input; DiT: the hidden
    state entering the cached block range)."""
    slots, shape_key, win = call_keys(to, x)
    step = st.step_from_sigmas(to.get("sigmas"), to.get("sample_sigmas"))
    return st.start_call(step, slots, shape_key, win, probe=x)


# -- wrappers -----------------------------------------------------------------------------------------
def _copy_nested(d: dict) -> dict:
    """Same as the host's ``create_model_options_clone``: dicts copied recursively, lists copied."""
    out = d.copy()
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _copy_nested(v)
        elif isinstance(v, list):
            out[k] = v.copy()
    return out


def outer_sample_wrapper(executor, *args, **kwargs):
    """``OUTER_SAMPLE``: fresh state per run; summary + reset + restore in ``finally``."""
    guider = executor.class_obj
    orig_model_options = guider.model_options
    guider.model_options = _copy_nested(orig_model_options)
    to = guider.model_options.setdefault("transformer_options", {})
    state: CacheState | None = None
    try:
        template = to.get(KEY)
        if isinstance(template, CacheState):
            state = template.clone()
            to[KEY] = state
            sigmas = args[3]
            state.begin_run(len(sigmas) - 1, device=getattr(guider.model_patcher, "load_device", None))
        return executor(*args, **kwargs)
    finally:
        if state is not None:
            state.finish_run()
            state.reset()
        guider.model_options = orig_model_options


def apply_model_wrapper(executor, *args, **kwargs):
    """``APPLY_MODEL``: wall time of whole model calls, attributed to full or cache calls."""
    to = args[5] if len(args) > 5 else kwargs.get("transformer_options")
    st = _state(to)
    if st is None:
        return executor(*args, **kwargs)
    x = args[0]
    token = st.timing_begin(getattr(x, "device", None))
    out = executor(*args, **kwargs)
    st.timing_end(token)
    return out


def unet_diffusion_model_wrapper(executor, *args, **kwargs):
    """``DIFFUSION_MODEL`` for ``UNetModel``: host forward on full calls, shallow forward on cache calls."""
    to = args[5] if len(args) > 5 else None
    st = _state(to)
    if st is None:
        return executor(*args, **kwargs)
    x = args[0]
    depth = st.info["depth"]
    call = _start_call(st, to, x)
    try:
        if call.mode == CACHE:
            h_deep = st.fetch_feature(call, UNET_FEATURE, fresh=comfy_unet_wants_fresh(to))
            tindex = st.feature_meta(call, UNET_FEATURE)
            x_, timesteps, context, y, control = args[:5]
            return comfy_unet_cached_forward(executor.class_obj, x_, timesteps, context, y, control, to,
                                             depth=depth, h_deep=h_deep, transformer_index=tindex, **kwargs)
        if call.mode == FULL and call.store:
            captured: dict = {}
            out = comfy_unet_full_forward(executor, args, kwargs, depth, captured)
            if "h" in captured:
                st.store_feature(call, UNET_FEATURE, captured["h"], owned=True,
                                 meta=captured.get("transformer_index"))
            return out
        return executor(*args, **kwargs)
    finally:
        st.end_call(call)


def make_dit_patch(i: int, first: int, last: int, previous=None):
    """The ``("double_block", i)`` replacement for block ``i`` of the cached range."""
    def lightcache_dit_block(args: dict, extra: dict) -> dict:
        def run_block(a=args):
            if previous is not None:
                return previous(a, extra)
            return extra["original_block"](a)

        st = _state(args.get("transformer_options"))
        if st is None:
            return run_block()
        x = args["img"]
        if i == first:
            call = _start_call(st, args["transformer_options"], x)
        else:
            call = st.current
        holder = {}

        def run():
            holder["out"] = run_block()
            return holder["out"]["img"]

        try:
            img = run_cached_block(st, call, i, first, last, x, run)
        finally:
            if i == last and call is not None:
                st.end_call(call)
        out = dict(holder.get("out") or {})
        out["img"] = img
        return out

    lightcache_dit_block.avlab_lightcache = True
    return lightcache_dit_block


# -- installation on a ModelPatcher clone ------------------------------------------------------------------
def apply_to_model_patcher(model, config: LightCacheConfig, wrappers_mp, node: str = NODE):
    """``model.clone()`` with LightCache wired in (``wrappers_mp`` = the host's ``WrappersMP``).

    Raises :class:`NodeInputError` for bad settings or a model it cannot cache (before cloning).
    """
    diffusion_model = model.get_model_object("diffusion_model")
    template = make_state(diffusion_model, config, node)
    m = model.clone()
    m.model_options.setdefault("transformer_options", {})[KEY] = template
    m.add_wrapper_with_key(wrappers_mp.OUTER_SAMPLE, KEY, outer_sample_wrapper)
    m.add_wrapper_with_key(wrappers_mp.APPLY_MODEL, KEY, apply_model_wrapper)
    cfg = template.config
    if cfg.chunking:
        from .chunking import chunkable_sites, make_chunking_wrapper

        if not any(chunkable_sites(diffusion_model).values()):
            logger.warning("%s: feature chunking has nothing to chunk in %s; it runs unchunked", node,
                           type(diffusion_model).__name__)
        # registered first, so the cache wrapper (and its shallow forward) runs inside it
        m.add_wrapper_with_key(wrappers_mp.DIFFUSION_MODEL, KEY,
                               make_chunking_wrapper(cfg.temporal_chunks, cfg.spatial_chunks))
    if template.info["kind"] == UNET:
        m.add_wrapper_with_key(wrappers_mp.DIFFUSION_MODEL, KEY, unet_diffusion_model_wrapper)
    else:
        first, last = template.info["first"], template.info["last"]
        existing = (m.model_options.get("transformer_options", {}).get("patches_replace", {})
                    .get("dit", {}))
        for i in range(first, last + 1):
            m.set_model_patch_replace(make_dit_patch(i, first, last, existing.get(("double_block", i))),
                                      "dit", "double_block", i)
    return m
