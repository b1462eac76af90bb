"""A test-only ComfyUI custom node (tests/test_compile_host.py links it into its server's custom_nodes): it
swaps torch.compile's backend for one that counts the graphs it is handed and runs them eagerly, and answers
the count at GET /lumina_test/compiled_graphs. Inductor would take minutes on a CPU; what compiles again and
when (guards, recompiles) does not depend on the backend."""

import torch
from aiohttp import web
from server import PromptServer

GRAPHS = []
_compile = torch.compile


def _count(graph_module, example_inputs):
    GRAPHS.append(graph_module)
    return graph_module.forward


def _compile_counting(*args, **kwargs):
    return _compile(*args, **{**kwargs, "backend": _count})


torch.compile = _compile_counting


@PromptServer.instance.routes.get("/lumina_test/compiled_graphs")
async def compiled_graphs(request):
    return web.json_response({"graphs": len(GRAPHS)})


NODE_CLASS_MAPPINGS = {}
