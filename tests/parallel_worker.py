"""One torchrun launch for tests/test_parallel.py:
``torchrun --nproc-per-node N parallel_worker.py CASES.json OUT TIMEOUT_S``.

Every process joins a gloo group and runs each case of CASES.json (a list of {"name", "model", "plan", and
optionally "fail": "raise" | "stall", "compile": true}) through ``parallel_sample``; it writes its latent to
OUT/<name>.rank<r>.safetensors, or the error message to OUT/<name>.rank<r>.txt. A "fail" case makes rank 1
raise (or stall) after its first step, to show what the other ranks see. A "compile" case runs on
``NextDiT.compile_blocks`` with a backend that counts the graphs it is handed (and runs them eagerly), samples
twice and writes the graphs each run compiled to OUT/<name>.rank<r>.graphs.json. The inputs come from
:func:`case_inputs`, which the tests also use for the single-process reference.
"""

import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lumina_core.model import NextDiT, NextDiTConfig
from lumina_core.sampling import SampleConfig

PARITY = Path(__file__).parent / "data" / "parity"
# Multi-scale with a patch switch, cfg truncated to 0 late, motion switch, renorm: every branch of the split.
SCHEDULES = {
    "tiny": {"P": ["2x2", [0.3, "1x2"]], "step": 6, "ts": 3.0, "renorm": 1.5, "cfg": [4.0, [0.6, 0]],
             "motion": 6.0, "negMotion": [2.0, [0.5, 6.0]]},
    "demo": {"P": ["2x2", [0.2, "1x2"], [0.5, "1x1"]], "step": 6, "ts": 3.0, "renorm": -1,
             "cfg": [4.0, [0.7, 0]], "motion": 6.0, "negMotion": 2.0},
}
# Odd token counts (15 per frame at patch 2), so the split pads.
LATENT_SIZE = (2, 6, 10)


def load_model(kind: str) -> NextDiT:
    if kind == "demo":
        from lumina_core.demo import build_transformer

        return build_transformer().eval()
    config = NextDiTConfig.from_dict(json.loads((PARITY / "tiny_ref.json").read_text())["tiny_config"])
    model = NextDiT(config).eval()
    model.load_state_dict(load_file(PARITY / "tiny_weights.safetensors"))
    return model


def case_inputs(model: NextDiT, kind: str):
    """(noise, cond, uncond, config) of a case: captions of different lengths with padding."""
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(1, model.config.in_channels, *LATENT_SIZE, generator=gen)
    captions = []
    for length in (5, 3):
        feats = torch.randn(1, 6, model.config.cap_feat_dim, generator=gen)
        captions.append((feats, (torch.arange(6) < length).long()[None]))
    return noise, captions[0], captions[1], SampleConfig.from_official(SCHEDULES[kind])


class GraphCounter:
    """A torch.compile backend that counts the graphs it is handed and runs them eagerly."""

    def __init__(self):
        self.count = 0

    def __call__(self, graph_module, example_inputs):
        self.count += 1
        return graph_module.forward


def main(cases_path: str, out: str, timeout_s: str) -> None:
    from lumina_core.parallel import ParallelPlan, init_process_group, parallel_sample

    rank, world_size = init_process_group(timeout_s=float(timeout_s))
    out_dir = Path(out)
    models = {}
    for case in json.loads(Path(cases_path).read_text()):
        name, kind = case["name"], case["model"]
        model = models.setdefault(kind, load_model(kind))
        noise, cond, uncond, config = case_inputs(model, kind)

        how = case.get("fail")

        def fail(info, how=how):
            if rank == 1 and how == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if rank == 1 and how == "stall":
                time.sleep(3 * float(timeout_s))

        try:
            plan = ParallelPlan.parse(case["plan"], world_size, model.config.n_heads)
            if case.get("compile"):
                model, graphs = load_model(kind), GraphCounter()
                model.compile_blocks(backend=graphs)
                counts = []
                for _ in range(2):
                    before = graphs.count
                    latent = parallel_sample(model, noise, cond, uncond, config, plan)
                    counts.append(graphs.count - before)
                (out_dir / f"{name}.rank{rank}.graphs.json").write_text(json.dumps(counts))
            else:
                latent = parallel_sample(model, noise, cond, uncond, config, plan, callback=fail)
        except (ValueError, RuntimeError) as error:
            (out_dir / f"{name}.rank{rank}.txt").write_text(f"{type(error).__name__}: {error}")
            if "fail" in case:
                raise
            continue
        save_file({"latent": latent}, out_dir / f"{name}.rank{rank}.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
