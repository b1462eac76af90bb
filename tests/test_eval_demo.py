"""The demo evaluation runs in CI on a small sample and prints its table (targets are reported there,
not asserted: see docs/demo_training.md for the full run)."""

import subprocess
import sys
from pathlib import Path

import pytest

from lumina_core import demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not demo.DEMO_IS_TRAINED, reason="no trained demo models in lumina_core/demo_models")
def test_quick_evaluation_prints_the_table():
    # the timeout guards against a hang on a loaded machine; it is not a speed check
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_demo.py"), "--quick"],
                            capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    for measure in ("colour adherence (6 prompts)", "time ratio multi / single", "motion Spearman, all 5 samples"):
        assert measure in rows, result.stdout
    colour = float(rows["colour adherence (6 prompts)"].split("|")[2].strip().rstrip("%"))
    assert colour >= 50  # the trained demo reads the colour words (chance is 1 in 6)
