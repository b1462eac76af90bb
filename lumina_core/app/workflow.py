"""The ComfyUI graph equivalent to a command-line generation, for sharing.

``python -m lumina_core generate`` writes this graph into its mp4 and PNG files (as ComfyUI's own
savers do: ``workflow`` = UI format, ``prompt`` = API format), so dropping the file onto the
ComfyUI canvas restores a graph of the pack's nodes that reproduces the same latents: same
models, schedule (as official JSON), prompts, seed, motion values, size, frame count and step cache.

This module only writes JSON; it names the pack's node ids but never imports ComfyUI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..sizes import CUSTOM_RESOLUTION

DEMO_ENTRY = "lumina-video-demo (built-in)"
SAME_FOLDER = "(from the text encoder folder)"
NODE_WIDTH = 320


@dataclass
class Node:
    id: int
    type: str
    widgets: list[tuple[str, Any]]
    links: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # input -> (origin id, slot, type)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    pos: tuple[int, int] = (0, 0)
    height: int = 120
    control_after: Optional[str] = None  # widget followed by a "control after generate" value


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


def model_entry(path: Optional[str]) -> str:
    """The loader option for a model path: its file or folder name (the file must be placed in the
    ComfyUI models folder the note names), or the built-in demo entry."""
    return DEMO_ENTRY if path is None else Path(path).name


def nodes_for(graph: GenerationGraph) -> list[Node]:
    model_loader = Node(1, "LuminaVideoModelLoader",
                        [("model_name", model_entry(graph.model)), ("weight_dtype", graph.weight_dtype)],
                        outputs=[("model", "MODEL")], pos=(40, 60), height=110)
    text_loader = Node(2, "LuminaVideoTextEncoderLoader",
                       [("text_encoder_name", model_entry(graph.text_encoder)),
                        ("tokenizer", SAME_FOLDER if graph.tokenizer is None else Path(graph.tokenizer).name),
                        ("weight_dtype", graph.text_encoder_dtype)],
                       outputs=[("text_encoder", "LUMINA_VIDEO_TEXT_ENCODER")], pos=(40, 210), height=110)
    vae_loader = Node(3, "LuminaVideoVAELoader",
                      [("vae_name", model_entry(graph.vae)), ("weight_dtype", graph.vae_dtype)],
                      outputs=[("vae", "LUMINA_VIDEO_VAE")], pos=(40, 360), height=80)
    encode = Node(4, "LuminaVideoTextEncode", [("prompt", graph.prompt), ("negative_prompt", graph.negative_prompt)],
                  links={"text_encoder": (2, 0, "LUMINA_VIDEO_TEXT_ENCODER")},
                  outputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                  pos=(400, 60), height=220)
    schedule = Node(5, "LuminaVideoScheduleJSON", [("config", json.dumps(graph.schedule))],
                    outputs=[("schedule", "LUMINA_VIDEO_SCHEDULE")], pos=(400, 320), height=200)
    latent = Node(6, "LuminaVideoEmptyLatentVideo",
                  [("resolution", CUSTOM_RESOLUTION), ("width", graph.width), ("height", graph.height),
                   ("frames", graph.frames), ("batch_size", 1)],
                  outputs=[("latent", "LATENT")], pos=(400, 560), height=150)
    model_source = (1, 0, "MODEL")
    cache = []
    if graph.cache > 0:
        cache = [Node(10, "LuminaVideoStepCache", [("threshold", graph.cache), ("start", 0.0), ("end", 1.0)],
                      links={"model": model_source}, outputs=[("model", "MODEL")], pos=(40, 460), height=130)]
        model_source = (10, 0, "MODEL")
    sampler = Node(7, "LuminaVideoSampler", [("seed", graph.seed)],
                   links={"model": model_source, "positive": (4, 0, "CONDITIONING"),
                          "negative": (4, 1, "CONDITIONING"), "latent": (6, 0, "LATENT"),
                          "schedule": (5, 0, "LUMINA_VIDEO_SCHEDULE")},
                   outputs=[("latent", "LATENT")], pos=(760, 60), height=260, control_after="seed")
    decode = Node(8, "LuminaVideoVAEDecode", [("tiled", "auto"), ("fps", graph.fps)],
                  links={"vae": (3, 0, "LUMINA_VIDEO_VAE"), "latent": (7, 0, "LATENT")},
                  outputs=[("images", "IMAGE"), ("video", "VIDEO")], pos=(760, 360), height=150)
    save = Node(9, "SaveVideo", [("filename_prefix", "video/lumina_video"), ("format", "auto"), ("codec", "auto")],
                links={"video": (8, 1, "VIDEO")}, pos=(1120, 60), height=400)
    return [model_loader, text_loader, vae_loader, encode, schedule, latent, *cache, sampler, decode, save]


def _note_text(graph: GenerationGraph) -> str:
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
        for slot, (origin, origin_slot, kind) in enumerate(node.links.values()):
            link_id = len(links) + 1
            links.append([link_id, origin, origin_slot, node.id, slot, kind])
            targets.setdefault((origin, origin_slot), []).append(link_id)
    for order, node in enumerate(nodes):
        values = []
        for name, value in node.widgets:
            values.append(value)
            if name == node.control_after:
                values.append("fixed")
        ui_nodes.append({
            "id": node.id, "type": node.type, "pos": list(node.pos), "size": [NODE_WIDTH, node.height],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": kind,
                        "link": next(link[0] for link in links if link[3] == node.id and link[4] == slot)}
                       for slot, (name, (_, _, kind)) in enumerate(node.links.items())],
            "outputs": [{"name": name, "type": kind, "links": targets.get((node.id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(node.outputs)],
            "properties": {"Node name for S&R": node.type}, "widgets_values": values,
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
        inputs.update({name: [str(origin), slot] for name, (origin, slot, _) in node.links.items()})
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs}
    return prompt


def metadata(graph: GenerationGraph) -> dict[str, str]:
    """File metadata as ComfyUI writes it: JSON text under "prompt" and "workflow"."""
    return {"prompt": json.dumps(api_prompt(graph)), "workflow": json.dumps(ui_workflow(graph))}
