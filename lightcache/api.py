"""Library use without ComfyUI: :func:`apply` LightCache to a diffusers model, get a removable handle.

Supported: ``UNetSpatioTemporalConditionModel`` (SVD), ``UNetMotionModel`` (AnimateDiff),
``UNet2DConditionModel`` (U-Net branch caching, :mod:`.unet_cache`) and ``WanTransformer3DModel``
(DiT block caching, :mod:`.dit_cache`). diffusers is never imported here; models are recognised by
their structure / class name.

Step index. A sampling loop is wrapped in ``with handle.run(num_steps):``. Inside it, a model call
whose timestep value differs from the previous call's starts the next step; calls with the same
timestep (cond and uncond run separately, several context windows) belong to the same step and are
told apart by their position in it. Loops where the timestep does not change once per step (Heun,
restarts) call :meth:`LightCacheHandle.set_step` before each step instead. Outside ``run()`` the model
computes exactly as without LightCache. ``run()`` resets the cache on entry and in ``finally``.

    handle = lightcache.apply(pipe.unet, LightCacheConfig(cache_interval=3))
    with handle.run(num_steps=25):
        frames = pipe(image, num_inference_steps=25).frames
    handle.remove()   # the model is exactly as before

Feature chunking (``temporal_chunks`` / ``spatial_chunks`` > 1) is installed first through
:func:`.chunking.install_chunking`, then the cache overrides on top; :meth:`remove` undoes them in
reverse order.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from torch import nn

from ..common.errors import NodeInputError
from .cache import CacheState, LightCacheConfig
from .dit_cache import DIFFUSERS_DIT_BLOCKS, DIT_FEATURE, diffusers_dit_blocks, dit_range, install_diffusers_dit_gates
from .unet_cache import UNET_FEATURE, install_diffusers_unet_gates, is_diffusers_unet, plan_diffusers_unet

logger = logging.getLogger(__name__)

API = "lightcache.apply"


class LightCacheHandle:
    """LightCache applied to one module. Use :meth:`run` around sampling; :meth:`remove` to undo."""

    def __init__(self, module: nn.Module, state: CacheState):
        self.module = module
        self.state = state
        self._overrides: list = []
        self._hooks: list = []
        self._chunking = None
        self._step = -1
        self._slot = 0
        self._last_t: float | None = None
        self._explicit: int | None = None
        self._token = None
        self.last_summary: str | None = None

    @property
    def config(self) -> LightCacheConfig:
        return self.state.config

    @property
    def chunking(self):
        """The :class:`~.chunking.ChunkingHandle` (``None`` when chunking is off)."""
        return self._chunking

    # -- sampling runs ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, num_steps: int) -> Iterator["LightCacheHandle"]:
        """Cache across the model calls of one sampling run of ``num_steps`` steps."""
        if not self._hooks:
            raise RuntimeError("LightCache handle was removed")
        device = next((p.device for p in self.module.parameters()), torch.device("cpu"))
        self.state.begin_run(num_steps, device=device)
        self._step, self._slot, self._last_t, self._explicit = -1, 0, None, None
        try:
            yield self
        finally:
            self.last_summary = self.state.finish_run()
            self.state.reset()
            self._explicit = self._token = None

    def set_step(self, step: int) -> None:
        """Declare the step index of the following model calls (overrides timestep counting)."""
        self._explicit = int(step)

    def summary(self) -> str:
        return self.state.summary()

    # -- hooks -----------------------------------------------------------------------------------------
    def _pre_hook(self, module, args, kwargs):
        st = self.state
        if not st.running:
            return None
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        t = kwargs["timestep"] if "timestep" in kwargs else (args[1] if len(args) > 1 else None)
        if self._explicit is not None:
            step = self._explicit
        else:
            tval = None if t is None else float(torch.as_tensor(t).flatten()[0])
            step = self._step
            if self._last_t is None or tval != self._last_t:
                step = self._step + 1
            self._last_t = tval
        if step != self._step:
            self._step, self._slot = step, 0
        shape_key = (tuple(sample.shape), str(sample.dtype))
        self._token = st.timing_begin(sample.device)
        st.start_call(step, [("call", self._slot)], shape_key, None, probe=sample)
        self._slot += 1
        return None

    def _post_hook(self, module, args, kwargs, output):
        st = self.state
        call = st.current
        if call is not None:
            st.end_call(call)
            if self._token is not None and output is not None:
                st.timing_end(self._token)
        self._token = None
        return None

    # -- removal ---------------------------------------------------------------------------------------
    def remove(self) -> None:
        """Restore the module exactly (idempotent)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for o in reversed(self._overrides):
            o.restore()
        self._overrides = []
        if self._chunking is not None:
            self._chunking.remove()
            self._chunking = None
        self.state.reset()

    def __enter__(self) -> "LightCacheHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def apply(module: nn.Module, config: LightCacheConfig | None = None, **overrides) -> LightCacheHandle:
    """Apply LightCache to a diffusers U-Net or Wan transformer.

    Args:
        module: ``UNetSpatioTemporalConditionModel``, ``UNetMotionModel``, ``UNet2DConditionModel`` or
            ``WanTransformer3DModel``.
        config: a :class:`LightCacheConfig` (defaults: see :class:`LightCacheConfig`).
        **overrides: fields replacing those of ``config`` (e.g. ``cache_interval=2``).

    Returns:
        A :class:`LightCacheHandle`: sample inside ``with handle.run(num_steps):``; ``remove()`` restores.

    Raises:
        NodeInputError: bad settings, a ``cache_depth`` outside the model's range, or a model class
            LightCache cannot cache (named in the message).
    """
    config = (config or LightCacheConfig()).with_(**overrides).validated(API)
    name = type(module).__name__
    if is_diffusers_unet(module):
        try:
            plan = plan_diffusers_unet(module, config.cache_depth)
        except ValueError as exc:
            raise NodeInputError(API, "cache_depth", str(exc), config.cache_depth) from None
        state = CacheState(config, names=(f"{UNET_FEATURE}.0",), description=f"{name} branch {config.cache_depth}",
                           info={"kind": "unet", "depth": config.cache_depth, "boundary": plan.boundary})
        install = lambda: install_diffusers_unet_gates(module, plan, state)  # noqa: E731
    else:
        blocks = diffusers_dit_blocks(module)
        if blocks is None:
            raise NodeInputError(API, "module", "a diffusers UNetSpatioTemporalConditionModel, UNetMotionModel, "
                                 f"UNet2DConditionModel or one of {sorted(DIFFUSERS_DIT_BLOCKS)}", name)
        try:
            first, last = dit_range(len(blocks), config.cache_depth)
        except ValueError as exc:
            raise NodeInputError(API, "cache_depth", str(exc), config.cache_depth) from None
        state = CacheState(config, names=(DIT_FEATURE,), description=f"{name} blocks {first}-{last} of {len(blocks)}",
                           info={"kind": "dit", "first": first, "last": last})
        install = lambda: install_diffusers_dit_gates(blocks, first, last, state)  # noqa: E731

    handle = LightCacheHandle(module, state)
    try:
        if config.chunking:
            from .chunking import install_chunking

            handle._chunking = install_chunking(module, config.temporal_chunks, config.spatial_chunks)
        handle._overrides = install()
        handle._hooks = [
            module.register_forward_pre_hook(handle._pre_hook, with_kwargs=True),
            module.register_forward_hook(handle._post_hook, with_kwargs=True, always_call=True),
        ]
    except BaseException:
        handle.remove()
        raise
    return handle


__all__ = ["LightCacheHandle", "apply"]
