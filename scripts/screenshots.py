"""Screenshots of the pack in the ComfyUI page, for the README: every example workflow at 100 % zoom (notes
readable), the ones that run on the built-in demo models after a run from the page (outputs and draft shown), the
others as they look right after they are dropped onto the canvas; a close-up of the schedule timeline widget; and
each workflow's thumbnail for ComfyUI's template browser.

    COMFYUI_PATH=../shared/comfyui .venv/bin/python scripts/screenshots.py [--out docs/screenshots]
        [--thumbnails example_workflows] [--only NAME ...]

Boots a ComfyUI host with the pack (tests/comfy_host.py, as the host tests do; COMFYUI_PATH defaults to
../shared/comfyui) and opens the page in headless Chromium (tests/browser_page.py, as tests/test_browser.py
does). Writes <workflow>.png per file in example_workflows/ (a 256-colour palette PNG: the page is mostly flat
colour) and schedule_widget.png, and <workflow>.jpg beside each workflow: the template browser shows
/api/workflow_templates/<pack>/<workflow>.jpg for a pack's example_workflows/<workflow>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
if not os.environ.get("COMFYUI_PATH") and (ROOT.parent / "shared" / "comfyui" / "main.py").is_file():
    os.environ["COMFYUI_PATH"] = str(ROOT.parent / "shared" / "comfyui")
for name in ("PYTHONDONTWRITEBYTECODE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(name, "1")

import comfy_host
from browser_page import (
    PackPage,
    browser_missing,
    chromium,
    example_workflows,
    place_referenced_files,
    schedule_graph,
    write_settings,
)

from lumina_core import demo

WIDGET_VIEW = {"width": 1480, "height": 860}
SCALE = 1.0  # canvas zoom of the workflow shots: notes and widgets readable when the PNG is viewed at 100 %
THUMBNAIL = (512, 384)  # template browser cards crop their picture to about 4:3
RUN_TIMEOUT_S = 600
CHROME = {"left": 58, "top": 92, "right": 20, "bottom": 56}  # page UI floating over the canvas: sidebar, toolbars
MARGIN = 24


FRAME_JS = """({left, top, right, bottom, scale}) => {
  // Place the graph's bounding box (nodes and groups) in the free part of the canvas: centred, at `scale` or
  // smaller if needed.
  const canvas = window.app.canvas;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const item of [...window.app.graph._nodes, ...(window.app.graph._groups ?? [])]) {
    const [x, y, w, h] = item.boundingRect;
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
  }
  const box = canvas.canvas.getBoundingClientRect();
  const width = box.width - left - right, height = box.height - top - bottom;
  const fit = Math.min(scale, width / (x1 - x0), height / (y1 - y0));
  canvas.ds.scale = fit;
  canvas.ds.offset[0] = (left + (width - (x1 - x0) * fit) / 2) / fit - x0;
  canvas.ds.offset[1] = (top + (height - (y1 - y0) * fit) / 2) / fit - y0;
  canvas.setDirty(true, true);
  return {x: box.left + left, y: box.top + top, width, height};
}"""


def frame(page: PackPage, scale: float, chrome: dict = CHROME) -> dict:
    """Zoom and pan so the whole graph sits in the window's free area; returns that area (CSS pixels)."""
    area = page.evaluate(FRAME_JS, {side: chrome[side] + MARGIN for side in chrome} | {"scale": scale})
    page.settle()
    return area


def viewport_for(workflow: Path) -> dict:
    """A window large enough to show the whole saved graph (nodes and groups) at SCALE (at least 1600x900)."""
    saved = json.loads(workflow.read_text())
    boxes = [(n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in saved["nodes"]]
    boxes += [(x, y, x + w, y + h) for x, y, w, h in (group["bounding"] for group in saved.get("groups", []))]
    width = max(box[2] for box in boxes) - min(box[0] for box in boxes)
    height = max(box[3] for box in boxes) - min(box[1] for box in boxes)
    return {"width": max(1600, round(width * SCALE + CHROME["left"] + CHROME["right"] + 2 * MARGIN + 40)),
            "height": max(900, round(height * SCALE + CHROME["top"] + CHROME["bottom"] + 2 * MARGIN + 40))}


SHIPPED_LORAS = {path.name for path in demo.LORAS_DIR.glob("*.safetensors")}
"""The demo LoRAs the pack ships and adds to ComfyUI's loras folders (lumina_core/demo/loras)."""


def runs_on_the_demo(workflow: Path) -> bool:
    """Whether the workflow runs here as it is: its Lumina-Video loaders all pick the built-in demo components and
    it picks no other model file (a LoRA the user makes first, a text encoder to download) but the LoRAs the pack
    ships."""
    saved = json.loads(workflow.read_text())
    loaders = [node["widgets_values"][0] for node in saved["nodes"] if node["type"] in comfy_host.LOADER_FOLDERS]
    core_files = [node["widgets_values"][0] for node in saved["nodes"] if node["type"] in comfy_host.CORE_LOADERS]
    return bool(loaders) and set(loaders) == {comfy_host.DEMO} and set(core_files) <= SHIPPED_LORAS


SHOWN_JS = """() => {
  // Every output the run sent is drawn: a loaded <video> per Save Video node, loaded pictures on the image nodes.
  const nodes = window.app.graph._nodes, outputs = window.app.nodeOutputs ?? {};
  const videos = [...document.querySelectorAll("video")].filter((v) => v.readyState >= 2).length;
  return videos >= nodes.filter((n) => n.type === "SaveVideo").length
    && nodes.filter((n) => outputs[n.id]?.images?.length && !["SaveVideo", "LoadVideo"].includes(n.type))
      .every((n) => n.imgs?.length && n.imgs.every((i) => i.complete && i.naturalWidth > 0));
}"""

RESULT_RECT_JS = """() => {
  // Where the decoded result is drawn: the image node fed by the Lumina-Video VAE Decode's frames (CSS pixels).
  const graph = window.app.graph;
  const decode = graph._nodes.find((n) => n.type === "LuminaVideoMSVAEDecode");
  const target = decode?.outputs[0].links?.map((id) => graph.links[id]?.target_id ?? graph.links.get?.(id)?.target_id)
    .map((id) => graph.getNodeById(id)).find((n) => n && ["PreviewImage", "SaveImage"].includes(n.type));
  if (!target) return null;
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const [x0, y0] = window.app.canvasPosToClientPos([target.pos[0], target.pos[1] - title]);
  const [x1, y1] = window.app.canvasPosToClientPos([target.pos[0] + target.size[0], target.pos[1] + target.size[1]]);
  return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
}"""


def run_in_page(page: PackPage, workflow: Path) -> None:
    """Queue the graph as the Run button does and wait until it has run and every output is shown."""
    page.evaluate("() => { window.__luminaEvents.length = 0; }")
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    page.wait_event("execution_start", timeout=60)
    end = page.page.wait_for_function(
        "() => window.__luminaEvents.find((e) => ['execution_success', 'execution_error', "
        "'execution_interrupted'].includes(e.type)) ?? false", timeout=RUN_TIMEOUT_S * 1000, polling=250).json_value()
    if end["type"] != "execution_success":
        raise RuntimeError(f"{workflow.name}: the run ended with {end['type']}: {json.dumps(end['detail'])[:2000]}")
    page.page.wait_for_function(SHOWN_JS, timeout=30_000, polling=250)
    page.settle(10)


def save_png(png: bytes, target: Path) -> None:
    """The screenshot as a 256-colour palette PNG (a third of the RGB file's size; the page is mostly flat colour)."""
    with Image.open(BytesIO(png)) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True)


def save_thumbnail(png: bytes, area: dict, result: dict | None, target: Path) -> None:
    """A THUMBNAIL-sized JPEG: the frames the run showed in the result's node (what differs from the node's
    background below its title and input), or without a run the graph's area of the shot, fitted onto a card of
    the background colour."""
    with Image.open(BytesIO(png)) as shot:
        shot_rgb = shot.convert("RGB")
    image = shot_rgb.crop((round(area["x"]), round(area["y"]), round(area["x"] + area["width"]),
                        round(area["y"] + area["height"])))
    if result is not None:
        x0, y0 = result["x"] + 4, result["y"] + 60 * SCALE  # below the title bar and the input row
        x1, y1 = result["x"] + result["width"] - 4, result["y"] + result["height"] - 4
        node = shot_rgb.crop((round(x0), round(y0), round(x1), round(y1)))
        pixels = np.asarray(node).astype(int)
        background = pixels[-2, 2]
        rows, columns = np.nonzero(np.abs(pixels - background).sum(axis=2) > 24)
        if len(rows):
            image = node.crop((columns.min(), rows.min(), columns.max() + 1, rows.max() + 1))
    fit = min((THUMBNAIL[0] - 16) / image.width, (THUMBNAIL[1] - 16) / image.height)
    image = image.resize((round(image.width * fit), round(image.height * fit)), Image.Resampling.LANCZOS)
    card = Image.new("RGB", THUMBNAIL, image.getpixel((0, 0)) if result is None else tuple(background))
    card.paste(image, ((THUMBNAIL[0] - image.width) // 2, (THUMBNAIL[1] - image.height) // 2))
    card.save(target, quality=80, optimize=True)


def workflow_screenshot(browser, server, workflow: Path, out: Path, thumbnails: Path) -> Path:
    page = PackPage(browser, server, viewport=viewport_for(workflow)).open()
    try:
        page.drop_workflow(workflow)
        area = frame(page, SCALE)
        page.wait_timelines()
        if runs_on_the_demo(workflow):
            run_in_page(page, workflow)
            area = frame(page, SCALE)  # outputs may have grown a node
        png = page.screenshot()
        target = out / f"{workflow.stem}.png"
        save_png(png, target)
        save_thumbnail(png, area, page.evaluate(RESULT_RECT_JS) if runs_on_the_demo(workflow) else None,
                       thumbnails / f"{workflow.stem}.jpg")
        if page.problems:
            raise RuntimeError(f"{workflow.name}: " + "; ".join(page.problems))
        return target
    finally:
        page.close()


def place_files(base: Path, workflows: list[Path]) -> None:
    """What the workflows pick (tests/browser_page.py's stand-ins), with the pack's own reference clip in the input
    folder instead of the stand-in clip, so the runs show the clip users get."""
    place_referenced_files(base, workflows)
    for name in SHIPPED_LORAS:  # the pack's own file, not a stand-in that the user's loras folder would put first
        (base / "models" / "loras" / name).unlink(missing_ok=True)
    for path in workflows:
        for node_type, name in comfy_host.referenced_files(json.loads(path.read_text())):
            shipped = path.parent / name
            if node_type in comfy_host.INPUT_NODES and shipped.is_file():
                shutil.copy(shipped, base / "input" / name)


def widget_screenshot(browser, server, out: Path) -> Path:
    page = PackPage(browser, server, viewport=WIDGET_VIEW).open()
    try:
        page.build(schedule_graph())
        area = frame(page, 1.0)
        page.wait_timelines()
        target = out / "schedule_widget.png"
        page.screenshot(clip={key: area[key] + (-MARGIN if key in "xy" else 2 * MARGIN) for key in area}, path=target)
        if page.problems:
            raise RuntimeError("schedule widget: " + "; ".join(page.problems))
        return target
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNG files")
    parser.add_argument("--thumbnails", type=Path, default=ROOT / "example_workflows",
                        help="folder for the template browser's <workflow>.jpg files")
    parser.add_argument("--only", nargs="*", default=None, help="workflow names (stems) to shoot; default all")
    args = parser.parse_args()
    for missing in (comfy_host.HOST_MISSING, browser_missing()):
        if missing:
            sys.exit(f"screenshots: {missing}")
    workflows = example_workflows()
    chosen = [path for path in workflows if args.only is None or path.stem in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    with comfy_host.running_server(prepare=lambda base: place_files(base, workflows)) as server, \
            chromium() as browser:
        write_settings(server)
        server.post("/settings/Comfy.Graph.CanvasInfo", False)  # no render statistics in the corner
        for workflow in chosen:
            print(workflow_screenshot(browser, server, workflow, args.out, args.thumbnails))
        if args.only is None:
            print(widget_screenshot(browser, server, args.out))


if __name__ == "__main__":
    main()
