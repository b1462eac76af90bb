"""Server routes behind the frontend (js/lumina_video.js); each answers with lumina_core's own checks so
the page shows exactly what the sampler would do or refuse.

POST /lumina_video/plan with one of
  {"preset": name, "steps": N or null}          (a Schedule Preset node)
  {"official": "<sample-config JSON>"}         (a Schedule JSON node)
  {"stages": [{"patch", "t_start", "t_end"}, ...], "steps": N, "shift": ts}   (stage nodes)
  {"budget": {"seconds": B, "base": <one of the above>}}   (a Schedule for Time Budget node)
answers {"stages": [{"patch", "t_start", "t_end", "calls"}], "call_times": [t of every model call],
"total_calls": N}, computed by lumina_core's schedule code, or {"error": message}. With
"cost": {"model_name": loader entry, "latent": Empty Latent Video widgets (resolution, width, height, frames,
batch_size)} and a cached calibration of that architecture at that size (lumina_core.cost; the latest one),
each stage also has "seconds", the answer "seconds" (the total) and "calibration" (what was timed). A budget
answer is the fitted schedule's plan plus "budget" (what was traded) and "budget_seconds"; without a
calibration it is the base's plan and "budget" says when the prediction comes.

POST /lumina_video/model_patches {"model_name": loader entry} answers {"patches": ["2x4", ...]}: the
patch pairs of that checkpoint (read from its header, no weights loaded), or {"error": message}.

POST /lumina_video/latent_size {"resolution", "width", "height", "frames"} answers {"latent": [T, h, w]} or
{"error": message naming the nearest valid values}.
"""

from __future__ import annotations

import sys
from typing import Optional

from aiohttp import web

from ..lumina_core import demo
from ..lumina_core.budget import fit_budget
from ..lumina_core.checkpoint import OFFICIAL_WEIGHT_FILES, read_config
from ..lumina_core.cost import CallCosts, architecture_hash, latest_for, predict
from ..lumina_core.sampling import SampleConfig
from ..lumina_core.schedule import Stage, format_patch, parse_patch
from ..lumina_core.sizes import latent_shape, resolution_size
from ..lumina_core.vae import LATENT_CHANNELS
from .model_files import DEMO, resolve
from .schedule import preset_config
from .video import LuminaVideoEmptyLatentVideo

PLAN_ROUTE = "/lumina_video/plan"
MODEL_PATCHES_ROUTE = "/lumina_video/model_patches"
LATENT_SIZE_ROUTE = "/lumina_video/latent_size"


def schedule_from_request(request: dict) -> SampleConfig:
    if not isinstance(request, dict):
        raise TypeError(f"plan request {request!r} is not a JSON object")
    if "preset" in request:
        return preset_config(request["preset"], request.get("steps") or 0)
    if "official" in request:
        return SampleConfig.from_official(request["official"])
    if "stages" in request:
        stages = tuple(Stage(*parse_patch(stage["patch"]), float(stage["t_start"]), float(stage["t_end"]))
                       for stage in request["stages"])
        return SampleConfig(stages=stages, steps=request["steps"], shift=request["shift"])
    raise ValueError(f"plan request has keys {sorted(request)}; give 'preset', 'official' or 'stages'")


def model_config(name: str):
    """The NextDiTConfig of a model loader entry (read from the file's header, no weights loaded)."""
    if name == DEMO:
        return demo.TRANSFORMER_CONFIG
    return read_config(resolve("diffusion_models", name, OFFICIAL_WEIGHT_FILES))


def calibration(request: dict) -> Optional[CallCosts]:
    """The latest cached calibration for a plan request's "cost" context, or None (none given, none cached, or
    the model or size is not valid: those are the loader's and the latent node's to report)."""
    context = request.get("cost")
    if not context:
        return None
    try:
        frames, height, width = latent_size(context["latent"])["latent"]
        shape = (int(context["latent"].get("batch_size") or 1), LATENT_CHANNELS, frames, height, width)
        return latest_for(architecture_hash(model_config(context["model_name"])), shape)
    except (KeyError, TypeError, ValueError, OSError):
        return None


def plan_of(config: SampleConfig, costs: Optional[CallCosts]) -> dict:
    """Stages with their model-call counts (and predicted seconds when a calibration covers them), and the t of
    every call."""
    grid = config.grid()
    calls = config.model_calls()
    answer = {
        "stages": [{"patch": stage.patch, "t_start": stage.t_start, "t_end": stage.t_end,
                    "calls": stage.steps_on(grid)} for stage in config.stages],
        "call_times": [t for _, t, _, _ in calls],
        "total_calls": len(calls),
    }
    if costs is not None:
        try:
            predicted = predict(config, costs)
        except ValueError:  # a patch pair the calibration did not time: no seconds to show
            return answer
        for shown, stage in zip(answer["stages"], predicted):
            shown["seconds"] = stage.seconds
        answer["seconds"] = sum(stage.seconds for stage in predicted)
        answer["calibration"] = costs.key.text
    return answer


def plan(request: dict) -> dict:
    """The plan of the schedule a request describes (see the module docstring)."""
    costs = calibration(request) if isinstance(request, dict) else None
    budget = request.get("budget") if isinstance(request, dict) else None
    if budget is None:
        return plan_of(schedule_from_request(request), costs)
    base = schedule_from_request(budget["base"])
    if costs is None:
        return {**plan_of(base, None), "budget": "the base schedule; the fitted one is predicted once this model "
                                                 "and size are calibrated (running this node calibrates)"}
    fitted = fit_budget(base, costs, float(budget["seconds"]))
    return {**plan_of(fitted.config, costs), "budget": fitted.summary(), "budget_seconds": fitted.budget}


def model_patches(request: dict) -> dict:
    """The patch pairs ("FxP") of a model loader entry."""
    config = model_config(request["model_name"])
    return {"patches": [format_patch(p, f) for p, f in config.patch_pairs]}


def latent_size(request: dict) -> dict:
    """The latent grid of an Empty Latent Video's widgets, or the error the node would raise."""
    resolution = request["resolution"]
    width, height, frames = (int(request[key]) for key in ("width", "height", "frames"))
    verdict = LuminaVideoEmptyLatentVideo.validate_inputs(resolution, width, height, frames)
    if verdict is not True:
        raise ValueError(verdict)
    width, height = resolution_size(resolution, width, height)
    return {"latent": list(latent_shape(width, height, frames)[2:])}


def json_handler(answer):
    """An aiohttp handler answering ``answer(request JSON)``. A refusal by lumina_core's checks is an answer
    too ({"error": message}, status 200: the page shows it); a malformed request gets status 400."""
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as error:
            return web.json_response({"error": f"request body is not JSON: {error}"}, status=400)
        try:
            return web.json_response(answer(body))
        except KeyError as error:
            return web.json_response({"error": f"request lacks {error}"}, status=400)
        except (ValueError, OSError) as error:
            return web.json_response({"error": str(error)})
        except TypeError as error:
            return web.json_response({"error": str(error)}, status=400)
    return handle


def register_routes() -> None:
    """Add the route to the running ComfyUI server. ComfyUI's main.py creates the PromptServer before it
    loads custom nodes; outside a server (tests, scripts) there is none and nothing is registered."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is not None:
        routes = ((PLAN_ROUTE, plan), (MODEL_PATCHES_ROUTE, model_patches), (LATENT_SIZE_ROUTE, latent_size))
        for route, answer in routes:
            instance.routes.post(route)(json_handler(answer))
