"""The server route behind the frontend's schedule timeline (js/lumina_video.js).

POST /lumina_video/plan with one of
  {"preset": name, "steps": N or null}          (a Schedule Preset node)
  {"official": "<sample-config JSON>"}         (a Schedule JSON node)
  {"stages": [{"patch", "t_start", "t_end"}, ...], "steps": N, "shift": ts}   (stage nodes)
answers {"stages": [{"patch", "t_start", "t_end", "calls"}], "call_times": [t of every model call],
"total_calls": N}, computed by lumina_core's schedule code, or {"error": message} with status 400.
"""

from __future__ import annotations

import sys

from aiohttp import web

from ..lumina_core.sampling import SampleConfig
from ..lumina_core.schedule import Stage, parse_patch
from .schedule import preset_config

PLAN_ROUTE = "/lumina_video/plan"


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


def plan(request: dict) -> dict:
    """Stages with their model-call counts, and the t of every call, of the schedule a request describes."""
    config = schedule_from_request(request)
    grid = config.grid()
    calls = config.plan()
    return {
        "stages": [{"patch": stage.patch, "t_start": stage.t_start, "t_end": stage.t_end,
                    "calls": stage.steps_on(grid)} for stage in config.stages],
        "call_times": [t for _, t, _, _ in calls],
        "total_calls": len(calls),
    }


async def handle_plan(request: web.Request) -> web.Response:
    try:
        return web.json_response(plan(await request.json()))
    except KeyError as error:
        return web.json_response({"error": f"plan request lacks {error}"}, status=400)
    except (TypeError, ValueError) as error:
        return web.json_response({"error": str(error)}, status=400)


def register_routes() -> None:
    """Add the route to the running ComfyUI server. ComfyUI's main.py creates the PromptServer before it
    loads custom nodes; outside a server (tests, scripts) there is none and nothing is registered."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is not None:
        instance.routes.post(PLAN_ROUTE)(handle_plan)
