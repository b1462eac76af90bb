// Lumina-Video: draws the patch schedule as a timeline on schedule and sampler nodes, marks a sampler
// whose model lacks a stage's patch pair, shows the latent grid (or the size error) on Empty Latent Video,
// and shows a sampler's draft of the clip (sent when its first, coarse stage ends) while the fine stages run.
//
// Each stage is a box labelled with its patch pair "FxP" and the number of model calls it makes on
// the time grid (left = noise, right = finished video), with the t where it starts underneath; where the
// server holds a calibration of the wired model at the wired size, also its predicted seconds.
// The numbers come from the pack's server routes (/lumina_video/plan, /model_patches, /latent_size),
// which run lumina_core's own code, so the page shows exactly what the sampler will do or refuse.
// They are asked when a node is created or loaded and when a widget or link changes, never while
// drawing; drawing paints the last answer. A request that got no answer (no server, an HTTP error) is
// asked again on the next change, or when the page reconnects to a restarted server.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION = "LuminaVideo.ScheduleTimeline";
const BUDGET_NODE = "LuminaVideoMSScheduleForTimeBudget";
const TIMELINE_NODES = new Set([
  "LuminaVideoMSSchedulePreset",
  "LuminaVideoMSScheduleJSON",
  "LuminaVideoMSScheduleStage",
  BUDGET_NODE,
  "LuminaVideoMSSampler",
  "LuminaVideoMSStageSampler",
]);
const SCHEDULE_SOURCES = new Set(["LuminaVideoMSSchedulePreset", "LuminaVideoMSScheduleJSON", "LuminaVideoMSScheduleStage",
  BUDGET_NODE]);
const DRAFT_EVENT = "lumina_video.draft"; // nodes/sampler.py DRAFT_EVENT
const DRAFT_WIDGET = "lumina_draft";
const DRAFT_HEIGHT = 160;
const PATCH_COLOURS = { "2x4": "#3b6fb6", "1x4": "#4f86c6", "2x2": "#3f9e6e", "1x2": "#c98a2b", "1x1": "#b8503a" };
const HEIGHT = 58;
const UNREACHABLE_COLOUR = "#d0a040";

function widgetValue(node, name) {
  const widget = node.widgets?.find((w) => w.name === name);
  return widget ? widget.value : undefined;
}

function upstreamNode(node, inputName) {
  const input = node.inputs?.find((i) => i.name === inputName);
  if (!input || input.link == null) return null;
  const link = node.graph?.links?.[input.link] ?? node.graph?.links?.get?.(input.link);
  return link ? node.graph.getNodeById(link.origin_id) : null;
}

// The request /lumina_video/plan understands, read from the node's widgets (and, for stage
// chains and samplers, from the schedule nodes wired into it). null: nothing to show yet.
export function planRequest(node, seen = new Set()) {
  if (!node || seen.has(node.id)) return null;
  seen.add(node.id);
  switch (node.comfyClass ?? node.type) {
    case "LuminaVideoMSSchedulePreset":
      return { preset: widgetValue(node, "preset"), steps: widgetValue(node, "steps") || null };
    case "LuminaVideoMSScheduleJSON":
      return { official: widgetValue(node, "config") };
    case "LuminaVideoMSScheduleStage": {
      const previous = upstreamNode(node, "previous");
      const before = previous ? planRequest(previous, seen) : null;
      if (previous && !before?.stages) return before;
      const stages = before?.stages ?? [];
      const start = stages.length ? stages[stages.length - 1].t_end : 0.0;
      return {
        stages: [...stages, { patch: widgetValue(node, "patch"), t_start: start, t_end: widgetValue(node, "t_end") }],
        steps: before?.steps ?? widgetValue(node, "steps"),
        shift: before?.shift ?? widgetValue(node, "shift"),
      };
    }
    case BUDGET_NODE: {
      const source = upstreamNode(node, "schedule");
      const base = source && SCHEDULE_SOURCES.has(source.comfyClass ?? source.type) ? planRequest(source, seen) : null;
      if (!base) return null;
      const { cost, ...baseSchedule } = base;
      return withCost({ budget: { seconds: widgetValue(node, "seconds"), base: baseSchedule } }, costContext(node) ?? cost);
    }
    case "LuminaVideoMSStageSampler":
      return withCost({
        stages: [{ patch: widgetValue(node, "patch"), t_start: widgetValue(node, "t_start"), t_end: widgetValue(node, "t_end") }],
        steps: widgetValue(node, "steps"),
        shift: widgetValue(node, "shift"),
      }, costContext(node));
    case "LuminaVideoMSSampler": {
      const source = upstreamNode(node, "schedule");
      const request = source && SCHEDULE_SOURCES.has(source.comfyClass ?? source.type) ? planRequest(source, seen) : null;
      return request && !request.cost ? withCost(request, costContext(node)) : request;
    }
    default:
      return null;
  }
}

function withCost(request, cost) {
  return cost ? { ...request, cost } : request;
}

// What the server needs to look up a calibration for a node's timeline: the model loader's entry and the Empty
// Latent Video's widgets wired into it; null when either is not known (then the timeline shows no seconds).
function costContext(node) {
  const model = modelName(node);
  const latent = upstreamNode(node, "latent");
  if (!model || (latent?.comfyClass ?? latent?.type) !== "LuminaVideoMSEmptyLatentVideo") return null;
  return { model_name: model, latent: { ...latentSizeRequest(latent), batch_size: widgetValue(latent, "batch_size") } };
}

// The model loader feeding a sampler, followed back through "model" inputs (LoRA loaders, Model Schedule,
// caches and other MODEL patches may sit in between).
const MAX_MODEL_HOPS = 32;
function modelName(node) {
  let current = upstreamNode(node, "model");
  for (let hops = 0; current && hops < MAX_MODEL_HOPS; hops++) {
    if ((current.comfyClass ?? current.type) === "LuminaVideoMSModelLoader") return widgetValue(current, "model_name");
    current = upstreamNode(current, "model");
  }
  return null;
}

// The server's JSON answer; throws when there is none (no server, or an HTTP error status).
async function postJson(route, body) {
  const response = await api.fetchApi(route, { method: "POST", body: JSON.stringify(body) });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    throw new Error(`HTTP ${response.status}${answer.error ? `: ${answer.error}` : ""}`);
  }
  return response.json();
}

function latentSizeRequest(node) {
  return {
    resolution: widgetValue(node, "resolution"),
    width: widgetValue(node, "width"),
    height: widgetValue(node, "height"),
    frames: widgetValue(node, "frames"),
  };
}

// What each node asks the server: a lookup's request is read from the graph (null: nothing to ask).
const LOOKUPS = {
  plan: { route: "/lumina_video/plan", request: planRequest },
  patches: { route: "/lumina_video/model_patches", request: (node) => {
    const name = modelName(node);
    return name ? { model_name: name } : null;
  } },
  size: { route: "/lumina_video/latent_size", request: latentSizeRequest },
};

function lookupsOf(node) {
  const type = node.comfyClass ?? node.type;
  if (TIMELINE_NODES.has(type)) return ["plan", "patches"];
  return type === "LuminaVideoMSEmptyLatentVideo" ? ["size"] : [];
}

// node.__lumina[kind] is {key, answer, failed, asking, ticket}: the latest request (as JSON), the server's
// answer to it (the previous one while `asking`), or why none came (`failed`). A failure is not an answer:
// the next refresh asks again, even for the same request. An answer to an older request is dropped.
function lookup(node, kind) {
  return ((node.__lumina ??= {})[kind] ??= { ticket: 0 });
}

// `again`: ask even an answered request again when its answer may have changed on the server (a plan that could
// show predicted seconds but does not: a run may have calibrated the model since).
function refreshLookup(node, kind, again = false) {
  const { route, request: requestOf } = LOOKUPS[kind];
  const request = requestOf(node);
  const key = JSON.stringify(request);
  const state = lookup(node, kind);
  const stale = again && kind === "plan" && request?.cost && state.answer && state.answer.seconds === undefined;
  if (key === state.key && !state.failed && !stale) return;
  const ticket = ++state.ticket;
  state.key = key;
  state.failed = null;
  state.asking = Boolean(request);
  if (!request) {
    state.answer = null;
    repaint(node);
    return;
  }
  postJson(route, request).then(
    (answer) => {
      if (ticket !== state.ticket) return;
      state.answer = answer;
      state.asking = false;
      repaint(node);
    },
    (error) => {
      if (ticket !== state.ticket) return;
      state.answer = null;
      state.asking = false;
      state.failed = error.message ?? String(error);
      repaint(node);
    },
  );
}

// Shows a node's new answers. The classic renderer paints the pack's widgets on the graph's canvas, so marking the
// node dirty is enough; the Vue node renderer (Comfy.VueNodes.Enabled) gives each such widget a small canvas of its
// own, painted when it is mounted and again only through the widget's triggerDraw.
function repaint(node) {
  node.setDirtyCanvas(true, true);
  for (const widget of node.widgets ?? []) if (DISPLAY_NAMES.has(widget.name)) widget.triggerDraw?.();
}

// Ask for what changed (and again for what failed) on every pack node of a graph: a widget or a link
// of one node can change what the nodes downstream of it show.
function refreshGraph(graph, again = false) {
  for (const node of graph?.nodes ?? []) for (const kind of lookupsOf(node)) refreshLookup(node, kind, again);
}

// Changes come in bursts (a workflow configures all its nodes, a new node gets its values and links
// right after it is created): the graph is refreshed once, when the script making them is done.
const changed = new Set();
function refreshSoon(node) {
  if (!changed.size) {
    queueMicrotask(() => {
      const graphs = new Set([...changed].map((n) => n.graph));
      changed.clear();
      graphs.forEach(refreshGraph);
    });
  }
  changed.add(node);
}

// Patches of the plan the wired model lacks, as "FxP" strings (empty when unknown or all present).
function missingPatches(node) {
  const plan = lookup(node, "plan").answer;
  const known = lookup(node, "patches").answer;
  if (!plan?.stages || !known?.patches) return [];
  return plan.stages.map((stage) => stage.patch).filter((patch) => !known.patches.includes(patch));
}

// Whether the sampler (or Empty Latent Video) would refuse what the server's answers describe.
function refused(node) {
  if (lookupsOf(node).includes("size")) return Boolean(lookup(node, "size").answer?.error);
  return Boolean(lookup(node, "plan").answer?.error) || missingPatches(node).length > 0;
}

function unreachable(state) {
  return `no answer from the Lumina-Video server route (${state.failed}); asking again on the next change`;
}

// A red frame around a node while it has a problem the sampler would refuse. Drawn, never stored:
// the node's own colours (saved with the workflow) are left alone.
function drawProblemFrame(node, ctx) {
  if (node.flags?.collapsed || !refused(node)) return;
  const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  ctx.save();
  ctx.strokeStyle = "#e04040";
  ctx.lineWidth = 3;
  ctx.strokeRect(-3, -title - 3, node.size[0] + 6, node.size[1] + title + 6);
  ctx.restore();
}

// The same frame in the Vue node renderer, which draws no node foreground: the outline of the node's element. The
// canvas a display widget is painted on lies in that element there (in the classic renderer, in no node's element).
function frameVueNode(canvas, node) {
  const element = canvas.closest?.("[data-node-id]");
  if (element) element.style.outline = refused(node) ? "3px solid #e04040" : "";
}

// Draws text word-wrapped to a width, at most `lines` lines.
function fillWrapped(ctx, text, x, y, width, lines, lineHeight = 13) {
  let line = "";
  let row = 0;
  for (const word of text.split(" ")) {
    const candidate = line ? `${line} ${word}` : word;
    if (ctx.measureText(candidate).width > width && line) {
      if (row === lines - 1) break;
      ctx.fillText(line, x, y + row * lineHeight);
      row += 1;
      line = word;
    } else {
      line = candidate;
    }
  }
  ctx.fillText(line, x, y + row * lineHeight);
}

// Stages are laid out by their share of model calls (the shifted grid crowds the early, coarse
// stages into a sliver of t, yet they are a large share of the steps); their switch times are
// written under the boundaries.
function drawTimeline(ctx, node, width, y) {
  const state = lookup(node, "plan");
  const plan = state.answer;
  const left = 10;
  const right = width - 10;
  const span = right - left;
  const barTop = y + 6;
  const barHeight = HEIGHT - 30;
  ctx.save();
  ctx.fillStyle = "#1d1d1d";
  ctx.fillRect(left, y + 4, span, HEIGHT - 8);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  const missing = missingPatches(node);
  if (state.failed) {
    ctx.fillStyle = UNREACHABLE_COLOUR;
    fillWrapped(ctx, unreachable(state), left + 6, y + 16, span - 12, 3);
  } else if (state.key === "null") {
    ctx.fillStyle = "#888";
    ctx.fillText("connect a schedule to see its stages", left + 6, y + HEIGHT / 2);
  } else if (!plan) {
    ctx.fillStyle = "#888";
    ctx.fillText("waiting for the server's plan", left + 6, y + HEIGHT / 2);
  } else if (missing.length) {
    const have = lookup(node, "patches").answer.patches.join(", ");
    ctx.fillStyle = "#e05555";
    fillWrapped(ctx, `the model has no ${missing.join(", ")} patch embedder (it has ${have}): pick a schedule with those`,
      left + 6, y + 16, span - 12, 3);
  } else if (plan.error) {
    ctx.fillStyle = "#e05555";
    fillWrapped(ctx, plan.error, left + 6, y + 16, span - 12, 3);
  } else {
    const total = Math.max(1, plan.total_calls);
    const end = plan.stages[plan.stages.length - 1].t_end;
    // predicted seconds (of the budget), or for a budget not yet calibrated: the base schedule is shown
    const seconds = plan.seconds === undefined ? (plan.budget === undefined ? "" : ", base until calibrated")
      : `, ~${formatSeconds(plan.seconds)}` + (plan.budget_seconds === undefined ? "" : ` of ${formatSeconds(plan.budget_seconds)}`);
    const summary = `${plan.total_calls} calls, t=${end === 1 ? 1 : end}${seconds}`;
    const summaryLeft = right - ctx.measureText(summary).width - 2;
    ctx.fillStyle = "#ddd";
    ctx.fillText(summary, summaryLeft, y + HEIGHT - 14);
    let x = left;
    plan.stages.forEach((stage, index) => {
      const w = (stage.calls / total) * span;
      ctx.fillStyle = PATCH_COLOURS[stage.patch] ?? "#777";
      ctx.fillRect(x + 1, barTop, Math.max(2, w - 2), barHeight);
      ctx.fillStyle = "#fff";
      const label = `${stage.patch} · ${stage.calls}` + (stage.seconds === undefined ? "" : ` · ${formatSeconds(stage.seconds)}`);
      if (w > ctx.measureText(label).width + 6) ctx.fillText(label, x + 4, barTop + barHeight / 2);
      const switchLabel = `t=${stage.t_start}`;
      if (x + 2 + ctx.measureText(switchLabel).width < summaryLeft - 4) {
        ctx.fillStyle = "#aaa";
        ctx.fillText(switchLabel, x + 2, y + HEIGHT - 14);
      }
      x += w;
    });
  }
  ctx.restore();
}

function formatSeconds(seconds) {
  return seconds >= 100 ? `${Math.round(seconds)} s` : `${seconds.toPrecision(2)} s`;
}

// A sampler's draft: the animated picture the server sent, in an <img> under the node's widgets (kept until the
// next draft replaces it; never saved with the workflow). node.__luminaDraft says what is shown and since when.
function showDraft(detail) {
  const node = app.graph?.getNodeById(Number(detail.node)) ?? app.graph?.getNodeById(detail.node);
  if (!node) return;
  let widget = node.widgets?.find((w) => w.name === DRAFT_WIDGET);
  if (!widget) {
    const image = document.createElement("img");
    image.className = "lumina-video-draft";
    image.style.cssText = "width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;";
    widget = node.addDOMWidget(DRAFT_WIDGET, DRAFT_WIDGET, image, {
      serialize: false, hideOnZoom: false, getMinHeight: () => DRAFT_HEIGHT, getMaxHeight: () => DRAFT_HEIGHT,
    });
    widget.serialize = false;
    node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
  }
  const image = widget.element;
  image.title = `draft at t = ${detail.t.toFixed(3)}: the clip the coarse stage predicts (${detail.frames} frames, `
    + `${detail.width}x${detail.height}, decoded in ${detail.seconds.toFixed(2)} s); the fine stages are still running`;
  image.onload = () => {
    node.__luminaDraft = { ...detail, image: undefined, shownAt: performance.now() };
    node.setDirtyCanvas(true, true);
  };
  image.src = detail.image;
}

// Empty Latent Video: the latent grid its widgets give, or the server's error with the nearest valid values.
function drawLatentSize(ctx, node, width, y) {
  const state = lookup(node, "size");
  const answer = state.answer;
  ctx.save();
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillStyle = state.failed ? UNREACHABLE_COLOUR : answer?.error ? "#e05555" : "#aaa";
  const text = state.failed ? unreachable(state) : !answer ? ""
    : answer.error ?? `latent: ${answer.latent[0]} frames x ${answer.latent[1]} x ${answer.latent[2]}`;
  fillWrapped(ctx, text, 12, y + 9, width - 24, 3);
  ctx.restore();
}

// Runs `extra` after a node type's own `method` (if any), with the same arguments.
function after(prototype, method, extra) {
  const original = prototype[method];
  prototype[method] = function () {
    const result = original?.apply(this, arguments);
    extra.apply(this, arguments);
    return result;
  };
}

const DISPLAY_WIDGETS = {
  LuminaVideoMSEmptyLatentVideo: { name: "lumina_latent_size", height: 40, draw: drawLatentSize },
  ...Object.fromEntries([...TIMELINE_NODES].map((type) => [type, { name: "lumina_timeline", height: HEIGHT, draw: drawTimeline }])),
};
const DISPLAY_NAMES = new Set(Object.values(DISPLAY_WIDGETS).map((display) => display.name));
// Nodes whose widgets or links change what the pack's widgets show (the loader: the sampler's patch pairs).
const WATCHED = new Set([...Object.keys(DISPLAY_WIDGETS), "LuminaVideoMSModelLoader"]);

app.registerExtension({
  name: EXTENSION,
  setup() {
    api.addEventListener("reconnected", () => refreshGraph(app.graph)); // a restarted server: ask what failed again
    api.addEventListener("execution_success", () => refreshGraph(app.graph, true)); // a run may have calibrated
    api.addEventListener(DRAFT_EVENT, (event) => showDraft(event.detail));
  },
  afterConfigureGraph() {
    refreshGraph(app.graph); // a loaded workflow, also after the page has replaced values its lists lack
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!WATCHED.has(nodeData.name)) return;
    // The server is asked when a node is created or loaded and when a widget or link changes; never while drawing.
    for (const method of ["onNodeCreated", "onConfigure", "onWidgetChanged", "onConnectionsChange"]) {
      after(nodeType.prototype, method, function () {
        refreshSoon(this);
      });
    }
    const display = DISPLAY_WIDGETS[nodeData.name];
    if (!display) return;
    after(nodeType.prototype, "onDrawForeground", function (ctx) {
      drawProblemFrame(this, ctx);
    });
    after(nodeType.prototype, "onNodeCreated", function () {
      this.addCustomWidget({
        name: display.name,
        type: display.name,
        value: null,
        serialize: false, // not in widgets_values
        options: { serialize: false }, // not in the prompt graphToPrompt builds
        computeSize: (width) => [width, display.height],
        draw: (ctx, node, width, y) => {
          frameVueNode(ctx.canvas, node);
          display.draw(ctx, node, width, y);
        },
      });
    });
  },
});
