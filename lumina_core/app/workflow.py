"""The ComfyUI graph equivalent to a command-line generation, for sharing.

``python -m lumina_core generate`` writes this graph into its mp4 and PNG files (as ComfyUI's own
savers do: ``workflow`` = UI format, ``prompt`` = API format), so dropping the file onto the
ComfyUI canvas restores a graph of the pack's nodes that reproduces the same latents: same
models, schedule (as official JSON), prompts, seed, motion values, size, frame count and step cache.

This module only writes JSON in the names of :mod:`lumina_core.app.node_table`; it never imports ComfyUI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..sizes import CUSTOM_RESOLUTION
from .node_table import (
    DEMO_ENTRY,
    EMPTY_LATENT_VIDEO,
    LORA_LOADER,
    MODEL_LOADER,
    SAME_FOLDER,
    SAMPLER,
    SAVE_VIDEO,
    SCHEDULE_JSON,
    STEP_CACHE,
    TEXT_ENCODE,
    TEXT_ENCODER_LOADER,
    VAE_DECODE,
    VAE_LOADER,
    NodeNames,
)

NODE_WIDTH = 320


@dataclass
class Node:
    """One node of the graph: its widget values in the table's widget order, and its linked inputs."""

    id: int
    names: NodeNames
    values: list[Any]
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (origin id, origin slot)
    pos: tuple[int, int] = (0, 0)
    height: int = 120

    def __post_init__(self):
        if len(self.values) != len(self.names.widgets):
            raise ValueError(f"{self.names.id} takes {len(self.names.widgets)} widget values "
                             f"({', '.join(self.names.widgets)}), not {len(self.values)}")
        for name in self.links:
            self.names.input_type(name)  # raises for an input the node does not have

    @property
    def widgets(self) -> list[tuple[str, Any]]:
        return list(zip(self.names.widgets, self.values))


@dataclass(frozen=True)
class GenerationGraph:
    """Everything the graph depends on (the CLI's resolved settings)."""

    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    frames: int
    fps: float
    schedule: dict  # official sample-config dict
    model: Optional[str] = None  # None = the built-in demo entries
    text_encoder: Optional[str] = None
    tokenizer: Optional[str] = None
    vae: Optional[str] = None
    weight_dtype: str = "default"  # the weight_dtype choices of the Model, Text Encoder and VAE loaders
    text_encoder_dtype: str = "default"
    vae_dtype: str = "default"
    cache: float = 0.0  # step cache threshold; 0 = no Step Cache node
    loras: tuple[tuple[str, float], ...] = ()  # (LoRA file, strength), applied in this order


def model_entry(path: Optional[str]) -> str:
    """The loader option for a model path: its file or folder name (the file must be placed in the
    ComfyUI models folder the note names), or the built-in demo entry."""
    return DEMO_ENTRY if path is None else Path(path).name


def nodes_for(graph: GenerationGraph) -> list[Node]:
    model_loader = Node(1, MODEL_LOADER, [model_entry(graph.model), graph.weight_dtype], pos=(40, 60), height=110)
    tokenizer = SAME_FOLDER if graph.tokenizer is None else Path(graph.tokenizer).name
    text_loader = Node(2, TEXT_ENCODER_LOADER, [model_entry(graph.text_encoder), tokenizer, graph.text_encoder_dtype],
                       pos=(40, 210), height=110)
    vae_loader = Node(3, VAE_LOADER, [model_entry(graph.vae), graph.vae_dtype], pos=(40, 360), height=80)
    encode = Node(4, TEXT_ENCODE, [graph.prompt, graph.negative_prompt], links={"text_encoder": (2, 0)},
                  pos=(400, 60), height=220)
    schedule = Node(5, SCHEDULE_JSON, [json.dumps(graph.schedule)], pos=(400, 320), height=200)
    latent = Node(6, EMPTY_LATENT_VIDEO, [CUSTOM_RESOLUTION, graph.width, graph.height, graph.frames, 1],
                  pos=(400, 560), height=150)
    model_source = (1, 0)
    loras = []
    for index, (path, strength) in enumerate(graph.loras):
        loras.append(Node(11 + index, LORA_LOADER, [Path(path).name, strength], links={"model": model_source},
                          pos=(40, 600 + 120 * index), height=100))
        model_source = (11 + index, 0)
    cache = []
    if graph.cache > 0:
        cache = [Node(10, STEP_CACHE, [graph.cache, 0.0, 1.0], links={"model": model_source}, pos=(40, 460),
                      height=130)]
        model_source = (10, 0)
    sampler = Node(7, SAMPLER, [graph.seed],
                   links={"model": model_source, "positive": (4, 0), "negative": (4, 1), "latent": (6, 0),
                          "schedule": (5, 0)},
                   pos=(760, 60), height=260)
    decode = Node(8, VAE_DECODE, ["auto", graph.fps], links={"vae": (3, 0), "latent": (7, 0)}, pos=(760, 360),
                  height=150)
    save = Node(9, SAVE_VIDEO, ["video/lumina_video", "auto", "auto"], links={"video": (8, 1)}, pos=(1120, 60),
                height=400)
    return [model_loader, text_loader, vae_loader, encode, schedule, latent, *loras, *cache, sampler, decode, save]


def _note_text(graph: GenerationGraph) -> str:
    loras = "".join(f" Put the LoRA {Path(path).name} into models/loras/." for path, _ in graph.loras)
    return _models_note(graph) + loras


def _models_note(graph: GenerationGraph) -> str:
    if graph.model is None:
        return ("Made by `python -m lumina_core generate` with the built-in demo models: press Queue to "
                "reproduce the video (same seed, schedule and prompts give the same latents).")
    return ("Made by `python -m lumina_core generate`. Put the files into ComfyUI's models folders under these "
            f"names: models/diffusion_models/{model_entry(graph.model)}, models/text_encoders/"
            f"{model_entry(graph.text_encoder)}"
            + ("" if graph.tokenizer is None
               else f" (tokenizer folder models/text_encoders/{Path(graph.tokenizer).name})")
            + f", models/vae/{model_entry(graph.vae)}.")


def ui_workflow(graph: GenerationGraph) -> dict:
    """The UI-format workflow (what the browser loads)."""
    nodes = nodes_for(graph)
    links, ui_nodes = [], []
    targets: dict[tuple[int, int], list[int]] = {}
    for node in nodes:
        for slot, (name, (origin, origin_slot)) in enumerate(node.links.items()):
            link_id = len(links) + 1
            links.append([link_id, origin, origin_slot, node.id, slot, node.names.input_type(name)])
            targets.setdefault((origin, origin_slot), []).append(link_id)
    for order, node in enumerate(nodes):
        values = []
        for name, value in node.widgets:
            values.append(value)
            if name == node.names.control_after:
                values.append("fixed")
        ui_nodes.append({
            "id": node.id, "type": node.names.id, "pos": list(node.pos), "size": [NODE_WIDTH, node.height],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": node.names.input_type(name),
                        "link": next(link[0] for link in links if link[3] == node.id and link[4] == slot)}
                       for slot, name in enumerate(node.links)],
            "outputs": [{"name": name, "type": kind, "links": targets.get((node.id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(node.names.outputs)],
            "properties": {"Node name for S&R": node.names.id}, "widgets_values": values,
        })
    note_id = len(nodes) + 1
    ui_nodes.append({"id": note_id, "type": "Note", "pos": [1120, 500], "size": [360, 160], "flags": {},
                     "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                     "widgets_values": [_note_text(graph)]})
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": ui_nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def api_prompt(graph: GenerationGraph) -> dict:
    """The API-format prompt (what ComfyUI's /prompt takes and its savers store as "prompt")."""
    prompt = {}
    for node in nodes_for(graph):
        inputs: dict[str, Any] = dict(node.widgets)
        inputs.update({name: [str(origin), slot] for name, (origin, slot) in node.links.items()})
        prompt[str(node.id)] = {"class_type": node.names.id, "inputs": inputs}
    return prompt


def metadata(graph: GenerationGraph) -> dict[str, str]:
    """File metadata as ComfyUI writes it: JSON text under "prompt" and "workflow"."""
    return {"prompt": json.dumps(api_prompt(graph)), "workflow": json.dumps(ui_workflow(graph))}
