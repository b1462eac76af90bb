"""The pack's requirements never fight ComfyUI's own: ComfyUI Manager installs requirements.txt into ComfyUI's Python,
so a bound ComfyUI does not have (transformers<5 while ComfyUI allows 5) makes pip downgrade or upgrade what ComfyUI
installed. For every package both files name, the ranges must meet, ours may add no upper bound, and our lower bound
may not exceed ComfyUI's (any environment ComfyUI accepts, we accept). pyproject's dependencies say the same, and no
OpenCV wheel is required (four wheels share the cv2 files; a second one beside another pack's overwrites them)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_REQUIREMENTS = Path(os.environ.get("COMFYUI_PATH", ROOT.parent / "shared" / "comfyui"), "requirements.txt")
UPPER = ("<", "<=", "==", "~=", "===")
LOWER = (">", ">=", "==", "~=", "===")
OPENCV_WHEELS = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}


def read_requirements(text: str) -> dict[str, SpecifierSet]:
    """{canonical name: specifiers} of a requirements file's plain requirement lines."""
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement.specifier
    return found


def lower_bound(specifiers: SpecifierSet) -> Version | None:
    bounds = [Version(spec.version) for spec in specifiers if spec.operator in LOWER]
    return max(bounds, default=None)


def conflicts(ours: dict[str, SpecifierSet], comfyui: dict[str, SpecifierSet]) -> list[str]:
    """Why each shared package's range would make pip change what ComfyUI's own requirements installed."""
    found = []
    for name in sorted(ours.keys() & comfyui.keys()):
        mine, theirs = ours[name], comfyui[name]
        candidates = {Version(spec.version) for spec in (*mine, *theirs) if "*" not in spec.version}
        if candidates and not any(version in mine and version in theirs for version in candidates):
            found.append(f"{name}: {mine} and ComfyUI's {theirs or 'any version'} do not meet")
        if any(spec.operator in UPPER for spec in mine) and not any(spec.operator in UPPER for spec in theirs):
            found.append(f"{name}: {mine} caps a package ComfyUI leaves open ({theirs or 'any version'})")
        mine_low, theirs_low = lower_bound(mine), lower_bound(theirs)
        if mine_low is not None and (theirs_low is None or mine_low > theirs_low):
            found.append(f"{name}: {mine} asks more than ComfyUI's {theirs or 'any version'}")
    return found


def test_a_conflicting_range_is_caught():
    comfyui = read_requirements("numpy>=1.25.0\ntransformers>=4.50.3\neinops\nav>=14.2.0\n")
    assert conflicts(read_requirements("numpy>=1.24\ntransformers>=4.44\neinops\nav>=12\n"), comfyui) == []
    problems = conflicts(read_requirements("numpy<1.25\ntransformers>=4.44,<5\neinops>=0.7\nav>=15\n"), comfyui)
    assert [problem.split(":")[0] for problem in problems] == ["av", "einops", "numpy", "numpy", "transformers"]
    assert "do not meet" in problems[2] and "caps" in problems[4] and "asks more" in problems[0]


@pytest.mark.skipif(not COMFYUI_REQUIREMENTS.is_file(), reason=f"no ComfyUI source tree at {COMFYUI_REQUIREMENTS}")
def test_requirements_never_fight_comfyuis_own():
    ours = read_requirements((ROOT / "requirements.txt").read_text())
    comfyui = read_requirements(COMFYUI_REQUIREMENTS.read_text())
    assert {"transformers", "numpy", "safetensors", "einops", "av", "tqdm"} <= ours.keys() & comfyui.keys()
    assert conflicts(ours, comfyui) == []


def test_pyproject_lists_requirements_txt_and_no_opencv_wheel():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    ours = read_requirements((ROOT / "requirements.txt").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert read_requirements("\n".join(project["dependencies"])) == ours
    assert not OPENCV_WHEELS & ours.keys() and "torch" not in ours


def test_the_pack_imports_without_opencv_and_says_what_to_install():
    """lumina_core.motion (imported by the nodes at load) needs cv2 only when it measures a flow."""
    code = ("import sys; sys.modules['cv2'] = None\n"
            "import numpy as np\n"
            "from lumina_core import motion\n"
            "try:\n"
            "    motion.optical_flow(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "needs OpenCV" in done.stdout and "pip install opencv-python-headless" in done.stdout
