"""The pack's packaging rules (issue 2): metadata, dependency hygiene, import-light entry point."""

from __future__ import annotations

import re
import zipfile
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_RUNTIME = {"torch", "torchvision", "torchaudio"}


def _req_names(lines):
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_requirements_match_pyproject_dependencies():
    reqs = _req_names((ROOT / "requirements.txt").read_text().splitlines())
    deps = _pyproject()["project"]["dependencies"]
    assert sorted(reqs) == sorted(deps)


def test_runtime_requirements_never_pin_torch():
    reqs = _req_names((ROOT / "requirements.txt").read_text().splitlines())
    names = {re.split(r"[<>=!~\[ ;]", r, 1)[0].lower() for r in reqs}
    assert not names & FORBIDDEN_RUNTIME


def test_comfy_registry_metadata():
    data = _pyproject()
    assert data["project"]["name"] == "avlab"
    assert data["project"]["version"]
    assert data["project"]["license"]
    comfy = data["tool"]["comfy"]
    assert comfy["DisplayName"] == "AVLab"
    assert comfy["PublisherId"]
    assert comfy["requires-comfyui"] == ">=0.3.64"


def test_every_subpackage_is_listed_for_installation():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {
        "avlab." + p.parent.relative_to(ROOT).as_posix().replace("/", ".")
        if p.parent != ROOT else "avlab"
        for p in ROOT.glob("**/__init__.py")
        if p.relative_to(ROOT).parts[0] not in {"tests", "benchmarks", "scripts", ".venv", "out", "build"}
        and not p.relative_to(ROOT).parts[0].startswith(".")
    } | {"avlab"}
    assert on_disk <= listed


def test_pack_root_defines_v3_entrypoint_only():
    source = (ROOT / "__init__.py").read_text()
    assert "def comfy_entrypoint" in source
    assert "NODE_CLASS_MAPPINGS" not in re.sub(r'""".*?"""', "", source, flags=re.S)


def test_importing_the_pack_loads_nothing_heavy():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('avlab_probe', r'{ROOT / '__init__.py'}',"
        f" submodule_search_locations=[r'{ROOT}'])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['avlab_probe'] = m; spec.loader.exec_module(m)\n"
        "heavy = [n for n in ('torch', 'numpy', 'av', 'diffusers', 'transformers') if n in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_node_modules_never_import_the_host_from_core_packages():
    core_dirs = [d for d in ROOT.iterdir() if d.is_dir() and (d / "__init__.py").exists()
                 and d.name not in {"nodes", "tests"}]
    pattern = re.compile(r"^\s*(from|import)\s+(comfy\b|comfy_api\b|folder_paths\b|server\b|nodes\b)", re.M)
    offenders = [str(p.relative_to(ROOT)) for d in core_dirs for p in d.rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_a_wheel_ships_every_module_the_weights_and_the_workflows(tmp_path):
    pytest.importorskip("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [whl] = tmp_path.glob("avlab-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    expected = {f"avlab/{f}" for f in tracked
                if f.startswith(("weights/", "workflows/")) or
                (f.endswith(".py") and f.split("/")[0] not in {"tests", "benchmarks", "scripts"})}
    assert expected - names == set()
