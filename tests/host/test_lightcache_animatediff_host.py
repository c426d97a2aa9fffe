"""LightCache on AnimateDiff: the shipped workflow's graph with AnimateDiff-Evolved's real nodes.

AnimateDiff in ComfyUI is the AnimateDiff-Evolved pack (``ADE_*`` nodes). Its ``AnimateDiff Loader``
inserts a motion module's temporal transformers into the SD1.5 U-Net when the model is loaded and
drives sampling through its own wrappers (``OUTER_SAMPLE``, ``CALC_COND_BATCH`` for context windows,
``ad_params`` in ``transformer_options``). These tests run ``workflows/lightcache_animatediff_sd15.json``
converted to an API prompt (``ui_to_api`` with the recorded ``/object_info``), on the tiny
``sd15_ad`` checkpoint and the tiny ``mm_sd_v15_v2`` motion module (``tiny_checkpoints.py``), up to its
KSampler, **in this process** with the real node classes — ComfyUI's core nodes, AnimateDiff-Evolved
(imported from a copy of the pack, as ComfyUI imports a custom node) and ``AVLabLightCache`` — so the
torch modules can be inspected. Node outputs are memoised by node and inputs, as ComfyUI's cache does:
the checkpoint and the motion module load once. The same graph runs through the real server
(``POST /prompt``, video out) in ``test_workflows_host.py``.

What each test proves:

* the pack loads in the server (all its nodes, no import failure) — the other host tests run with it;
* interval 1 gives the bit-identical latent of the same graph without LightCache;
* interval 3 reuses the deep feature (one summary line, skipped steps > 0), output finite and changed;
* feature chunking (2 frame chunks, 2 pixel chunks, interval 1) equals the unchunked output and
  really splits the motion modules' temporal transformer blocks (pixel axis) besides the ResBlocks;
* with AnimateDiff's frame-coupling GroupNorm (v1 / "improper" v2 modules) frame chunking falls back
  and stays exact (it used to divide by zero inside AnimateDiff's GroupNorm);
* AnimateDiff's context windows keep separate cache keys (every cache call of a window is fed what
  that window stored, never the other window's feature);
* nothing is left on the model: every module's ``__dict__`` (the motion modules' included) and the
  model options are as before, and after unloading AnimateDiff ejects to the pristine U-Net.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from comfy_host import ANIMATEDIFF_DIR, copy_tree_writable, tracebacks

from avlab.common.workflow_json import ui_to_api
from avlab.lightcache.chunking import SPATIAL, TEMPORAL, chunkable_sites
from avlab.lightcache.comfy_glue import KEY

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "lightcache_animatediff_sd15.json"
OBJECT_INFO = REPO / "tests" / "data" / "object_info_workflows.json"  # this host's, see make_workflows.py

FRAMES, SIZE, STEPS = 4, 32, 2  # 32x32 images: 4x4 latents, the deepest levels run at 1x1
N_MOTION_MODULES = 8 + 12 + 1   # v2: 2 per down block, 3 per up block, 1 in the middle block
FIXED = {"schedule": "uniform", "cache_depth": 0, "start_percent": 0.0, "end_percent": 1.0, "swap": "auto",
         "verbose": False}


# ------------------------------------------------------------------------------------------------
# the pack in the server
# ------------------------------------------------------------------------------------------------

def test_animatediff_evolved_registers_in_the_server_beside_avlab(animatediff_path, comfy_host, comfy_client):
    info = comfy_client.object_info()
    ade = {name for name in info if name.startswith("ADE_")}
    assert len(ade) >= 100, f"only {len(ade)} ADE_* nodes registered"
    workflow = json.loads(WORKFLOW.read_text())
    assert {n["type"] for n in workflow["nodes"] if n["type"].startswith("ADE_")} <= ade
    log = comfy_host.startup_log()
    assert "IMPORT FAILED" not in log, [line for line in log.splitlines() if "IMPORT FAILED" in line]
    assert not [tb for tb in tracebacks(log) if "animatediff" in tb.lower()]


# ------------------------------------------------------------------------------------------------
# the graph, in process
# ------------------------------------------------------------------------------------------------

def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


class InProcessGraph:
    """Runs nodes of an API prompt with the node classes in this process, memoised by node + inputs."""

    def __init__(self, classes: dict):
        self.classes = classes
        self.memo: dict = {}

    def _signature(self, api: dict, nid: str):
        node = api[nid]
        inputs = tuple((k, ("link", self._signature(api, v[0]), v[1]) if _is_link(v) else json.dumps(v))
                       for k, v in sorted(node["inputs"].items()))
        return node["class_type"], inputs

    def output(self, api: dict, nid: str) -> tuple:
        sig = self._signature(api, nid)
        if sig not in self.memo:
            node = api[nid]
            cls = self.classes[node["class_type"]]
            kwargs = {k: self.output(api, v[0])[v[1]] if _is_link(v) else v for k, v in node["inputs"].items()}
            if hasattr(cls, "define_schema"):  # comfy_api v3 node (AVLab)
                out = cls.execute(**kwargs).result
            else:
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
            self.memo[sig] = tuple(out)
        return self.memo[sig]


def _module_state(module: torch.nn.Module) -> dict:
    return {name: sorted(m.__dict__.keys()) for name, m in module.named_modules()}


def _import_pack(path: Path):
    """Import the pack as ComfyUI's ``load_custom_node`` does (module name = folder name)."""
    if ANIMATEDIFF_DIR in sys.modules:
        return sys.modules[ANIMATEDIFF_DIR]
    spec = importlib.util.spec_from_file_location(ANIMATEDIFF_DIR, path / "__init__.py",
                                                  submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[ANIMATEDIFF_DIR] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[ANIMATEDIFF_DIR]
        raise
    return module


class AD:
    """The module's shared state: graph runner, API prompt, node ids, reference run and module states."""


@pytest.fixture(scope="module")
def ad(animatediff_path, animatediff_models, comfy_inprocess, tmp_path_factory):
    import comfy.model_management
    import folder_paths
    import nodes as comfy_nodes  # ComfyUI's core nodes (the repository root is never on sys.path)

    from avlab.nodes.lightcache import AVLabLightCache

    pack = _import_pack(copy_tree_writable(animatediff_path, tmp_path_factory.mktemp("pack") / ANIMATEDIFF_DIR))
    folder_paths.add_model_folder_path("checkpoints", str(animatediff_models["sd15_ad"].parent))
    folder_paths.add_model_folder_path("animatediff_models", str(animatediff_models["mm_sd_v15_v2"].parent))

    s = AD()
    s.comfy_nodes = comfy_nodes
    s.graph = InProcessGraph({**comfy_nodes.NODE_CLASS_MAPPINGS, **pack.NODE_CLASS_MAPPINGS,
                              "AVLabLightCache": AVLabLightCache})
    s.api = ui_to_api(json.loads(WORKFLOW.read_text()), json.loads(OBJECT_INFO.read_text()), overrides={
        "CheckpointLoaderSimple": {"ckpt_name": animatediff_models["sd15_ad"].name},
        "ADE_AnimateDiffLoaderGen1": {"model_name": animatediff_models["mm_sd_v15_v2"].name},
        "EmptyLatentImage": {"width": SIZE, "height": SIZE, "batch_size": FRAMES},
        "KSampler": {"steps": STEPS},
    })
    ids = {node["class_type"]: nid for nid, node in s.api.items()}
    s.ckpt, s.loader, s.context = ids["CheckpointLoaderSimple"], ids["ADE_AnimateDiffLoaderGen1"], \
        ids["ADE_StandardStaticContextOptions"]
    s.latent, s.lightcache, s.sampler = ids["EmptyLatentImage"], ids["AVLabLightCache"], ids["KSampler"]
    assert s.api[s.lightcache]["inputs"]["model"] == [s.loader, 0]  # the shipped wiring
    assert s.api[s.sampler]["inputs"]["model"] == [s.lightcache, 0]

    # The random weights drive some activations (through the random CLIP's conditioning) into the
    # subnormal range, where x86 fp32 arithmetic is several times slower: flush them to zero, as GPUs
    # do. Every run compared here runs with the same setting.
    torch.set_flush_denormal(True)
    try:
        checkpoint = s.graph.output(s.api, s.ckpt)[0]
        s.unet = checkpoint.model.diffusion_model
        comfy.model_management.load_models_gpu([checkpoint])  # the host's first load adds attributes
        comfy.model_management.unload_all_models()
        s.pristine = _module_state(s.unet)
        s.ade_model = s.graph.output(s.api, s.loader)[0]
        s.ade_options = repr(s.ade_model.model_options)
        s.ref = run(s)  # AnimateDiff, no LightCache (injects the motion module on load)
        s.injected = _module_state(s.unet)
        yield s
    finally:
        torch.set_flush_denormal(False)
        s.graph.memo.clear()
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        gc.collect()


def variant(s: AD, lightcache: dict | None = None, frames: int = FRAMES, context: dict | None = None) -> dict:
    """The workflow's prompt without LightCache (``None``) or with these LightCache settings."""
    api = copy.deepcopy(s.api)
    if lightcache is None:
        api[s.sampler]["inputs"]["model"] = api[s.lightcache]["inputs"]["model"]
        del api[s.lightcache]
    else:
        api[s.lightcache]["inputs"].update(FIXED, **lightcache)
    api[s.latent]["inputs"]["batch_size"] = frames
    if context:
        api[s.context]["inputs"].update(context)
    return api


def run(s: AD, lightcache: dict | None = None, **kw) -> torch.Tensor:
    api = variant(s, lightcache, **kw)
    return s.graph.output(api, s.sampler)[0]["samples"]


def lightcache_model(s: AD, lightcache: dict, **kw):
    api = variant(s, lightcache, **kw)
    return s.graph.output(api, s.lightcache)[0]


def _summaries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "LightCache - skipped" in r.getMessage()]


def test_motion_module_is_in_the_unet_of_the_reference_run(ad):
    types = [type(m).__name__ for m in ad.unet.modules()]
    assert types.count("VanillaTemporalModule") == N_MOTION_MODULES
    assert ad.ref.shape == (FRAMES, 4, SIZE // 8, SIZE // 8) and torch.isfinite(ad.ref).all()


def test_interval_1_is_bit_exact_with_the_graph_without_lightcache(ad, caplog):
    with caplog.at_level("INFO", logger="avlab.lightcache"):
        out = run(ad, {"cache_interval": 1, "temporal_chunks": 1, "spatial_chunks": 1})
    assert torch.equal(out, ad.ref)
    assert len(_summaries(caplog)) == 1
    assert _module_state(ad.unet) == ad.injected


def test_interval_3_reuses_the_deep_feature_under_animatediff(ad, caplog):
    with caplog.at_level("INFO", logger="avlab.lightcache"):
        out = run(ad, {"cache_interval": 3, "temporal_chunks": 1, "spatial_chunks": 1})
    [line] = _summaries(caplog)
    assert f"skipped {STEPS - 1}/{STEPS} steps" in line, line  # step 0 full, then reuse
    assert torch.isfinite(out).all() and not torch.equal(out, ad.ref)
    assert _module_state(ad.unet) == ad.injected


def test_chunking_equals_unchunked_and_splits_the_motion_modules(ad):
    sites = chunkable_sites(ad.unet)  # the motion module is injected (the model is loaded)
    assert sites[SPATIAL] == N_MOTION_MODULES  # one temporal transformer block per motion module
    settings = {"cache_interval": 1, "temporal_chunks": 2, "spatial_chunks": 2}
    out = run(ad, settings)
    import comfy.patcher_extension

    model = lightcache_model(ad, settings)
    stats = model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)[0].stats  # the chunker
    assert stats.by_kind[SPATIAL] > 0, stats    # motion-module blocks ran on pixel chunks
    assert stats.by_kind[TEMPORAL] > 0, stats   # ResBlocks / spatial transformers on frame chunks
    assert stats.fallbacks == 0, stats
    torch.testing.assert_close(out, ad.ref, rtol=0, atol=1e-4)
    assert _module_state(ad.unet) == ad.injected


def test_frame_chunking_falls_back_when_animatediff_normalises_frames_together(ad):
    """v1 motion modules, PIA and v2 modules applied "improperly" (AnimateDiff Loader [Legacy] with
    apply_v2_models_properly off): AnimateDiff-Evolved swaps GroupNorm.forward for one that
    normalises all frames together during the U-Net call."""
    import comfy.patcher_extension

    hack = ad.ade_model.clone()
    params = hack.get_attachment("ADE_params").clone()
    params.apply_v2_properly = False
    hack.set_attachments("ADE_params", params)
    pos = ad.graph.output(ad.api, ad.api[ad.sampler]["inputs"]["positive"][0])[0]
    neg = ad.graph.output(ad.api, ad.api[ad.sampler]["inputs"]["negative"][0])[0]
    latent = ad.graph.output(ad.api, ad.latent)[0]
    ksampler = ad.comfy_nodes.KSampler()
    common = dict(seed=1, steps=1, cfg=7.5, sampler_name="euler", scheduler="normal", positive=pos, negative=neg,
                  latent_image=latent, denoise=1.0)
    ref = ksampler.sample(hack, **common)[0]["samples"]
    from avlab.nodes.lightcache import AVLabLightCache

    model = AVLabLightCache.execute(hack, cache_interval=1, temporal_chunks=3, spatial_chunks=1, **FIXED).result[0]
    out = ksampler.sample(model, **common)[0]["samples"]
    stats = model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)[0].stats
    # ResBlocks/spatial transformers ran whole while GroupNorm was AnimateDiff's (3 chunks of 2x4
    # rows would split videos; AnimateDiff's GroupNorm then divides by zero); up/downsamplers split
    assert stats.fallbacks > 0 and stats.by_kind[TEMPORAL] > 0, stats
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    assert torch.nn.GroupNorm.forward.__qualname__ == "GroupNorm.forward"  # restored by AnimateDiff


def test_context_windows_keep_separate_cache_keys(ad, caplog):
    """Standard Static context windows of 4 frames (overlap 2) over 6 frames: 2 windows per step."""
    frames, windows = 6, {(0, 1, 2, 3), (2, 3, 4, 5)}
    context = {"context_length": 4, "context_overlap": 2}
    settings = {"cache_interval": 3, "temporal_chunks": 1, "spatial_chunks": 1}
    model = lightcache_model(ad, settings, frames=frames, context=context)
    api = variant(ad, settings, frames=frames, context=context)
    n_out = len(ad.unet.output_blocks)
    log: list = []

    def record(h, hsp, to):  # the deep feature entering the shallow output block (cache_depth 0)
        if to.get("block") == ("output", n_out - 1):
            log.append({"sigma": float(to["sigmas"][0]), "slots": list(to["cond_or_uncond"]),
                        "window": tuple(to["ad_params"]["sub_idxs"]), "h": h.clone()})
        return h, hsp

    m = model.clone()
    m.set_model_output_block_patch(record)
    inputs = {k: ad.graph.output(api, v[0])[v[1]] if _is_link(v) else v
              for k, v in api[ad.sampler]["inputs"].items() if k != "model"}
    with caplog.at_level("INFO", logger="avlab.lightcache"):
        out = ad.comfy_nodes.KSampler().sample(m, **inputs)[0]["samples"]
    assert out.shape[0] == frames and torch.isfinite(out).all()
    [line] = _summaries(caplog)
    assert f"skipped {STEPS - 1}/{STEPS} steps" in line and "0 cache misses" in line, line

    assert {r["window"] for r in log} == windows
    sigmas = sorted({r["sigma"] for r in log}, reverse=True)
    assert len(sigmas) == STEPS
    stored: dict = {}
    checked = 0
    for r in log:
        parts = dict(zip(r["slots"], r["h"].chunk(len(r["slots"]))))
        for slot, part in parts.items():
            key = (slot, r["window"])
            if r["sigma"] == sigmas[0]:  # full step
                stored[key] = part
                continue
            assert torch.equal(part, stored[key]), f"cache call {key} was not fed its own window's feature"
            other = (slot, next(w for w in windows if w != r["window"]))
            assert not torch.equal(part, stored[other])
            checked += 1
    assert checked == (STEPS - 1) * len(windows) * 2  # every cache step, window and cond/uncond slot


def test_nothing_is_left_patched_on_the_model(ad, caplog):
    import comfy.model_management
    import comfy.samplers

    sampling_function = comfy.samplers.sampling_function
    with caplog.at_level("INFO", logger="avlab.lightcache"):  # cache and chunking together
        out = run(ad, {"cache_interval": 3, "temporal_chunks": 2, "spatial_chunks": 2})
    assert torch.isfinite(out).all() and len(_summaries(caplog)) == 1
    assert _module_state(ad.unet) == ad.injected            # motion modules' __dict__ included
    for m in ad.unet.modules():
        assert "forward" not in m.__dict__ and "_forward" not in m.__dict__, type(m).__name__
    assert repr(ad.ade_model.model_options) == ad.ade_options
    assert comfy.samplers.sampling_function is sampling_function
    assert torch.nn.GroupNorm.forward.__qualname__ == "GroupNorm.forward"
    comfy.model_management.unload_all_models()  # AnimateDiff ejects its modules on unload
    assert _module_state(ad.unet) == ad.pristine
