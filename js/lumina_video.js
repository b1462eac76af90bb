// Lumina-Video: draws the patch schedule as a timeline on schedule and sampler nodes, marks a sampler
// whose model lacks a stage's patch pair, and shows the latent grid (or the size error) on Empty Latent Video.
//
// Each stage is a box labelled with its patch pair "FxP" and the number of model calls it makes on
// the time grid (left = noise, right = finished video), with the t where it starts underneath.
// The numbers come from the pack's server routes (/lumina_video/plan, /model_patches, /latent_size),
// which run lumina_core's own code, so the page shows exactly what the sampler will do or refuse.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION = "LuminaVideo.ScheduleTimeline";
const TIMELINE_NODES = new Set([
  "LuminaVideoSchedulePreset",
  "LuminaVideoScheduleJSON",
  "LuminaVideoScheduleStage",
  "LuminaVideoSampler",
  "LuminaVideoStageSampler",
]);
const SCHEDULE_SOURCES = new Set(["LuminaVideoSchedulePreset", "LuminaVideoScheduleJSON", "LuminaVideoScheduleStage"]);
const PATCH_COLOURS = { "2x4": "#3b6fb6", "1x4": "#4f86c6", "2x2": "#3f9e6e", "1x2": "#c98a2b", "1x1": "#b8503a" };
const HEIGHT = 58;

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
    case "LuminaVideoSchedulePreset":
      return { preset: widgetValue(node, "preset"), steps: widgetValue(node, "steps") || null };
    case "LuminaVideoScheduleJSON":
      return { official: widgetValue(node, "config") };
    case "LuminaVideoScheduleStage": {
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
    case "LuminaVideoStageSampler":
      return {
        stages: [{ patch: widgetValue(node, "patch"), t_start: widgetValue(node, "t_start"), t_end: widgetValue(node, "t_end") }],
        steps: widgetValue(node, "steps"),
        shift: widgetValue(node, "shift"),
      };
    case "LuminaVideoSampler": {
      const source = upstreamNode(node, "schedule");
      return source && SCHEDULE_SOURCES.has(source.comfyClass ?? source.type) ? planRequest(source, seen) : null;
    }
    default:
      return null;
  }
}

// The model loader feeding a sampler, followed through its "model" input.
function modelName(node) {
  const loader = upstreamNode(node, "model");
  return loader && (loader.comfyClass ?? loader.type) === "LuminaVideoModelLoader" ? widgetValue(loader, "model_name") : null;
}

async function postJson(route, body) {
  const response = await api.fetchApi(route, { method: "POST", body: JSON.stringify(body) });
  return response.json();
}

const modelPatches = new Map(); // model_name -> Promise of {patches} or {error}

// Patches of the plan the wired model lacks, as "FxP" strings (empty when unknown or all present).
function missingPatches(node) {
  const name = modelName(node);
  const plan = node.__luminaPlan;
  if (!name || !plan?.stages) return [];
  if (!modelPatches.has(name)) {
    const pending = postJson("/lumina_video/model_patches", { model_name: name }).catch(() => ({ error: "unreachable" }));
    pending.then((answer) => {
      modelPatches.set(name, answer);
      node.setDirtyCanvas?.(true, true);
    });
    modelPatches.set(name, pending);
  }
  const known = modelPatches.get(name);
  if (!known?.patches) return [];
  return plan.stages.map((stage) => stage.patch).filter((patch) => !known.patches.includes(patch));
}

// A red frame around a node while it has a problem the sampler would refuse. Drawn, never stored:
// the node's own colours (saved with the workflow) are left alone.
function drawProblemFrame(node, ctx) {
  if (!node.__luminaProblem || node.flags?.collapsed) return;
  const title = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  ctx.save();
  ctx.strokeStyle = "#e04040";
  ctx.lineWidth = 3;
  ctx.strokeRect(-3, -title - 3, node.size[0] + 6, node.size[1] + title + 6);
  ctx.restore();
}

function setProblem(node, problem) {
  if ((node.__luminaProblem ?? null) === (problem ?? null)) return;
  node.__luminaProblem = problem ?? null;
  node.setDirtyCanvas?.(true, true);
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

async function fetchPlan(node) {
  const request = planRequest(node);
  const key = JSON.stringify(request);
  if (key === node.__luminaPlanKey) return;
  node.__luminaPlanKey = key;
  if (!request) {
    node.__luminaPlan = null;
    node.setDirtyCanvas?.(true, true);
    return;
  }
  try {
    const plan = await postJson("/lumina_video/plan", request);
    if (node.__luminaPlanKey === key) node.__luminaPlan = plan;
  } catch (error) {
    node.__luminaPlan = { error: `could not reach the Lumina-Video server route: ${error}` };
  }
  node.setDirtyCanvas?.(true, true);
}

// Stages are laid out by their share of model calls (the shifted grid crowds the early, coarse
// stages into a sliver of t, yet they are a large share of the steps); their switch times are
// written under the boundaries.
function drawTimeline(ctx, node, width, y) {
  const plan = node.__luminaPlan;
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
  setProblem(node, plan?.error ?? (missing.length ? `the model has no ${missing.join(", ")} patches` : null));
  if (!plan) {
    ctx.fillStyle = "#888";
    ctx.fillText("connect a schedule to see its stages", left + 6, y + HEIGHT / 2);
  } else if (missing.length) {
    const have = modelPatches.get(modelName(node)).patches.join(", ");
    ctx.fillStyle = "#e05555";
    fillWrapped(ctx, `the model has no ${missing.join(", ")} patch embedder (it has ${have}): pick a schedule with those`,
      left + 6, y + 16, span - 12, 3);
  } else if (plan.error) {
    ctx.fillStyle = "#e05555";
    fillWrapped(ctx, plan.error, left + 6, y + 16, span - 12, 3);
  } else {
    const total = Math.max(1, plan.total_calls);
    const end = plan.stages[plan.stages.length - 1].t_end;
    const summary = `${plan.total_calls} calls, t=${end === 1 ? 1 : end}`;
    const summaryLeft = right - ctx.measureText(summary).width - 2;
    ctx.fillStyle = "#ddd";
    ctx.fillText(summary, summaryLeft, y + HEIGHT - 14);
    let x = left;
    plan.stages.forEach((stage, index) => {
      const w = (stage.calls / total) * span;
      ctx.fillStyle = PATCH_COLOURS[stage.patch] ?? "#777";
      ctx.fillRect(x + 1, barTop, Math.max(2, w - 2), barHeight);
      ctx.fillStyle = "#fff";
      const label = `${stage.patch} · ${stage.calls}`;
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

// Empty Latent Video: the latent grid its widgets give, or the server's error with the nearest valid values.
function drawLatentSize(ctx, node, width, y) {
  const request = {
    resolution: widgetValue(node, "resolution"),
    width: widgetValue(node, "width"),
    height: widgetValue(node, "height"),
    frames: widgetValue(node, "frames"),
  };
  const key = JSON.stringify(request);
  if (key !== node.__luminaSizeKey) {
    node.__luminaSizeKey = key;
    postJson("/lumina_video/latent_size", request)
      .then((answer) => {
        if (node.__luminaSizeKey === key) node.__luminaSize = answer;
        node.setDirtyCanvas?.(true, true);
      })
      .catch((error) => (node.__luminaSize = { error: String(error) }));
  }
  const answer = node.__luminaSize;
  setProblem(node, answer?.error);
  ctx.save();
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillStyle = answer?.error ? "#e05555" : "#aaa";
  const text = !answer ? "" : answer.error ?? `latent: ${answer.latent[0]} frames x ${answer.latent[1]} x ${answer.latent[2]}`;
  fillWrapped(ctx, text, 12, y + 9, width - 24, 3);
  ctx.restore();
}

app.registerExtension({
  name: EXTENSION,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "LuminaVideoEmptyLatentVideo" || TIMELINE_NODES.has(nodeData.name)) {
      const onDrawForeground = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        const result = onDrawForeground?.apply(this, arguments);
        drawProblemFrame(this, ctx);
        return result;
      };
    }
    if (nodeData.name === "LuminaVideoEmptyLatentVideo") {
      const created = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = created?.apply(this, arguments);
        this.addCustomWidget({
          name: "lumina_latent_size",
          type: "lumina_latent_size",
          value: null,
          serialize: false,
          options: { serialize: false },
          computeSize: (width) => [width, 40],
          draw: (ctx, node, width, y) => drawLatentSize(ctx, node, width, y),
        });
        return result;
      };
      return;
    }
    if (!TIMELINE_NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const node = this;
      node.addCustomWidget({
        name: "lumina_timeline",
        type: "lumina_timeline",
        value: null,
        serialize: false, // not in widgets_values
        options: { serialize: false }, // not in the prompt graphToPrompt builds
        computeSize: (width) => [width, HEIGHT],
        draw(ctx, drawnNode, width, y) {
          fetchPlan(drawnNode);
          drawTimeline(ctx, drawnNode, width, y);
        },
      });
      return result;
    };
  },
});
