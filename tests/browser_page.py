"""The ComfyUI page in headless Chromium, with this pack loaded in a real host (tests/comfy_host.py):
opening it the way a user meets it, dropping workflow files onto the canvas, building graphs with the
page's own LiteGraph, listening to the server's events as the page receives them, and locating a node's
widgets on screen. Shared by test_browser.py and scripts/screenshots.py; not a test module itself."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from comfy_host import DEMO, FILE_FOLDERS, INPUT_NODES, ROOT, Server, referenced_files
from PIL import Image

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1600, "height": 900}
EXAMPLES = ROOT / "example_workflows"
DEMO_WORKFLOW = EXAMPLES / "lumina_video_demo_cpu.json"
PACK_URLS = ("/extensions/comfyui-lumina-video/", "/lumina_video/")
"""A request, console message or failure that mentions one of these concerns the pack's own files or route."""
EXTENSION = "LuminaVideo.ScheduleTimeline"
TIMELINE = "lumina_timeline"
WIDGET_ROW = 20  # LiteGraph.NODE_WIDGET_HEIGHT: the height of a combo or number widget's row
FOLDER_MARKERS = {  # loader node -> files that mark a model folder, for the placeholder files
    "LuminaVideoMSModelLoader": ("consolidated.00-of-01.safetensors",),
    "LuminaVideoMSTextEncoderLoader": ("config.json", "tokenizer.json"),
    "LuminaVideoMSVAELoader": ("config.json",),
}
SETTINGS = {  # server-side user settings written before the page opens
    "Comfy.TutorialCompleted": True,  # no templates dialog on the first visit
    "Comfy.Minimap.Visible": False,  # nothing drawn over the graph's corner
}


def browser_missing() -> str | None:
    """Why browser tests cannot run here (no playwright package or no Chromium binary), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (install chromium or set CHROMIUM to its binary)"
    return None


def require_browser() -> None:
    """Run at the top of a browser test module: skips the module without a ComfyUI host, and without playwright
    or Chromium outside CI (in CI every browser test must run: the ``browser`` fixture fails there instead)."""
    import pytest
    from comfy_host import IN_CI, require_host

    require_host()
    missing = browser_missing()
    if missing and not IN_CI:
        pytest.skip(missing, allow_module_level=True)


def browser_for_tests() -> Iterator[playwright.sync_api.Browser]:  # noqa: F821
    """What a browser test module's ``browser`` fixture yields: :func:`chromium`, or, where it cannot start (only
    in CI, since :func:`require_browser` skips elsewhere), a failure that says why."""
    import pytest

    missing = browser_missing()
    if missing:
        pytest.fail(f"CI is set, so the browser tests must run, but they cannot: {missing}", pytrace=False)
    with chromium() as instance:
        yield instance


def example_workflows() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


@contextlib.contextmanager
def chromium() -> Iterator[playwright.sync_api.Browser]:  # noqa: F821
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def place_referenced_files(base: Path, workflows: list[Path]) -> None:
    """Put what the workflows pick into the host's base folder, so the frontend finds every name in its lists
    and /prompt validation accepts them: a tiny random Multi-scale Next-DiT with the official patch pairs for
    each transformer (the page reads its patch pairs), an empty placeholder for each text encoder or VAE file
    or folder (validation never opens them; a run stops at that loader), a short clip or picture for each
    input file (validation opens those)."""
    for path in workflows:
        for node_type, name in referenced_files(json.loads(path.read_text())):
            if node_type in INPUT_NODES:
                write_input(base / "input" / name)
                continue
            markers = FOLDER_MARKERS.get(node_type, ())  # core loaders (LoRA, CLIP) pick single files
            target = base / "models" / FILE_FOLDERS[node_type] / name
            single = name.lower().endswith((".safetensors", ".pth", ".pt", ".bin"))
            if node_type == "LuminaVideoMSModelLoader":
                write_transformer(target if single else target / markers[0])
            elif single:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            else:
                target.mkdir(parents=True, exist_ok=True)
                for marker in markers:
                    (target / marker).touch()


def write_transformer(path: Path) -> None:
    """The tiny parity config (official patch pairs 2x4, 2x2, 1x2) with 16 latent channels, random weights."""
    import torch

    from lumina_core.checkpoint import save_model
    from lumina_core.model import PRESETS, NextDiT

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(NextDiT(dataclasses.replace(PRESETS["tiny"], in_channels=16)).eval(), path)


def write_input(path: Path) -> None:
    """A grey 64x64 picture, or for a video name 16 frames of a red square moving right at 8 fps."""
    frames = np.full((16, 64, 64, 3), 96, dtype=np.uint8)
    for index, frame in enumerate(frames):
        frame[24:40, 2 * index:2 * index + 16] = (230, 40, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        Image.fromarray(frames[0]).save(path)
    else:
        from lumina_core.video_io import write_mp4

        write_mp4(path, frames, fps=8)


def write_settings(server: Server) -> None:
    for name, value in SETTINGS.items():
        server.post(f"/settings/{name}", value)


# -- JavaScript run in the page -------------------------------------------------------------------------
LISTEN_JS = """() => {
  window.__luminaEvents = [];
  for (const type of ["execution_start", "executing", "progress", "executed", "execution_success",
                      "execution_error", "execution_interrupted", "execution_cached"]) {
    window.app.api.addEventListener(type, (event) => window.__luminaEvents.push({type, detail: event.detail,
                                                                                 time: performance.now()}));
  }
}"""

DROP_JS = """async ({name, text}) => {
  const canvas = window.app.canvasEl ?? document.querySelector("#graph-canvas");
  const box = canvas.getBoundingClientRect();
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, {type: "application/json"}));
  const options = {bubbles: true, cancelable: true, dataTransfer: transfer,
                   clientX: box.left + box.width / 2, clientY: box.top + box.height / 2};
  canvas.dispatchEvent(new DragEvent("dragover", options));
  canvas.dispatchEvent(new DragEvent("drop", options));
}"""

BUILD_JS = """({nodes, links}) => {
  const graph = window.app.graph;
  graph.clear();
  const made = {};
  for (const [key, spec] of Object.entries(nodes)) {
    const node = LiteGraph.createNode(spec.type);
    if (!node) throw new Error(`node type ${spec.type} is not registered`);
    graph.add(node);
    node.pos = [...spec.pos];
    for (const [name, value] of Object.entries(spec.widgets ?? {})) {
      const widget = node.widgets.find((w) => w.name === name);
      if (!widget) throw new Error(`${spec.type} has no widget ${name}`);
      widget.value = value;
    }
    if (spec.width) node.size = [spec.width, node.size[1]];
    made[key] = node;
  }
  for (const [from, output, to, input] of links) {
    const origin = made[from], target = made[to];
    const slot = origin.outputs.findIndex((s) => s.name === output);
    const inputSlot = target.inputs.findIndex((s) => s.name === input);
    if (slot < 0 || inputSlot < 0) throw new Error(`no link ${from}.${output} -> ${to}.${input}`);
    origin.connect(slot, target, inputSlot);
  }
  graph.setDirtyCanvas(true, true);
  return Object.fromEntries(Object.entries(made).map(([key, node]) => [key, node.id]));
}"""

WIDGET_RECT_JS = """({id, name, height: fallback}) => {
  const node = window.app.graph.getNodeById(id);
  const widget = node.widgets.find((w) => w.name === name);
  const top = widget.last_y ?? widget.y;
  const height = widget.computeSize ? widget.computeSize(node.size[0])[1] : fallback ?? LiteGraph.NODE_WIDGET_HEIGHT;
  const [x0, y0] = window.app.canvasPosToClientPos([node.pos[0], node.pos[1] + top]);
  const [x1, y1] = window.app.canvasPosToClientPos([node.pos[0] + node.size[0], node.pos[1] + top + height]);
  return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
}"""

NODE_RECT_JS = """(id) => {
  const node = window.app.graph.getNodeById(id);
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const [x0, y0] = window.app.canvasPosToClientPos([node.pos[0], node.pos[1] - title]);
  const [x1, y1] = window.app.canvasPosToClientPos([node.pos[0] + node.size[0], node.pos[1] + node.size[1]]);
  return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
}"""


def node(type_: str, pos: tuple[float, float], span: float | None = None, **widgets) -> dict:
    """A node spec for ``build``: type, canvas position, optional width and widget values by name."""
    return {"type": type_, "pos": list(pos), "widgets": widgets, **({"width": span} if span else {})}


def demo_graph(steps: int = 4, size: int = 32, frames: int = 8, schedule: dict | None = None,
               schedule_links: list | None = None) -> dict:
    """The demo pipeline as a user wires it: built-in loaders -> text encode -> empty latent -> sampler (with a
    Schedule Preset, or the given schedule nodes above it) -> VAE decode -> Save Video + Save Image."""
    nodes = {
        "model": node("LuminaVideoMSModelLoader", (20, 40), 300, model_name=DEMO),
        "text_encoder": node("LuminaVideoMSTextEncoderLoader", (20, 200), 300, text_encoder_name=DEMO),
        "vae": node("LuminaVideoMSVAELoader", (20, 390), 300, vae_name=DEMO),
        "encode": node("LuminaVideoMSTextEncode", (360, 170), 320, prompt="a red circle moving left"),
        "latent": node("LuminaVideoMSEmptyLatentVideo", (360, 440), 320, width=size, height=size, frames=frames),
        "sampler": node("LuminaVideoMSSampler", (740, 250), 320, seed=1, control_after_generate="fixed"),
        "decode": node("LuminaVideoMSVAEDecode", (1100, 40), 280, fps=8.0),
        "save_image": node("SaveImage", (1100, 250), 280, filename_prefix="lumina/frame"),
        "save_video": node("SaveVideo", (1420, 40), 320, filename_prefix="lumina/video"),
    }
    links = [("model", "model", "sampler", "model"), ("text_encoder", "text_encoder", "encode", "text_encoder"),
             ("encode", "positive", "sampler", "positive"), ("encode", "negative", "sampler", "negative"),
             ("latent", "latent", "sampler", "latent"), ("vae", "vae", "decode", "vae"),
             ("sampler", "latent", "decode", "latent"), ("decode", "video", "save_video", "video"),
             ("decode", "images", "save_image", "images")]
    if schedule is None:
        schedule = {"schedule": node("LuminaVideoMSSchedulePreset", (740, 40), 320, preset="demo", steps=steps)}
        schedule_links = [("schedule", "schedule", "sampler", "schedule")]
    nodes.update(schedule)
    return {"nodes": nodes, "links": links + list(schedule_links or [])}


def stage_chain(stages: list[tuple[str, float]], steps: int, shift: float, x: float = 740, y: float = 40,
                gap: float = 360) -> tuple[dict, list]:
    """Schedule Stage nodes side by side, each one's schedule into the next one's 'previous', the last one's
    into the sampler; the first stage carries the grid (steps, shift)."""
    nodes, links = {}, []
    for index, (patch, t_end) in enumerate(stages):
        grid = {"steps": steps, "shift": shift} if index == 0 else {}
        nodes[f"stage{index}"] = node("LuminaVideoMSScheduleStage", (x + index * gap, y), 320, patch=patch,
                                      t_end=t_end, **grid)
        if index:
            links.append((f"stage{index - 1}", "schedule", f"stage{index}", "previous"))
    links.append((f"stage{len(stages) - 1}", "schedule", "sampler", "schedule"))
    return nodes, links


def schedule_graph() -> dict:
    """A Schedule Preset (f24F96R960-MultiScale) into a Sampler, and the same schedule as a chain of Schedule
    Stage nodes into a second Sampler; no model wired, so every node draws its timeline."""
    chain, links = stage_chain([("2x4", 0.03), ("2x2", 0.125), ("1x2", 1.0)], steps=70, shift=24.0, x=0, y=300,
                               gap=350)
    for stage in chain.values():  # later stages ignore their grid; show the chain's own to avoid confusion
        stage["widgets"].update(steps=70, shift=24.0)
    nodes = {
        "preset": node("LuminaVideoMSSchedulePreset", (0, 0), 320, preset="f24F96R960-MultiScale", steps=0),
        "sampler": node("LuminaVideoMSSampler", (350, 0), 320, seed=42, control_after_generate="fixed"),
        **chain,
        "chain_sampler": node("LuminaVideoMSSampler", (1050, 300), 320, seed=42, control_after_generate="fixed"),
    }
    links = [("preset", "schedule", "sampler", "schedule"),
             *[(a, o, "chain_sampler" if b == "sampler" else b, i) for a, o, b, i in links]]
    return {"nodes": nodes, "links": links}


class PackPage:
    """One browser context and page on the server's UI, recording every problem that concerns the pack."""

    def __init__(self, browser, server: Server, viewport: dict = VIEWPORT):
        self.server = server
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.pack_responses: dict[str, int] = {}
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught page error: {error}"))
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", self._response)

    # -- listeners
    @staticmethod
    def _concerns_pack(*texts: str) -> bool:
        return any(part in text for text in texts for part in PACK_URLS)

    def _console(self, message) -> None:
        url = (message.location or {}).get("url", "")
        if message.type == "error" and self._concerns_pack(message.text, url):
            self.problems.append(f"console error: {message.text} ({url})")

    def _request_failed(self, request) -> None:
        if self._concerns_pack(request.url):
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response) -> None:
        if self._concerns_pack(response.url):
            self.pack_responses[response.url.split("?")[0]] = response.status
            if response.status >= 400:
                self.problems.append(f"HTTP {response.status} for {response.url}")

    # -- page actions
    def open(self) -> PackPage:
        self.page.goto(self.server.url)
        self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph && window.app.vueAppReady",
                                    timeout=60_000)
        self.page.keyboard.press("Escape")
        self.page.evaluate(LISTEN_JS)
        return self

    def close(self) -> None:
        self.context.close()

    def evaluate(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def drop_workflow(self, path: Path) -> None:
        """Drop a workflow file onto the canvas, as a user drags it in from the file manager, and wait until the
        page shows its nodes."""
        nodes = sorted([node["id"], node["type"]] for node in json.loads(path.read_text())["nodes"])
        self.evaluate(DROP_JS, {"name": path.name, "text": path.read_text()})
        self.page.wait_for_function("""(nodes) => JSON.stringify(window.app.graph._nodes.map((n) => [n.id, n.type])
            .sort((a, b) => a[0] - b[0])) === JSON.stringify(nodes)""", arg=nodes, timeout=15_000)
        self.settle()

    def build(self, graph: dict) -> dict[str, int]:
        """Build a graph with the page's LiteGraph; returns the node ids by key."""
        ids = self.evaluate(BUILD_JS, graph)
        self.settle()
        return ids

    def settle(self, frames: int = 3) -> None:
        """Let the canvas draw a few frames (and the page take the server's answers in between)."""
        self.evaluate("(n) => new Promise((done) => { const step = (k) => k ? requestAnimationFrame(() => step(k - 1)) "
                      ": done(); window.app.graph.setDirtyCanvas(true, true); step(n); })", frames)

    def fit_view(self, zoom: float = 0.75) -> None:
        """Fit the whole graph into the window (what the Fit View button does, without its animation);
        ``zoom`` is the share of the window the graph fills."""
        self.evaluate("""(zoom) => new Promise((done) => {
          window.app.canvas.deselectAll?.();
          window.app.canvas.fitViewToSelectionAnimated({duration: 1, zoom});
          setTimeout(done, 50);
        })""", zoom)
        self.settle()

    def set_widget(self, node_id: int, name: str, value) -> None:
        """Set a widget as its own control does (value, the widget's callback, the node's onWidgetChanged)."""
        self.evaluate("""({id, name, value}) => {
          const node = window.app.graph.getNodeById(id);
          const widget = node.widgets.find((w) => w.name === name);
          widget.setValue(value, {node, canvas: window.app.canvas});
          window.app.graph.setDirtyCanvas(true, true);
        }""", {"id": node_id, "name": name, "value": value})
        self.settle()

    def click_arrow(self, node_id: int, name: str, side: str = "right") -> None:
        """Click a combo or number widget's arrow with the mouse (next or previous value)."""
        rect = self.widget_rect(node_id, name, height=WIDGET_ROW)
        scale = rect["height"] / WIDGET_ROW
        x = rect["x"] + (rect["width"] - 24 * scale if side == "right" else 24 * scale)
        self.page.mouse.click(x, rect["y"] + rect["height"] / 2)
        self.settle()

    def wait_timelines(self, timeout: float = 10.0) -> None:
        """Wait until every timeline in the graph has the server's answers to its latest requests (its plan and
        its model's patch pairs), or knows it has nothing to ask."""
        self.page.wait_for_function("""() => window.app.graph._nodes
          .filter((n) => n.widgets?.some((w) => w.name === "lumina_timeline"))
          .every((n) => n.__lumina?.plan && Object.values(n.__lumina)
            .every((s) => s.key !== undefined && !s.asking && (s.key === "null" || s.answer)))""",
                                    timeout=timeout * 1000, polling=100)
        self.settle()

    def lookup(self, node_id: int, kind: str = "plan") -> dict:
        """What the node knows of one server lookup (js/lumina_video.js ``node.__lumina``): the request ``key``,
        the ``answer``, ``failed`` (why no answer came) and ``asking``."""
        return self.evaluate("([id, kind]) => window.app.graph.getNodeById(id).__lumina?.[kind] ?? {}", [node_id, kind])

    def plan(self, node_id: int):
        return self.lookup(node_id).get("answer")

    def wait_plan(self, node_id: int, expected: dict, timeout: float = 10.0) -> dict:
        """The plan the node's timeline shows, once it equals ``expected`` (fails with the last one seen)."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.plan(node_id)
            if shown == expected or time.monotonic() > deadline:
                return shown
            self.settle()

    def widget_rect(self, node_id: int, name: str, height: float | None = None) -> dict:
        """Where a widget is drawn in the window (CSS pixels); ``height`` in canvas units for widgets without
        their own size."""
        return self.evaluate(WIDGET_RECT_JS, {"id": node_id, "name": name, "height": height})

    def node_rect(self, node_id: int, margin: float = 0) -> dict:
        rect = self.evaluate(NODE_RECT_JS, node_id)
        return {"x": rect["x"] - margin, "y": rect["y"] - margin, "width": rect["width"] + 2 * margin,
                "height": rect["height"] + 2 * margin}

    def screenshot(self, clip: dict | None = None, path: Path | None = None) -> bytes:
        self.settle()
        return self.page.screenshot(clip=clip, path=None if path is None else str(path))

    def events(self, type_: str | None = None) -> list[dict]:
        events = self.evaluate("() => window.__luminaEvents")
        return [event for event in events if type_ is None or event["type"] == type_]

    def wait_event(self, type_: str, timeout: float = 60.0, where: str = "true") -> dict:
        """The first event of a type (whose detail ``d`` satisfies the JS expression ``where``)."""
        handle = self.page.wait_for_function(
            f"() => window.__luminaEvents.find((e) => e.type === '{type_}' && ((d) => {where})(e.detail)) ?? false",
            timeout=timeout * 1000, polling=100)
        return handle.json_value()

    def visible_text(self, selector: str) -> list[str]:
        return [element.inner_text() for element in self.page.locator(selector).all() if element.is_visible()]
