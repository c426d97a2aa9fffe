"""Host test tier: the AVLab pack inside a real ComfyUI (design.md "Test tiers").

Runs only when ``COMFYUI_PATH`` points at a ComfyUI checkout (>= 0.3.64, its requirements installed
in the interpreter running pytest — override the server's with ``COMFYUI_PYTHON``); otherwise every
test module here is reported skipped at collection with the reason, without being imported (so a
host test module may import anything at top level). ``scripts/setup_comfyui_dev.sh`` checks a setup.

    COMFYUI_PATH=/path/to/ComfyUI python -m pytest -q tests/host

``AVLAB_REQUIRE_HOST=1`` (set by ``.ci/run``) turns every skip in this tier — a missing or broken
``COMFYUI_PATH``, a ``skipif``, an ``importorskip`` — into a failure, so CI cannot pass with the host
tier silently off.

Fixtures (all session-scoped; the server is started once and shared)
------------------------------------------------------------------------------------------------
``comfyui_path`` -> Path
    The checkout.
``tiny_checkpoints`` -> dict
    ``{"dir", "files": {name: Path}, "manifest", "generated_s"}`` from ``tiny_checkpoints.py``:
    ``sd15`` (checkpoints/), ``wan21_t2v`` and ``svd_unet`` (diffusion_models/), ``wan21_vae`` (vae/).
    Generated once per factory version into ``$AVLAB_TEST_CACHE`` (default ``~/.cache/avlab-tests``).
``animatediff`` -> dict
    ``{"path": Path | None, "how": str}``: the AnimateDiff-Evolved source (``comfy_host.find_animatediff``:
    ``$AVLAB_ANIMATEDIFF_PATH`` — ``none`` turns it off —, ``$COMFYUI_PATH/custom_nodes/
    ComfyUI-AnimateDiff-Evolved``, ``$AVLAB_SHARED/host/``, the repository's ``../shared/host/``) and how
    it was found, or ``None`` and why not. ``animatediff_path`` -> Path skips the test with that reason.
``animatediff_models`` -> dict
    ``{"sd15_ad": Path, "mm_sd_v15_v2": Path}``: the SD1.5 checkpoint AnimateDiff can inject into and
    the tiny v2 motion module (``tiny_checkpoints.EXTRA_FILES``; generated once, ~2.5 GB, like the
    other tiny checkpoints). ``animatediff_server_models`` -> dict: the same linked into the running
    server's ``checkpoints/`` and ``animatediff_models/`` (``{"ckpt": name, "motion_model": name}``).
``comfy_host`` -> comfy_host.ComfyHost
    Running ``main.py --cpu`` on a free 127.0.0.1 port with base directory ``base_dir`` holding
    ``models/`` (tiny checkpoints symlinked under their file names, ``tiny_checkpoints.TINY``),
    ``custom_nodes/avlab`` (symlink to this repository), ``custom_nodes/avlab_host_test_nodes``
    (test-only helpers: ``HostTestConditioning``), ``custom_nodes/ComfyUI-AnimateDiff-Evolved`` (a
    writable copy, when ``animatediff`` found it), ``input/``, ``output/``, ``user/`` and the server
    log ``comfyui.log`` (extra server flags: ``AVLAB_HOST_EXTRA_ARGS``, start timeout:
    ``AVLAB_HOST_START_TIMEOUT``, default 180 s). Useful members: ``input_dir``, ``output_dir``, ``models_dir``,
    ``add_model(folder, path)`` (visible to the running server), ``output_files(history, node_id,
    kind="images")``, ``log_path``, ``timings``.
``comfy_client`` -> comfy_host.ComfyClient
    ``queue_prompt(api_prompt) -> prompt_id``; ``wait(prompt_id, timeout) -> history entry``
    (raises ``ExecutionFailed`` with node id/type, exception and traceback from ComfyUI's
    ``execution_error``, ``ExecutionInterrupted``, or ``HostError`` on timeout); ``run(prompt)``;
    ``object_info([class])``; ``model_folders()``; ``models(folder)``; ``interrupt([prompt_id])``;
    ``queue()``; ``free()``; ``log_text(since)`` / ``log_offset()`` / ``log_tail()``.
    Invalid prompts raise ``PromptRejected`` (with ``node_errors``).
``comfy_inprocess`` -> module ``comfy``
    Imports ComfyUI *into the pytest process* (``--cpu`` parsed first) for tests that need host
    objects directly, e.g. ``tiny_stable_audio.build_tiny_stable_audio()`` (a small Stable Audio DiT
    in a ModelPatcher) or ``comfy.sd.load_diffusion_model(path)``. Only request it when needed.

Helper modules importable from tests in this directory: ``comfy_host``, ``tiny_checkpoints``,
``tiny_stable_audio``. Test modules here must have unique basenames across ``tests/`` (rootdir
import mode). Write outputs under ``output/<your system>/`` via ``filename_prefix``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

_COMFYUI = os.environ.get("COMFYUI_PATH", "").strip()
if not _COMFYUI:
    SKIP_REASON = "COMFYUI_PATH not set: host tests need a ComfyUI checkout"
elif not (Path(_COMFYUI, "main.py").is_file() and Path(_COMFYUI, "comfy").is_dir()):
    SKIP_REASON = f"COMFYUI_PATH={_COMFYUI!r} is not a ComfyUI checkout (no main.py / comfy/)"
else:
    SKIP_REASON = None


REQUIRE_HOST = os.environ.get("AVLAB_REQUIRE_HOST", "").strip() not in ("", "0")


def _in_host_tier(path) -> bool:
    return HERE in Path(str(path)).resolve().parents


def _fail_skip(report, what: str) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"AVLAB_REQUIRE_HOST=1 but {what} was skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_HOST and report.skipped and _in_host_tier(collector.path):
        _fail_skip(report, f"host module {collector.path.name}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_HOST and report.skipped and _in_host_tier(item.fspath) and not hasattr(report, "wasxfail"):
        _fail_skip(report, f"host test {item.nodeid}")


class _SkippedHostModule(pytest.Module):
    """A host test module reported as skipped without being imported (no ComfyUI here)."""

    def collect(self):
        pytest.skip(SKIP_REASON)


def pytest_pycollect_makemodule(module_path, parent):
    if SKIP_REASON and HERE in Path(module_path).resolve().parents:
        return _SkippedHostModule.from_parent(parent, path=Path(module_path))
    return None


# Helpers live beside this file; put this directory (never the repository root) on sys.path.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import comfy_host as _host  # noqa: E402
import tiny_checkpoints as _tiny  # noqa: E402

collect_ignore = ["host_test_nodes"]

_TIMINGS: dict[str, float] = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.host)


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    return Path(_COMFYUI).resolve()


def _python() -> str:
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


@pytest.fixture(scope="session")
def tiny_checkpoints(comfyui_path) -> dict:
    t0 = time.perf_counter()
    info = _tiny.ensure_tiny_checkpoints(comfyui_path, python=_python())
    _TIMINGS["tiny checkpoints " + ("generated" if info["generated_s"] is not None else "from cache")] = (
        time.perf_counter() - t0)
    return info


@pytest.fixture(scope="session")
def animatediff(comfyui_path) -> dict:
    path, how = _host.find_animatediff(comfyui_path)
    return {"path": path, "how": how}


@pytest.fixture(scope="session")
def animatediff_path(animatediff) -> Path:
    if animatediff["path"] is None:
        pytest.skip(animatediff["how"])
    return animatediff["path"]


@pytest.fixture(scope="session")
def animatediff_models(comfyui_path, animatediff_path) -> dict:
    t0 = time.perf_counter()
    files = {name: _tiny.ensure_extra_checkpoint(name, comfyui_path, python=_python())
             for name in ("sd15_ad", "mm_sd_v15_v2")}
    _TIMINGS["AnimateDiff tiny checkpoints"] = time.perf_counter() - t0
    return files


@pytest.fixture(scope="session")
def animatediff_server_models(comfy_host, animatediff_models) -> dict:
    return {"ckpt": comfy_host.add_model("checkpoints", animatediff_models["sd15_ad"]),
            "motion_model": comfy_host.add_model("animatediff_models", animatediff_models["mm_sd_v15_v2"])}


@pytest.fixture(scope="session")
def comfy_host(comfyui_path, tiny_checkpoints, animatediff, tmp_path_factory):
    host = _host.ComfyHost(comfyui_path, tmp_path_factory.mktemp("comfyui_base"), python=_python(),
                           extra_args=shlex.split(os.environ.get("AVLAB_HOST_EXTRA_ARGS", "")))
    host.link_custom_node("avlab", REPO)
    host.link_custom_node("avlab_host_test_nodes", HERE / "host_test_nodes")
    if animatediff["path"] is not None:
        host.copy_custom_node(_host.ANIMATEDIFF_DIR, animatediff["path"])
    for name, (folder, _fname) in _tiny.FILES.items():
        host.add_model(folder, tiny_checkpoints["files"][name])
    try:
        host.start(timeout=float(os.environ.get("AVLAB_HOST_START_TIMEOUT", "180")))
        _TIMINGS["ComfyUI server start"] = host.timings["start"]
        _TIMINGS["_log"] = str(host.log_path)
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def comfy_client(comfy_host) -> _host.ComfyClient:
    return comfy_host.client


@pytest.fixture(scope="session")
def comfy_inprocess(comfyui_path):
    t0 = time.perf_counter()
    _tiny.import_comfy(str(comfyui_path))
    import comfy.model_management  # noqa: F401
    import comfy.model_patcher  # noqa: F401
    import comfy.sd  # noqa: F401
    import comfy

    _TIMINGS["in-process comfy import"] = time.perf_counter() - t0
    return comfy


def pytest_terminal_summary(terminalreporter):
    if not _TIMINGS:
        return
    terminalreporter.section("AVLab host tier")
    for key, value in _TIMINGS.items():
        if key == "_log":
            terminalreporter.write_line(f"ComfyUI log: {value}")
        else:
            terminalreporter.write_line(f"{key}: {value:.1f} s")
