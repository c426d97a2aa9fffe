"""Benchmark harness: every configuration in its own process, ratios against a baseline of the same run.

A benchmark script defines configurations as ``Config(name, target, kwargs)`` where ``target`` is
``"module:function"`` (importable with ``avlab`` on the path); the function does the work once and
may return a dict of extra metrics (e.g. PSNR). :func:`run_all` starts one fresh Python process per
configuration (so allocator caches and earlier peaks never leak between them), which records:

* ``seconds`` — wall time of the call (median of ``repeats`` calls after ``warmup`` calls),
* ``peak_rss_mib`` — peak resident memory *of the measured calls* (``VmHWM`` reset through
  ``/proc/self/clear_refs`` after the warm-up; where that is impossible, ``ru_maxrss`` of the whole
  process and no warm-up),
* ``rss_at_start_mib`` — resident memory just before the measured calls (interpreter, torch, inputs),
* ``cuda_peak_mib`` — ``torch.cuda.max_memory_allocated`` when a GPU is used,

and :func:`ratio_table` writes a markdown table of each metric's ratio to the baseline row.
Not a test: numbers go to ``benchmarks/results/*.md``; tests never assert timings.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Config:
    """One measured configuration: ``target`` = ``"module:function"``, called as ``function(**kwargs)``."""

    name: str
    target: str
    kwargs: dict = field(default_factory=dict)


def import_comfy(path: str):
    """Import ComfyUI (``path`` = its checkout) in-process on the CPU (``--cpu`` parsed before
    ``model_management``); returns the ``comfy`` package with the modules the benchmarks use loaded."""
    if path not in sys.path:
        sys.path.insert(0, path)
    argv = sys.argv
    sys.argv = ["comfyui", "--cpu"]
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
        import comfy.latent_formats  # noqa: F401
        import comfy.model_base  # noqa: F401
        import comfy.model_management  # noqa: F401
        import comfy.model_patcher  # noqa: F401
        import comfy.patcher_extension  # noqa: F401
        import comfy.sample  # noqa: F401
        import comfy.samplers  # noqa: F401
        import comfy.sd  # noqa: F401
        import comfy.supported_models  # noqa: F401
    finally:
        sys.argv = argv
    return comfy


class RunLog(logging.Handler):
    """Keeps the last "<method> - skipped a/b steps" summary line a cache logs after a run."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.last = None

    def emit(self, record):
        msg = record.getMessage()
        if " - skipped " in msg and msg.startswith(("EasyCache", "LazyCache", "LightCache")):
            self.last = msg

    def skipped_text(self) -> str:
        """``"a/b"`` steps skipped as logged, ``"–"`` when nothing was logged."""
        if not self.last:
            return "–"
        return self.last.split(" - skipped ", 1)[1].split(" steps", 1)[0]

    def skipped(self) -> int | None:
        if not self.last:
            return None
        return int(self.last.split(" - skipped ", 1)[1].split("/", 1)[0])

    def estimated_speedup(self) -> float | None:
        """LightCache's own estimate (per-call wall-time medians) from its summary line."""
        if not self.last or "est. denoiser speed-up " not in self.last:
            return None
        v = self.last.split("est. denoiser speed-up ", 1)[1].split("x", 1)[0]
        try:
            return float(v)
        except ValueError:
            return None

    def reused_calls(self) -> tuple[int, int] | None:
        """LightCache: (model calls that reused the cache, all model calls) of the last run."""
        if not self.last or "model calls reused" not in self.last:
            return None
        a, b = self.last.split(" (", 1)[1].split(" model calls", 1)[0].split("/")
        return int(a), int(b)


def _status_kib(key: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in KiB (e.g. ``VmHWM``, the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ≥ 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(reset_ok: bool) -> float:
    if reset_ok:
        return _status_kib("VmHWM") / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _import_avlab() -> None:
    """Make ``avlab`` importable in the worker without putting the repo root on ``sys.path``."""
    try:
        import avlab  # noqa: F401
        return
    except ImportError:
        pass
    import importlib.util

    spec = importlib.util.spec_from_file_location("avlab", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["avlab"] = module
    spec.loader.exec_module(module)


def measure(config: Config, warmup: int = 1, repeats: int = 3, threads: int = 1) -> dict:
    """Run ``config`` in *this* process and return its metrics (what the worker process does)."""
    import torch

    torch.set_num_threads(threads)
    _import_avlab()
    module_name, func_name = config.target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    reset_ok = _reset_peak_rss()
    if not reset_ok:
        warmup = 0                       # the warm-up would set the peak we cannot reset
    for _ in range(warmup):
        func(**config.kwargs)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset_ok = reset_ok and _reset_peak_rss()
    rss_at_start = _status_kib("VmRSS") / 1024
    times, extra = [], {}
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        extra = func(**config.kwargs) or {}
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    result = {"name": config.name, "seconds": statistics.median(times), "peak_rss_mib": _peak_rss_mib(reset_ok),
              "rss_at_start_mib": rss_at_start,
              "rss_method": "VmHWM reset" if reset_ok else "ru_maxrss"}
    if cuda:
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result.update(extra)
    return result


def run_isolated(config: Config, warmup: int = 1, repeats: int = 3, threads: int = 1, timeout: float = 3600) -> dict:
    """Run ``config`` in a fresh Python process and return its metrics."""
    payload = json.dumps({"name": config.name, "target": config.target, "kwargs": config.kwargs,
                          "warmup": warmup, "repeats": repeats, "threads": threads})
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", payload], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark configuration {config.name!r} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_all(configs: list[Config], **kw) -> list[dict]:
    rows = []
    for config in configs:
        print(f"[bench] {config.name} ...", file=sys.stderr, flush=True)
        rows.append(run_isolated(config, **kw))
    return rows


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def ratio_table(rows: list[dict], baseline: str, metrics: tuple[str, ...] = ("seconds", "peak_rss_mib"),
                extra: tuple[str, ...] = ()) -> str:
    """Markdown: absolute values plus ratio to the ``baseline`` row for each metric."""
    base = next(r for r in rows if r["name"] == baseline)
    metrics = tuple(m for m in metrics if m in base) + (("cuda_peak_mib",) if "cuda_peak_mib" in base else ())
    head = ["configuration"]
    for m in metrics:
        head += [m, f"{m} ÷ baseline"]
    head += list(extra)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"] + (" (baseline)" if r["name"] == baseline else "")]
        for m in metrics:
            cells += [f"{r[m]:.3f}", f"{r[m] / base[m]:.3f}" if base[m] else "—"]
        cells += [_fmt(r.get(e)) for e in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_results(name: str, title: str, sections: list[tuple[str, str]], command: str) -> Path:
    """Write ``benchmarks/results/<name>.md`` with a header (machine, date, command) and sections."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    parts = [f"# {title}", "", f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             f"Command: `{command}`. Each configuration ran in its own process.", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body, ""]
    path.write_text("\n".join(parts))
    return path


def _worker_main(payload: str) -> None:
    spec = json.loads(payload)
    config = Config(spec["name"], spec["target"], spec["kwargs"])
    result = measure(config, warmup=spec["warmup"], repeats=spec["repeats"], threads=spec["threads"])
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, help="internal: JSON configuration to measure")
    _worker_main(parser.parse_args().worker)
