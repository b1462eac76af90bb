// Lumina-Video: draws the patch schedule as a timeline on schedule and sampler nodes.
//
// Each stage is a box over its t range (0 = noise at the left, 1 = finished video at the right),
// labelled with its patch pair "FxP" and the number of model calls it makes on the time grid.
// The numbers come from the pack's server route /lumina_video/plan, which runs lumina_core's own
// schedule code, so the widget shows exactly what the sampler will do (and its error otherwise).
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
    const response = await api.fetchApi("/lumina_video/plan", { method: "POST", body: key });
    const plan = await response.json();
    if (node.__luminaPlanKey === key) node.__luminaPlan = plan;
  } catch (error) {
    node.__luminaPlan = { error: `could not reach the Lumina-Video server route: ${error}` };
  }
  node.setDirtyCanvas?.(true, true);
}

function drawTimeline(ctx, node, width, y) {
  const plan = node.__luminaPlan;
  const left = 10;
  const right = width - 10;
  const span = right - left;
  ctx.save();
  ctx.fillStyle = "#1d1d1d";
  ctx.fillRect(left, y + 4, span, HEIGHT - 8);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  if (!plan) {
    ctx.fillStyle = "#888";
    ctx.fillText("connect a schedule to see its stages", left + 6, y + HEIGHT / 2);
  } else if (plan.error) {
    ctx.fillStyle = "#e05555";
    ctx.fillText(plan.error.slice(0, Math.max(20, Math.floor(span / 6))), left + 6, y + HEIGHT / 2);
  } else {
    for (const stage of plan.stages) {
      const x0 = left + stage.t_start * span;
      const x1 = left + stage.t_end * span;
      ctx.fillStyle = PATCH_COLOURS[stage.patch] ?? "#777";
      ctx.fillRect(x0 + 1, y + 6, Math.max(2, x1 - x0 - 2), HEIGHT - 30);
      ctx.fillStyle = "#fff";
      const label = `${stage.patch} · ${stage.calls}`;
      if (x1 - x0 > ctx.measureText(label).width + 6) ctx.fillText(label, x0 + 4, y + 6 + (HEIGHT - 30) / 2);
    }
    // One tick per model call of the grid, at its t.
    ctx.fillStyle = "#bbb";
    for (const t of plan.call_times) ctx.fillRect(left + t * span, y + HEIGHT - 22, 1, 5);
    ctx.fillStyle = "#aaa";
    ctx.fillText(`t=0 noise`, left + 2, y + HEIGHT - 10);
    const summary = `${plan.total_calls} calls · ${plan.stages.map((s) => s.patch).join(" → ")} · t=1`;
    ctx.fillText(summary, right - ctx.measureText(summary).width - 2, y + HEIGHT - 10);
  }
  ctx.restore();
}

app.registerExtension({
  name: EXTENSION,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!TIMELINE_NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const node = this;
      node.addCustomWidget({
        name: "lumina_timeline",
        type: "lumina_timeline",
        value: null,
        serialize: false,
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
