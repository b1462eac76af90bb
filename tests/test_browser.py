"""The pack as a user meets it in the browser: the real ComfyUI page (headless Chromium) on a real host
(COMFYUI_PATH) loads the pack's frontend extension, takes every example workflow dropped onto the canvas
and queues it past the server's validation, draws the schedule timeline from the server's plan and redraws
it when a schedule changes (also after the route failed, without a reload; never asking while drawing),
reports a schedule the model cannot run on the failing node before any step, and runs, shows and cancels
the demo from the page.

Skips without a host or without playwright/Chromium; with CI set, either missing fails instead."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import av
import numpy as np
import pytest
from browser_page import (
    DEMO_WORKFLOW,
    EXAMPLES,
    EXTENSION,
    TIMELINE,
    PackPage,
    browser_for_tests,
    demo_graph,
    example_workflows,
    node,
    place_referenced_files,
    require_browser,
    schedule_graph,
    write_settings,
)
from comfy_host import ROOT, running_server
from PIL import Image

require_browser()

UI_ONLY = {"Note", "MarkdownNote"}  # frontend-only nodes, never in a prompt
TIMELINE_HEIGHT = 58  # js/lumina_video.js HEIGHT; the stage bars span y 6..34 of it, left/right margin 10
PATCH_COLOURS = {"2x4": (0x3B, 0x6F, 0xB6), "1x4": (0x4F, 0x86, 0xC6), "2x2": (0x3F, 0x9E, 0x6E),
                 "1x2": (0xC9, 0x8A, 0x2B), "1x1": (0xB8, 0x50, 0x3A)}
OVERLAPS_JS = """() => {
  const boxes = window.app.graph._nodes.map((n) => ({id: n.id, type: n.type, rect: n.boundingRect}));
  const meet = (a, b) => a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];
  return boxes.flatMap((a, i) => boxes.slice(i + 1).filter((b) => meet(a.rect, b.rect))
    .map((b) => `${a.type} #${a.id} [${a.rect.map(Math.round)}] and ${b.type} #${b.id} [${b.rect.map(Math.round)}]`));
}"""


@pytest.fixture(scope="module")
def server():
    with running_server(prepare=lambda base: place_referenced_files(base, example_workflows())) as host:
        write_settings(host)
        yield host


@pytest.fixture(scope="module")
def browser():
    yield from browser_for_tests()


@pytest.fixture
def page(browser, server):
    opened = PackPage(browser, server).open()
    yield opened
    opened.close()


# -- helpers ------------------------------------------------------------------------------------------
def assert_no_pack_problems(page: PackPage) -> None:
    assert not page.problems, "\n".join(page.problems)


def submit(server, prompt: dict) -> tuple[int, dict]:
    """POST /prompt; (HTTP status, answer) also for a refused prompt."""
    request = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": prompt, "client_id": "browser"})
                                     .encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"{}")


def drop_run(server, prompt_id: str, timeout: float = 30.0) -> None:
    """Take a prompt queued only for its validation off the queue (or interrupt it), and wait until it is gone."""
    server.post("/queue", {"delete": [prompt_id]})
    server.post("/interrupt", {"prompt_id": prompt_id})
    deadline = time.monotonic() + timeout
    while any(item[1] == prompt_id for items in server.get("/queue").values() for item in items):
        assert time.monotonic() < deadline, f"prompt {prompt_id} stayed in the queue"
        time.sleep(0.1)


def pixels(png: bytes) -> np.ndarray:
    """[height, width, 3] int RGB of a screenshot."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def matches(image: np.ndarray, rgb, tolerance: int = 8) -> np.ndarray:
    return (np.abs(image - np.array(rgb)) <= tolerance).all(axis=-1)


def bar_shares(page: PackPage, node_id: int) -> dict[str, float]:
    """Width of each patch colour along one pixel row through the timeline's stage bars, as a share of the bar."""
    rect = page.widget_rect(node_id, TIMELINE)
    scale = rect["height"] / TIMELINE_HEIGHT
    row = pixels(page.screenshot(clip={"x": rect["x"] + 10 * scale, "y": rect["y"] + 9 * scale,
                                       "width": rect["width"] - 20 * scale, "height": 1}))
    shares = {patch: matches(row[0], rgb).mean() for patch, rgb in PATCH_COLOURS.items()}
    return {patch: float(share) for patch, share in shares.items() if share > 0}


def timeline_image(page: PackPage, node_id: int) -> bytes:
    return page.screenshot(clip=page.widget_rect(node_id, TIMELINE))


def assert_bars_match(page: PackPage, node_id: int, plan: dict) -> None:
    """The drawn bars have the plan's patches, each as wide as its share of the model calls."""
    shares = bar_shares(page, node_id)
    expected = {}
    for stage in plan["stages"]:
        if stage["calls"]:
            expected[stage["patch"]] = expected.get(stage["patch"], 0) + stage["calls"] / plan["total_calls"]
    assert shares.keys() == expected.keys(), (shares, expected)
    for patch, share in expected.items():
        assert shares[patch] == pytest.approx(share, abs=0.03), (patch, shares, expected)


def error_stroke_pixels(page: PackPage, node_id: int) -> int:
    """Pixels around a node in the #f0f of the frontend's execution-error outline (anti-aliased: any
    brightness of pure magenta)."""
    r, g, b = pixels(page.screenshot(clip=page.node_rect(node_id, margin=8))).transpose(2, 0, 1)
    return int(((r > 60) & (np.abs(r - b) < 12) & (g < r // 5)).sum())


def run_from_page(page: PackPage) -> None:
    """Press the Run button, as a user queues the workflow. A workflow drop shows a page-wide block mask that
    headless Chromium sometimes leaves stuck in its leave animation over the button (seen once in ~10 suite
    runs): wait for it to go, and if it stays, deliver the click to the button itself."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page.evaluate("() => { window.__luminaEvents.length = 0; }")
    button = page.page.get_by_role("button", name="Run", exact=True)
    try:
        page.page.wait_for_selector(".p-blockui-mask", state="detached", timeout=30_000)
    except PlaywrightTimeoutError:
        button.dispatch_event("click")
        return
    button.click()


def node_ids(page: PackPage, type_: str) -> list[int]:
    return page.evaluate("(type) => window.app.graph._nodes.filter((n) => n.type === type).map((n) => n.id)", type_)


# -- 1: the page and the extension --------------------------------------------------------------------
def test_page_loads_the_pack_extension_and_its_timeline_widget(page):
    assert EXTENSION in page.evaluate("() => window.app.extensions.map((e) => e.name)")
    scripts = [url for url in page.pack_responses if url.endswith("/extensions/comfyui-lumina-video/lumina_video.js")]
    assert scripts and all(page.pack_responses[url] == 200 for url in scripts), page.pack_responses
    widgets = page.evaluate("""() => Object.fromEntries(["LuminaVideoMSSchedulePreset", "LuminaVideoMSScheduleJSON",
        "LuminaVideoMSScheduleStage", "LuminaVideoMSSampler", "LuminaVideoMSStageSampler", "LuminaVideoMSModelLoader"]
        .map((type) => {
          const node = LiteGraph.createNode(type);
          window.app.graph.add(node);
          const timeline = node.widgets.filter((w) => w.name === "lumina_timeline");
          return [type, {timelines: timeline.length, serialize: timeline[0]?.serialize,
                         values: node.serialize().widgets_values.length,
                         others: node.widgets.filter((w) => w.name !== "lumina_timeline").length}];
        }))""")
    for type_, widget in widgets.items():
        assert widget["timelines"] == (0 if type_ == "LuminaVideoMSModelLoader" else 1), (type_, widget)
        assert widget["values"] == widget["others"], (type_, widget)  # the timeline is never saved
    assert widgets["LuminaVideoMSSchedulePreset"]["serialize"] is False
    page.settle(10)
    assert_no_pack_problems(page)


# -- 2: example workflows, dropped onto the canvas ----------------------------------------------------
def test_the_pack_ships_example_workflows():
    assert example_workflows(), f"no example workflow (*.json) in {EXAMPLES}"


@pytest.mark.parametrize("workflow", example_workflows(), ids=lambda path: path.stem)
def test_example_workflow_dropped_on_the_canvas_loads_and_validates(page, server, workflow):
    saved = json.loads(workflow.read_text())
    page.drop_workflow(workflow)
    page.page.wait_for_timeout(300)  # dialogs and toasts open right after the graph is configured
    assert not page.visible_text(".p-dialog"), page.visible_text(".p-dialog")  # e.g. "missing nodes"
    toasts = page.visible_text(".p-toast-message")  # an error, or the warning of a file the frontend's schema rejects
    assert not page.visible_text(".p-toast-message-error") and not [t for t in toasts if "Invalid workflow" in t], \
        toasts
    nodes = page.evaluate("""() => window.app.graph._nodes.map((n) => ({type: n.type, known:
        n.type in LiteGraph.registered_node_types, errors: !!n.has_errors}))""")
    assert len(nodes) == len(saved["nodes"])
    assert all(n["known"] and not n["errors"] for n in nodes), nodes
    overlaps = page.evaluate(OVERLAPS_JS)  # as drawn: with the timeline widget's height added to the saved size
    assert not overlaps, "nodes drawn over each other: " + "; ".join(overlaps)
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert {entry["class_type"] for entry in prompt.values()} >= {n["type"] for n in nodes if n["type"] not in UI_ONLY}
    status, answer = submit(server, prompt)
    assert status == 200 and not answer.get("node_errors"), json.dumps(answer, indent=1)
    drop_run(server, answer["prompt_id"])
    assert_no_pack_problems(page)


# -- 3: the schedule timeline -------------------------------------------------------------------------
def test_timeline_shows_the_preset_stages_and_redraws_when_the_preset_changes(page, server):
    ids = page.build(schedule_graph())
    page.fit_view()
    f24 = server.post("/lumina_video/plan", {"preset": "f24F96R960-MultiScale", "steps": None})  # steps 0: 70
    shown = page.wait_plan(ids["preset"], f24)
    assert [(s["patch"], s["calls"]) for s in shown["stages"]] == [("2x4", 30), ("2x2", 24), ("1x2", 15)]
    assert page.wait_plan(ids["sampler"], f24) == f24  # the sampler shows what its schedule input gives it
    assert_bars_match(page, ids["preset"], f24)
    assert_bars_match(page, ids["sampler"], f24)
    before = {key: timeline_image(page, ids[key]) for key in ("preset", "sampler")}

    page.click_arrow(ids["preset"], "preset")  # the next preset: f16F64R512-MultiScale
    f16 = server.post("/lumina_video/plan", {"preset": "f16F64R512-MultiScale", "steps": None})
    assert page.wait_plan(ids["preset"], f16) == f16 and page.wait_plan(ids["sampler"], f16) == f16
    assert [s["calls"] for s in f16["stages"]] != [30, 24, 15]
    assert_bars_match(page, ids["sampler"], f16)
    for key, image in before.items():
        assert timeline_image(page, ids[key]) != image, f"the {key} timeline did not redraw"
    assert_no_pack_problems(page)


def test_timeline_follows_a_stage_chain_into_the_sampler(page, server):
    ids = page.build(schedule_graph())
    page.fit_view()

    def expected(stages):
        starts = [0.0] + [t_end for _, t_end in stages[:-1]]
        return server.post("/lumina_video/plan", {"stages": [{"patch": p, "t_start": s, "t_end": e} for (p, e), s in
                                                             zip(stages, starts)], "steps": 70, "shift": 24.0})

    plan = expected([("2x4", 0.03), ("2x2", 0.125), ("1x2", 1.0)])
    assert [s["calls"] for s in plan["stages"]] == [30, 24, 15]  # the chain is the official f24F96R960-MultiScale
    assert page.wait_plan(ids["chain_sampler"], plan) == plan and page.wait_plan(ids["stage2"], plan) == plan
    assert_bars_match(page, ids["chain_sampler"], plan)
    for widget, change, changed in (("t_end", 0.3, [("2x4", 0.03), ("2x2", 0.3), ("1x2", 1.0)]),
                                    ("patch", "click", [("2x4", 0.03), ("1x4", 0.3), ("1x2", 1.0)])):
        before = timeline_image(page, ids["chain_sampler"])
        if change == "click":
            page.click_arrow(ids["stage1"], widget)  # the next patch pair: 2x2 -> 1x4
        else:
            page.set_widget(ids["stage1"], widget, change)
        plan = expected(changed)
        assert page.wait_plan(ids["chain_sampler"], plan) == plan, widget
        assert_bars_match(page, ids["chain_sampler"], plan)
        assert timeline_image(page, ids["chain_sampler"]) != before, f"changing {widget} did not redraw the timeline"
    assert_no_pack_problems(page)


def test_a_schedule_the_model_cannot_run_fails_on_the_sampler_before_any_step(page):
    stage = {"stage": node("LuminaVideoMSScheduleStage", (740, -330), 320, patch="1x4", t_end=1.0, steps=4, shift=3.0)}
    ids = page.build(demo_graph(schedule=stage, schedule_links=[("stage", "schedule", "sampler", "schedule")]))
    page.fit_view()
    # the page already says so: the sampler's timeline shows the model's complaint instead of stage bars
    page.wait_timelines()
    r, g, b = pixels(timeline_image(page, ids["sampler"])).transpose(2, 0, 1)
    assert ((r > 110) & (r > 1.6 * g) & (r > 1.6 * b)).sum() > 50 and not bar_shares(page, ids["sampler"])
    assert error_stroke_pixels(page, ids["sampler"]) == 0
    run_from_page(page)
    error = page.wait_event("execution_error")["detail"]
    assert error["node_id"] == str(ids["sampler"]) and error["node_type"] == "LuminaVideoMSSampler"
    assert "patch pair 1x4" in error["exception_message"] and "1x1, 1x2, 2x2" in error["exception_message"]
    assert not [e for e in page.events("progress") if e["detail"]["node"] == str(ids["sampler"])]
    assert page.evaluate("() => window.app.lastExecutionError?.node_id") == str(ids["sampler"])
    page.page.wait_for_selector(".p-dialog:has-text('patch pair 1x4')", timeout=30_000)  # the error dialog
    page.page.keyboard.press("Escape")
    page.page.wait_for_selector(".p-dialog, .p-dialog-mask", state="detached", timeout=30_000)
    assert error_stroke_pixels(page, ids["sampler"]) > 100  # the failing node is outlined
    assert error_stroke_pixels(page, ids["stage"]) == 0
    assert_no_pack_problems(page)


PLAN_ROUTE = "**/lumina_video/plan"
REDRAW_JS = "(n) => { for (let i = 0; i < n; i++) window.app.canvas.draw(true, true); }"


def wait_lookup(page: PackPage, node_id: int, done, timeout: float = 10.0) -> dict:
    """The node's plan lookup (PackPage.lookup), once ``done(lookup)`` holds (or the last one seen)."""
    deadline = time.monotonic() + timeout
    while True:
        state = page.lookup(node_id)
        if done(state) or time.monotonic() > deadline:
            return state
        page.settle()


def plan_requests(page: PackPage) -> list:
    """The page's requests to the plan route from now on, as they are sent."""
    sent = []
    page.page.on("request", lambda request: sent.append(request) if "/lumina_video/plan" in request.url else None)
    return sent


def test_the_timeline_recovers_from_a_failed_plan_request_without_a_reload(page, server):
    ids = page.build(schedule_graph())
    page.fit_view()
    schedule = ("preset", "sampler")  # the preset's plan, and the sampler's from it

    def expected(steps):
        return server.post("/lumina_video/plan", {"preset": "f24F96R960-MultiScale", "steps": steps or None})

    for key in schedule:
        assert page.wait_plan(ids[key], expected(0)) == expected(0)
    sent = plan_requests(page)
    outages = (("no server", lambda route: route.abort(), 20),
               ("HTTP 503", lambda route: route.fulfill(status=503, json={"error": "restarting"}), 30))
    for outage, answer, steps in outages:
        page.page.route(PLAN_ROUTE, answer)
        page.set_widget(ids["preset"], "steps", steps)
        for key in schedule:  # no plan, stale or empty: the failure, in the timeline
            state = wait_lookup(page, ids[key], lambda s, steps=steps: not s.get("asking")
                                and json.loads(s.get("key", "{}")).get("steps") == steps)
            assert state["failed"] and state["answer"] is None, (outage, key, state)
            assert not bar_shares(page, ids[key]), (outage, key)
            r, g, b = pixels(timeline_image(page, ids[key])).transpose(2, 0, 1)  # its amber text
            assert ((r > 110) & (g > 0.6 * r) & (g < 0.9 * r) & (b < 0.5 * r)).sum() > 50, (outage, key)
        if outage == "HTTP 503":
            assert page.lookup(ids["preset"])["failed"] == "HTTP 503: restarting"
        page.page.unroute(PLAN_ROUTE)
    # the failed lookups are not remembered: redrawing asks nothing, the next change anywhere asks again
    asked = len(sent)
    page.evaluate(REDRAW_JS, 20)
    page.settle(10)
    assert len(sent) == asked
    assert all("/lumina_video/plan" in problem for problem in page.problems), page.problems  # the outages
    page.problems.clear()
    page.set_widget(ids["sampler"], "seed", 43)  # a change that leaves every plan request as it was
    for key in schedule:
        assert page.wait_plan(ids[key], expected(30)) == expected(30), key
        assert not page.lookup(ids[key])["failed"], key
    assert_bars_match(page, ids["sampler"], expected(30))

    # a late answer to an older request does not replace the newer one's
    held = []
    page.page.route(PLAN_ROUTE, lambda route: route.continue_() if len(held) == len(schedule) else held.append(route))
    page.set_widget(ids["preset"], "steps", 40)
    deadline = time.monotonic() + 10
    while len(held) < len(schedule) and time.monotonic() < deadline:  # the requests reach the handler
        page.settle()
    assert len(held) == len(schedule), held
    page.set_widget(ids["preset"], "steps", 0)
    for key in schedule:
        assert page.wait_plan(ids[key], expected(0)) == expected(0), key
    for route in held:
        route.continue_()
    for route in held:
        route.request.response().finished()
    page.settle(10)
    page.page.unroute(PLAN_ROUTE)
    for key in schedule:
        assert page.plan(ids[key]) == expected(0), key
    assert expected(40) != expected(0)
    assert_bars_match(page, ids["sampler"], expected(0))
    assert_no_pack_problems(page)


def test_drawing_the_timeline_sends_no_request(page, server):
    ids = page.build(schedule_graph())
    page.fit_view()
    page.wait_timelines()
    sent = plan_requests(page)
    page.evaluate(REDRAW_JS, 20)
    page.settle(10)
    assert not sent
    # a value set behind the page's back (no change notification) is not looked up by drawing either
    page.evaluate("(id) => { window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'steps').value = 20; }",
                  ids["preset"])
    page.evaluate(REDRAW_JS, 20)
    page.settle(10)
    assert not sent
    # a change is: one request for each timeline it changes (the preset's and its sampler's)
    page.set_widget(ids["preset"], "steps", 30)
    plan = server.post("/lumina_video/plan", {"preset": "f24F96R960-MultiScale", "steps": 30})
    for key in ("preset", "sampler"):
        assert page.wait_plan(ids[key], plan) == plan, key
    assert sorted(json.loads(request.post_data)["steps"] for request in sent) == [30, 30]
    assert_no_pack_problems(page)


# -- 4: running, outputs and cancel from the page -----------------------------------------------------
def test_demo_workflow_runs_from_the_page_with_progress_and_outputs(page):
    if DEMO_WORKFLOW.is_file():
        page.drop_workflow(DEMO_WORKFLOW)
    else:
        page.build(demo_graph())
    page.fit_view()
    run_from_page(page)
    page.wait_event("execution_success", timeout=120)
    samplers = node_ids(page, "LuminaVideoMSSampler") + node_ids(page, "LuminaVideoMSStageSampler")
    progress = [e["detail"] for e in page.events("progress") if int(e["detail"]["node"]) in samplers]
    assert progress and progress[-1]["value"] == progress[-1]["max"], progress
    outputs = page.evaluate("() => window.app.nodeOutputs")
    expected = {"videos": [], "images": []}
    for save_video in node_ids(page, "SaveVideo"):
        video = outputs[str(save_video)]["images"][0]["filename"]
        assert video.endswith(".mp4"), outputs
        expected["videos"].append(f"filename={video}")
    image_nodes = node_ids(page, "SaveImage") + node_ids(page, "PreviewImage")
    for image_node in image_nodes:
        frames = [image["filename"] for image in outputs[str(image_node)]["images"]]
        assert frames, outputs
        expected["images"] += [f"filename={frame}" for frame in frames]
    # the previews: a <video> element for Save Video, the frames as the image node's pictures
    page.page.wait_for_function("""(expected) => {
      const shown = {videos: [...document.querySelectorAll("video")].map((v) => v.src),
                     images: window.app.graph._nodes.flatMap((n) => (n.imgs ?? []).map((i) => i.src))};
      return Object.entries(expected).every(([kind, names]) => names.every((name) =>
        shown[kind].some((src) => src.includes(name))));
    }""", arg=expected, timeout=10_000)
    assert node_ids(page, "SaveVideo") and image_nodes
    page.page.wait_for_timeout(200)
    assert not page.visible_text(".p-toast-message-error")
    assert_no_pack_problems(page)


def test_cancel_in_the_page_stops_a_long_run_at_the_next_step(page, server):
    ids = page.build(demo_graph(steps=1000, size=64, frames=16))
    sampler = str(ids["sampler"])
    run_from_page(page)
    page.wait_event("progress", where=f"d.node === '{sampler}' && d.value >= 2")
    page.page.get_by_role("button", name="Cancel current run").click()
    interrupted = page.wait_event("execution_interrupted", timeout=120)["detail"]
    assert interrupted["node_id"] == sampler
    page.page.wait_for_timeout(500)  # lets any late message arrive; nothing below depends on its length
    interrupted_at = page.events("execution_interrupted")[0]["time"]
    progress = page.events("progress")
    # the run stopped for good: no step reported after the interrupt, and far from the end of the 1000 steps
    assert not [e["detail"]["value"] for e in progress if e["time"] > interrupted_at]
    last = progress[-1]["detail"]
    assert last["value"] < last["max"], last
    assert server.get("/system_stats")["system"]["comfyui_version"]  # still serving
    page.set_widget(ids["schedule"], "steps", 4)
    run_from_page(page)
    page.wait_event("execution_success", timeout=60)
    assert_no_pack_problems(page)


# -- compute on demand: drafts and time budgets ---------------------------------------------------------
DRAFT_JS = """(id) => {
  const node = window.app.graph.getNodeById(id);
  const image = node.widgets?.find((w) => w.name === "lumina_draft")?.element;
  if (!image) return null;
  const box = image.getBoundingClientRect();
  return {shown: node.__luminaDraft ?? null, natural: [image.naturalWidth, image.naturalHeight],
          box: {x: box.x, y: box.y, width: box.width, height: box.height}, values: node.serialize().widgets_values};
}"""


def test_the_sampler_shows_a_draft_of_the_clip_while_the_fine_stages_run(page):
    graph = demo_graph(steps=20, size=64, frames=16)
    graph["links"].append(("vae", "vae", "sampler", "draft_vae"))
    ids = page.build(graph)
    page.fit_view()
    values = page.evaluate("(id) => window.app.graph.getNodeById(id).serialize().widgets_values", ids["sampler"])
    run_from_page(page)
    success = page.wait_event("execution_success", timeout=300)
    draft = page.evaluate(DRAFT_JS, ids["sampler"])
    assert draft and draft["shown"], "no draft was shown on the sampler"
    shown = draft["shown"]
    assert shown["shownAt"] < success["time"]  # in the page before the run ended
    progress = [e for e in page.events("progress") if e["detail"]["node"] == str(ids["sampler"])]
    later = [e["detail"]["value"] for e in progress if e["time"] > shown["shownAt"]]
    assert later and later[-1] == progress[-1]["detail"]["max"], later  # the fine stages still ran after it
    assert draft["natural"] == [16, 16] and shown["frames"] == 16 and shown["t"] < 0.1  # demo's coarse stage: t < 0.1
    assert draft["values"] == values  # the draft is never saved with the workflow
    picture = pixels(page.screenshot(clip=draft["box"]))
    assert draft["box"]["height"] > 50 and picture.std() > 3, "the draft's picture is not on screen"
    assert_no_pack_problems(page)


def test_a_time_budget_node_shows_predicted_seconds_once_its_run_calibrated(page, server):
    graph = demo_graph(steps=12, size=32, frames=8)
    graph["nodes"]["budget"] = node("LuminaVideoMSScheduleForTimeBudget", (740, -330), 320, seconds=1000.0)
    graph["links"] = [link for link in graph["links"] if link[2:] != ("sampler", "schedule")] + [
        ("schedule", "schedule", "budget", "schedule"), ("model", "model", "budget", "model"),
        ("latent", "latent", "budget", "latent"), ("encode", "positive", "budget", "positive"),
        ("budget", "schedule", "sampler", "schedule")]
    ids = page.build(graph)
    page.fit_view()
    page.wait_timelines()
    before = page.plan(ids["budget"])
    assert "seconds" not in before and "once this model and size are calibrated" in before["budget"]
    assert page.plan(ids["sampler"]) == before  # the sampler shows what the budget node gives it
    run_from_page(page)
    page.wait_event("execution_success", timeout=300)
    request = json.loads(page.lookup(ids["budget"])["key"])
    assert request["cost"]["latent"]["width"] == 32 and request["budget"]["seconds"] == 1000.0
    calibrated = server.post("/lumina_video/plan", request)
    assert calibrated["seconds"] > 0 and calibrated["budget_seconds"] == 1000.0
    assert "nothing traded" in calibrated["budget"]
    for key in ("budget", "sampler"):  # asked again after the run, without a change in the graph
        assert page.wait_plan(ids[key], calibrated) == calibrated, key
    assert_bars_match(page, ids["sampler"], calibrated)
    assert_no_pack_problems(page)


# -- videos that carry their workflow -----------------------------------------------------------------
DROP_FILE_JS = """async ({name, type, data}) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const canvas = window.app.canvasEl ?? document.querySelector("#graph-canvas");
  const box = canvas.getBoundingClientRect();
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  const options = {bubbles: true, cancelable: true, dataTransfer: transfer,
                   clientX: box.left + box.width / 2, clientY: box.top + box.height / 2};
  canvas.dispatchEvent(new DragEvent("dragover", options));
  canvas.dispatchEvent(new DragEvent("drop", options));
}"""


def drop_file(page: PackPage, path, mime: str, expected_nodes: list) -> None:
    """Drop a binary file (a video or PNG someone shared) onto the canvas; wait for the graph it carries."""
    page.evaluate("() => window.app.graph.clear()")
    page.evaluate(DROP_FILE_JS, {"name": path.name, "type": mime, "data": base64.b64encode(path.read_bytes()).decode()})
    page.page.wait_for_function("""(nodes) => JSON.stringify(window.app.graph._nodes.map((n) => [n.id, n.type])
        .sort((a, b) => a[0] - b[0])) === JSON.stringify(nodes)""", arg=expected_nodes, timeout=15_000)
    page.settle()


def sheet_frames(path, size, columns: int = 4, gap: int = 2) -> np.ndarray:
    """The frames tiled in a CLI contact sheet (write_contact_sheet's layout: 4 columns, 2-pixel gaps)."""
    sheet = np.asarray(Image.open(path).convert("RGB")).astype(int)
    height, width = size
    rows, cols = (sheet.shape[0] + gap) // (height + gap), columns
    return np.stack([sheet[r * (height + gap):r * (height + gap) + height, c * (width + gap):c * (width + gap) + width]
                     for r in range(rows) for c in range(cols)])


def video_frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]).astype(int)


def test_cli_video_dropped_on_the_canvas_restores_its_graph_and_reproduces_it(page, server, tmp_path):
    """CLI video in, graph out, run, compare: the mp4 and the contact sheet both restore the CLI's graph;
    queued from the page it makes the CLI's frames (losslessly within one level: identical latents) and a
    video equal to them up to H.264 noise."""
    out = tmp_path / "shared.mp4"
    subprocess.run([sys.executable, "-m", "lumina_core", "generate", "--prompt", "a yellow circle moving down",
                    "--motion", "7", "--seed", "21", "--steps", "5", "--dtype", "fp32", "--out", str(out)],
                   check=True, capture_output=True, timeout=300, cwd=ROOT)
    with av.open(str(out)) as container:
        embedded = json.loads(container.metadata["workflow"]), json.loads(container.metadata["prompt"])
    workflow, prompt = embedded
    nodes = sorted([node["id"], node["type"]] for node in workflow["nodes"])

    drop_file(page, out.with_suffix(".png"), "image/png", nodes)  # the contact sheet carries it too
    drop_file(page, out, "video/mp4", nodes)
    restored = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert {key: {k: v for k, v in node.items() if k != "_meta"} for key, node in restored.items()} == prompt

    # A lossless look at the decoded frames: a Save Image node wired to the decoder's images in the page.
    decode = next(int(key) for key, node in prompt.items() if node["class_type"] == "LuminaVideoMSVAEDecode")
    save_image = page.evaluate("""(decode) => {
      const node = LiteGraph.createNode("SaveImage");
      node.pos = [1120, 700];
      window.app.graph.add(node);
      window.app.graph.getNodeById(decode).connect(0, node, 0);
      return node.id;
    }""", decode)
    # Queued by the page's own app (the Run button's action; a drop can leave a transient overlay on the button)
    page.evaluate("() => { window.__luminaEvents.length = 0; return window.app.queuePrompt(0); }")
    page.wait_event("execution_success", timeout=180)
    saved = page.evaluate("() => window.app.nodeOutputs")
    frames = np.stack([np.asarray(Image.open(server.base / "output" / image["subfolder"] / image["filename"]))
                       for image in saved[str(save_image)]["images"]]).astype(int)
    assert np.abs(frames - sheet_frames(out.with_suffix(".png"), frames.shape[1:3])).max() <= 1  # identical latents
    save_video = next(key for key, node in prompt.items() if node["class_type"] == "SaveVideo")
    file = saved[save_video]["images"][0]
    ours, theirs = video_frames(out), video_frames(server.base / "output" / file["subfolder"] / file["filename"])
    assert ours.shape == theirs.shape == frames.shape
    # The page's video holds those frames up to H.264 noise: no further from them than the CLI's own mp4
    # (yuv420p loses much of the demo's fine detail, so the noise itself is several levels).
    assert np.abs(theirs - frames).mean() <= 1.5 * np.abs(ours - frames).mean() + 1
    assert_no_pack_problems(page)
