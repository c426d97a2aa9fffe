"""Helpers shared by every AVLab system (host-free: torch / numpy / PyAV only).

* :mod:`.errors`   — :class:`NodeInputError`, the one error type for bad node inputs.
* :mod:`.media`    — IMAGE/MASK/AUDIO ⇄ core tensors, resampling, fps handling, mp4 writing.
* :mod:`.training` — the shared training loop (single process or ``torchrun``/DDP).
"""

from .errors import NodeInputError

__all__ = ["NodeInputError"]
