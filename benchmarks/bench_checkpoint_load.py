"""Benchmark (not a test): peak memory of loading a full-size 2B_GQA checkpoint.

Writes a randomly initialised 2B_GQA state dict (official key names) as one safetensors file in
a temporary folder, then loads it with ``lumina_core.checkpoint.load_model`` in a fresh process
and prints the peak RSS above the Python+torch baseline divided by the file size (target <= 1.1:
the weights are streamed into the model, never held twice) and the load time.

    python benchmarks/bench_checkpoint_load.py [--dtype bf16|fp32] [--keep DIR]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lumina_core.checkpoint import save_model  # noqa: E402
from lumina_core.model import PRESETS, NextDiT  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

# VmHWM (peak RSS of this process image) rather than ru_maxrss, which Linux carries over from
# the parent across fork + exec.
MEASURE = r"""
import json, sys, time
import torch
sys.path.insert(0, sys.argv[2])
from lumina_core.checkpoint import load_model
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
baseline = status("VmHWM")
start = time.perf_counter()
model = load_model(sys.argv[1])
seconds = time.perf_counter() - start
peak = status("VmHWM")
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"baseline": baseline, "peak": peak, "seconds": seconds, "params": params}))
"""


def write_random_checkpoint(path: Path, dtype: torch.dtype) -> None:
    with torch.device("meta"):
        model = NextDiT(PRESETS["2B_GQA"])
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            value = torch.randn(param.shape, generator=generator, dtype=torch.float32).mul_(0.02).to(dtype)
            setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    save_model(model, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--keep", type=Path, help="folder to keep the written checkpoint in (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = args.keep or Path(temp)
        path = folder / f"lumina_2b_gqa_random_{args.dtype}.safetensors"
        if not path.exists():
            start = time.perf_counter()
            write_random_checkpoint(path, DTYPES[args.dtype])
            print(f"wrote {path.name}: {path.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - start:.0f} s")
        result = json.loads(subprocess.run([sys.executable, "-c", MEASURE, str(path), str(ROOT)],
                                           check=True, capture_output=True, text=True).stdout)
        size = path.stat().st_size
        extra = result["peak"] - result["baseline"]
        print(f"parameters            {result['params']:,}")
        print(f"file size             {size / 2**30:.2f} GiB ({args.dtype})")
        print(f"baseline RSS          {result['baseline'] / 2**30:.2f} GiB (python + torch + lumina_core)")
        print(f"peak RSS              {result['peak'] / 2**30:.2f} GiB")
        print(f"(peak - baseline)/file {extra / size:.3f}   (target <= 1.1)")
        print(f"load time             {result['seconds']:.1f} s ({size / 2**20 / result['seconds']:.0f} MiB/s)")


if __name__ == "__main__":
    main()
