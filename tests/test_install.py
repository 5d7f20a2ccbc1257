"""f5app installs like any Python package: a wheel built from this checkout, installed into a fresh
virtual environment, runs every entry point from a folder outside the checkout, with its configs
and demo data inside the wheel and ``outputs/`` created where the user runs it.

The fresh environment reuses the test environment's installed dependencies through a ``.pth``
file (no download); f5app itself comes only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: What a build reads: copied so the build never writes build/ or *.egg-info into the checkout.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "conf", "f5app")
FAST_INFER = ["nfe_step=2", "vocoder.n_iter=2", "device=cpu", "progress=false"]


def _run(command: list[str], cwd: Path, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUTF8="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source)], cwd=dist))
    (built,) = dist.glob("f5app-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_bin(wheel, tmp_path_factory) -> Path:
    """bin/ of a fresh virtual environment with the wheel installed (and nothing of the checkout)."""
    venv = tmp_path_factory.mktemp("venv")
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv))
    python = venv / "bin" / "python"
    site = Path(_ok(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv)).stdout.strip())
    # Lines of a .pth file are appended to sys.path; the .pth files in that folder (the
    # checkout's editable-install hook among them) are not run, so f5app is not importable from it.
    (site / "_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)]
    _ok(_run(install, cwd=venv))
    return venv / "bin"


def test_the_wheel_carries_every_module_config_and_demo_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "f5app").rglob("*.py") if "__pycache__" not in p.parts}
    configs = {"f5app/_conf/" + p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assets = {p.relative_to(REPO).as_posix() for p in (REPO / "f5app" / "assets").rglob("*") if p.is_file()}
    assert "f5app/_conf/train.yaml" in configs and "f5app/assets/demo/metadata.csv" in assets
    assert sorted(modules - names) == []
    assert sorted(configs - names) == []
    assert sorted(assets - names) == []


def test_the_installed_entry_points_run_outside_the_checkout(venv_bin, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _ok(_run([str(venv_bin / "python"), "-c", "import f5app, f5app.config as c; print(f5app.__file__); print(c.CONF_DIR)"], cwd=elsewhere))
    module, conf_dir = (Path(line) for line in where.stdout.split())
    venv = venv_bin.parent.resolve()
    assert module.resolve().is_relative_to(venv) and conf_dir.is_relative_to(venv), where.stdout
    assert not module.resolve().is_relative_to(REPO)

    job = _ok(_run([str(venv_bin / "f5app-train"), "experiment=demo", "--cfg", "job"], cwd=elsewhere))
    assert "name: tiny" in job.stdout
    for app in ("f5app-train", "f5app-infer", "f5app-ckpt", "f5app-prepare", "f5app-report"):
        assert "usage" in _ok(_run([str(venv_bin / app), "--help"], cwd=elsewhere)).stdout.lower(), app

    train = [str(venv_bin / "f5app-train"), "experiment=demo", "trainer.max_updates=2", "trainer.progress_bar=false", "trainer.sample_every=0", "logger=none"]
    _ok(_run(train, cwd=elsewhere))
    run_dir = elsewhere / "outputs" / "runs" / "demo"
    assert (run_dir / "checkpoints" / "update_00000002" / "metadata.json").is_file()
    assert "update_00000002" in _ok(_run([str(venv_bin / "f5app-ckpt"), "list", str(run_dir)], cwd=elsewhere)).stdout

    out = elsewhere / "hello.wav"
    spoken = _ok(_run([str(venv_bin / "f5app-infer"), "ckpt=best", "text=Hello, world: the wheel speaks.", f"out={out}", *FAST_INFER], cwd=elsewhere))
    assert spoken.stdout.strip().splitlines()[-1] == str(out) and out.stat().st_size > 44

    prepared = _ok(_run([str(venv_bin / "f5app-prepare"), "data=demo", "progress=false"], cwd=elsewhere))
    assert "40 clips" in prepared.stdout
    missing = _run([str(venv_bin / "f5app-report"), str(elsewhere / "outputs" / "sweeps" / "none")], cwd=elsewhere)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
