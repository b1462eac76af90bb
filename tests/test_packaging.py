"""What ships: a wheel built from a clean clone of this checkout's HEAD and installed on its own makes the trained
demo's video from an empty folder, and neither the wheel nor the registry archive (`comfy node pack`: the files git
tracks, less those .comfyignore matches) carries the demo training, the tests or the benchmarks."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVELOPMENT_ONLY = ("training/", "tests/", "benchmarks/", "scripts/")


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clean clone of HEAD (what a user gets from the repository; uncommitted files are not in it)."""
    try:
        head = git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the wheel and archive are built from a clone of HEAD")
    path = tmp_path_factory.mktemp("clone") / "repo"
    git("clone", "--quiet", "--no-checkout", str(ROOT), str(path))
    git("checkout", "--quiet", "--detach", head, cwd=path)
    return path


@pytest.fixture(scope="module")
def wheel(clone, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(out), str(clone)], check=True, capture_output=True, timeout=120)
    return next(out.glob("*.whl"))


def test_the_wheel_holds_the_package_and_the_demo_files_and_no_development_code(clone, wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {path.relative_to(clone).as_posix() for path in (clone / "lumina_core").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert package <= names, f"missing from the wheel: {sorted(package - names)}"
    assert {"lumina_core/demo/models/transformer.safetensors", "lumina_core/demo/models/vae.safetensors",
            "lumina_core/demo/models/text_encoder/tokenizer.json"} <= names
    shipped = [name for name in names if not name.startswith(".") and ".dist-info/" not in name]
    assert all(name.startswith("lumina_core/") for name in shipped), sorted(shipped)


def test_the_installed_wheel_generates_the_trained_demo_from_an_empty_folder(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=120)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "2"}
    probe = subprocess.run([sys.executable, "-c", "import lumina_core.demo as d; print(d.__file__, d.DEMO_IS_TRAINED)"],
                           cwd=empty, env=env, check=True, capture_output=True, text=True, timeout=120)
    where, trained = probe.stdout.split()
    assert Path(where).is_relative_to(site) and trained == "True"
    run = subprocess.run([sys.executable, "-m", "lumina_core", "generate", "--prompt", "a red circle moving left",
                          "--steps", "6", "--out", "clip.mp4"], cwd=empty, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (empty / "clip.mp4").stat().st_size > 0 and (empty / "clip.png").is_file()
    assert "untrained" not in run.stderr


def test_the_registry_archive_leaves_out_the_development_folders(clone):
    tracked = set(git("ls-files", cwd=clone).splitlines())
    ignored = set(git("ls-files", "--cached", "--ignored", "--exclude-from=.comfyignore", cwd=clone).splitlines())
    archive = tracked - ignored
    assert "lumina_core/demo/models/transformer.safetensors" in archive and "nodes/sampler.py" in archive
    assert any(path.startswith("training/") for path in tracked)
    assert not [path for path in archive if path.startswith(DEVELOPMENT_ONLY)]
    trainer = {path.name for path in (clone / "training").glob("*.py") if path.name != "__init__.py"}
    assert trainer and not [path for path in archive if Path(path).name in trainer]
