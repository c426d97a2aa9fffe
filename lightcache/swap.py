"""Where cached features live between steps: asynchronous cache swapping (paper 1, "Asynchronous
cache swapping").

LightCache keeps cached feature maps in CPU memory between full steps and copies them back to the
GPU ahead of use, so the cache costs no GPU memory at the peak (the full step). The official code
only offloads the whole model; this store does what the paper describes:

* :meth:`FeatureStore.put` (after a full step computed a feature): the copy to a **pinned** host
  buffer is queued on a side CUDA stream with ``non_blocking=True`` after the compute stream's
  work so far; the source tensor is kept alive for that stream (``record_stream``) and nothing on
  the GPU is retained. Host buffers are allocated once per key and reused at every later full step
  (same shape and dtype), so steady state allocates no host memory.
* :meth:`FeatureStore.prefetch` (called at the start of the call that needs the feature, and for
  the next call's feature one call ahead): the copy back is queued on the side stream into a device
  tensor, followed by a CUDA event.
* :meth:`FeatureStore.get`: the compute stream waits on that event (no host sync) and receives the
  device tensor; :meth:`release_device` drops it when the call that used it ends, and
  :meth:`drop_stale` drops every device copy at the start of a full step, i.e. before the peak.

The API and the call sequence are identical without swapping (``offload=False``: the tensor itself,
or a private copy, stays where it is and ``prefetch`` / ``release_device`` do nothing to it) and on
a CPU device (``offload=True`` on CPU copies into reused host buffers with no streams or events,
which keeps the buffer logic testable without a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable

import torch

SWAP_MODES = ("auto", "on", "off")


def resolve_swap(swap: str, device: torch.device | str | None) -> bool:
    """True when features should be swapped to pinned host memory (``auto`` = the model runs on CUDA)."""
    if swap not in SWAP_MODES:
        raise ValueError(f"swap must be one of {SWAP_MODES}, got {swap!r}")
    is_cuda = device is not None and torch.device(device).type == "cuda"
    return is_cuda and swap in ("auto", "on")


@dataclass
class _Entry:
    host: torch.Tensor | None = None    # pinned (CUDA) / plain (CPU) host copy, reused across puts
    dev: torch.Tensor | None = None     # device copy in use (or the tensor itself when not offloading)
    event: Any = None                   # CUDA event after the prefetch copy
    dev_stream_recorded: bool = False
    meta: Any = None


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


class FeatureStore:
    """Cached features by key, on the device or swapped to host memory (see the module docstring).

    Args:
        device: the device the model computes on.
        offload: keep features in host memory between steps (pinned + side stream on CUDA).
    """

    def __init__(self, device: torch.device | str = "cpu", offload: bool = False):
        self.device = torch.device(device)
        self.offload = bool(offload)
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(device=self.device) if (self.offload and self._cuda) else None
        self._entries: dict[Hashable, _Entry] = {}
        self.peak_bytes = 0
        self.host_allocations = 0

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def location(self) -> str:
        if self.offload and self._cuda:
            return "CPU pinned memory (async swap)"
        if self.offload or self.device.type == "cpu":
            return "CPU memory"
        return f"{self.device.type.upper()} memory"

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(e.host) + (_nbytes(e.dev) if e.dev is not e.host else 0)
                   for e in self._entries.values())

    def _track(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def __contains__(self, key: Hashable) -> bool:
        e = self._entries.get(key)
        return e is not None and (e.host is not None or e.dev is not None)

    def meta(self, key: Hashable) -> Any:
        e = self._entries.get(key)
        return None if e is None else e.meta

    def keys(self):
        return list(self._entries)

    def clear(self) -> None:
        """Forget everything (host buffers included); waits for queued copies first."""
        if self._stream is not None:
            self._stream.synchronize()
        self._entries.clear()

    # -- the swap ------------------------------------------------------------------------------
    def put(self, key: Hashable, tensor: torch.Tensor, *, owned: bool = False, meta: Any = None) -> None:
        """Store ``tensor`` (computed on a full step) under ``key``.

        ``owned=True`` promises nobody will modify ``tensor`` later, so it may be kept without a copy.
        """
        e = self._entries.setdefault(key, _Entry())
        e.meta = meta
        e.event, e.dev_stream_recorded = None, False
        if not self.offload:
            e.host = None
            e.dev = tensor if owned else tensor.clone()
            self._track()
            return
        e.dev = None
        if e.host is None or e.host.shape != tensor.shape or e.host.dtype != tensor.dtype:
            e.host = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=self._cuda)
            self.host_allocations += 1
        if self._stream is None:  # CPU: a plain copy into the reused buffer
            e.host.copy_(tensor)
        else:
            src = tensor if owned else tensor.clone()  # a later in-place op must not race the copy
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                e.host.copy_(src, non_blocking=True)
            src.record_stream(self._stream)
        self._track()

    def prefetch(self, key: Hashable) -> None:
        """Start bringing ``key`` back to the device (no-op if it is already there)."""
        e = self._entries.get(key)
        if e is None or e.dev is not None or e.host is None:
            return
        if self._stream is None:
            e.dev = e.host  # CPU: the host buffer is the device tensor
        else:
            with torch.cuda.stream(self._stream):
                dev = torch.empty(e.host.shape, dtype=e.host.dtype, device=self.device)
                dev.copy_(e.host, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(self._stream)
            e.dev, e.event = dev, ev
        self._track()

    def get(self, key: Hashable) -> torch.Tensor:
        """The device tensor for ``key``, ordered after its prefetch (prefetches now if needed)."""
        if key not in self:
            raise KeyError(key)
        e = self._entries[key]
        if e.dev is None:
            self.prefetch(key)
        if e.event is not None:
            cur = torch.cuda.current_stream(self.device)
            cur.wait_event(e.event)
            e.event = None
            if not e.dev_stream_recorded:
                e.dev.record_stream(cur)
                e.dev_stream_recorded = True
        return e.dev

    def release_device(self, key: Hashable) -> None:
        """Drop the device copy of an offloaded feature (after its use; before a full step's peak)."""
        e = self._entries.get(key)
        if e is not None and self.offload and e.host is not None:
            e.dev, e.event, e.dev_stream_recorded = None, None, False

    def drop_stale(self) -> None:
        """Start of a new full step: every stored feature is about to be recomputed, so none may sit
        on the device at this step's peak. Offloaded features lose their device copy (the host copy
        stays until the new ``put``); kept-on-device features (no swap) are dropped outright, so the old
        and the new feature never coexist."""
        for e in self._entries.values():
            if self.offload and e.host is not None:
                e.dev, e.event, e.dev_stream_recorded = None, None, False
            else:
                e.dev = None

    def resident_keys(self) -> list[Hashable]:
        """Keys whose feature is on the compute device right now (device accounting; on a CPU device an
        offloaded feature counts while it is prefetched, i.e. between ``prefetch`` and ``release_device``)."""
        return [k for k, e in self._entries.items() if e.dev is not None]

    def synchronize(self) -> None:
        """Wait for queued swap copies (used in tests and before reading host buffers)."""
        if self._stream is not None:
            self._stream.synchronize()

    def host_buffer(self, key: Hashable) -> torch.Tensor | None:
        """The reused host buffer of ``key`` (``None`` when not offloading)."""
        e = self._entries.get(key)
        return None if e is None else e.host
