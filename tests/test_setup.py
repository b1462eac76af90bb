"""scripts/install_torch.py: which torch the README's first command installs. A stock Linux machine that reaches only
the public registry got the CUDA build (about 3 GB) for the pinned version, and setup then failed on it; now the torch
present is kept, a machine without an NVIDIA GPU gets the CPU-only build first, and no build makes setup fail."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.py"
spec = importlib.util.spec_from_file_location("install_torch", SCRIPT)
install_torch = sys.modules["install_torch"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(install_torch)


@pytest.mark.parametrize("present", ["2.13.0+cpu", "2.5.1+cu124", "2.9.0", "3.0.0a0+git1234"])
def test_a_torch_at_the_minimum_or_newer_is_kept_whatever_its_build(present):
    for system, gpu in (("Linux", False), ("Linux", True), ("Darwin", False), ("Windows", True)):
        assert install_torch.plan(present, system, gpu) == []


@pytest.mark.parametrize("present", [None, "2.4.1", "1.13.1+cu117"])
def test_linux_without_a_gpu_tries_the_cpu_build_first_then_the_registry(present):
    cpu, registry = install_torch.plan(present, "Linux", nvidia_gpu=False)
    pin = f"torch=={install_torch.PIN}"
    assert cpu.pip_args[:2] == ("--index-url", install_torch.CPU_INDEX) and cpu.pip_args[-1] == pin
    assert "CPU-only" in cpu.says and "200 MB" in cpu.says
    assert registry.pip_args == (pin,) and "3 GB" in registry.says


@pytest.mark.parametrize("system, gpu, size", [("Linux", True, "3 GB"), ("Darwin", False, "80 MB"),
                                               ("Windows", False, "250 MB")])
def test_other_machines_take_the_registry_build(system, gpu, size):
    [registry] = install_torch.plan(None, system, gpu)
    assert registry.pip_args == (f"torch=={install_torch.PIN}",) and size in registry.says


def test_dry_run_says_what_it_would_do_and_installs_nothing():
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("setup: keeping the installed torch")
