"""Feature chunking for video diffusion networks (LightCache, paper 1 "Feature chunking").

No layer should hold the activations of the whole video at once. Ops that act on each frame
independently are run on a few frames at a time, ops that act on each pixel's time line
independently are run on a few pixels at a time. Every chunked op is per-sample along the chunked
axis, so the result is the unchunked result (up to float summation order, ≤ 1e-5 in fp32).

The two counts, and the axis each one splits:

* ``temporal_chunks`` (official default 9) — the **batch×frames axis** (dim 0 of ``[(B·T), C, H, W]``)
  through *spatial* ops: ResBlocks, spatial transformers (self/cross attention inside one frame),
  up/down-samplers. It also splits the **token axis** of per-token feed-forwards: a DiT's FFN
  (dim 1 of ``[B, L, C]``; the official code spends its "temporal" count there too) and the FFNs
  inside temporal blocks (dim 1, frames, of a ``[pixels, T, C]`` chunk) — an FFN widens C 4–8×,
  so it is the largest intermediate of a transformer block.
* ``spatial_chunks`` (official default 2) — the **spatial (pixel/token) axis** (dim 0 of
  ``[(B·H·W), T, C]``, or dim 1 of ``[(B·T), H·W, C]``) through *temporal* ops: temporal attention
  blocks of motion modules and SVD's time-mixing transformer blocks.

A count of ``n`` splits an axis of length ``N`` into ``min(n, N)`` nearly equal chunks; ``1``
turns chunking of that axis off. What is covered (everything else runs as before):

==========================  ==========================================================  ==========
model                        module (its forward, or ``_forward`` for ComfyUI ResBlocks)  count
==========================  ==========================================================  ==========
ComfyUI ``UNetModel``        ``ResBlock``, spatial part of ``VideoResBlock``,            temporal
                             ``SpatialTransformer``, ``Upsample``/``Downsample``,
                             spatial blocks of ``SpatialVideoTransformer``
                             ``SpatialVideoTransformer.time_stack`` blocks               spatial
                             their ``ff_in`` / ``ff`` (frame axis)                       temporal
ComfyUI ``UNetModel`` +      motion-module blocks (``TemporalTransformerBlock`` inside   spatial
AnimateDiff-Evolved          ``TemporalTransformer3DModel``; pixel axis)
                             their ``ff`` (pixel axis of the chunk)                       temporal
ComfyUI ``WanModel``         ``WanAttentionBlock.ffn`` (token axis)                       temporal
diffusers                    ``ResnetBlock2D`` (also SVD's ``spatial_res_block``),       temporal
``UNetMotionModel`` /        ``Transformer2DModel``, ``Upsample2D``/``Downsample2D``,
``UNetSpatioTemporal...``    spatial blocks of ``TransformerSpatioTemporalModel``
                             motion-module (``AnimateDiffTransformer3D`` /               spatial
                             ``TransformerTemporalModel``) blocks,
                             ``TemporalBasicTransformerBlock`` (token axis)
                             their ``ff_in`` / ``ff`` (frame axis)                       temporal
diffusers                    ``WanTransformerBlock.ffn`` (token axis)                     temporal
``WanTransformer3DModel``
==========================  ==========================================================  ==========

Deliberately left whole: temporal ResBlocks (``VideoResBlock.time_stack``, diffusers
``TemporalResnetBlock``) and motion modules' own GroupNorm — their statistics span frames *and*
pixels, so no chunking of either axis is exact; Wan self/cross attention — every query attends to
all tokens and the fused attention kernels are already memory-efficient, so chunking queries would
buy little for a second copy of q.

AnimateDiff in ComfyUI comes from another pack, AnimateDiff-Evolved, which inserts its motion
modules into the U-Net's blocks; they are recognised by class name and module
(``<pack>.animatediff.motion_module_ad``, whatever the pack's folder is called), never imported.
Their ``TemporalTransformerBlock`` (``[(B·T), H·W, C]``; attention runs ``(b f) d c -> (b d) f c``,
so each pixel's frames attend only to each other; positional encoding per frame; norms and FFN per
token) is run on pixel chunks; per-pixel ``scale_masks`` are sliced with it, and an
``attention_mask``, a CameraCtrl effect tensor or camera features make it run whole. The module's
``GroupNorm``, ``proj_in`` and ``proj_out`` around the blocks run whole.

Frames normalised together: AnimateDiff-Evolved replaces ``GroupNorm.forward`` during the U-Net
call for v1 motion modules, PIA and v2 modules applied "improperly", so that every GroupNorm
normalises all frames of a video at once. The batch×frames axis of a module that holds a GroupNorm
is then not per-sample: while ``GroupNorm.forward`` (torch's, or ComfyUI's cast path) is not the
original, such modules run whole (counted as fallbacks), which keeps the result exact.

Mechanism: :func:`install_chunking` gives each covered module *instance* its own ``forward``
(ComfyUI ResBlocks: ``_forward``, which ``ResBlock.forward`` calls through ``self``) — a closure
over the bound method that was in effect at install time. ``nn.Module.__call__`` looks ``forward``
up on the instance, so the chunked path really runs (the official code captured the old bound
method before swapping classes, so its chunked classes never ran); :class:`ChunkStats` counts it.
:meth:`ChunkingHandle.remove` deletes exactly what was added, leaving every ``__dict__`` as before.
ComfyUI ``ModelPatcher`` clones share one torch module, so in the host install per sampling call:
:func:`make_chunking_wrapper` gives a ``WrappersMP.DIFFUSION_MODEL`` wrapper that installs around the
executor and removes in ``finally``. ComfyUI attention patches (IP-Adapter style ``attn1/attn2``
patches and replacements) may index the full batch, so a transformer whose ``transformer_options``
carry them runs unchunked (counted as a fallback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..common.errors import NodeInputError

logger = logging.getLogger(__name__)

DEFAULT_TEMPORAL_CHUNKS = 9
DEFAULT_SPATIAL_CHUNKS = 2

TEMPORAL = "temporal"
SPATIAL = "spatial"

_NODE = "AVLab LightCache"

# ComfyUI transformer patches that see (and may index) the whole batch.
_BATCH_SENSITIVE_PATCHES = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch",
                            "middle_patch")


@dataclass
class ChunkStats:
    """Instrumentation: how often the chunked path ran.

    ``calls``: calls into a chunked site; ``chunked_calls``: calls that were split;
    ``chunk_runs``: invocations of the original forward on a chunk; ``fallbacks``: calls that ran
    whole although chunking was requested (unsplittable argument or batch-sensitive patch).
    """

    calls: int = 0
    chunked_calls: int = 0
    chunk_runs: int = 0
    fallbacks: int = 0
    by_kind: dict = field(default_factory=lambda: {TEMPORAL: 0, SPATIAL: 0})

    def add(self, other: "ChunkStats") -> None:
        self.calls += other.calls
        self.chunked_calls += other.chunked_calls
        self.chunk_runs += other.chunk_runs
        self.fallbacks += other.fallbacks
        for k, v in other.by_kind.items():
            self.by_kind[k] = self.by_kind.get(k, 0) + v


class _Unsplittable(Exception):
    """An argument or output whose layout the runner cannot split/assemble: run whole."""


# --------------------------------------------------------------------------------------------
# class matching without importing comfy or diffusers


def _is(module: nn.Module, where: str, *names: str) -> bool:
    """True when ``module``'s class or a base class is named one of ``names`` and defined in ``where``.

    ``where`` is a top-level package (``"diffusers"``: its module layout moves between versions) or a
    dotted module path (``"comfy.ldm.modules.attention"``: ComfyUI reuses class names elsewhere).
    """
    for cls in type(module).__mro__:
        if cls.__name__ not in names:
            continue
        mod = cls.__module__
        if mod == where or ("." not in where and mod.split(".", 1)[0] == where):
            return True
    return False


_OPENAI = "comfy.ldm.modules.diffusionmodules.openaimodel"
_ATTENTION = "comfy.ldm.modules.attention"
_WAN = "comfy.ldm.wan.model"
#: AnimateDiff-Evolved's motion modules; the pack's own folder name is the top-level package and
#: differs between installs (``ComfyUI-AnimateDiff-Evolved``, ``comfyui-animatediff-evolved``...).
_ADE_MOTION = "animatediff.motion_module_ad"


def _is_ade(module: nn.Module, *names: str) -> bool:
    """True for AnimateDiff-Evolved classes ``names`` (defined in ``*.animatediff.motion_module_ad``)."""
    for cls in type(module).__mro__:
        if cls.__name__ in names and (cls.__module__ == _ADE_MOTION
                                      or cls.__module__.endswith("." + _ADE_MOTION)):
            return True
    return False


# --------------------------------------------------------------------------------------------
# GroupNorm replaced by the host (frames normalised together)

_TORCH_GROUP_NORM_FORWARD = nn.GroupNorm.forward


def _replaced(cls: type, name: str) -> bool:
    """True when the ``name`` a class resolves to was assigned from outside (not written in the body of
    the class that holds it: a method's ``__qualname__`` is its class's qualname + ``.name``)."""
    for klass in cls.__mro__:
        fn = klass.__dict__.get(name)
        if fn is not None:
            qualname = getattr(fn, "__qualname__", None)
            return qualname is not None and qualname != f"{klass.__qualname__}.{name}"
    return False


def _group_norm_replaced(norms: list[nn.Module]) -> bool:
    """True while ``GroupNorm.forward`` (torch's, or a ComfyUI op's cast path) is not the original.

    AnimateDiff-Evolved swaps it in during the U-Net call for v1 / PIA / "improper" v2 motion modules
    so that a GroupNorm normalises all frames of a video together (``(b f) c h w -> b c f h w``).
    """
    if not norms:
        return False
    if nn.GroupNorm.forward is not _TORCH_GROUP_NORM_FORWARD:
        return True
    return any(_replaced(cls, name) for cls in {type(n) for n in norms}
               for name in ("forward", "forward_comfy_cast_weights"))


# --------------------------------------------------------------------------------------------
# splitting and assembling


def _bounds(total: int, n_chunks: int) -> list[tuple[int, int]]:
    k = max(1, min(n_chunks, total))
    edges = [(i * total) // k for i in range(k + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _split_aligned(value: Any, total: int, a: int, b: int) -> Any:
    """Rows ``a:b`` of a per-sample argument (tensors, or containers of them) along dim 0."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if torch.is_tensor(value):
        if value.ndim == 0 or value.shape[0] == 1:
            return value  # broadcast over the batch
        if value.shape[0] == total:
            return value[a:b]
        raise _Unsplittable(f"leading dim {value.shape[0]} != {total}")
    if isinstance(value, (list, tuple)):
        return type(value)(_split_aligned(v, total, a, b) for v in value)
    if isinstance(value, dict):
        return {k: _split_aligned(v, total, a, b) for k, v in value.items()}
    return value


def _check_aligned(value: Any, total: int) -> None:
    _split_aligned(value, total, 0, total)


class _Assembler:
    """Writes per-chunk outputs into one preallocated output (no ``torch.cat`` double peak)."""

    def __init__(self, first: Any, total: int, length: int, dim: int):
        self.dim, self.total = dim, total
        self.kind, self.out = self._alloc(first, total, length, dim)
        self.write(first, 0, length)

    def _alloc(self, first, total, length, dim):
        if torch.is_tensor(first):
            return "tensor", self._buffer(first, total, length, dim)
        if isinstance(first, (tuple, list)) and not dataclasses.is_dataclass(first):
            if not all(v is None or torch.is_tensor(v) for v in first):
                raise _Unsplittable("output tuple holds non-tensors")
            return "seq", [None if v is None else self._buffer(v, total, length, dim) for v in first]
        if dataclasses.is_dataclass(first):
            bufs = {}
            for f in dataclasses.fields(first):
                v = getattr(first, f.name)
                if v is None:
                    continue
                if not torch.is_tensor(v):
                    raise _Unsplittable("output dataclass holds non-tensors")
                bufs[f.name] = self._buffer(v, total, length, dim)
            self._template = first
            return "dataclass", bufs
        raise _Unsplittable(f"output of type {type(first).__name__}")

    @staticmethod
    def _buffer(t: torch.Tensor, total: int, length: int, dim: int) -> torch.Tensor:
        if t.ndim <= dim or t.shape[dim] != length:
            raise _Unsplittable("output not aligned with the chunked axis")
        shape = list(t.shape)
        shape[dim] = total
        return torch.empty(shape, dtype=t.dtype, device=t.device)

    def write(self, chunk_out: Any, a: int, b: int) -> None:
        if self.kind == "tensor":
            self.out.narrow(self.dim, a, b - a).copy_(chunk_out)
        elif self.kind == "seq":
            for buf, v in zip(self.out, chunk_out):
                if buf is not None:
                    buf.narrow(self.dim, a, b - a).copy_(v)
        else:
            for name, buf in self.out.items():
                buf.narrow(self.dim, a, b - a).copy_(getattr(chunk_out, name))

    def result(self) -> Any:
        if self.kind == "tensor":
            return self.out
        if self.kind == "seq":
            return tuple(self.out)
        return dataclasses.replace(self._template, **self.out)


def _run_chunks(inner: Callable, chunk_calls: list[tuple[int, int, tuple, dict]], total: int, dim: int,
                stats: ChunkStats, kind: str) -> Any:
    """Run ``inner`` on each prepared chunk and assemble along ``dim``."""
    asm = None
    for a, b, args, kwargs in chunk_calls:
        out = inner(*args, **kwargs)
        stats.chunk_runs += 1
        if asm is None:
            asm = _Assembler(out, total, b - a, dim)
        else:
            asm.write(out, a, b)
        del out
    stats.chunked_calls += 1
    stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
    return asm.result()


# --------------------------------------------------------------------------------------------
# runners: (inner, n_chunks, args, kwargs, stats, site) -> output


def _comfy_patch_free(arguments: dict) -> bool:
    """False when ComfyUI ``transformer_options`` carry patches that may index the full batch."""
    opts = arguments.get("transformer_options") or {}
    patches = opts.get("patches") or {}
    if any(patches.get(k) for k in _BATCH_SENSITIVE_PATCHES):
        return False
    replace = opts.get("patches_replace") or {}
    return not (replace.get("attn1") or replace.get("attn2"))


class _BatchRunner:
    """Split the first argument and the named per-sample arguments along dim 0."""

    def __init__(self, aligned: tuple[str, ...] = (), guard: Callable[[dict], bool] | None = None,
                 after: Callable[[dict, torch.Tensor], None] | None = None):
        self.aligned, self.guard, self.after = aligned, guard, after

    def __call__(self, site: "_Site", args: tuple, kwargs: dict) -> Any:
        bound = site.signature.bind(*args, **kwargs)
        arguments = bound.arguments
        x = arguments[site.primary]
        total = x.shape[0] if torch.is_tensor(x) and x.ndim > 0 else 0
        if total < 2 or site.n_chunks < 2:
            return site.inner(*args, **kwargs)
        try:
            if self.guard is not None and not self.guard(arguments):
                raise _Unsplittable("batch-sensitive patch")
            if _group_norm_replaced(site.group_norms):
                raise _Unsplittable("GroupNorm replaced by the host: frames are normalised together")
            for name in self.aligned:
                if name in arguments:
                    _check_aligned(arguments[name], total)
            calls = []
            for a, b in _bounds(total, site.n_chunks):
                ba = inspect.BoundArguments(bound.signature, dict(arguments))
                ba.arguments[site.primary] = x[a:b]
                for name in self.aligned:
                    if name in ba.arguments:
                        ba.arguments[name] = _split_aligned(arguments[name], total, a, b)
                calls.append((a, b, ba.args, ba.kwargs))
            out = _run_chunks(site.inner, calls, total, 0, site.stats, site.kind)
        except _Unsplittable as why:
            site.fallback(str(why))
            return site.inner(*args, **kwargs)
        if self.after is not None:
            self.after(arguments, x)
        return out


class _TokenRunner:
    """Split the token axis (dim 1 of ``[B, L, C]``) of a per-token op that takes only that tensor."""

    def __call__(self, site: "_Site", args: tuple, kwargs: dict) -> Any:
        bound = site.signature.bind(*args, **kwargs)
        x = bound.arguments[site.primary]
        others = [v for k, v in bound.arguments.items() if k != site.primary and torch.is_tensor(v)]
        if not torch.is_tensor(x) or x.ndim < 3 or x.shape[1] < 2 or site.n_chunks < 2 or others:
            return site.inner(*args, **kwargs)
        total = x.shape[1]
        calls = []
        for a, b in _bounds(total, site.n_chunks):
            ba = inspect.BoundArguments(bound.signature, dict(bound.arguments))
            ba.arguments[site.primary] = x[:, a:b]
            calls.append((a, b, ba.args, ba.kwargs))
        try:
            return _run_chunks(site.inner, calls, total, 1, site.stats, site.kind)
        except _Unsplittable as why:
            site.fallback(str(why))
            return site.inner(*args, **kwargs)


class _TemporalBlockRunner:
    """diffusers ``TemporalBasicTransformerBlock``: ``[(B·T), S, C]`` split along S (dim 1).

    Its ``encoder_hidden_states`` is per pixel, ``[(B·S), L, C]``: each chunk takes its pixels'
    rows (viewed as ``[B, S, L, C]``).
    """

    def __call__(self, site: "_Site", args: tuple, kwargs: dict) -> Any:
        bound = site.signature.bind(*args, **kwargs)
        arguments = bound.arguments
        x = arguments[site.primary]  # [(B·T), S, C]
        num_frames = arguments.get("num_frames")
        if (not torch.is_tensor(x) or x.ndim != 3 or x.shape[1] < 2 or site.n_chunks < 2
                or not isinstance(num_frames, int) or num_frames < 1 or x.shape[0] % num_frames):
            return site.inner(*args, **kwargs)
        batch, seq = x.shape[0] // num_frames, x.shape[1]
        ctx = arguments.get("encoder_hidden_states")
        if ctx is not None and not (torch.is_tensor(ctx) and ctx.shape[0] in (1, batch * seq)):
            site.fallback("encoder_hidden_states not per pixel")
            return site.inner(*args, **kwargs)
        calls = []
        for a, b in _bounds(seq, site.n_chunks):
            ba = inspect.BoundArguments(bound.signature, dict(arguments))
            ba.arguments[site.primary] = x[:, a:b]
            if ctx is not None and ctx.shape[0] == batch * seq and batch * seq > 1:
                c = ctx.reshape(batch, seq, *ctx.shape[1:])[:, a:b]  # [B, s, L, C]
                ba.arguments["encoder_hidden_states"] = c.reshape(batch * (b - a), *ctx.shape[1:])
            calls.append((a, b, ba.args, ba.kwargs))
        try:
            return _run_chunks(site.inner, calls, seq, 1, site.stats, site.kind)
        except _Unsplittable as why:
            site.fallback(str(why))
            return site.inner(*args, **kwargs)


class _MotionBlockRunner:
    """AnimateDiff-Evolved ``TemporalTransformerBlock``: ``[(B·T), S, C]`` split along the pixels S (dim 1).

    ``scale_masks`` (one per attention block, ``None`` or ``[(n·S), T, 1]``: rows per batch entry
    and pixel, as the attention's ``(b d)`` rows) are sliced to the chunk's pixels. An
    ``attention_mask``, a CameraCtrl effect tensor or camera features (``mm_kwargs``) make it run whole.
    """

    def __call__(self, site: "_Site", args: tuple, kwargs: dict) -> Any:
        bound = site.signature.bind(*args, **kwargs)
        arguments = bound.arguments
        x = arguments[site.primary]  # [(B·T), S, C]
        if not torch.is_tensor(x) or x.ndim != 3 or x.shape[1] < 2 or site.n_chunks < 2:
            return site.inner(*args, **kwargs)
        seq = x.shape[1]
        try:
            if torch.is_tensor(arguments.get("attention_mask")):
                raise _Unsplittable("attention_mask")
            if torch.is_tensor(arguments.get("cameractrl_effect")):
                raise _Unsplittable("CameraCtrl effect tensor")
            mm_kwargs = arguments.get("mm_kwargs")
            if isinstance(mm_kwargs, dict) and any(v is not None for v in mm_kwargs.values()):
                raise _Unsplittable("camera features")
            masks = arguments.get("scale_masks")
            if masks is not None and not isinstance(masks, (list, tuple)):
                raise _Unsplittable("scale_masks")
            for m in masks or ():
                if m is not None and not (torch.is_tensor(m) and m.ndim >= 1 and m.shape[0] % seq == 0):
                    raise _Unsplittable("scale_mask not per pixel")
            calls = []
            for a, b in _bounds(seq, site.n_chunks):
                ba = inspect.BoundArguments(bound.signature, dict(arguments))
                ba.arguments[site.primary] = x[:, a:b]
                if masks is not None and any(m is not None for m in masks):
                    ba.arguments["scale_masks"] = [
                        None if m is None else
                        m.reshape(m.shape[0] // seq, seq, *m.shape[1:])[:, a:b].reshape(-1, *m.shape[1:])
                        for m in masks]
                calls.append((a, b, ba.args, ba.kwargs))
            return _run_chunks(site.inner, calls, seq, 1, site.stats, site.kind)
        except _Unsplittable as why:
            site.fallback(str(why))
            return site.inner(*args, **kwargs)


def _restore_activations_shape(arguments: dict, x: torch.Tensor) -> None:
    opts = arguments.get("transformer_options")
    if isinstance(opts, dict) and "activations_shape" in opts:
        opts["activations_shape"] = list(x.shape)


_COMFY_CTX = _BatchRunner(("context",), guard=_comfy_patch_free)
_COMFY_SPATIAL_TRANSFORMER = _BatchRunner(("context",), guard=_comfy_patch_free,
                                          after=_restore_activations_shape)
_COMFY_RESBLOCK = _BatchRunner(("emb",))
_PLAIN = _BatchRunner(())
_DIFFUSERS_RESNET = _BatchRunner(("temb",))
_DIFFUSERS_BLOCK = _BatchRunner(("attention_mask", "encoder_hidden_states", "encoder_attention_mask",
                                 "timestep", "cross_attention_kwargs", "class_labels",
                                 "added_cond_kwargs"))
_DIFFUSERS_T2D = _DIFFUSERS_BLOCK
_TOKENS = _TokenRunner()
_TEMPORAL_BLOCK = _TemporalBlockRunner()
_MOTION_BLOCK = _MotionBlockRunner()


# --------------------------------------------------------------------------------------------
# sites


class _Site:
    """One module whose ``attr`` (``forward`` / ``_forward``) is replaced by a chunked closure."""

    def __init__(self, module: nn.Module, attr: str, kind: str, runner, n_chunks: int,
                 stats: ChunkStats):
        self.module, self.attr, self.kind, self.runner = module, attr, kind, runner
        self.n_chunks, self.stats = n_chunks, stats
        self._had_own = attr in module.__dict__
        self._prev = module.__dict__.get(attr)
        self.inner = getattr(module, attr)  # what ran before: instance override or bound class method
        try:
            self.signature = inspect.signature(self.inner)
            self.primary = next(iter(self.signature.parameters))
        except (TypeError, ValueError, StopIteration) as exc:
            raise _Unsplittable(f"no usable signature for {type(module).__name__}.{attr}") from exc
        # GroupNorms inside (see _group_norm_replaced): the batch axis is per-sample only while
        # nobody has swapped GroupNorm.forward
        self.group_norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
        self.active = True
        self._warned = False
        site = self

        def chunked_forward(*args, **kwargs):
            if not site.active:
                return site.inner(*args, **kwargs)
            site.stats.calls += 1
            return site.runner(site, args, kwargs)

        self.fn = chunked_forward
        object.__setattr__(module, attr, chunked_forward)

    def fallback(self, why: str) -> None:
        self.stats.fallbacks += 1
        if not self._warned:
            self._warned = True
            logger.debug("LightCache chunking: %s runs whole (%s)", type(self.module).__name__, why)

    def restore(self) -> None:
        self.active = False
        current = self.module.__dict__.get(self.attr)
        if current is not self.fn:
            # Someone wrapped on top of us: leave theirs; ours now passes straight through.
            logger.warning("LightCache chunking: %s.%s was re-wrapped after install; left in place "
                           "as a pass-through", type(self.module).__name__, self.attr)
            return
        if self._had_own:
            object.__setattr__(self.module, self.attr, self._prev)
        else:
            object.__delattr__(self.module, self.attr)


def _ffn_sites(blocks) -> list[tuple[nn.Module, str, str, Any]]:
    """The per-token feed-forwards (``ff_in``, ``ff``) of temporal blocks: their token axis.

    Inside a temporal block a chunk is ``[pixels, T, C]``; its FFN expands C 4–8× and is the
    largest intermediate, so its frame axis is split by ``temporal_chunks`` as well.
    """
    sites = []
    for block in blocks:
        for name in ("ff_in", "ff"):
            ff = getattr(block, name, None)
            if isinstance(ff, nn.Module):
                sites.append((ff, "forward", TEMPORAL, _TOKENS))
    return sites


def _plan(model: nn.Module) -> list[tuple[nn.Module, str, str, Any]]:
    """(module, attr, kind, runner) for every covered module under ``model``."""
    plan: list[tuple[nn.Module, str, str, Any]] = []

    def visit(m: nn.Module) -> None:
        # ---- ComfyUI (comfy.ldm...) ----
        if _is(m, _ATTENTION, "SpatialVideoTransformer"):
            plan.extend((b, "forward", TEMPORAL, _COMFY_CTX) for b in m.transformer_blocks)
            plan.extend((b, "forward", SPATIAL, _COMFY_CTX) for b in m.time_stack)
            plan.extend(_ffn_sites(m.time_stack))
            return
        if _is(m, _ATTENTION, "SpatialTransformer"):
            plan.append((m, "forward", TEMPORAL, _COMFY_SPATIAL_TRANSFORMER))
            return
        if _is(m, _OPENAI, "ResBlock"):
            # VideoResBlock: `_forward` is the spatial part; its `time_stack` is left whole.
            plan.append((m, "_forward", TEMPORAL, _COMFY_RESBLOCK))
            return
        if _is(m, _OPENAI, "Upsample", "Downsample"):
            plan.append((m, "forward", TEMPORAL, _PLAIN))
            return
        if _is(m, _WAN, "WanAttentionBlock") and isinstance(getattr(m, "ffn", None), nn.Module):
            plan.append((m.ffn, "forward", TEMPORAL, _TOKENS))
            return
        # ---- AnimateDiff-Evolved motion modules (inside a ComfyUI UNetModel) ----
        if _is_ade(m, "TemporalTransformer3DModel") and isinstance(getattr(m, "transformer_blocks", None),
                                                                   nn.ModuleList):
            plan.extend((b, "forward", SPATIAL, _MOTION_BLOCK) for b in m.transformer_blocks)
            plan.extend(_ffn_sites(m.transformer_blocks))
            return
        # ---- diffusers ----
        if _is(m, "diffusers", "TransformerSpatioTemporalModel"):
            plan.extend((b, "forward", TEMPORAL, _DIFFUSERS_BLOCK) for b in m.transformer_blocks)
            plan.extend((b, "forward", SPATIAL, _TEMPORAL_BLOCK) for b in m.temporal_transformer_blocks)
            plan.extend(_ffn_sites(m.temporal_transformer_blocks))
            return
        if _is(m, "diffusers", "SpatioTemporalResBlock"):
            plan.append((m.spatial_res_block, "forward", TEMPORAL, _DIFFUSERS_RESNET))
            return
        if _is(m, "diffusers", "ResnetBlock2D"):
            plan.append((m, "forward", TEMPORAL, _DIFFUSERS_RESNET))
            return
        if _is(m, "diffusers", "Transformer2DModel"):
            plan.append((m, "forward", TEMPORAL, _DIFFUSERS_T2D))
            return
        if _is(m, "diffusers", "AnimateDiffTransformer3D", "TransformerTemporalModel"):
            plan.extend((b, "forward", SPATIAL, _DIFFUSERS_BLOCK) for b in m.transformer_blocks)
            plan.extend(_ffn_sites(m.transformer_blocks))
            return
        if _is(m, "diffusers", "Upsample2D", "Downsample2D"):
            plan.append((m, "forward", TEMPORAL, _PLAIN))
            return
        if _is(m, "diffusers", "WanTransformerBlock") and isinstance(getattr(m, "ffn", None), nn.Module):
            plan.append((m.ffn, "forward", TEMPORAL, _TOKENS))
            return
        for child in m.children():
            visit(child)

    visit(model)
    return plan


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NodeInputError(_NODE, name, "an integer >= 1 (1 = no chunking of that axis)", value)
    return value


class ChunkingHandle:
    """The installed chunking of one model: :meth:`remove` restores every module exactly.

    Also a context manager (removes on exit). ``stats`` counts the chunked path;
    ``sites`` maps axis kind -> number of chunked modules.
    """

    def __init__(self, model: nn.Module, sites: list[_Site], stats: ChunkStats):
        self.model, self._sites, self.stats = model, sites, stats

    @property
    def num_sites(self) -> int:
        return len(self._sites)

    @property
    def sites(self) -> dict[str, int]:
        out = {TEMPORAL: 0, SPATIAL: 0}
        for s in self._sites:
            out[s.kind] += 1
        return out

    @property
    def active(self) -> bool:
        return bool(self._sites)

    def remove(self) -> None:
        """Restore every patched module (idempotent)."""
        sites, self._sites = self._sites, []
        for site in reversed(sites):
            site.restore()

    def __enter__(self) -> "ChunkingHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def install_chunking(model: nn.Module, temporal_chunks: int = DEFAULT_TEMPORAL_CHUNKS,
                     spatial_chunks: int = DEFAULT_SPATIAL_CHUNKS, *, strict: bool = False,
                     stats: ChunkStats | None = None) -> ChunkingHandle:
    """Chunk the covered modules of ``model`` in place (see the module docstring).

    Args:
        model: ComfyUI ``UNetModel`` / ``WanModel``, diffusers ``UNetMotionModel`` /
            ``UNetSpatioTemporalConditionModel`` / ``WanTransformer3DModel`` (or any module
            containing the covered blocks).
        temporal_chunks: chunks of the batch×frames axis (DiT: token axis) through spatial ops.
        spatial_chunks: chunks of the spatial axis through temporal ops.
        strict: raise :class:`NodeInputError` naming the model class when nothing is covered
            (otherwise that is logged and the returned handle does nothing).
        stats: counters to add to (a fresh :class:`ChunkStats` otherwise).

    Returns:
        A :class:`ChunkingHandle`; call ``remove()`` (or use it as a context manager).
    """
    temporal_chunks = _check_count(temporal_chunks, "temporal_chunks")
    spatial_chunks = _check_count(spatial_chunks, "spatial_chunks")
    counts = {TEMPORAL: temporal_chunks, SPATIAL: spatial_chunks}
    stats = stats if stats is not None else ChunkStats()
    plan = [p for p in _plan(model) if counts[p[2]] > 1]
    if not plan:
        covered = bool(_plan(model))
        if strict and not covered:
            raise NodeInputError(_NODE, "model", "a video U-Net or DiT with chunkable blocks "
                                 "(ComfyUI UNetModel/WanModel, diffusers UNetMotionModel/"
                                 "UNetSpatioTemporalConditionModel/WanTransformer3DModel)",
                                 type(model).__name__)
        if not covered:
            logger.info("LightCache chunking: nothing to chunk in %s; running it unchanged",
                        type(model).__name__)
        return ChunkingHandle(model, [], stats)
    sites: list[_Site] = []
    seen: set[tuple[int, str]] = set()
    try:
        for module, attr, kind, runner in plan:
            if (id(module), attr) in seen:
                continue
            seen.add((id(module), attr))
            try:
                sites.append(_Site(module, attr, kind, runner, counts[kind], stats))
            except _Unsplittable as why:
                logger.debug("LightCache chunking: skipped %s (%s)", type(module).__name__, why)
    except BaseException:
        for site in reversed(sites):
            site.restore()
        raise
    return ChunkingHandle(model, sites, stats)


@contextlib.contextmanager
def chunked(model: nn.Module, temporal_chunks: int = DEFAULT_TEMPORAL_CHUNKS,
            spatial_chunks: int = DEFAULT_SPATIAL_CHUNKS, *, stats: ChunkStats | None = None
            ) -> Iterator[ChunkingHandle]:
    """Context manager: ``model`` runs chunked inside the block and is restored on exit (also on error)."""
    handle = install_chunking(model, temporal_chunks, spatial_chunks, stats=stats)
    try:
        yield handle
    finally:
        handle.remove()


def make_chunking_wrapper(temporal_chunks: int = DEFAULT_TEMPORAL_CHUNKS,
                          spatial_chunks: int = DEFAULT_SPATIAL_CHUNKS) -> Callable:
    """A ComfyUI ``WrappersMP.DIFFUSION_MODEL`` wrapper ``(executor, *args, **kwargs)``.

    It chunks ``executor.class_obj`` (the diffusion model) for this one call only and restores it
    in ``finally`` — needed because ModelPatcher clones share the torch module. The returned
    function has a ``stats`` attribute (:class:`ChunkStats`) summed over all calls.
    """
    temporal_chunks = _check_count(temporal_chunks, "temporal_chunks")
    spatial_chunks = _check_count(spatial_chunks, "spatial_chunks")
    totals = ChunkStats()

    def chunking_wrapper(executor, *args, **kwargs):
        model = getattr(executor, "class_obj", None)
        if not isinstance(model, nn.Module):
            return executor(*args, **kwargs)
        with chunked(model, temporal_chunks, spatial_chunks, stats=totals):
            return executor(*args, **kwargs)

    chunking_wrapper.stats = totals
    return chunking_wrapper


def chunkable_sites(model: nn.Module) -> dict[str, int]:
    """How many modules of ``model`` each axis would chunk (for logs and early errors)."""
    out = {TEMPORAL: 0, SPATIAL: 0}
    for _, _, kind, _ in _plan(model):
        out[kind] += 1
    return out
