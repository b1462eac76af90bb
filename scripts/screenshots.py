"""Screenshots of the pack in the ComfyUI page, for the README: every example workflow as it looks right after
it is dropped onto the canvas, and a close-up of the schedule timeline widget.

    COMFYUI_PATH=../shared/comfyui .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Boots a ComfyUI host with the pack (tests/comfy_host.py, as the host tests do; COMFYUI_PATH defaults to
../shared/comfyui) and opens the page in headless Chromium (tests/browser_page.py, as tests/test_browser.py
does). Writes <workflow>.png per file in example_workflows/ and schedule_widget.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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

WIDGET_VIEW = {"width": 1480, "height": 860}
SCALE = 0.7  # canvas zoom of the workflow shots: node text stays drawn and readable (LiteGraph drops it below ~0.6)
CHROME = {"left": 58, "top": 92, "right": 20, "bottom": 56}  # page UI floating over the canvas: sidebar, toolbars
MARGIN = 24


FRAME_JS = """({left, top, right, bottom, scale}) => {
  // Place the graph's bounding box in the free part of the canvas: centred, at `scale` or smaller if needed.
  const canvas = window.app.canvas;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const node of window.app.graph._nodes) {
    const [x, y, w, h] = node.boundingRect;
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
    """A window large enough to show the whole saved graph at SCALE (at least 1600x900)."""
    nodes = json.loads(workflow.read_text())["nodes"]
    width = max(n["pos"][0] + n["size"][0] for n in nodes) - min(n["pos"][0] for n in nodes)
    height = max(n["pos"][1] + n["size"][1] for n in nodes) - min(n["pos"][1] - 30 for n in nodes)
    return {"width": max(1600, round(width * SCALE + CHROME["left"] + CHROME["right"] + 2 * MARGIN + 40)),
            "height": max(900, round(height * SCALE + CHROME["top"] + CHROME["bottom"] + 2 * MARGIN + 40))}


def workflow_screenshot(browser, server, workflow: Path, out: Path) -> Path:
    page = PackPage(browser, server, viewport=viewport_for(workflow)).open()
    try:
        page.drop_workflow(workflow)
        frame(page, SCALE)
        page.wait_timelines()
        target = out / f"{workflow.stem}.png"
        page.screenshot(path=target)
        if page.problems:
            raise RuntimeError(f"{workflow.name}: " + "; ".join(page.problems))
        return target
    finally:
        page.close()


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
    args = parser.parse_args()
    for missing in (comfy_host.HOST_MISSING, browser_missing()):
        if missing:
            sys.exit(f"screenshots: {missing}")
    workflows = example_workflows()
    args.out.mkdir(parents=True, exist_ok=True)
    with comfy_host.running_server(prepare=lambda base: place_referenced_files(base, workflows)) as server, \
            chromium() as browser:
        write_settings(server)
        server.post("/settings/Comfy.Graph.CanvasInfo", False)  # no render statistics in the corner
        for workflow in workflows:
            print(workflow_screenshot(browser, server, workflow, args.out))
        print(widget_screenshot(browser, server, args.out))


if __name__ == "__main__":
    main()
