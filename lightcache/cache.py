"""LightCache configuration and the per-run cache state (paper 1, "Block caching").

:class:`LightCacheConfig` holds the user's settings and validates them. :class:`CacheState` is the
state holder shared by every integration (ComfyUI wrappers, diffusers hooks) — it follows the host's
own idiom (``comfy_extras/nodes_easycache.py``): ``clone()`` gives a fresh holder with the same
settings, ``reset()`` drops everything cached, and one summary line is logged after each run.

Keys. A cached feature belongs to one *slot* of the batch, one latent shape and one context window:

* slot — ComfyUI: the conditioning's ``uuid`` (``transformer_options["uuids"]``; falls back to
  ``cond_or_uncond``), so cond and uncond of a CFG batch, area conds and CFG = 1 (no uncond) each
  have their own cache, whatever way ``_calc_cond_batch`` happens to batch them at a given step.
  diffusers: the call's position within the step (the n-th model call at one timestep).
* shape — the per-slot batch size and the latent shape (``x.shape[1:]``), so two resolutions (or two
  frame counts) in one run never share a feature.
* window — ComfyUI ``transformer_options["context_window"].index_list`` (``comfy/context_windows.py``
  sets it before each window's model call) or AnimateDiff-Evolved's ``ad_params["sub_idxs"]``.

A call is *full* when the schedule says so **or** any of its slots has nothing cached under its key
(so a new key never reads a stale feature); otherwise it is a *cache* call. Both paths store per
slot and reassemble the batch in the call's slot order. A full call stores only when a later step
of the run is a cache step (interval 1 stores nothing and runs the host's code path untouched).

Log line (one per run): steps whose every call reused the cache, cache calls / all calls, misses
(a scheduled cache step that had to run full because its key had nothing stored), the denoiser
speed-up estimated from measured per-call wall time (medians of full and cache calls; on CUDA the
compute stream is synchronised around each call only with ``verbose``, so the estimate is rough
without it), the peak bytes held by the cache and where.

Adaptive schedule (``schedule="adaptive"``, :mod:`.adaptive`): inside the cache window every call
whose keys all hold a feature asks each key's :class:`~.adaptive.ReuseEstimator` for the predicted
error of reuse at this call's probe; it reuses only if every slot is within ``adaptive_error`` and
none has reused ``cache_interval - 1`` times in a row. The estimators are part of the state:
``reset()`` (end of a run, error, interrupt) forgets them.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any, Hashable, Sequence

import torch

from ..common.errors import NodeInputError
from .adaptive import ReuseEstimator, probe as make_probe
from .schedule import ADAPTIVE, SCHEDULES, full_step_mask, step_index
from .swap import SWAP_MODES, FeatureStore, resolve_swap

logger = logging.getLogger(__name__)

NODE = "AVLab LightCache"
#: defaults chosen on the tune half of the benchmark zoo (``benchmarks/lightcache_zoo.py``): the adaptive
#: setting reusing the most model calls with a worst tune-cell PSNR ≥ 40 dB (30 dB + a 10 dB margin: an
#: unseen tiny Wan measured ~11 dB more sensitive to caching than the zoo); see the README
DEFAULT_ADAPTIVE_ERROR = 0.1
DEFAULT_CACHE_INTERVAL = 6

FULL = "full"
CACHE = "cache"
OFF = "off"


@dataclass(frozen=True)
class LightCacheConfig:
    """Settings of one LightCache application.

    Args:
        cache_interval: fixed schedules: a full step every ``cache_interval`` steps (2–3 keep quality;
            the default 6 is meant for the adaptive schedule); adaptive: a full step at least every
            ``cache_interval`` steps. 1 = no reuse (exactly uncached).
        cache_depth: U-Net — the branch id: skip connections ``0..cache_depth`` (ComfyUI
            ``input_blocks[0..cache_depth]``) form the shallow path that always runs; with SD-style
            levels of 2 res blocks this is DeepCache's ``cache_branch_id``. DiT — the number of leading
            *and* trailing blocks that always run; blocks ``[cache_depth, N - cache_depth)`` are cached
            (0 = the whole stack, as the official EasyAnimate code does).
        start_percent, end_percent: caching only for steps with ``start <= i / steps <= end``.
        schedule: ``"adaptive"`` (default), ``"uniform"`` or ``"non-uniform"`` (see :mod:`.schedule`).
        adaptive_error: adaptive schedule only — the largest predicted relative L1 error of a reused
            feature (:mod:`.adaptive`); 0 = never reuse. Ignored by the fixed schedules.
        swap: ``"auto"`` (swap to pinned CPU memory when the model runs on CUDA), ``"on"``, ``"off"``.
        temporal_chunks, spatial_chunks: feature chunking (see :mod:`.chunking`); 1 = off.
        verbose: log every call's decision.
    """

    cache_interval: int = DEFAULT_CACHE_INTERVAL
    cache_depth: int = 0
    start_percent: float = 0.0
    end_percent: float = 1.0
    schedule: str = ADAPTIVE
    swap: str = "auto"
    temporal_chunks: int = 1
    spatial_chunks: int = 1
    verbose: bool = False
    adaptive_error: float = DEFAULT_ADAPTIVE_ERROR

    def validated(self, node: str = NODE) -> "LightCacheConfig":
        """Return ``self`` or raise :class:`NodeInputError` naming the bad input."""
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.cache_interval) or self.cache_interval < 1:
            raise NodeInputError(node, "cache_interval", "an integer >= 1 (1 = no caching)", self.cache_interval)
        if not is_int(self.cache_depth) or self.cache_depth < 0:
            raise NodeInputError(node, "cache_depth", "an integer >= 0", self.cache_depth)
        for name in ("start_percent", "end_percent"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise NodeInputError(node, name, "a number in [0, 1]", v)
        if self.start_percent >= self.end_percent:
            raise NodeInputError(node, "start_percent", f"less than end_percent ({self.end_percent})",
                                 self.start_percent)
        if self.schedule not in SCHEDULES:
            raise NodeInputError(node, "schedule", f"one of {list(SCHEDULES)}", self.schedule)
        v = self.adaptive_error
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 10.0:
            raise NodeInputError(node, "adaptive_error", "a number in [0, 10] (0 = never reuse)", v)
        if self.swap not in SWAP_MODES:
            raise NodeInputError(node, "swap", f"one of {list(SWAP_MODES)}", self.swap)
        for name in ("temporal_chunks", "spatial_chunks"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise NodeInputError(node, name, "an integer >= 1 (1 = no chunking)", v)
        return self

    def with_(self, **changes) -> "LightCacheConfig":
        return replace(self, **changes)

    @property
    def chunking(self) -> bool:
        return self.temporal_chunks > 1 or self.spatial_chunks > 1


@dataclass
class Call:
    """One model call: its step, keys and decision, plus scratch space for the integration."""

    step: int | None
    slots: tuple
    base: tuple          # (per-slot shape key, window key)
    mode: str = OFF
    store: bool = False  # a full call whose features a later step of the run will reuse
    scratch: dict = field(default_factory=dict)

    def key(self, name: str, slot: Hashable) -> tuple:
        return (name, slot) + self.base


@dataclass
class RunStats:
    steps: int = 0
    full_steps: set = field(default_factory=set)
    cached_steps: set = field(default_factory=set)
    full_calls: int = 0
    cached_calls: int = 0
    off_calls: int = 0
    misses: int = 0
    t_full: list = field(default_factory=list)
    t_cached: list = field(default_factory=list)
    predicted_errors: list = field(default_factory=list)  # adaptive: predicted error of each reuse

    @property
    def skipped_steps(self) -> int:
        return len(self.cached_steps - self.full_steps)

    def speedup(self) -> float | None:
        """Denoiser speed-up estimated from per-call wall time (medians of full and cache calls)."""
        if not self.t_full or not self.t_cached:
            return None if not self.t_full else 1.0
        mf, mc = statistics.median(self.t_full), statistics.median(self.t_cached)
        n_f, n_c = len(self.t_full), len(self.t_cached)
        denom = n_f * mf + n_c * mc
        return (n_f + n_c) * mf / denom if denom > 0 else None


class CacheState:
    """The LightCache state holder (EasyCache idiom: ``clone()`` / ``reset()``; see module docstring).

    Args:
        config: validated :class:`LightCacheConfig`.
        names: feature names this integration caches (e.g. ``("unet",)``), released before full steps.
        description: what is cached (for the log line), e.g. ``"U-Net branch 0"``.
    """

    name = "LightCache"

    def __init__(self, config: LightCacheConfig, names: Sequence[str] = (), description: str = "",
                 info: dict | None = None):
        self.config = config
        self.names = tuple(names)
        self.description = description
        self.info = dict(info or {})  # integration constants (model kind, depth, block range)
        self.reset()

    # -- EasyCache-style holder API ----------------------------------------------------------------
    def clone(self) -> "CacheState":
        return type(self)(self.config, self.names, self.description, self.info)

    def __deepcopy__(self, memo):  # ModelPatcher.clone() deep-copies model_options
        return self.clone()

    def reset(self) -> "CacheState":
        """Forget everything cached and all per-run counters (safe to call at any time)."""
        store = getattr(self, "store", None)
        if store is not None:
            store.clear()
        self.store: FeatureStore | None = None
        self.running = False
        self.mask: list[bool] = []
        self._last_cache_step = -1
        self.num_steps = 0
        self.stats = RunStats()
        self.meta: dict[Hashable, Any] = {}
        self.current: Call | None = None
        self._sigmas_obj = None
        self._sigmas_list: list[float] = []
        self._last_step: int | None = None
        self._timed: list[Call] | None = None  # calls started since timing_begin
        self._full_step: int | None = None      # the full step whose calls are running
        self._order: list[tuple] = []           # (slots, base) of the calls of the last full step, in order
        self.estimators: dict[tuple, ReuseEstimator] = {}  # adaptive schedule: per cache key
        return self

    # -- run lifecycle -----------------------------------------------------------------------------
    def begin_run(self, num_steps: int, device: torch.device | str | None = None) -> "CacheState":
        """Start a sampling run of ``num_steps`` steps on ``device`` (resets first)."""
        self.reset()
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.store = FeatureStore(dev, offload=resolve_swap(self.config.swap, dev))
        self.set_num_steps(num_steps)
        self.running = True
        return self

    def set_num_steps(self, num_steps: int) -> None:
        num_steps = max(int(num_steps), 0)
        if num_steps != self.num_steps or not self.mask:
            c = self.config
            self.num_steps = num_steps
            self.mask = full_step_mask(num_steps, c.cache_interval, c.start_percent, c.end_percent, c.schedule)
            self._last_cache_step = max((i for i, full in enumerate(self.mask) if not full), default=-1)
            self.stats.steps = num_steps

    def is_full_step(self, step: int) -> bool:
        return step < 0 or step >= len(self.mask) or self.mask[step]

    def step_from_sigmas(self, sigmas, sample_sigmas) -> int | None:
        """Step index of the current call from ComfyUI's ``sigmas`` / ``sample_sigmas`` (None if absent)."""
        if sigmas is None or sample_sigmas is None:
            return None
        if sample_sigmas is not self._sigmas_obj:
            self._sigmas_obj = sample_sigmas
            self._sigmas_list = [float(v) for v in torch.as_tensor(sample_sigmas).flatten().tolist()]
            self.set_num_steps(len(self._sigmas_list) - 1)
        sigma = float(torch.as_tensor(sigmas).flatten()[0])
        step = step_index(sigma, self._sigmas_list, prev=self._last_step)
        self._last_step = step
        return step

    # -- per call ----------------------------------------------------------------------------------
    def start_call(self, step: int | None, slots: Sequence[Hashable], shape_key: tuple,
                   window_key: Hashable = None, probe: torch.Tensor | None = None) -> Call:
        """Decide full / cache for one model call and remember it as :attr:`current`.

        ``probe`` (adaptive schedule): the tensor the reuse decision looks at, batch = the call's
        slots in order (see :mod:`.adaptive`); without it an adaptive call runs full.
        """
        call = Call(step=step, slots=tuple(slots), base=(shape_key, window_key))
        if not self.running or step is None or self.store is None:
            call.mode = OFF
            self.stats.off_calls += 1
        else:
            want_full = self.is_full_step(step)
            cached = all(call.key(n, s) in self.store for n in self.names for s in call.slots)
            if not want_full and not cached:
                self.stats.misses += 1
            if self.config.schedule == ADAPTIVE and probe is not None:
                call.scratch["probes"] = self._slot_probes(call, probe)
                if not want_full and cached:
                    want_full = not self._adaptive_reuse(call)
            call.mode = CACHE if (not want_full and cached) else FULL
            if call.mode == FULL:
                call.store = step < self._last_cache_step
                self.stats.full_calls += 1
                self.stats.full_steps.add(step)
                if step != self._full_step:       # the first call of a new full step: nothing stale stays
                    self._full_step = step        # on the device through this step's peak
                    self._order = []
                    self.store.drop_stale()
                self._order.append((call.slots, call.base))
            else:
                self.stats.cached_calls += 1
                self.stats.cached_steps.add(step)
                self._prefetch(call.slots, call.base)          # this call's features (if not yet)
                nxt = self._next_in_order(call)
                if nxt is not None:
                    self._prefetch(*nxt)                       # and the next call's, one ahead
        if self.config.verbose:
            logger.info("%s [verbose] step %s slots %s shape %s window %s -> %s%s", self.name, step,
                        list(call.slots), shape_key, window_key, call.mode,
                        (f" (predicted error {call.scratch['predicted_error']:.4f})"
                         if "predicted_error" in call.scratch else ""))
        self.current = call
        if self._timed is not None:
            self._timed.append(call)
        return call

    # -- adaptive schedule ---------------------------------------------------------------------------
    @staticmethod
    def _slot_probes(call: Call, x: torch.Tensor) -> list[torch.Tensor]:
        n = len(call.slots)
        per = x.shape[0] // n
        return [make_probe(x if n == 1 else x.narrow(0, i * per, per)) for i in range(n)]

    def _estimator_key(self, call: Call, slot: Hashable) -> tuple:
        return call.key(self.names[0] if self.names else "", slot)

    def _adaptive_reuse(self, call: Call) -> bool:
        """True when every slot's predicted error is within ``adaptive_error`` and under the run cap."""
        errors = []
        for slot, xp in zip(call.slots, call.scratch["probes"]):
            est = self.estimators.get(self._estimator_key(call, slot))
            if est is None or est.run + 1 >= self.config.cache_interval:
                return False
            err = est.predicted_error(xp)
            if err is None or err > self.config.adaptive_error:
                return False
            errors.append(err)
        for slot in call.slots:
            self.estimators[self._estimator_key(call, slot)].run += 1
        call.scratch["predicted_error"] = max(errors)
        self.stats.predicted_errors.append(max(errors))
        return True

    def _observe_full(self, call: Call, slot_index: int, slot: Hashable, feature: torch.Tensor) -> None:
        probes = call.scratch.get("probes")
        if probes is None:
            return
        est = self.estimators.setdefault(self._estimator_key(call, slot), ReuseEstimator())
        est.observe_full(probes[slot_index], make_probe(feature))

    def _prefetch(self, slots, base) -> None:
        for n in self.names:
            for s in slots:
                self.store.prefetch((n, s) + base)

    def _next_in_order(self, call: Call):
        """The (slots, base) of the call that followed this one in the last full step (calls repeat in
        the same order every step: cond/uncond batches, context windows), or None."""
        here = (call.slots, call.base)
        for i, item in enumerate(self._order):
            if item == here:
                return self._order[(i + 1) % len(self._order)] if len(self._order) > 1 else None
        return None

    def end_call(self, call: Call) -> None:
        """Finish a call: a cache call's features leave the device after use (swap on)."""
        if call.mode == CACHE and self.store is not None:
            for n in self.names:
                for s in call.slots:
                    self.store.release_device(call.key(n, s))
        call.scratch.clear()
        if self.current is call:
            self.current = None

    def store_feature(self, call: Call, name: str, tensor: torch.Tensor, owned: bool = False,
                      meta: Any = None) -> None:
        """Store ``tensor`` (batch = the call's slots, in order) per slot."""
        n = len(call.slots)
        per = tensor.shape[0] // n
        for i, slot in enumerate(call.slots):
            part = tensor if n == 1 else tensor.narrow(0, i * per, per)
            self.store.put(call.key(name, slot), part, owned=owned, meta=meta)
            if self.names and name == self.names[0]:
                self._observe_full(call, i, slot, part)

    def fetch_feature(self, call: Call, name: str, fresh: bool = False) -> torch.Tensor:
        """The cached feature for the call's slots, reassembled along dim 0.

        ``fresh=True`` guarantees the caller may modify the result in place (a copy if needed).
        """
        parts = [self.store.get(call.key(name, s)) for s in call.slots]
        if len(parts) == 1:
            return parts[0].clone() if fresh else parts[0]
        return torch.cat(parts, dim=0)

    def feature_meta(self, call: Call, name: str) -> Any:
        return self.store.meta(call.key(name, call.slots[0])) if self.store is not None else None

    # -- timing (whole model calls) ----------------------------------------------------------------
    def timing_begin(self, device: torch.device | None = None) -> tuple:
        if self.config.verbose:  # exact per-call times on CUDA cost two synchronisations per call
            _sync(device)
        self._timed = []
        return (time.perf_counter(), device)

    def timing_end(self, token: tuple) -> None:
        t0, device = token
        if self.config.verbose:
            _sync(device)
        dt = time.perf_counter() - t0
        modes = {c.mode for c in (self._timed or [])}
        self._timed = None
        if CACHE in modes and FULL not in modes:
            self.stats.t_cached.append(dt)
        elif FULL in modes and CACHE not in modes:
            self.stats.t_full.append(dt)

    # -- summary -----------------------------------------------------------------------------------
    def summary(self) -> str:
        s = self.stats
        total = s.full_calls + s.cached_calls
        sp = s.speedup()
        sp_txt = f"{sp:.2f}x" if sp is not None else "n/a"
        store = self.store
        size = _fmt_bytes(store.peak_bytes if store is not None else 0)
        where = store.location if store is not None else "nowhere"
        c = self.config
        sched = c.schedule
        if sched == ADAPTIVE:
            worst = max(s.predicted_errors, default=0.0)
            sched = f"adaptive (error <= {c.adaptive_error:g}, largest predicted {worst:.3f}, at most {c.cache_interval - 1} reuses in a row)"
        return (f"{self.name} - skipped {s.skipped_steps}/{s.steps} steps ({s.cached_calls}/{total} model "
                f"calls reused the cache, {s.misses} cache misses); est. denoiser speed-up {sp_txt} "
                f"(per-call wall time); cache {size} peak in {where}; {self.description}, "
                f"interval {c.cache_interval}, {sched}, steps {c.start_percent:.2f}-{c.end_percent:.2f}")

    def finish_run(self) -> str:
        """Log the one summary line of this run and return it (never raises)."""
        try:
            line = self.summary()
        except Exception as exc:  # noqa: BLE001 - a log line must never fail a finished run
            line = f"{self.name} - summary unavailable ({exc})"
        logger.info(line)
        return line


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
