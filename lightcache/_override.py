"""Small private helpers for the library (diffusers) integrations.

* :class:`ForwardOverride` — gives one module *instance* its own ``forward`` (``nn.Module.__call__``
  looks ``forward`` up on the instance, so the override really runs) and restores the instance's
  ``__dict__`` exactly on :meth:`~ForwardOverride.restore`. The wrapped callable is whatever
  ``module.forward`` was at install time (the class method or another pack's override, e.g. the
  chunking's), so overrides stack and unstack in LIFO order.
* Output templates — the structure and tensor shapes of a module's output on a full step, so that on
  cache steps a skipped module can return zero-cost stand-ins (expanded zero scalars) of the right
  shapes. Their values never reach the output: they only feed other skipped modules.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)


class ForwardOverride:
    """Replace ``module.forward`` by ``make(inner)``; :meth:`restore` undoes it exactly."""

    def __init__(self, module: nn.Module, make: Callable[[Callable], Callable]):
        self.module = module
        self._had_own = "forward" in module.__dict__
        self._prev = module.__dict__.get("forward")
        self.inner = module.forward
        self.fn = make(self.inner)
        object.__setattr__(module, "forward", self.fn)

    def restore(self) -> None:
        current = self.module.__dict__.get("forward")
        if current is not self.fn:
            logger.warning("LightCache: %s.forward was replaced after LightCache was applied; "
                           "left in place", type(self.module).__name__)
            return
        if self._had_own:
            object.__setattr__(self.module, "forward", self._prev)
        else:
            object.__delattr__(self.module, "forward")


# -- output templates ---------------------------------------------------------------------------------
class _T:
    """A tensor leaf in a template: shape/dtype/device and its leaf index."""

    __slots__ = ("shape", "dtype", "device", "index")

    def __init__(self, t: torch.Tensor, index: int):
        self.shape, self.dtype, self.device, self.index = tuple(t.shape), t.dtype, t.device, index


def make_template(out: Any) -> tuple[Any, list[torch.Tensor]]:
    """``(template, leaves)``: tensors replaced by :class:`_T` markers (tuple/list/dict recursed)."""
    leaves: list[torch.Tensor] = []

    def walk(v):
        if isinstance(v, torch.Tensor):
            leaves.append(v)
            return _T(v, len(leaves) - 1)
        if isinstance(v, tuple) and not hasattr(v, "_fields"):
            return tuple(walk(x) for x in v)
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict) and type(v) is dict:
            return {k: walk(x) for k, x in v.items()}
        if _holds_tensor(v):
            raise TypeError(f"unsupported output container {type(v).__name__}")
        return v

    return walk(out), leaves


def _holds_tensor(v: Any) -> bool:
    if isinstance(v, (tuple, list)):
        return any(_holds_tensor(x) for x in v)
    if isinstance(v, dict):
        return any(_holds_tensor(x) for x in v.values())
    return isinstance(v, torch.Tensor) or any(isinstance(x, torch.Tensor) for x in getattr(v, "__dict__", {}).values())


def build(template: Any, leaves: list[torch.Tensor] | None = None, writable: bool = False) -> Any:
    """Rebuild an output from ``template``: real ``leaves`` if given, zero stand-ins otherwise.

    Stand-ins are expanded zero scalars (no memory) unless ``writable`` (the consumer edits them in place).
    """
    def walk(v):
        if isinstance(v, _T):
            if leaves is not None:
                return leaves[v.index]
            if writable:
                return torch.zeros(v.shape, dtype=v.dtype, device=v.device)
            return torch.zeros((), dtype=v.dtype, device=v.device).expand(v.shape)
        if isinstance(v, tuple):
            return tuple(walk(x) for x in v)
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(template)
