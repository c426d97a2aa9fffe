"""Memory estimates checked before a large allocation, so a node refuses instead of exhausting RAM.

Not a paper method: the guard every node uses before it allocates an output whose size follows
from its inputs (frames × height × width × channels, samples × channels, ...). The refusal is a
:class:`~avlab.common.errors.NodeInputError` that says how much memory the inputs would need, how
much is available, and which input to lower.
"""

from __future__ import annotations

import os

from .errors import NodeInputError

#: Share of the available memory one node may claim for its outputs (the rest is left to the host,
#: the models it holds and the copies ComfyUI makes between nodes).
DEFAULT_SHARE = 0.5

_ENV_LIMIT = "AVLAB_MEMORY_LIMIT_GB"


def available_bytes() -> int:
    """Memory this process can still allocate: ``AVLAB_MEMORY_LIMIT_GB`` when set, else the kernel's
    ``MemAvailable`` (Linux), else physical memory (``sysconf``), else 8 GiB."""
    env = os.environ.get(_ENV_LIMIT)
    if env:
        return int(float(env) * 2**30)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def format_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``; ``3 * 2**30`` → ``"3.0 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(node: str, input_name: str, needed_bytes: int, what: str, *,
                 share: float = DEFAULT_SHARE, available: int | None = None) -> None:
    """Refuse when ``needed_bytes`` exceeds ``share`` of the available memory.

    Args:
        node: the node (or CLI command) that would allocate.
        input_name: the input (or flag) the user should lower, e.g. ``"frames"`` or ``"--size"``.
        needed_bytes: the estimate of what the inputs would allocate.
        what: what is being allocated, e.g. ``"120 frames of 2048×2048 RGB float32"``.
        share: fraction of the available memory allowed.
        available: override of :func:`available_bytes` (tests).
    """
    avail = available_bytes() if available is None else available
    budget = int(avail * share)
    if needed_bytes > budget:
        raise NodeInputError(
            node, input_name,
            f"a value whose output fits in memory: {what} needs about {format_bytes(needed_bytes)}, "
            f"but only {format_bytes(budget)} may be used ({share:.0%} of {format_bytes(avail)} "
            f"available; set {_ENV_LIMIT} to change). Lower '{input_name}'")
