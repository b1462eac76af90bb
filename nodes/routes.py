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

What a request may hold is bounded as the nodes' widgets are (lumina_core.limits): a body of at most 64 KiB
nested at most 8 deep, finite numbers, steps, stages, shift, seconds and sizes inside their widgets' ranges.
A request the page would never send (not JSON, a missing key, a wrong type, a value outside its widget's range)
is answered 400 with a message; lumina_core's verdicts on the values are answers (status 200, {"error"}, as
the page shows them). The answers are computed on a few threads of their own, off the server's event loop, so
the server, its websockets and an interrupt never wait on them; one that takes over 10 s, or a request that
finds 64 others in or waiting for a thread, is answered 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from aiohttp import web

from ..lumina_core import demo
from ..lumina_core.budget import fit_budget
from ..lumina_core.checkpoint import OFFICIAL_WEIGHT_FILES, read_config
from ..lumina_core.cost import CallCosts, architecture_hash, latest_for, predict
from ..lumina_core.limits import (
    MAX_BATCH,
    MAX_BUDGET_SECONDS,
    MAX_FRAMES,
    MAX_JSON_BYTES,
    MAX_SHIFT,
    MAX_SIDE,
    MAX_STAGES,
    MAX_STEPS,
    MIN_BUDGET_SECONDS,
    is_finite_number,
    load_json,
)
from ..lumina_core.sampling import SampleConfig
from ..lumina_core.schedule import Stage, format_patch, parse_patch
from ..lumina_core.sizes import latent_shape, resolution_size
from ..lumina_core.vae import LATENT_CHANNELS, SPATIAL_COMPRESSION
from .model_files import DEMO, resolve
from .schedule import preset_config
from .video import LuminaVideoMSEmptyLatentVideo

PLAN_ROUTE = "/lumina_video/plan"
MODEL_PATCHES_ROUTE = "/lumina_video/model_patches"
LATENT_SIZE_ROUTE = "/lumina_video/latent_size"
ANSWER_THREADS = 2
MAX_PENDING = 64  # requests in or waiting for an answer thread; the page asks a few per pack node at once
ANSWER_TIMEOUT_S = 10.0  # the bounded requests take well under a second


class MalformedRequest(Exception):
    """A request the page would never send: answered with status 400 and this message."""


# -- the fields of a request ---------------------------------------------------------------------
def shown(value: Any) -> str:
    """A request value as an error message quotes it (at most 60 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def field(mapping: Any, key: str, what: str) -> Any:
    """``mapping[key]``, where ``mapping`` must be a JSON object holding ``key`` (``what`` names it in the error)."""
    if not isinstance(mapping, dict):
        raise MalformedRequest(f"{what} {shown(mapping)} is not a JSON object")
    if key not in mapping:
        raise MalformedRequest(f"{what} lacks {key!r}")
    return mapping[key]


def text_field(mapping: Any, key: str, what: str) -> str:
    """A string field (a preset or resolution name, a loader entry, an official config's text)."""
    value = field(mapping, key, what)
    if not isinstance(value, str):
        raise MalformedRequest(f"{what}: {key} {shown(value)} is not a string")
    return value


def number_field(mapping: Any, key: str, what: str, low: float, high: float, whole: bool = False) -> float | int:
    """A finite number (a whole one when ``whole``) in [low, high]: the range of the node widget it comes from."""
    value = field(mapping, key, what)
    if not is_finite_number(value) or (whole and int(value) != value):
        kind = "a whole number" if whole else "a finite number"
        raise MalformedRequest(f"{what}: {key} {shown(value)} is not {kind}")
    if not low <= value <= high:
        raise MalformedRequest(f"{what}: {key} {value} is outside [{low:g}, {high:g}], its widget's range")
    return int(value) if whole else float(value)


def schedule_from_request(request: Any) -> SampleConfig:
    if not isinstance(request, dict):
        raise MalformedRequest(f"plan request {shown(request)} is not a JSON object")
    if "preset" in request:
        given = request.get("steps") is not None  # null: the preset's own, as 0 is
        steps = number_field(request, "steps", "preset request", 0, MAX_STEPS, whole=True) if given else 0
        return preset_config(text_field(request, "preset", "preset request"), steps)
    if "official" in request:
        return SampleConfig.from_official(text_field(request, "official", "official request"))
    if "stages" in request:
        stages = request["stages"]
        if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
            raise MalformedRequest(f"stages {shown(stages)} is not a list of 1 to {MAX_STAGES} stages")
        built = tuple(Stage(*parse_patch(text_field(stage, "patch", "stage")),
                            number_field(stage, "t_start", "stage", 0.0, 1.0),
                            number_field(stage, "t_end", "stage", 0.0, 1.0)) for stage in stages)
        return SampleConfig(stages=built, steps=number_field(request, "steps", "stages request", 2, MAX_STEPS,
                                                             whole=True),
                            shift=number_field(request, "shift", "stages request", 0.0, MAX_SHIFT))
    raise MalformedRequest(f"plan request has keys {shown(sorted(request))}; give 'preset', 'official' or 'stages'")


def model_config(name: str):
    """The NextDiTConfig of a model loader entry (read from the file's header, no weights loaded)."""
    if name == DEMO:
        return demo.TRANSFORMER_CONFIG
    return read_config(resolve("diffusion_models", name, OFFICIAL_WEIGHT_FILES), remember=True)


def calibration(request: dict) -> Optional[CallCosts]:
    """The latest cached calibration for a plan request's "cost" context, or None (none given, none cached, or
    the model or size is not valid: those are the loader's and the latent node's to report)."""
    context = request.get("cost")
    if not context:
        return None
    try:
        latent = field(context, "latent", "cost context")
        frames, height, width = latent_size(latent)["latent"]
        given = latent.get("batch_size") is not None
        batch = number_field(latent, "batch_size", "latent", 1, MAX_BATCH, whole=True) if given else 1
        model = model_config(text_field(context, "model_name", "cost context"))
        return latest_for(architecture_hash(model), (batch, LATENT_CHANNELS, frames, height, width))
    except (MalformedRequest, ValueError, OSError):
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
        for entry, stage in zip(answer["stages"], predicted):
            entry["seconds"] = stage.seconds
        answer["seconds"] = sum(stage.seconds for stage in predicted)
        answer["calibration"] = costs.key.text
    return answer


def plan(request: Any) -> dict:
    """The plan of the schedule a request describes (see the module docstring)."""
    if not isinstance(request, dict):
        raise MalformedRequest(f"plan request {shown(request)} is not a JSON object")
    costs = calibration(request)
    budget = request.get("budget")
    if budget is None:
        return plan_of(schedule_from_request(request), costs)
    base = schedule_from_request(field(budget, "base", "budget"))
    seconds = number_field(budget, "seconds", "budget", MIN_BUDGET_SECONDS, MAX_BUDGET_SECONDS)
    if costs is None:
        return {**plan_of(base, None), "budget": "the base schedule; the fitted one is predicted once this model "
                                                 "and size are calibrated (running this node calibrates)"}
    fitted = fit_budget(base, costs, seconds)
    return {**plan_of(fitted.config, costs), "budget": fitted.summary(), "budget_seconds": fitted.budget}


def model_patches(request: Any) -> dict:
    """The patch pairs ("FxP") of a model loader entry."""
    config = model_config(text_field(request, "model_name", "model_patches request"))
    return {"patches": [format_patch(p, f) for p, f in config.patch_pairs]}


def latent_size(request: Any) -> dict:
    """The latent grid of an Empty Latent Video's widgets, or the error the node would raise."""
    what = "latent size request"
    resolution = text_field(request, "resolution", what)
    width, height = (number_field(request, key, what, SPATIAL_COMPRESSION, MAX_SIDE, whole=True)
                     for key in ("width", "height"))
    frames = number_field(request, "frames", what, 1, MAX_FRAMES, whole=True)
    verdict = LuminaVideoMSEmptyLatentVideo.validate_inputs(resolution, width, height, frames)
    if verdict is not True:
        raise ValueError(verdict)
    width, height = resolution_size(resolution, width, height)
    return {"latent": list(latent_shape(width, height, frames)[2:])}


# -- answering off the event loop ------------------------------------------------------------------
def status_and_answer(answer: Callable[[Any], dict], body: Any) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of ``answer(body)``: lumina_core's refusals are answers ({"error"}, 200), a
    malformed request 400, and so is anything unexpected (logged with its traceback, which the page never gets)."""
    try:
        return 200, answer(body)
    except MalformedRequest as error:
        return 400, {"error": str(error)}
    except (ValueError, OSError) as error:
        return 200, {"error": str(error)}
    except Exception as error:  # a request this code did not foresee: a refusal, not a server error
        logging.exception("Lumina-Video: could not answer %s", shown(body))
        return 400, {"error": f"could not answer this request ({type(error).__name__}: {shown(str(error))})"}


async def read_body(request: web.Request) -> bytes:
    """The request's body, refused once it passes MAX_JSON_BYTES (before reading the rest)."""
    too_long = f"request body is over {MAX_JSON_BYTES} bytes long; the pack's requests need well under 1 KiB"
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise MalformedRequest(too_long)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise MalformedRequest(too_long)
    return bytes(body)


class AnswerThreads:
    """A few threads that answer the routes, so the server's event loop never computes an answer: at most
    ``pending`` requests are in or waiting for a thread (one more is answered 503 at once), and a request not
    answered within ``timeout`` seconds is answered 503 (its bounded work ends on the thread in the background)."""

    def __init__(self, threads: int = ANSWER_THREADS, pending: int = MAX_PENDING,
                 timeout: float = ANSWER_TIMEOUT_S):
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lumina-video-routes")
        self.slots = threading.BoundedSemaphore(pending)
        self.pending, self.timeout = pending, timeout

    def handler(self, answer: Callable[[Any], dict]):
        """An aiohttp handler answering ``answer(request JSON)`` on these threads."""
        async def handle(request: web.Request) -> web.Response:
            try:
                body = load_json(await read_body(request), "request body")
            except json.JSONDecodeError as error:
                return web.json_response({"error": f"request body is not JSON: {error}"}, status=400)
            except (MalformedRequest, ValueError) as error:
                return web.json_response({"error": str(error)}, status=400)
            if not self.slots.acquire(blocking=False):
                return web.json_response({"error": f"{self.pending} Lumina-Video requests are waiting; ask again in "
                                                   "a moment"}, status=503)
            job = self.pool.submit(status_and_answer, answer, body)
            job.add_done_callback(lambda _: self.slots.release())
            try:
                status, reply = await asyncio.wait_for(asyncio.wrap_future(job), self.timeout)
            except asyncio.TimeoutError:
                return web.json_response({"error": f"no answer within {self.timeout:g} s (the server is busy); ask "
                                                   "again in a moment"}, status=503)
            return web.json_response(reply, status=status)
        return handle


def register_routes() -> None:
    """Add the routes to the running ComfyUI server. ComfyUI's main.py creates the PromptServer before it
    loads custom nodes; outside a server (tests, scripts) there is none and nothing is registered."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is not None:
        threads = AnswerThreads()
        routes = ((PLAN_ROUTE, plan), (MODEL_PATCHES_ROUTE, model_patches), (LATENT_SIZE_ROUTE, latent_size))
        for route, answer in routes:
            instance.routes.post(route)(threads.handler(answer))
