"""LightCache block caching, schedule and cache swap (papers.md §1) on CPU with tiny diffusers models.

The ComfyUI path is tested against the real host in ``tests/host/test_lightcache_host.py``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from avlab import lightcache
from avlab.common.errors import NodeInputError
from avlab.lightcache import LightCacheConfig, full_step_mask, step_index
from avlab.lightcache.dit_cache import dit_range
from avlab.lightcache.swap import FeatureStore, resolve_swap
from avlab.lightcache.unet_cache import diffusers_unet_skip_count, plan_diffusers_unet

diffusers = pytest.importorskip("diffusers")




# ------------------------------------------------------------------------------------------------
# schedule
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["uniform", "non-uniform"])
@pytest.mark.parametrize("steps,start,end", [(1, 0.0, 1.0), (10, 0.0, 1.0), (25, 0.2, 0.8), (7, 0.5, 0.6)])
def test_interval_1_makes_every_step_full(schedule, steps, start, end):
    assert full_step_mask(steps, 1, start, end, schedule) == [True] * steps


def test_uniform_schedule_runs_a_full_step_every_interval_steps():
    T, F = True, False
    assert full_step_mask(10, 3) == [T, F, F, T, F, F, T, F, F, T]
    assert full_step_mask(5, 2) == [T, F, T, F, T]


def test_steps_outside_the_percent_window_are_always_full():
    T, F = True, False
    # window = steps 3..7 (0.3 <= i/10 <= 0.7); the schedule counts from step 2, the last full step before it
    assert full_step_mask(10, 3, 0.3, 0.7) == [T, T, T, F, F, T, F, F, T, T]
    assert full_step_mask(10, 3, 0.95, 1.0) == [True] * 10  # no step inside the window


def test_non_uniform_schedule_places_as_many_full_steps_as_uniform_denser_early():
    for steps, interval in [(20, 3), (30, 4), (12, 2), (50, 5)]:
        uni = full_step_mask(steps, interval, schedule="uniform")
        non = full_step_mask(steps, interval, schedule="non-uniform")
        assert non[0] and sum(non) == sum(uni)
        full = [i for i, f in enumerate(non) if f]
        gaps = [b - a for a, b in zip(full, full[1:])]
        assert gaps[0] <= gaps[-1] and gaps[0] < interval < max(gaps)
        assert gaps == sorted(gaps)


def test_step_index_follows_the_sigma_schedule_not_raw_timesteps():
    sigmas = [14.6, 5.1, 2.3, 1.2, 0.0]
    assert [step_index(s, sigmas) for s in sigmas[:4]] == [0, 1, 2, 3]
    assert step_index(3.0, sigmas) == 1               # Heun/DPM-2 intermediate evaluation
    assert step_index(5.1 * (1 + 5e-5), sigmas) == 1  # float noise within tolerance
    restart = [10.0, 5.0, 2.0, 5.0, 2.0, 0.0]           # a sigma occurring twice
    assert step_index(5.0, restart, prev=0) == 1 and step_index(5.0, restart, prev=2) == 3


def test_config_rejects_bad_inputs_naming_them():
    for bad, name in [(dict(cache_interval=0), "cache_interval"), (dict(start_percent=0.5, end_percent=0.5), "start_percent"),
                      (dict(temporal_chunks=0), "temporal_chunks"), (dict(spatial_chunks=-1), "spatial_chunks"),
                      (dict(schedule="cosine"), "schedule"), (dict(swap="maybe"), "swap"), (dict(cache_depth=-1), "cache_depth")]:
        with pytest.raises(NodeInputError, match=f"AVLab LightCache: input '{name}'"):
            LightCacheConfig(**bad).validated()


def test_dit_depth_keeps_leading_and_trailing_blocks():
    assert dit_range(4, 0) == (0, 3) and dit_range(4, 1) == (1, 2) and dit_range(5, 2) == (2, 2)
    with pytest.raises(ValueError):
        dit_range(4, 2)


# ------------------------------------------------------------------------------------------------
# cache swap store
# ------------------------------------------------------------------------------------------------

def test_swap_auto_is_on_only_for_cuda():
    assert not resolve_swap("auto", "cpu") and not resolve_swap("on", "cpu")
    assert resolve_swap("auto", "cuda:0") and resolve_swap("on", "cuda") and not resolve_swap("off", "cuda")


def test_swapped_store_reuses_its_host_buffer_across_steps():
    store = FeatureStore("cpu", offload=True)
    first = None
    for step in range(4):
        src = torch.full((2, 3), float(step))
        store.put("k", src)
        src.add_(100.0)  # a later in-place change of the source must not reach the cache
        if first is None:
            first = store.host_buffer("k").data_ptr()
        store.release_device("k")
        store.prefetch("k")
        assert torch.equal(store.get("k"), torch.full((2, 3), float(step)))
    assert store.host_buffer("k").data_ptr() == first and store.host_allocations == 1
    store.put("k", torch.zeros(4))  # a new shape gets a new buffer
    assert store.host_allocations == 2


def test_unswapped_store_keeps_owned_tensors_and_copies_the_rest():
    store = FeatureStore("cpu", offload=False)
    owned, shared = torch.ones(3), torch.ones(3)
    store.put("a", owned, owned=True)
    store.put("b", shared)
    shared.mul_(5)
    assert store.get("a") is owned and torch.equal(store.get("b"), torch.ones(3))
    assert store.location == "CPU memory" and store.nbytes == 24


# ------------------------------------------------------------------------------------------------
# tiny diffusers models and a fixed-input sampling loop
# ------------------------------------------------------------------------------------------------

def _svd():
    torch.manual_seed(0)
    return diffusers.UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), layers_per_block=2, cross_attention_dim=32, num_attention_heads=(2, 4),
        transformer_layers_per_block=1, projection_class_embeddings_input_dim=24, addition_time_embed_dim=8).eval()


def _motion():
    torch.manual_seed(0)
    return diffusers.UNetMotionModel(
        block_out_channels=(32, 64), layers_per_block=1, down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"), cross_attention_dim=32, norm_num_groups=8,
        num_attention_heads=2, motion_num_attention_heads=2, motion_max_seq_length=8, in_channels=4, out_channels=4,
        sample_size=8).eval()


def _wan():
    torch.manual_seed(0)
    return diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=4, rope_max_seq_len=32).eval()


class Case:
    """A tiny model and how one denoiser call is made (``cond`` picks the conditioning)."""

    def __init__(self, name, build):
        self.name, self.model = name, build()
        g = torch.Generator().manual_seed(1)
        if name == "svd":
            self.x = torch.randn(1, 3, 8, 8, 8, generator=g)
            self.cond = {c: torch.randn(1, 1, 32, generator=g) for c in (0, 1)}
            self.ids = torch.randn(1, 3, generator=g)
        elif name == "motion":
            self.x = torch.randn(1, 4, 3, 8, 8, generator=g)
            self.cond = {c: torch.randn(3, 4, 32, generator=g) for c in (0, 1)}  # per frame, as AnimateDiff pipes do
        else:
            self.x = torch.randn(1, 4, 3, 8, 8, generator=g)
            self.cond = {c: torch.randn(1, 6, 32, generator=g) for c in (0, 1)}

    def __call__(self, t: float, cond: int = 0, x: torch.Tensor | None = None) -> torch.Tensor:
        x = self.x if x is None else x
        tt = torch.tensor([t])
        with torch.no_grad():
            if self.name == "svd":
                return self.model(x, tt, encoder_hidden_states=self.cond[cond], added_time_ids=self.ids,
                                  return_dict=False)[0]
            if self.name == "motion":
                return self.model(x, tt, encoder_hidden_states=self.cond[cond], return_dict=False)[0]
            return self.model(hidden_states=x, timestep=tt, encoder_hidden_states=self.cond[cond], return_dict=False)[0]


@pytest.fixture(scope="module", params=["svd", "motion", "wan"])
def case(request):
    return Case(request.param, {"svd": _svd, "motion": _motion, "wan": _wan}[request.param])


@pytest.fixture(scope="module")
def motion():
    return Case("motion", _motion)


TIMESTEPS = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]


def _loop(case, handle=None, timesteps=TIMESTEPS, conds=(0,), x=None):
    outs = []
    with handle.run(len(timesteps)) if handle is not None else contextlib.nullcontext():
        for t in timesteps:
            outs.append({c: case(t, c, x) for c in conds})
    return outs


def _structure(module: torch.nn.Module) -> dict:
    return {name: (sorted(m.__dict__.keys()), len(m._forward_hooks), len(m._forward_pre_hooks))
            for name, m in module.named_modules()}


# ------------------------------------------------------------------------------------------------
# behaviour on the three model families
# ------------------------------------------------------------------------------------------------

def test_interval_1_is_bit_exact_over_a_multi_step_loop(case):
    ref = _loop(case)
    with lightcache.apply(case.model, cache_interval=1) as handle:
        out = _loop(case, handle)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(ref, out))
    assert "skipped 0/6 steps" in handle.last_summary


def test_interval_3_reuses_the_cache_exactly_on_the_scheduled_steps(case):
    ref = _loop(case)
    with lightcache.apply(case.model, schedule="uniform", cache_interval=3) as handle:
        out = _loop(case, handle)
    mask = full_step_mask(6, 3)
    for step, (a, b) in enumerate(zip(ref, out)):
        assert torch.equal(a[0], b[0]) == mask[step], f"step {step}"
    assert "skipped 4/6 steps" in handle.last_summary


def test_cache_error_is_small_when_adjacent_steps_are_redundant(case):
    close = [500.0, 499.9, 499.8, 499.7]  # adjacent steps nearly identical (random weights need it close)
    far = [900.0, 600.0, 300.0, 1.0]
    errs = {}
    for name, ts in (("close", close), ("far", far)):
        ref = _loop(case, timesteps=ts)
        with lightcache.apply(case.model, schedule="uniform", cache_interval=4) as handle:
            out = _loop(case, handle, timesteps=ts)
        errs[name] = max(float((a[0] - b[0]).norm() / a[0].norm()) for a, b in zip(ref, out))
    assert 0 < errs["close"] < 0.02
    assert errs["close"] < errs["far"]


def test_remove_restores_the_model_exactly(case):
    before_sd = {k: v.clone() for k, v in case.model.state_dict().items()}
    before = _structure(case.model)
    ref = case(700.0)
    handle = lightcache.apply(case.model, schedule="uniform", cache_interval=2, cache_depth=1)
    assert _structure(case.model) != before
    _loop(case, handle)
    handle.remove()
    handle.remove()  # idempotent
    assert _structure(case.model) == before
    after_sd = case.model.state_dict()
    assert before_sd.keys() == after_sd.keys() and all(torch.equal(before_sd[k], after_sd[k]) for k in before_sd)
    assert torch.equal(case(700.0), ref)


def test_outside_a_run_the_model_computes_as_without_lightcache(case):
    ref = case(650.0)
    with lightcache.apply(case.model, schedule="uniform", cache_interval=3):
        assert torch.equal(case(650.0), ref)


def test_cache_call_on_an_unchanged_input_reproduces_the_full_call(case):
    # With the deep feature still current, the shallow path + cached feature must give the full output:
    # the stand-ins returned by skipped modules never reach the result.
    with lightcache.apply(case.model, schedule="uniform", cache_interval=2, cache_depth=0) as handle:
        with handle.run(2):
            handle.set_step(0)
            full = case(500.0)
            handle.set_step(1)
            cached = case(500.0)
        assert handle.state.stats.cached_calls == 0  # reset after the run
    if case.name == "wan":  # x + (out - x) rounds; U-Nets reproduce bit for bit
        assert torch.allclose(full, cached, atol=1e-5, rtol=1e-5) and not torch.equal(cached, case(499.0))
    else:
        assert torch.equal(full, cached)


def test_each_unet_depth_reproduces_the_full_call_on_an_unchanged_input(motion):
    for depth in range(diffusers_unet_skip_count(motion.model)):
        with lightcache.apply(motion.model, schedule="uniform", cache_interval=2, cache_depth=depth) as handle:
            with handle.run(2):
                handle.set_step(0)
                full = motion(500.0)
                handle.set_step(1)
                cached = motion(500.0)
                assert handle.state.stats.cached_calls == 1
        assert torch.equal(full, cached), depth


def test_deepest_branch_caches_only_the_mid_block(motion):
    plan = plan_diffusers_unet(motion.model, diffusers_unet_skip_count(motion.model) - 1)
    assert [name for name, _ in plan.deep] == ["mid_block"] and plan.boundary == "mid_block"
    plan0 = plan_diffusers_unet(motion.model, 0)
    assert plan0.boundary.startswith(f"up_blocks.{len(motion.model.up_blocks) - 1}.")


def test_cond_and_uncond_calls_are_cached_separately(motion):
    # CFG run as two calls per step (cond, uncond): cond must see exactly what a cond-only run sees.
    with lightcache.apply(motion.model, schedule="uniform", cache_interval=3) as handle:
        both = _loop(motion, handle, conds=(0, 1))
        only_cond = _loop(motion, handle, conds=(0,))
        only_uncond = _loop(motion, handle, conds=(1,))
    for a, b, c in zip(both, only_cond, only_uncond):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], c[1])


def test_a_change_of_resolution_is_cached_separately(motion):
    small, large = motion.x, torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with lightcache.apply(motion.model, schedule="uniform", cache_interval=3) as handle:
        runs = [_loop(motion, handle, x=small), _loop(motion, handle, x=large)]
        with handle.run(len(TIMESTEPS)):  # both resolutions alternating within one run
            mixed = [(motion(t, 0, small), motion(t, 0, large)) for t in TIMESTEPS]
    for step, (s, l) in enumerate(mixed):
        assert torch.equal(s, runs[0][step][0]) and torch.equal(l, runs[1][step][0])


def test_state_is_reset_after_an_exception_mid_run(motion):
    with lightcache.apply(motion.model, schedule="uniform", cache_interval=3) as handle:
        clean = _loop(motion, handle)
        with pytest.raises(RuntimeError, match="stop"):
            with handle.run(len(TIMESTEPS)):
                motion(TIMESTEPS[0])
                motion(TIMESTEPS[1])
                raise RuntimeError("stop")
        st = handle.state
        assert st.store is None and not st.running and st.current is None and not st.meta
        assert all(torch.equal(a[0], b[0]) for a, b in zip(clean, _loop(motion, handle)))


def test_swapped_cache_gives_the_same_output_with_one_host_buffer_per_key(motion):
    with lightcache.apply(motion.model, schedule="uniform", cache_interval=3) as handle:
        ref = _loop(motion, handle)
        out = []
        with handle.run(len(TIMESTEPS)):
            handle.state.store = store = FeatureStore("cpu", offload=True)
            for t in TIMESTEPS:
                out.append(motion(t))
            assert store.host_allocations == 1 and store.peak_bytes > 0
    assert all(torch.equal(a[0], b) for a, b in zip(ref, out))


def test_chunking_runs_under_the_cache_and_is_removed_with_it(motion):
    before = _structure(motion.model)
    ref = _loop(motion)
    with lightcache.apply(motion.model, schedule="uniform", cache_interval=3, temporal_chunks=2, spatial_chunks=2) as handle:
        out = _loop(motion, handle)
        stats = handle.chunking.stats
        assert stats.chunk_runs > 0 and stats.chunked_calls > 0
    assert _structure(motion.model) == before
    mask = full_step_mask(6, 3)
    for step, (a, b) in enumerate(zip(ref, out)):
        if mask[step]:  # full steps: chunked == unchunked
            assert torch.allclose(a[0], b[0], atol=1e-5)
        else:
            assert not torch.equal(a[0], b[0])


def test_unsupported_module_and_out_of_range_depth_are_named_errors(motion):
    with pytest.raises(NodeInputError, match="Linear"):
        lightcache.apply(torch.nn.Linear(2, 2))
    before = _structure(motion.model)
    with pytest.raises(NodeInputError, match="cache_depth"):
        lightcache.apply(motion.model, cache_depth=diffusers_unet_skip_count(motion.model))
    assert _structure(motion.model) == before


def test_unet2d_with_freeu_cache_call_reproduces_the_full_call_at_every_depth():
    # FreeU edits the hidden state entering up layers in place: the cache must hand out writable copies.
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, attention_head_dim=8).eval()
    unet.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 32)
    for depth in range(diffusers_unet_skip_count(unet)):
        with lightcache.apply(unet, schedule="uniform", cache_interval=3, cache_depth=depth) as handle, torch.no_grad():
            with handle.run(3):
                outs = []
                for step in range(3):
                    handle.set_step(step)
                    outs.append(unet(x, 10, ctx).sample)
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2]), depth


# ------------------------------------------------------------------------------------------------
# device residency (issue 12: a swap that really frees device memory), accounted on the CPU
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offload", [True, False])
def test_device_residency_per_call(offload):
    """Three keys per step (e.g. cond/uncond or context windows), full steps every 3rd step. At every
    full call nothing stale is on the compute device (swap on: nothing at all before the store;
    swap off: only this step's fresh features); a cache call holds at most its own feature and the
    next call's; after a cache call its feature leaves the device (swap on)."""
    from avlab.lightcache.cache import CACHE, FULL, CacheState

    cfg = LightCacheConfig(cache_interval=3, start_percent=0.0, end_percent=1.0, schedule="uniform").validated()
    st = CacheState(cfg, names=("deep",), description="test")
    st.begin_run(9, "cpu")
    st.store.offload = offload                    # CPU: exercise both store modes
    windows = ["w0", "w1", "w2"]
    log = []
    for step in range(9):
        for w in windows:
            call = st.start_call(step, ["cond"], ("shape",), w)
            resident = set(st.store.resident_keys())
            if call.mode == FULL:
                stale = {k for k in resident if k[-1] not in log_fresh(log, step)}
                assert not stale, (step, w, resident)
                if offload:
                    assert resident == set()
                st.store_feature(call, "deep", torch.full((1, 4), float(step)))
                if offload:
                    assert st.store.resident_keys() == []           # copied out after the store
            else:
                assert call.mode == CACHE
                own = ("deep", "cond", ("shape",), w)
                nxt = ("deep", "cond", ("shape",), windows[(windows.index(w) + 1) % 3])
                assert own in resident
                if offload:                                   # swap off keeps the whole cache resident
                    assert resident <= {own, nxt}, (step, w, resident)
                assert torch.equal(st.fetch_feature(call, "deep"), torch.full((1, 4), float(step - step % 3)))
            log.append((step, w, call.mode))
            st.end_call(call)
            if call.mode == CACHE and offload:
                assert ("deep", "cond", ("shape",), w) not in st.store.resident_keys()
    assert [m for s, w, m in log if w == "w0"] == [FULL, CACHE, CACHE] * 3


def log_fresh(log, step):
    """Windows already recomputed in ``step`` (their features are this step's, not stale)."""
    return {w for s, w, m in log if s == step}
