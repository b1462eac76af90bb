"""torch.compile of the transformer: one graph per patch pair and batch shape, nothing compiled again at
another seed or a new size (token and caption lengths are dynamic), no graph break in the block path.
Graphs are counted with a backend that records each graph it is handed and runs it eagerly (the CPU rule:
no inductor in tests); torch.compile's guards and recompiles are the same for any backend."""

import dataclasses

import pytest
import torch
import torch._dynamo
from conftest import relative_error

from lumina_core.demo import DEMO_SCHEDULE, TRANSFORMER_CONFIG
from lumina_core.model import NextDiT
from lumina_core.sampling import SampleConfig, sample
from lumina_core.step_cache import StepCache

# The demo schedule (three patch pairs, cfg truncation at t = 0.8: batch 2 -> 1) in 8 steps.
SCHEDULE = SampleConfig.from_official({**DEMO_SCHEDULE, "step": 8}, name="demo")
# (patch pair, batch) shapes the schedule runs: 2x2, 1x2 and 1x1 with the negative row, 1x1 without it.
GRAPHS_PER_SIZE = 4


class GraphCounter:
    """A torch.compile backend that counts the graphs it compiles and runs them eagerly."""

    def __init__(self):
        self.graphs = []

    def __call__(self, graph_module, example_inputs):
        self.graphs.append(graph_module)
        return graph_module.forward


@pytest.fixture
def model():
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield NextDiT(dataclasses.replace(TRANSFORMER_CONFIG, n_layers=1)).eval()
    torch._dynamo.reset()


def caption(length: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, length, TRANSFORMER_CONFIG.cap_feat_dim, generator=gen)
    return feats, torch.ones(1, length, dtype=torch.long)


def generate(model, size, seed: int, caption_length: int = 7, cache=None) -> torch.Tensor:
    noise = torch.randn(1, TRANSFORMER_CONFIG.in_channels, *size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return sample(model, noise, caption(caption_length, seed), caption(3, seed + 1), SCHEDULE, cache=cache)


def new_graphs(counter: GraphCounter, run) -> int:
    before = len(counter.graphs)
    run()
    return len(counter.graphs) - before


@pytest.mark.parametrize("how", ["whole model", "regional"])
def test_second_run_and_new_sizes_compile_nothing(model, how):
    """Whole model: torch.compile(model), what ComfyUI's TorchCompileModel does (it traces the same frame
    as NextDiT.compile_blocks, run_blocks); regional: NextDiT.compile_blocks(regional=True), block by
    block. Another seed at the same size compiles nothing, nor do two new sizes (frames, height, width and
    caption length all changed): the token and caption lengths are marked dynamic."""
    counter = GraphCounter()
    if how == "whole model":
        compiled = torch.compile(model, backend=counter)
    else:
        model.compile_blocks(regional=how == "regional", backend=counter)
        compiled = model
    first = new_graphs(counter, lambda: generate(compiled, (4, 8, 8), seed=0))
    assert 1 <= first <= GRAPHS_PER_SIZE
    assert new_graphs(counter, lambda: generate(compiled, (4, 8, 8), seed=1)) == 0
    assert new_graphs(counter, lambda: generate(compiled, (8, 16, 12), seed=2, caption_length=9)) == 0
    assert new_graphs(counter, lambda: generate(compiled, (4, 12, 16), seed=3, caption_length=5)) == 0


def test_step_cache_on_a_compiled_model_compiles_nothing_more(model):
    """The step cache skips calls outside the model: the calls it lets through compile as without it, and a
    second cached run compiles nothing."""
    counter = GraphCounter()
    compiled = torch.compile(model, backend=counter)
    cached = new_graphs(counter, lambda: generate(compiled, (4, 8, 8), seed=0, cache=StepCache(0.3)))
    assert 1 <= cached <= GRAPHS_PER_SIZE
    assert new_graphs(counter, lambda: generate(compiled, (4, 8, 8), seed=1, cache=StepCache(0.3))) == 0
    assert new_graphs(counter, lambda: generate(compiled, (4, 8, 8), seed=2)) == 0


def test_block_path_is_one_graph_without_breaks(model):
    """torch.compile of the whole model traces the blocks and final layer as one graph: no graph break
    (the checks, the RoPE cache and the data-dependent caption check stay out of the traced code)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, TRANSFORMER_CONFIG.in_channels, 4, 8, 8, generator=gen)
    feats, mask = caption(6, 4)
    args = (x, torch.tensor([0.3, 0.3]), feats.expand(2, -1, -1), mask.expand(2, -1), torch.tensor([6.0, 2.0]), 2, 1)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(*args)
    assert explained.graph_break_count == 0
    assert explained.graph_count == 1
    assert explained.ops_per_graph[0], "the one graph holds the block path"


def test_compiled_output_matches_eager(model):
    """NextDiT.compile_blocks (what generate --compile turns on). aot_eager runs the traced graph through
    AOTAutograd's decomposed ops: the same math in another order of float32 operations, so the sampled
    latent equals eager's to rounding (relative 1e-4 over 8 steps of a 1-layer model; a wrong RoPE
    table, mask or patch pair gives O(1))."""
    eager = generate(model, (4, 8, 8), seed=5)
    model.compile_blocks(backend="aot_eager")
    assert relative_error(generate(model, (4, 8, 8), seed=5), eager) < 1e-4
    model.uncompile()
    assert model.compiled_blocks is None
