"""Which denoising steps run the whole network ("full") and which reuse cached features.

LightCache (arXiv 2510.05367, paper 1 "Block caching", DeepCache lineage): on a *full* step the whole
network runs and the deep features are cached; on the following *cache* steps only the shallow
part runs. This module is pure Python (no torch): it turns a step count and the user's settings into
a full/cache mask, and maps the sampler's current sigma to a step index.

Step index. The official code counts U-Net steps with ``scheduler.timesteps.index(t)`` and feeds raw
timesteps to its DiT schedule, which makes the DiT schedule arbitrary. Here the index always comes
from the sampler's own sigma schedule (ComfyUI's ``transformer_options["sample_sigmas"]``): the
current sigma's position in it (:func:`step_index`).

Cache window. Caching is allowed only for steps ``i`` with ``start_percent <= i / num_steps <=
end_percent`` (percent of *steps*, like KSampler's start/end step); every other step is full.
Step 0 is always full (there is nothing cached yet).

Schedules (both place full steps relative to the *anchor*: the last full step before the window, or
step 0 when the window starts there):

* ``"uniform"`` — DeepCache's uniform schedule: a full step every ``cache_interval`` steps.
* ``"non-uniform"`` — front-loaded quadratic: the same number of full steps as ``"uniform"``
  (``ceil(span / interval)``), placed at ``floor(span * (k / K) ** 2)`` (made strictly increasing),
  so full steps are dense early in the window, where the trajectory still changes fast (high noise,
  layout forming), and sparse late, where adjacent steps are nearly identical. Gaps grow from 1 to
  about ``2 * cache_interval - 1``. (DeepCache's own "non-uniform" centres the density on a chosen
  step with a 1.2 power; ours needs no extra knob.)

* ``"adaptive"`` — no fixed placement: every step of the window *may* reuse the cache, and
  :class:`~.cache.CacheState` decides per call from the predicted error of reuse (see
  :mod:`.adaptive`); ``cache_interval`` then caps the run of consecutive reuses (a full step at least
  every ``cache_interval`` steps). The mask marks the window's steps as cache candidates.

``cache_interval == 1`` gives all-full masks for every schedule (tested: interval 1 ≡ no cache).
"""

from __future__ import annotations

import math
from typing import Sequence

UNIFORM = "uniform"
NON_UNIFORM = "non-uniform"
ADAPTIVE = "adaptive"
SCHEDULES = (ADAPTIVE, UNIFORM, NON_UNIFORM)

_EPS = 1e-9


def cache_window(num_steps: int, start_percent: float, end_percent: float) -> tuple[int, int] | None:
    """Inclusive ``(first, last)`` step indices where caching is allowed, or ``None`` if no step is."""
    if num_steps <= 0:
        return None
    lo = max(0, math.ceil(start_percent * num_steps - _EPS))
    hi = min(num_steps - 1, math.floor(end_percent * num_steps + _EPS))
    return (lo, hi) if lo <= hi else None


def _quadratic_positions(span: int, count: int) -> list[int]:
    """``count`` strictly increasing offsets in ``[0, span)``, dense at the start (quadratic)."""
    out: list[int] = []
    for k in range(count):
        p = math.floor(span * (k / count) ** 2)
        if out:
            p = max(p, out[-1] + 1)
        out.append(p)
    return out


def full_step_mask(num_steps: int, cache_interval: int, start_percent: float = 0.0,
                   end_percent: float = 1.0, schedule: str = UNIFORM) -> list[bool]:
    """``mask[i]`` is True when step ``i`` runs the whole network (and refreshes the cache).

    Args:
        num_steps: sampler steps in this run (``len(sample_sigmas) - 1``).
        cache_interval: a full step every ``cache_interval`` steps (1 = never reuse).
        start_percent, end_percent: caching allowed only for ``start <= i / num_steps <= end``.
        schedule: ``"adaptive"``, ``"uniform"`` or ``"non-uniform"`` (see the module docstring); for
            ``"adaptive"`` the mask is True outside the window (always full) and False inside it
            (a candidate, decided per call).
    """
    if cache_interval < 1:
        raise ValueError(f"cache_interval must be >= 1, got {cache_interval}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    mask = [True] * max(num_steps, 0)
    window = cache_window(num_steps, start_percent, end_percent)
    if window is None or cache_interval == 1:
        return mask
    lo, hi = window
    anchor = lo - 1 if lo > 0 else 0  # a step that is full anyway
    span = hi - anchor + 1
    if schedule == ADAPTIVE:
        full = {anchor}
    elif schedule == UNIFORM:
        full = {anchor + r for r in range(0, span, cache_interval)}
    else:
        full = {anchor + r for r in _quadratic_positions(span, math.ceil(span / cache_interval))}
    for i in range(lo, hi + 1):
        mask[i] = i in full
    mask[0] = True
    return mask


def step_index(sigma: float, sample_sigmas: Sequence[float], prev: int | None = None,
               rtol: float = 1e-4) -> int:
    """Index of the sampler step that ``sigma`` belongs to in ``sample_sigmas`` (descending as a rule).

    An exact match (relative tolerance ``rtol``) wins; a sigma between two schedule entries (the
    extra evaluations of Heun/DPM-2/SDE samplers) belongs to the step whose interval contains it.
    When a sigma occurs more than once (restart schedules), the first occurrence at or after ``prev``
    is taken. The result is clamped to ``[0, num_steps - 1]``.
    """
    s = [float(v) for v in sample_sigmas]
    n = len(s) - 1
    if n <= 0:
        return 0

    def pick(candidates: list[int]) -> int:
        if prev is not None:
            later = [j for j in candidates if j >= prev]
            if later:
                return later[0]
        return candidates[0]

    exact = [j for j in range(n + 1) if math.isclose(s[j], sigma, rel_tol=rtol, abs_tol=1e-12)]
    if exact:
        return min(pick(exact), n - 1)
    inside = [j for j in range(n) if min(s[j], s[j + 1]) <= sigma <= max(s[j], s[j + 1])]
    if inside:
        return pick(inside)
    nearest = min(range(n), key=lambda j: abs(s[j] - sigma))
    return nearest
