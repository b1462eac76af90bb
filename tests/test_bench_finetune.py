"""benchmarks/bench_finetune.py runs the LoRA training step on every patch pair of the demo and prints one row of
seconds per step and peak memory per pair (the values are printed, never asserted)."""

import os
import re
import subprocess
import sys
from pathlib import Path

from lumina_core.demo import TRANSFORMER_CONFIG

ROOT = Path(__file__).resolve().parents[1]


def test_demo_run_prints_a_row_per_patch_pair():
    result = subprocess.run([sys.executable, "benchmarks/bench_finetune.py", "--steps", "1", "--rank", "4"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(r"^(\d+)x(\d+) \| ([\d.]+) \| (\d+)$", result.stdout, re.MULTILINE)
    pairs = {(int(p), int(f)) for f, p, _, _ in rows}
    assert pairs == set(TRANSFORMER_CONFIG.patch_pairs), result.stdout
    assert all(float(seconds) > 0 and int(memory) > 0 for _, _, seconds, memory in rows)
