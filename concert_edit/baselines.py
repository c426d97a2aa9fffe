"""Statistical shot-length baselines of the when-to-cut model (papers.md §3): a cut is predicted from the
time since the last cut alone.

Both are fitted by maximum likelihood on training shot lengths and answer the when-to-cut question
for a segment ``(α, α + window)`` that starts ``since`` seconds after the last cut:
``P(cut in segment | since) = P(since < L < since + window | L > since)`` for the shot length ``L``.

* :class:`ExponentialShotModel`: ``L ~ Exp(rate)``, MLE ``rate = 1 / mean``. Memoryless: the answer
  ``1 − exp(−rate · window)`` does not depend on ``since`` (a constant-rate cutter).
* :class:`PoissonShotModel`: ``L = k · unit`` with ``k ~ Poisson(μ)`` (shot lengths counted in whole
  ``unit``-second steps, default 1 s), MLE ``μ = mean / unit``. Its hazard grows with ``since``.

``model.when_fn()`` gives the ``when_fn(segment_index, since_cut_s) -> float`` callable of
:mod:`avlab.concert_edit` (the segment is ignored).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ..common.errors import NodeInputError
from .features import SEGMENT_S


def _lengths(shot_lengths: Sequence[float], who: str) -> list[float]:
    x = [float(v) for v in shot_lengths]
    if not x or not all(math.isfinite(v) and v > 0 for v in x):
        raise NodeInputError(who, "shot_lengths", "at least one finite shot length > 0 s", f"{len(x)} values")
    return x


@dataclass(frozen=True)
class ExponentialShotModel:
    """Exponential shot lengths with ``rate`` cuts per second."""

    rate: float

    @classmethod
    def fit(cls, shot_lengths: Sequence[float]) -> "ExponentialShotModel":
        """MLE: ``rate = 1 / mean(shot_lengths)``."""
        x = _lengths(shot_lengths, "ExponentialShotModel.fit")
        return cls(len(x) / sum(x))

    def log_likelihood(self, shot_lengths: Sequence[float]) -> float:
        return sum(math.log(self.rate) - self.rate * v for v in shot_lengths)

    def prob_cut(self, since_cut_s: float, window: float = SEGMENT_S) -> float:
        """``P(cut within the next window | since)``: ``1 − exp(−rate · window)`` for any ``since``."""
        return 1.0 - math.exp(-self.rate * window)

    def when_fn(self, window: float = SEGMENT_S) -> Callable[[int, float], float]:
        return lambda segment_index, since_cut_s: self.prob_cut(since_cut_s, window)

    def to_dict(self) -> dict:
        return {"kind": "exponential", **asdict(self)}


@dataclass(frozen=True)
class PoissonShotModel:
    """Shot lengths ``k · unit`` seconds with ``k ~ Poisson(mu)``."""

    mu: float
    unit: float = 1.0

    @classmethod
    def fit(cls, shot_lengths: Sequence[float], unit: float = 1.0) -> "PoissonShotModel":
        """MLE on the lengths counted in ``unit`` steps: ``mu = mean(shot_lengths) / unit``."""
        x = _lengths(shot_lengths, "PoissonShotModel.fit")
        if not (math.isfinite(unit) and unit > 0):
            raise NodeInputError("PoissonShotModel.fit", "unit", "a step > 0 s", unit)
        return cls(sum(x) / len(x) / unit, float(unit))

    def log_pmf(self, k: int) -> float:
        return k * math.log(self.mu) - self.mu - math.lgamma(k + 1)

    def pmf(self, k: int) -> float:
        return math.exp(self.log_pmf(k)) if k >= 0 else 0.0

    def log_likelihood(self, shot_lengths: Sequence[float]) -> float:
        return sum(self.log_pmf(round(v / self.unit)) for v in shot_lengths)

    def prob_cut(self, since_cut_s: float, window: float = SEGMENT_S) -> float:
        """``P(since < L < since + window | L > since)``; 1 when the model gives no chance to survive
        ``since`` (the shot is overdue)."""
        eps = 1e-9
        k_lo = math.floor(since_cut_s / self.unit + eps) + 1          # first k with k·unit > since
        k_hi = math.ceil((since_cut_s + window) / self.unit - eps) - 1  # last k with k·unit < since + window
        top = max(k_hi, int(self.mu + 20 * math.sqrt(self.mu) + 20))
        tail = [self.pmf(k) for k in range(max(k_lo, 0), top + 1)]
        survive = sum(tail)
        if survive < 1e-300:
            return 1.0
        inside = sum(tail[: max(0, k_hi - max(k_lo, 0) + 1)])
        return min(1.0, inside / survive)

    def when_fn(self, window: float = SEGMENT_S) -> Callable[[int, float], float]:
        return lambda segment_index, since_cut_s: self.prob_cut(since_cut_s, window)

    def to_dict(self) -> dict:
        return {"kind": "poisson", **asdict(self)}
