"""LightCache inside ComfyUI: real host classes (in-process) and the node through the HTTP API.

In-process tests build tiny ComfyUI models from the host's own classes (``UNetModel`` SD-style and
SVD-style, ``WanModel``, Stable Audio's DiT), wrap them in a ``ModelPatcher`` and sample with
``comfy.sample.sample`` — the path KSampler takes. HTTP tests run the node in a real server on the
tiny official-layout checkpoints.
"""

from __future__ import annotations

import uuid

import pytest
import torch

from host_graphs import sd15_txt2img, wan21_t2v
from tiny_checkpoints import init_random

from avlab.lightcache.cache import LightCacheConfig
from avlab.lightcache.comfy_glue import KEY, apply_to_model_patcher, unet_diffusion_model_wrapper
from avlab.common.errors import NodeInputError

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# tiny host models
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def comfy(comfy_inprocess):
    import comfy.context_windows
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.patcher_extension
    import comfy.sample
    import comfy.supported_models

    torch.set_num_threads(1)
    return comfy_inprocess


def _patcher(comfy, model):
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


SD_TINY = dict(image_size=8, in_channels=4, model_channels=32, out_channels=4, num_res_blocks=[1, 1],
               channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1],
               transformer_depth_middle=1, context_dim=32, num_heads=2, num_head_channels=-1,
               use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False,
               adm_in_channels=None, use_checkpoint=False)

# SVD_img2vid forces num_head_channels 64, hence 64 channels.
SVD_TINY = dict(image_size=8, in_channels=8, model_channels=64, out_channels=4, num_res_blocks=[1, 1],
                channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1],
                transformer_depth_middle=1, context_dim=32, num_heads=-1, num_head_channels=64,
                use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False,
                adm_in_channels=768, num_classes="sequential", use_temporal_resblock=True,
                use_temporal_attention=True, extra_ff_mix_layer=True, use_spatial_context=True,
                merge_strategy="learned_with_images", merge_factor=0.3, video_kernel_size=[3, 1, 1],
                disable_temporal_crossattention=False, use_checkpoint=False)

WAN_TINY = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=32,
                ffn_dim=64, freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=4,
                window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)


@pytest.fixture(scope="module")
def sd_model(comfy):
    cfg = comfy.supported_models.SD15(dict(SD_TINY))
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(cfg, device=CPU)
    init_random(model.diffusion_model, 1)
    return _patcher(comfy, model)


@pytest.fixture(scope="module")
def svd_model(comfy):
    cfg = comfy.supported_models.SVD_img2vid(dict(SVD_TINY))
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SVD_img2vid(cfg, device=CPU)
    init_random(model.diffusion_model, 2)
    return _patcher(comfy, model)


@pytest.fixture(scope="module")
def wan_model(comfy):
    cfg = comfy.supported_models.WAN21_T2V(dict(WAN_TINY))
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.WAN21(cfg, device=CPU)
    init_random(model.diffusion_model, 3)
    return _patcher(comfy, model)


def _cond(n_tokens: int, width: int, seed: int, **extra):
    return [[torch.randn(1, n_tokens, width, generator=torch.Generator().manual_seed(seed)), dict(extra)]]


def _sample(comfy, model, latent, positive, negative, steps=6, cfg=3.0, callback=None, seed=0):
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               callback=callback, disable_pbar=True, seed=seed)


def _lightcache(comfy, model, **settings):
    settings.setdefault("schedule", "uniform")  # the fixed schedule's mechanics; adaptive has its own tests
    return apply_to_model_patcher(model, LightCacheConfig(**settings), comfy.patcher_extension.WrappersMP)


def _module_state(module: torch.nn.Module) -> dict:
    return {name: sorted(m.__dict__.keys()) for name, m in module.named_modules()}


# ------------------------------------------------------------------------------------------------
# U-Net (SD-style)
# ------------------------------------------------------------------------------------------------

def test_unet_interval_1_is_bit_exact_with_uncached_sampling(comfy, sd_model):
    latent = torch.zeros(1, 4, 8, 8)
    pos, neg = _cond(4, 32, 1), _cond(4, 32, 2)
    ref = _sample(comfy, sd_model, latent, pos, neg)
    out = _sample(comfy, _lightcache(comfy, sd_model, cache_interval=1), latent, pos, neg)
    assert torch.equal(ref, out)


def test_unet_interval_3_reuses_the_deep_part_and_logs_one_summary(comfy, sd_model, caplog):
    latent = torch.zeros(1, 4, 8, 8)
    pos, neg = _cond(4, 32, 1), _cond(4, 32, 2)
    ref = _sample(comfy, sd_model, latent, pos, neg)
    with caplog.at_level("INFO", logger="avlab.lightcache"):
        out = _sample(comfy, _lightcache(comfy, sd_model, cache_interval=3), latent, pos, neg)
    lines = [r.getMessage() for r in caplog.records if "LightCache - skipped" in r.getMessage()]
    assert len(lines) == 1 and "skipped 4/6 steps" in lines[0] and "4/6 model calls" in lines[0]
    assert not torch.equal(ref, out) and torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["unet", "wan"])
def test_adaptive_strict_knob_is_bit_exact_and_a_loose_knob_skips_steps(comfy, sd_model, wan_model, family, caplog):
    model, latent, width = ((sd_model, torch.zeros(1, 4, 8, 8), 32) if family == "unet"
                            else (wan_model, torch.zeros(1, 16, 3, 8, 8), 32))
    pos, neg = _cond(4, width, 1), _cond(6, width, 2)
    ref = _sample(comfy, model, latent, pos, neg, steps=10)
    strict = _lightcache(comfy, model, schedule="adaptive", adaptive_error=0.0, cache_interval=10)
    assert torch.equal(ref, _sample(comfy, strict, latent, pos, neg, steps=10))
    loose = _lightcache(comfy, model, schedule="adaptive", adaptive_error=10.0, cache_interval=3)
    with caplog.at_level("INFO", logger="avlab.lightcache"):
        out = _sample(comfy, loose, latent, pos, neg, steps=10)
    line = [r.getMessage() for r in caplog.records if "LightCache - skipped" in r.getMessage()][-1]
    skipped = int(line.split("skipped ")[1].split("/")[0])
    assert skipped >= 4 and "adaptive (error <= 10" in line and "at most 2 reuses in a row" in line
    assert not torch.equal(ref, out) and torch.isfinite(out).all()


def test_adaptive_decision_state_is_keyed_per_cond_and_reset_after_an_interrupt(comfy, sd_model):
    latent = torch.zeros(1, 4, 8, 8)
    pos, neg = _cond(4, 32, 1), _cond(4, 32, 2)
    seen: list = []
    m = _boundary_recorder(_lightcache(comfy, sd_model, schedule="adaptive", adaptive_error=10.0,
                                       cache_interval=4), 0, seen)

    def interrupt(step, x0, x, total):
        if step == 5:
            state = seen[-1]["state"]
            slots = {k[1] for k in state.estimators}
            assert len(slots) == 2, slots            # one estimator per cond / uncond
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        _sample(comfy, m, latent, pos, neg, steps=10, callback=interrupt)
    state = seen[-1]["state"]
    assert state.estimators == {} and not state.running and state.store is None


def _boundary_recorder(model, depth: int, log: list):
    """An output_block_patch recording the feature entering the first shallow output block."""
    n_out = len(model.get_model_object("diffusion_model").output_blocks)
    target = ("output", n_out - 1 - depth)

    def record(h, hsp, to):
        if to.get("block") == target:
            win = to.get("context_window")
            log.append({"sigma": float(to["sigmas"][0]), "cond_or_uncond": list(to["cond_or_uncond"]),
                        "window": None if win is None else tuple(win.index_list), "h": h.clone(),
                        "state": to.get(KEY)})
        return h, hsp

    m = model.clone()
    m.set_model_output_block_patch(record)
    return m


def _check_reuse(log: list, mask: list[bool], sigmas: list[float], per_call_slots: bool = True) -> int:
    """Every cache call must be fed exactly what the last full call stored for the same key."""
    last: dict = {}
    checked = 0
    for rec in log:
        step = min(range(len(sigmas)), key=lambda i: abs(sigmas[i] - rec["sigma"]))
        parts = rec["h"].chunk(len(rec["cond_or_uncond"]))
        for c, part in zip(rec["cond_or_uncond"], parts):
            key = (c, tuple(part.shape), rec["window"])
            if mask[step]:
                last[key] = part
            else:
                assert key in last, f"cache call at step {step} for {key} had nothing stored"
                assert torch.equal(part, last[key]), f"step {step} key {key} was fed another key's feature"
                checked += 1
    return checked


def test_unet_cache_is_keyed_per_cond_and_per_resolution_in_one_run(comfy, sd_model):
    # An area cond: the sampler adds a 4x4 uncond for the area (batched with the 4x4 cond) beside the
    # 8x8 uncond, so each step has two calls, three slots and two feature resolutions.
    latent = torch.zeros(1, 4, 8, 8)
    pos = _cond(4, 32, 1, area=(4, 4, 0, 0), strength=1.0, set_area_to_bounds=False)
    neg = _cond(4, 32, 2)
    log: list = []
    m = _boundary_recorder(_lightcache(comfy, sd_model, cache_interval=3), 0, log)
    _sample(comfy, m, latent, pos, neg)
    shapes = {tuple(r["h"].shape[-2:]) for r in log}
    assert len(shapes) == 2  # two resolutions of the deep feature in the same run
    sigmas = comfy.samplers.calculate_sigmas(sd_model.get_model_object("model_sampling"), "normal", 6).tolist()
    from avlab.lightcache.schedule import full_step_mask

    assert _check_reuse(log, full_step_mask(6, 3), sigmas) == 12  # 4 cache steps x 3 slots


def test_unet_state_is_reset_and_model_unpatched_after_an_interrupt(comfy, sd_model, caplog):
    latent = torch.zeros(1, 4, 8, 8)
    pos, neg = _cond(4, 32, 1), _cond(4, 32, 2)
    _sample(comfy, sd_model, latent, pos, neg, steps=1)  # the host's first load adds its own attributes
    before_options = repr(sd_model.model_options)
    before_modules = _module_state(sd_model.model.diffusion_model)
    log: list = []
    m = _boundary_recorder(_lightcache(comfy, sd_model, cache_interval=3), 0, log)

    def interrupt(step, x0, x, total):
        if step == 2:
            raise comfy.model_management.InterruptProcessingException()

    with caplog.at_level("INFO", logger="avlab.lightcache"):
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            _sample(comfy, m, latent, pos, neg, callback=interrupt)
    run_state = log[-1]["state"]
    assert not run_state.running and run_state.store is None and run_state.current is None
    assert any("LightCache - skipped" in r.getMessage() for r in caplog.records)  # logged in finally
    assert repr(sd_model.model_options) == before_options
    assert _module_state(sd_model.model.diffusion_model) == before_modules
    # the same patched model samples afterwards exactly like a freshly patched one (nothing left over)
    fresh = _boundary_recorder(_lightcache(comfy, sd_model, cache_interval=3), 0, [])
    assert torch.equal(_sample(comfy, m, latent, pos, neg), _sample(comfy, fresh, latent, pos, neg))


def test_unet_resolution_change_between_runs(comfy, sd_model):
    pos, neg = _cond(4, 32, 1), _cond(4, 32, 2)
    m = _lightcache(comfy, sd_model, cache_interval=2)
    small = _sample(comfy, m, torch.zeros(1, 4, 8, 8), pos, neg, steps=4)
    large = _sample(comfy, m, torch.zeros(1, 4, 16, 16), pos, neg, steps=4)
    assert small.shape[-1] == 8 and large.shape[-1] == 16
    assert torch.equal(large, _sample(comfy, _lightcache(comfy, sd_model, cache_interval=2),
                                      torch.zeros(1, 4, 16, 16), pos, neg, steps=4))


def test_unet_chunking_runs_around_the_cache_and_leaves_the_model_unpatched(comfy, sd_model):
    latent = torch.zeros(2, 4, 8, 8)
    pos, neg = _cond(4, 32, 1), _cond(4, 32, 2)
    ref = _sample(comfy, sd_model, latent, pos, neg, steps=3)
    before = _module_state(sd_model.model.diffusion_model)  # after the host's own first load
    m = _lightcache(comfy, sd_model, cache_interval=1, temporal_chunks=2)
    out = _sample(comfy, m, latent, pos, neg, steps=3)
    chunker = m.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)[0]
    assert chunker.stats.chunk_runs > 0
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5  # chunking is exact up to rounding
    m3 = _lightcache(comfy, sd_model, cache_interval=3, temporal_chunks=2)
    _sample(comfy, m3, latent, pos, neg, steps=3)
    assert m3.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)[0].stats.chunk_runs > 0
    assert _module_state(sd_model.model.diffusion_model) == before


# ------------------------------------------------------------------------------------------------
# the shallow forward mirrors UNetModel._forward
# ------------------------------------------------------------------------------------------------

def _direct_call(unet, state, step, sample_sigmas, x, t, context, **kwargs):
    to = {"wrappers": {"diffusion_model": {KEY: [unet_diffusion_model_wrapper]}}, KEY: state,
          "sigmas": sample_sigmas[step:step + 1], "sample_sigmas": sample_sigmas,
          "uuids": [uuid.UUID(int=7)], "cond_or_uncond": [0]}
    patches = kwargs.pop("patches", None)
    if patches is not None:
        to["patches"] = patches
    control = kwargs.pop("control_factory", lambda: None)()
    y = kwargs.pop("y", None)
    return unet(x, t, context, y, control, to, **kwargs)


@pytest.mark.parametrize("depth", [0, 2, 3])
def test_unet_cache_step_on_unchanged_input_reproduces_the_full_step_with_control_and_patches(comfy, sd_model, depth):
    unet = sd_model.model.diffusion_model
    state = apply_to_model_patcher(sd_model, LightCacheConfig(cache_interval=2, cache_depth=depth, schedule="uniform"),
                                   comfy.patcher_extension.WrappersMP).model_options["transformer_options"][KEY].clone()
    state.begin_run(4)
    g = torch.Generator().manual_seed(5)
    x, ctx, t = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 32, generator=g), torch.tensor([500.0, 500.0])
    feats = {"input": [None], "middle": [None], "output": [None]}

    def control_factory():  # ControlNet-style residuals, one per block (lists are popped from the end)
        gen = torch.Generator().manual_seed(9)
        c = {"input": [], "middle": [], "output": []}
        h = x
        shapes_in = [(2, 32, 8, 8), (2, 32, 8, 8), (2, 32, 4, 4), (2, 64, 4, 4)]
        c["input"] = [torch.randn(s, generator=gen) * 0.1 for s in reversed(shapes_in)]
        c["middle"] = [torch.randn(2, 64, 4, 4, generator=gen) * 0.1]
        c["output"] = [torch.randn(s, generator=gen) * 0.1 for s in shapes_in]
        return c

    calls = []
    patches = {
        "input_block_patch": [lambda h, to: h * 1.01],
        "input_block_patch_after_skip": [lambda h, to: h + 0.01],
        "output_block_patch": [lambda h, hsp, to: (calls.append(to["block"]) or h * 0.99, hsp)],
        "emb_patch": [lambda emb, ch, to: emb * 1.02],
    }
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    full = _direct_call(unet, state, 0, sigmas, x, t, ctx, patches=patches, control_factory=control_factory)
    cached = _direct_call(unet, state, 1, sigmas, x, t, ctx, patches=patches, control_factory=control_factory)
    assert state.stats.cached_calls == 1 and state.stats.full_calls == 1
    assert torch.equal(full, cached)
    n_out = len(unet.output_blocks)
    assert calls[n_out:] == [("output", i) for i in range(n_out - 1 - depth, n_out)]  # only shallow blocks ran


def test_svd_unet_video_kwargs_pass_through_the_shallow_forward(comfy, svd_model):
    unet = svd_model.model.diffusion_model
    state = apply_to_model_patcher(svd_model, LightCacheConfig(cache_interval=2, cache_depth=1, schedule="uniform"),
                                   comfy.patcher_extension.WrappersMP).model_options["transformer_options"][KEY].clone()
    state.begin_run(3)
    g = torch.Generator().manual_seed(6)
    frames = 3
    x = torch.randn(frames, 8, 8, 8, generator=g)
    ctx = torch.randn(frames, 1, 32, generator=g)
    y = torch.randn(frames, 768, generator=g)
    t = torch.full((frames,), 300.0)
    kw = dict(y=y, num_video_frames=frames, image_only_indicator=torch.zeros(1, frames), time_context=ctx)
    sigmas = torch.tensor([3.0, 2.0, 1.0, 0.0])
    full = _direct_call(unet, state, 0, sigmas, x, t, ctx, **dict(kw))
    cached = _direct_call(unet, state, 1, sigmas, x, t, ctx, **dict(kw))
    assert state.stats.cached_calls == 1
    assert torch.equal(full, cached)
    other = _direct_call(unet, state, 1, sigmas, x, t, ctx, **dict(kw, image_only_indicator=torch.ones(1, frames)))
    assert not torch.equal(other, cached)  # the indicator reaches the shallow blocks


def test_svd_sampling_interval_1_is_bit_exact(comfy, svd_model):
    latent = torch.zeros(3, 4, 8, 8)
    pos = _cond(1, 32, 1, concat_latent_image=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)))
    neg = _cond(1, 32, 2, concat_latent_image=torch.zeros(1, 4, 8, 8))
    ref = _sample(comfy, svd_model, latent, pos, neg, steps=4)
    assert torch.equal(ref, _sample(comfy, _lightcache(comfy, svd_model, cache_interval=1), latent, pos, neg, steps=4))
    out = _sample(comfy, _lightcache(comfy, svd_model, cache_interval=2), latent, pos, neg, steps=4)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)


# ------------------------------------------------------------------------------------------------
# DiTs: Wan and Stable Audio through patches_replace["dit"]
# ------------------------------------------------------------------------------------------------

def test_wan_interval_1_is_bit_exact_and_interval_3_caches_the_block_range(comfy, wan_model, caplog):
    latent = torch.zeros(1, 16, 2, 8, 8)
    pos, neg = _cond(6, 32, 1), _cond(6, 32, 2)
    ref = _sample(comfy, wan_model, latent, pos, neg)
    assert torch.equal(ref, _sample(comfy, _lightcache(comfy, wan_model, cache_interval=1), latent, pos, neg))
    with caplog.at_level("INFO", logger="avlab.lightcache"):
        out = _sample(comfy, _lightcache(comfy, wan_model, cache_interval=3, cache_depth=1), latent, pos, neg)
    line = next(r.getMessage() for r in caplog.records if "LightCache - skipped" in r.getMessage())
    assert "skipped 4/6 steps" in line and "blocks 1-2 of 4" in line
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert "patches_replace" not in wan_model.model_options.get("transformer_options", {})


def _spy_dit_range(m, first: int, last: int, calls: list):
    """Wrap the LightCache patches of blocks ``first``/``last`` to record inputs, outputs and decisions."""
    dit = m.model_options["transformer_options"]["patches_replace"]["dit"]
    patch_first, patch_last = dit[("double_block", first)], dit[("double_block", last)]

    def spy_first(args, extra):
        out = patch_first(args, extra)
        to = args["transformer_options"]
        win = to.get("context_window")
        calls.append({"mode": to[KEY].current.mode, "cou": list(to["cond_or_uncond"]), "in": args["img"].clone(),
                      "out1": out["img"].clone(), "window": None if win is None else tuple(win.index_list)})
        return out

    def spy_last(args, extra):
        out = patch_last(args, extra)
        calls[-1]["out2"] = out["img"].clone()
        return out

    m.set_model_patch_replace(spy_first, "dit", "double_block", first)
    m.set_model_patch_replace(spy_last, "dit", "double_block", last)
    return m


def _check_dit_reuse(calls: list) -> dict:
    """On cache calls the first cached block must add the residual its own key stored last."""
    residual: dict = {}
    checked = 0
    for c in calls:
        n = len(c["cou"])
        keys = [(cou, c["window"], tuple(c["in"].shape[1:])) for cou in c["cou"]]
        if c["mode"] == "full":
            for key, r in zip(keys, (c["out2"] - c["in"]).chunk(n)):
                residual[key] = r
        else:
            assert c["mode"] == "cache"
            for key, added in zip(keys, (c["out1"] - c["in"]).chunk(n)):
                assert key in residual, f"cache call for {key} with nothing stored"
                assert torch.allclose(added, residual[key], atol=1e-5), f"{key} was given another key's residual"
                checked += 1
    return {"checked": checked, "residual": residual}


def test_wan_cache_is_keyed_per_cond_under_cfg(comfy, wan_model):
    calls: list = []
    m = _spy_dit_range(_lightcache(comfy, wan_model, cache_interval=2, cache_depth=1), 1, 2, calls)
    _sample(comfy, m, torch.zeros(1, 16, 2, 8, 8), _cond(6, 32, 1), _cond(6, 32, 2), steps=4)
    result = _check_dit_reuse(calls)
    assert result["checked"] >= 2
    by_cond = {key[0]: r for key, r in result["residual"].items()}
    assert not torch.equal(by_cond[0], by_cond[1])  # cond and uncond really have different residuals


def test_wan_cache_is_keyed_per_context_window(comfy, wan_model):
    m = wan_model.clone()
    m.model_options["context_handler"] = comfy.context_windows.IndexListContextHandler(
        context_schedule=comfy.context_windows.get_matching_context_schedule("standard_static"),
        fuse_method=comfy.context_windows.get_matching_fuse_method("pyramid"),
        context_length=4, context_overlap=2, context_stride=1, closed_loop=False, dim=2)
    latent = torch.zeros(1, 16, 6, 8, 8)  # 6 latent frames -> 2 windows of 4
    pos, neg = _cond(6, 32, 1), _cond(6, 32, 2)
    ref = _sample(comfy, m, latent, pos, neg, steps=4)
    assert torch.equal(ref, _sample(comfy, _lightcache(comfy, m, cache_interval=1), latent, pos, neg, steps=4))
    calls: list = []
    _sample(comfy, _spy_dit_range(_lightcache(comfy, m, cache_interval=2, cache_depth=1), 1, 2, calls),
            latent, pos, neg, steps=4)
    assert len({c["window"] for c in calls}) == 2
    assert _check_dit_reuse(calls)["checked"] >= 4


def test_stable_audio_dit_interval_1_exact_and_cache_step_reuses_the_residual(comfy):
    from tiny_stable_audio import apply_once, build_tiny_stable_audio

    patcher = build_tiny_stable_audio(depth=4)
    with pytest.raises(NodeInputError, match="cache_depth"):
        _lightcache(comfy, patcher, cache_depth=2)
    m = _lightcache(comfy, patcher, cache_interval=2, cache_depth=1)
    state = m.model_options["transformer_options"][KEY].clone()
    state.begin_run(3)
    x = torch.randn(1, 64, 16, generator=torch.Generator().manual_seed(4))
    ctx = torch.randn(1, 4, 768, generator=torch.Generator().manual_seed(5))
    sigmas = torch.tensor([3.0, 2.0, 1.0, 0.0])
    ref = apply_once(patcher, x, sigma=3.0, cross_attn=ctx, seconds_total=2)

    def opts(step):
        to = dict(m.model_options["transformer_options"])
        to.update({KEY: state, "sigmas": sigmas[step:step + 1], "sample_sigmas": sigmas,
                   "uuids": [uuid.UUID(int=1)], "cond_or_uncond": [0]})
        return to

    full = apply_once(patcher, x, sigma=3.0, cross_attn=ctx, transformer_options=opts(0), seconds_total=2)
    cached = apply_once(patcher, x, sigma=3.0, cross_attn=ctx, transformer_options=opts(1), seconds_total=2)
    assert torch.equal(full, ref)
    assert state.stats.cached_calls == 1
    assert torch.allclose(cached, full, atol=1e-5, rtol=1e-5)


def test_unsupported_host_model_is_an_error_naming_its_class(comfy):
    cfg = comfy.supported_models.SD15(dict(SD_TINY))
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(cfg, device=CPU)
    model.diffusion_model = torch.nn.Linear(2, 2)
    with pytest.raises(NodeInputError, match="Linear"):
        _lightcache(comfy, _patcher(comfy, model))


# ------------------------------------------------------------------------------------------------
# the node in a running ComfyUI (HTTP API)
# ------------------------------------------------------------------------------------------------

def _with_lightcache(prompt: dict, model_node: str, **inputs) -> dict:
    settings = dict(cache_interval=3, cache_depth=0, start_percent=0.0, end_percent=1.0, schedule="uniform",
                    swap="auto", temporal_chunks=1, spatial_chunks=1, verbose=False)
    settings.update(inputs)
    prompt["lightcache"] = {"class_type": "AVLabLightCache", "inputs": dict(settings, model=[model_node, 0])}
    prompt["sample"]["inputs"]["model"] = ["lightcache", 0]
    return prompt


def test_node_schema_has_tooltips_on_every_input(comfy_client):
    info = comfy_client.object_info("AVLabLightCache")["AVLabLightCache"]
    assert info["display_name"] == "AVLab LightCache" and info["category"] == "AVLab/LightCache"
    assert info.get("experimental") is True
    for name, spec in {**info["input"]["required"], **info["input"].get("optional", {})}.items():
        assert spec[1].get("tooltip"), name
    # added after workflows were shipped: optional and last, so old prompts (no value) still run
    assert list(info["input"]["optional"]) == ["adaptive_error"]
    assert info["input"]["required"]["schedule"][1]["default"] == "adaptive"


def _pixels(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def test_node_interval_1_on_sd15_gives_the_native_image(comfy_host, comfy_client):
    import numpy as np

    native = comfy_host.output_files(comfy_client.run(sd15_txt2img("lightcache/sd15_native", steps=3),
                                                      timeout=300), "save")[0]
    history = comfy_client.run(_with_lightcache(sd15_txt2img("lightcache/sd15_i1", steps=3), "ckpt",
                                                cache_interval=1), timeout=300)
    assert np.array_equal(_pixels(comfy_host.output_files(history, "save")[0]), _pixels(native))


def test_node_caches_sd15_and_wan_and_logs_the_summary(comfy_host, comfy_client):
    offset = comfy_client.log_offset()
    comfy_client.run(_with_lightcache(sd15_txt2img("lightcache/sd15_i2", steps=4), "ckpt", cache_interval=2),
                     timeout=300)
    comfy_client.run(_with_lightcache(wan21_t2v("lightcache/wan_i2", steps=4), "unet", cache_interval=2,
                                      cache_depth=0, temporal_chunks=2), timeout=300)
    log = comfy_client.log_text(offset)
    assert log.count("LightCache - skipped 2/4 steps") == 2, log[-3000:]


def test_node_rejects_bad_inputs_with_named_errors(comfy_client):
    from comfy_host import PromptRejected

    for bad, name in [(dict(cache_interval=0), "cache_interval"), (dict(start_percent=0.6, end_percent=0.5), "start_percent"),
                      (dict(temporal_chunks=0), "temporal_chunks")]:
        with pytest.raises(PromptRejected, match=name):
            comfy_client.queue_prompt(_with_lightcache(sd15_txt2img("lightcache/bad"), "ckpt", **bad))
