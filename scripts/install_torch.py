"""Install torch into the Python that runs this script (scripts/setup.sh runs it with .venv's), or keep the one there.

A stock machine that reaches only the public package registry gets, for ``torch==PIN`` on Linux, the CUDA build
with about 3 GB of nvidia packages, even on a machine without a GPU. So:
- a torch already installed at MINIMUM or newer is kept, whatever its build (CPU, CUDA, ROCm, MPS);
- with none (or an older one) on Linux without an NVIDIA GPU, the CPU-only build from PyTorch's CPU wheel index comes
  first (about 200 MB), and the registry's default build is the fallback when that index cannot be reached;
- otherwise (a GPU, macOS, Windows) the registry's default build, which is what those machines should run.
Every choice is printed with its rough size before pip starts. Usage: ``python scripts/install_torch.py [--dry-run]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

PIN = "2.13.0"  # the build the tests and the shipped numbers were measured with
MINIMUM = (2, 5)  # torch.serialization.safe_globals (safe reading of official model_args.pth)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Attempt:
    """One way to install torch: what the user is told, and pip's arguments."""

    says: str
    pip_args: tuple[str, ...]


def release(version: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as '2.13.0+cpu' or '2.6.0a0'."""
    numbers = re.match(r"(\d+)\.(\d+)", version)
    return (int(numbers[1]), int(numbers[2])) if numbers else (0, 0)


def plan(present: Optional[str], system: str, nvidia_gpu: bool) -> list[Attempt]:
    """The installs to try in order (none: keep ``present``)."""
    if present is not None and release(present) >= MINIMUM:
        return []
    sizes = {"Linux": "the CUDA build: about 3 GB with its nvidia packages" if nvidia_gpu else
             "on Linux the CUDA build, about 3 GB with its nvidia packages; it also runs on a CPU",
             "Darwin": "about 80 MB", "Windows": "the CPU build, about 250 MB"}
    registry = Attempt(f"torch {PIN} from the package registry ({sizes.get(system, 'size unknown')})",
                       (f"torch=={PIN}",))
    if system == "Linux" and not nvidia_gpu:
        cpu = Attempt(f"torch {PIN}, the CPU-only build, from PyTorch's CPU wheel index {CPU_INDEX} (about 200 MB)",
                      ("--index-url", CPU_INDEX, "--timeout", "30", "--retries", "1", f"torch=={PIN}"))
        return [cpu, registry]
    return [registry]


def installed_torch() -> Optional[str]:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def has_nvidia_gpu() -> bool:
    """Whether nvidia-smi lists a GPU (the driver is there, so a CUDA build can use it)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="say what would be installed; install nothing")
    args = parser.parse_args(argv)
    present = installed_torch()
    attempts = plan(present, platform.system(), has_nvidia_gpu())
    if not attempts:
        print(f"setup: keeping the installed torch {present} (at least {'.'.join(map(str, MINIMUM))})")
        return 0
    if present is not None:
        print(f"setup: torch {present} is older than {'.'.join(map(str, MINIMUM))}; replacing it")
    for number, attempt in enumerate(attempts):
        print(f"setup: installing {attempt.says}")
        if args.dry_run:
            continue
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *attempt.pip_args])
        if done.returncode == 0:
            return 0
        if number + 1 < len(attempts):
            print("setup: that did not work (see pip's message above); trying the next way")
    if args.dry_run:
        return 0
    print("setup: torch could not be installed; install it yourself into this environment "
          f"(https://pytorch.org/get-started/locally/), at least {'.'.join(map(str, MINIMUM))}, then run setup again",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
