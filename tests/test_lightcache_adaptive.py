"""Adaptive block caching (LightCache part 2): the reuse estimator, and the adaptive schedule on tiny
diffusers models (the ComfyUI path: ``tests/host/test_lightcache_host.py``)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from avlab import lightcache
from avlab.common.errors import NodeInputError
from avlab.lightcache import LightCacheConfig, full_step_mask
from avlab.lightcache.adaptive import PROBE_SIZE, ReuseEstimator, probe

pytest.importorskip("diffusers")
from test_lightcache_cache import Case, _motion, _wan  # noqa: E402  (the same tiny models)


# -- estimator ------------------------------------------------------------------------------------------
def test_probe_is_a_fixed_strided_float32_subsample():
    t = torch.arange(10000, dtype=torch.float16).reshape(10, 1000)
    p = probe(t)
    assert p.dtype == torch.float32 and p.numel() <= PROBE_SIZE
    assert torch.equal(p[:3], torch.tensor([0.0, 2.0, 4.0]))           # stride 10000 // 4096 = 2
    small = torch.randn(3, 5)
    q = probe(small)
    assert torch.equal(q, small.reshape(-1)) and q.data_ptr() != small.data_ptr()   # a copy


def test_estimator_predicts_k_times_input_change_relative_to_the_feature():
    est = ReuseEstimator()
    x0, f0 = torch.zeros(4), torch.full((4,), 2.0)
    assert est.predicted_error(x0) is None                  # nothing seen
    est.observe_full(x0, f0)
    assert est.predicted_error(x0 + 1) is None              # no sensitivity yet (one full call)
    x1, f1 = torch.full((4,), 0.5), torch.full((4,), 3.0)   # |Δx| = 0.5, |Δf| = 1 → k = 2
    est.observe_full(x1, f1)
    assert est.k == pytest.approx(2.0) and est.run == 0
    # at x = 0.75: k · 0.25 / mean|f1| = 2 · 0.25 / 3
    assert est.predicted_error(torch.full((4,), 0.75)) == pytest.approx(0.5 / 3)
    est.observe_full(x1.clone(), f1 + 5)                    # unchanged input: k is kept
    assert est.k == pytest.approx(2.0)


def test_adaptive_is_the_default_and_its_mask_makes_the_window_candidates():
    assert LightCacheConfig().schedule == "adaptive"
    T, F = True, False
    assert full_step_mask(6, 3, schedule="adaptive") == [T, F, F, F, F, F]
    assert full_step_mask(10, 3, 0.3, 0.7, schedule="adaptive") == [T, T, T, F, F, F, F, F, T, T]
    assert full_step_mask(6, 1, schedule="adaptive") == [T] * 6


@pytest.mark.parametrize("bad", [-0.1, 11.0, "x", True])
def test_bad_adaptive_error_names_the_input(bad):
    with pytest.raises(NodeInputError, match="adaptive_error"):
        LightCacheConfig(adaptive_error=bad).validated()


# -- on tiny diffusers models ----------------------------------------------------------------------------
STEPS = 10


@pytest.fixture(scope="module", params=["motion", "wan"])
def case(request):
    return Case(request.param, {"motion": _motion, "wan": _wan}[request.param])


def _drift_loop(case, handle=None, conds=(0,), fail_at: int | None = None, inspect=None):
    """A sampling-like loop: the input drifts a little each step, the timestep falls."""
    outs = []
    with handle.run(STEPS) if handle is not None else contextlib.nullcontext():
        for i in range(STEPS):
            if fail_at == i:
                raise RuntimeError("boom")
            x = case.x * (1.0 - 0.01 * i) + 0.01 * i
            outs.append({c: case(900.0 - 20.0 * i, c, x) for c in conds})
            if inspect is not None:
                inspect(i, handle)
    return outs


def test_infinitely_strict_knob_is_bit_exact_with_no_cache(case):
    ref = _drift_loop(case, conds=(0, 1))
    with lightcache.apply(case.model, schedule="adaptive", adaptive_error=0.0, cache_interval=50) as handle:
        out = _drift_loop(case, handle, conds=(0, 1))
    assert all(torch.equal(a[c], b[c]) for a, b in zip(ref, out) for c in (0, 1))
    assert f"skipped 0/{STEPS} steps" in handle.last_summary


def test_loose_knob_skips_steps_within_the_run_cap_and_stays_close(case):
    ref = _drift_loop(case)
    decisions = []
    with lightcache.apply(case.model, schedule="adaptive", adaptive_error=10.0, cache_interval=3) as handle:
        out = _drift_loop(case, handle, inspect=lambda i, h: decisions.append(i in h.state.stats.cached_steps))
    assert decisions[:2] == [False, False]          # two full steps before the sensitivity is known
    assert sum(decisions) >= 4                      # a loose knob reuses wherever the cap allows
    runs = "".join("c" if d else "f" for d in decisions)
    assert "ccc" not in runs                        # cache_interval 3: at most 2 reuses in a row
    assert "adaptive (error <= 10" in handle.last_summary
    err = max(float((a[0] - b[0]).abs().mean() / a[0].abs().mean()) for a, b in zip(ref, out))
    assert 0.0 < err < 0.5


def test_a_moderate_knob_reuses_less_than_a_loose_one(case):
    def skipped(error):
        with lightcache.apply(case.model, schedule="adaptive", adaptive_error=error, cache_interval=8) as h:
            _drift_loop(case, h)
        return int(h.last_summary.split("skipped ")[1].split("/")[0])

    assert skipped(0.0) <= skipped(0.02) <= skipped(10.0)
    assert skipped(10.0) > skipped(0.0)


def test_decision_state_is_per_cond_and_forgotten_after_a_run_and_an_error(case):
    seen = {}

    def inspect(i, h):
        seen[i] = {k[1] for k in h.state.estimators}

    handle = lightcache.apply(case.model, schedule="adaptive", adaptive_error=10.0, cache_interval=4)
    try:
        _drift_loop(case, handle, conds=(0, 1), inspect=inspect)
        assert seen[STEPS - 1] == {("call", 0), ("call", 1)}      # one estimator per cond / uncond slot
        assert handle.state.estimators == {} and not handle.state.running
        with pytest.raises(RuntimeError, match="boom"):
            _drift_loop(case, handle, conds=(0, 1), fail_at=5)
        assert handle.state.estimators == {} and handle.state.store is None
    finally:
        handle.remove()
