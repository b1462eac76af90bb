"""ComfyUI's own TorchCompileModel on the pack's MODEL in a real server: the first KSampler run compiles at most
one graph per patch pair and batch shape, another seed compiles nothing, nor does a new size (the token and
caption lengths are dynamic). The server counts graphs through a test-only custom node
(tests/data/compile_probe) that stands a counting eager backend in for inductor."""

from pathlib import Path

import pytest
from comfy_host import assert_success, demo_inputs, require_host, running_server

from lumina_core.demo import DEMO_SCHEDULE

require_host()

PROBE = Path(__file__).parent / "data" / "compile_probe"
# The demo schedule's patch pairs, each with the negative row (batch 2) and without it after cfg truncation.
MOST_GRAPHS = 2 * len(DEMO_SCHEDULE["P"])


@pytest.fixture(scope="module")
def server():
    def link_probe(base: Path) -> None:
        (base / "custom_nodes" / "lumina_compile_probe").symlink_to(PROBE, target_is_directory=True)

    with running_server(prepare=link_probe) as host:
        yield host


def prompt(size: int, frames: int, seed: int) -> dict:
    """Demo loaders -> TorchCompileModel -> KSampler (the model's own schedule picks the patch pairs) -> SaveLatent."""
    return {
        **demo_inputs(size, frames),
        "6": {"class_type": "TorchCompileModel", "inputs": {"model": ["1", 0], "backend": "inductor"}},
        "7": {"class_type": "KSampler",
              "inputs": {"model": ["6", 0], "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["5", 0],
                         "seed": seed, "steps": 8, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
                         "denoise": 1.0}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "compiled"}},
    }


def graphs_compiled(server, api_prompt: dict) -> int:
    before = server.get("/lumina_test/compiled_graphs")["graphs"]
    assert_success(server.wait(server.queue(api_prompt)))
    return server.get("/lumina_test/compiled_graphs")["graphs"] - before


def test_torch_compile_model_compiles_once_per_patch_pair_and_batch_shape(server):
    first = graphs_compiled(server, prompt(32, 8, seed=1))
    assert 1 <= first <= MOST_GRAPHS, (first, server.log_tail())
    assert graphs_compiled(server, prompt(32, 8, seed=2)) == 0, server.log_tail()
    assert graphs_compiled(server, prompt(48, 16, seed=3)) == 0, server.log_tail()
