"""Run a real ComfyUI server with the AVLab pack and talk to it over its HTTP API (host test tier).

:class:`ComfyHost` lays out a ComfyUI base directory (``models/``, ``custom_nodes/avlab`` → the
repository, ``input/``, ``output/``, ``user/``), starts ``main.py --cpu`` on a free loopback port,
waits for ``/object_info`` and stops it again. :class:`ComfyClient` queues API-format prompts and
waits for them, raising :class:`ExecutionFailed` with ComfyUI's own ``execution_error`` details.

Nothing here imports ``comfy``: the server is a separate process, so the pytest process stays clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]

#: Folder name of the AnimateDiff-Evolved node pack (as in ``custom_nodes/`` and ``../shared/host/``).
ANIMATEDIFF_DIR = "ComfyUI-AnimateDiff-Evolved"
_OFF = ("0", "none", "off", "no", "false")


def _is_animatediff(path: Path) -> bool:
    return (path / "__init__.py").is_file() and (path / "animatediff" / "motion_module_ad.py").is_file()


def find_animatediff(comfyui_path: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """Where the AnimateDiff-Evolved source is: ``(path, how it was found)`` or ``(None, why not)``.

    In order: ``$AVLAB_ANIMATEDIFF_PATH`` (``none``/``0``/``off`` = don't use it; a wrong path is
    not replaced by another one), ``<comfyui_path>/custom_nodes/ComfyUI-AnimateDiff-Evolved``
    (where ``scripts/setup_comfyui_dev.sh`` copies it), ``$AVLAB_SHARED/host/`` and the repository's
    ``../shared/host/`` (the read-only host sources beside the clone, as ``.ci/run`` expects them).
    """
    env = os.environ.get("AVLAB_ANIMATEDIFF_PATH", "").strip()
    if env:
        if env.lower() in _OFF:
            return None, f"AnimateDiff-Evolved disabled by AVLAB_ANIMATEDIFF_PATH={env}"
        path = Path(env).expanduser()
        if _is_animatediff(path):
            return path.resolve(), f"AVLAB_ANIMATEDIFF_PATH={env}"
        return None, (f"AVLAB_ANIMATEDIFF_PATH={env!r} is not an AnimateDiff-Evolved source folder "
                      "(needs __init__.py and animatediff/motion_module_ad.py)")
    candidates = []
    if comfyui_path:
        candidates.append(Path(comfyui_path) / "custom_nodes" / ANIMATEDIFF_DIR)
    shared = os.environ.get("AVLAB_SHARED", "").strip()
    if shared:
        candidates.append(Path(shared).expanduser() / "host" / ANIMATEDIFF_DIR)
    candidates.append(REPO.parent / "shared" / "host" / ANIMATEDIFF_DIR)
    for path in candidates:
        if _is_animatediff(path):
            return path.resolve(), str(path)
    return None, ("AnimateDiff-Evolved not found (looked in " + ", ".join(map(str, candidates)) +
                  "); put its source there or set AVLAB_ANIMATEDIFF_PATH")


def copy_tree_writable(source: Path, dst: Path) -> Path:
    """Copy a node pack (no ``.git``/``__pycache__``) and make the copy writable (sources may be read-only)."""
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(Path(source), dst, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"))
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)
    os.chmod(dst, os.stat(dst).st_mode | 0o200)
    return dst


class HostError(RuntimeError):
    """The ComfyUI server did not start, answer or finish in time."""


class PromptRejected(HostError):
    """``POST /prompt`` refused the prompt (validation). ``error`` / ``node_errors`` as ComfyUI sent them."""

    def __init__(self, error: dict, node_errors: dict):
        self.error, self.node_errors = error, node_errors
        lines = [f"prompt rejected: {error.get('message', error)} {error.get('details', '')}".rstrip()]
        for node_id, info in (node_errors or {}).items():
            for e in info.get("errors", []):
                lines.append(f"  node {node_id} ({info.get('class_type')}): {e.get('message')}: {e.get('details')}")
        super().__init__("\n".join(lines))


class ExecutionFailed(HostError):
    """A queued prompt ended with ``execution_error``; the message carries node, exception and traceback."""

    def __init__(self, prompt_id: str, error: dict, history: dict):
        self.prompt_id, self.error, self.history = prompt_id, error, history
        self.node_id = error.get("node_id")
        self.node_type = error.get("node_type")
        self.exception_type = error.get("exception_type")
        self.exception_message = error.get("exception_message")
        self.traceback = "".join(error.get("traceback") or [])
        super().__init__(
            f"prompt {prompt_id} failed in node {self.node_id} ({self.node_type}): "
            f"{self.exception_type}: {self.exception_message}\nComfyUI traceback:\n{self.traceback}")


class ExecutionInterrupted(HostError):
    """A queued prompt ended with ``execution_interrupted`` (``POST /interrupt``)."""

    def __init__(self, prompt_id: str, info: dict, history: dict):
        self.prompt_id, self.info, self.history = prompt_id, info, history
        super().__init__(f"prompt {prompt_id} interrupted in node {info.get('node_id')} ({info.get('node_type')})")


class ComfyClient:
    """Minimal blocking client for ComfyUI's HTTP API (urllib only)."""

    def __init__(self, base_url: str, log_path: Path | None = None, client_id: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.log_path = Path(log_path) if log_path else None
        self.client_id = client_id or f"avlab-host-tests-{uuid.uuid4().hex[:8]}"

    # -- HTTP ------------------------------------------------------------------------------------
    def request(self, method: str, path: str, payload=None, timeout: float = 60.0):
        """Return ``(status, parsed JSON or text)``; HTTP errors are returned, not raised."""
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        text = body.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def get_json(self, path: str, timeout: float = 60.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise HostError(f"GET {path} -> HTTP {status}: {body}")
        return body

    def post_json(self, path: str, payload, timeout: float = 60.0):
        status, body = self.request("POST", path, payload, timeout=timeout)
        if status != 200:
            raise HostError(f"POST {path} -> HTTP {status}: {body}")
        return body

    # -- API -------------------------------------------------------------------------------------
    def object_info(self, node_class: str | None = None) -> dict:
        """``GET /object_info`` (all nodes) or ``/object_info/<class>`` (``{class: info}``)."""
        path = "/object_info" if node_class is None else f"/object_info/{urllib.parse.quote(node_class)}"
        return self.get_json(path)

    def model_folders(self) -> list[str]:
        """``GET /models``: every registered model folder name."""
        return self.get_json("/models")

    def models(self, folder: str) -> list[str]:
        """``GET /models/<folder>``: files ComfyUI sees in that model folder."""
        return self.get_json(f"/models/{urllib.parse.quote(folder)}")

    def queue_prompt(self, prompt: dict, extra_data: dict | None = None) -> str:
        """``POST /prompt`` with an API-format prompt; returns the ``prompt_id``.

        Raises :class:`PromptRejected` with ComfyUI's ``node_errors`` when validation fails.
        """
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        status, body = self.request("POST", "/prompt", payload)
        if status != 200:
            if isinstance(body, dict):
                raise PromptRejected(body.get("error") or {}, body.get("node_errors") or {})
            raise HostError(f"POST /prompt -> HTTP {status}: {body}")
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        """The ``/history/<id>`` entry, or ``None`` while the prompt is queued or running."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict:
        """Block until ``prompt_id`` finished; return its history entry (``outputs``, ``status``...).

        Raises :class:`ExecutionFailed` (with ``execution_error`` node, exception and traceback),
        :class:`ExecutionInterrupted`, or :class:`HostError` on timeout (after interrupting it).
        """
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                messages = dict((m[0], m[1]) for m in status.get("messages", []) if len(m) == 2)
                if "execution_error" in messages:
                    raise ExecutionFailed(prompt_id, messages["execution_error"], entry)
                if "execution_interrupted" in messages:
                    raise ExecutionInterrupted(prompt_id, messages["execution_interrupted"], entry)
                if status.get("status_str") == "error":
                    raise ExecutionFailed(prompt_id, {"exception_message": str(status)}, entry)
                return entry
            if time.monotonic() > deadline:
                self.interrupt(prompt_id)
                raise HostError(f"prompt {prompt_id} did not finish in {timeout:.0f} s; "
                                f"queue: {self.queue()}\nlog tail:\n{self.log_tail()}")
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """``queue_prompt`` + ``wait``; returns the history entry."""
        return self.wait(self.queue_prompt(prompt), timeout=timeout)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """``POST /interrupt`` (only ``prompt_id`` if given, else whatever runs)."""
        self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def queue(self) -> dict:
        """``GET /queue``: ``{"queue_running": [...], "queue_pending": [...]}``."""
        return self.get_json("/queue")

    def free(self, unload_models: bool = True, free_memory: bool = False) -> None:
        """``POST /free``: unload models / drop caches after the current prompt."""
        self.post_json("/free", {"unload_models": unload_models, "free_memory": free_memory})

    # -- server log ------------------------------------------------------------------------------
    def log_text(self, since: int = 0, until: int | None = None) -> str:
        """The server's stdout+stderr log between byte offsets (see :meth:`log_offset`)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(since)
            data = fh.read() if until is None else fh.read(max(0, until - since))
        return data.decode("utf-8", "replace")

    def log_offset(self) -> int:
        """Current end of the log; pass to :meth:`log_text` to read only what a test caused."""
        return self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyHost:
    """A ComfyUI base directory plus the server process that serves it.

    Attributes: ``comfyui_path``, ``base_dir`` (with ``models_dir``, ``custom_nodes_dir``,
    ``input_dir``, ``output_dir``, ``temp_dir``, ``user_dir``), ``log_path``, ``port``, ``url``,
    ``client`` and ``timings`` (seconds: ``start``).
    """

    comfyui_path: Path
    base_dir: Path
    python: str = sys.executable
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen | None = None
    startup_log_end: int = 0
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.comfyui_path = Path(self.comfyui_path)
        self.base_dir = Path(self.base_dir)
        self.models_dir = self.base_dir / "models"
        self.custom_nodes_dir = self.base_dir / "custom_nodes"
        self.input_dir = self.base_dir / "input"
        self.output_dir = self.base_dir / "output"
        self.temp_dir = self.base_dir / "temp"
        self.user_dir = self.base_dir / "user"
        self.log_path = self.base_dir / "comfyui.log"
        for d in (self.models_dir, self.custom_nodes_dir, self.input_dir, self.output_dir, self.user_dir):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- layout ----------------------------------------------------------------------------------
    def link_custom_node(self, name: str, source: Path) -> Path:
        """Symlink a node pack directory into ``custom_nodes/<name>`` (before :meth:`start`)."""
        dst = self.custom_nodes_dir / name
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(Path(source).resolve(), target_is_directory=True)
        return dst

    def copy_custom_node(self, name: str, source: Path) -> Path:
        """Copy a node pack into ``custom_nodes/<name>`` (before :meth:`start`); the copy is writable,
        so a read-only source (``../shared/host``) stays untouched when the host writes beside it."""
        return copy_tree_writable(Path(source), self.custom_nodes_dir / name)

    def add_model(self, folder: str, source: Path, name: str | None = None) -> str:
        """Symlink a weights file into ``models/<folder>/``; returns the name ComfyUI lists it under.

        ComfyUI re-scans model folders when their mtime changes, so this also works while running.
        """
        dst_dir = self.models_dir / folder
        dst_dir.mkdir(parents=True, exist_ok=True)
        dst = dst_dir / (name or Path(source).name)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(Path(source).resolve())
        return dst.name

    def output_files(self, history: dict, node_id: str | None = None, kind: str = "images") -> list[Path]:
        """Paths of the files a prompt's output nodes wrote (``images``, ``audio``, ``video``...)."""
        roots = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        paths = []
        for nid, out in history.get("outputs", {}).items():
            if node_id is not None and nid != str(node_id):
                continue
            for item in out.get(kind, []):
                if isinstance(item, dict) and "filename" in item:
                    paths.append(roots[item.get("type", "output")] / item.get("subfolder", "") / item["filename"])
        return paths

    # -- process ---------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            self.python, "main.py", "--cpu",
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            # keep ComfyUI's sqlite file inside the temp base dir, not in the checkout's user/
            "--database-url", f"sqlite:///{self.user_dir / 'comfyui.db'}",
            "--disable-auto-launch", "--dont-print-server",
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> "ComfyHost":
        """Start ``main.py`` and wait until ``/object_info`` answers (raises with the log tail)."""
        if not self.port:
            self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), cwd=self.comfyui_path, env=env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self.client = ComfyClient(self.url, self.log_path)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise HostError(f"ComfyUI exited with code {self.process.returncode} while starting; "
                                f"log {self.log_path}:\n{self.client.log_tail()}")
            try:
                status, body = self.client.request("GET", "/object_info", timeout=30)
                if status == 200 and isinstance(body, dict) and body:
                    break
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise HostError(f"ComfyUI did not answer /object_info within {timeout:.0f} s; "
                                f"log {self.log_path}:\n{self.client.log_tail()}")
            time.sleep(0.5)
        self.timings["start"] = time.perf_counter() - t0
        self.startup_log_end = self.client.log_offset()
        return self

    def startup_log(self) -> str:
        """The server log up to the moment it first answered (node imports, startup warnings)."""
        return self.client.log_text(0, self.startup_log_end) if self.startup_log_end else ""

    def stop(self, grace: float = 15.0) -> None:
        """Terminate the server (SIGTERM), then kill it if it has not exited after ``grace`` s."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


TRACEBACK_RE = re.compile(r"Traceback \(most recent call last\):\n(?:[ \t].*\n|\n)*.*", re.MULTILINE)


def tracebacks(log: str) -> list[str]:
    """Every Python traceback block in a ComfyUI log."""
    return [m.group(0) for m in TRACEBACK_RE.finditer(log)]


