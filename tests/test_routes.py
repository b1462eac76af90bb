"""The server routes without a server: every field bounded as its node widget is, non-finite numbers refused,
a malformed request answered 400 with a message (never 500), and the answers computed on their own threads with
a cap on waiting requests and on time. The routes' module imports ComfyUI, so this needs COMFYUI_PATH."""

import asyncio
import json
import re
import threading

from comfy_pack import pack  # noqa: F401  boots ComfyUI in-process: before any comfy import

# isort: split
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lumina_video_pack.lumina_core.limits import MAX_FRAMES, MAX_JSON_BYTES, MAX_STAGES, MAX_STEPS
from lumina_video_pack.nodes.routes import (
    AnswerThreads,
    MalformedRequest,
    latent_size,
    model_patches,
    plan,
)

NAN, INF = float("nan"), float("inf")
STAGE = {"patch": "1x2", "t_start": 0.0, "t_end": 1.0}
SIZE = {"resolution": "custom", "width": 64, "height": 64, "frames": 16}


@pytest.mark.parametrize("request_, message", [
    ({"preset": "demo", "steps": MAX_STEPS + 1}, f"preset request: steps {MAX_STEPS + 1} is outside \\[0, 1000\\]"),
    ({"preset": "demo", "steps": NAN}, "preset request: steps nan is not a whole number"),
    ({"preset": "demo", "steps": "70"}, "preset request: steps '70' is not a whole number"),
    ({"preset": ["demo"]}, r"preset request: preset \['demo'\] is not a string"),
    ({"stages": [STAGE], "steps": 100_000_000, "shift": 3.0}, "steps 100000000 is outside \\[2, 1000\\]"),
    ({"stages": [STAGE], "steps": 10, "shift": NAN}, "stages request: shift nan is not a finite number"),
    ({"stages": [STAGE], "steps": 10, "shift": 101.0}, r"shift 101.0 is outside \[0, 100\]"),
    ({"stages": [{**STAGE, "t_end": INF}], "steps": 10, "shift": 3.0}, "stage: t_end inf is not a finite number"),
    ({"stages": [{**STAGE, "t_start": -0.5}], "steps": 10, "shift": 3.0}, r"t_start -0.5 is outside \[0, 1\]"),
    ({"stages": [STAGE] * (MAX_STAGES + 1), "steps": 10, "shift": 3.0}, f"not a list of 1 to {MAX_STAGES} stages"),
    ({"stages": [{"patch": "1x2"}], "steps": 7, "shift": 3.0}, "stage lacks 't_start'"),
    ({"budget": {"seconds": NAN, "base": {"preset": "demo"}}}, "budget: seconds nan is not a finite number"),
    ({"budget": {"seconds": 0, "base": {"preset": "demo"}}}, r"budget: seconds 0 is outside \[0.01, 1e\+06\]"),
    ({"budget": {"seconds": 10}}, "budget lacks 'base'"),
    ({"steps": 10}, "plan request has keys \\['steps'\\]"),
    ([1, 2], r"plan request \[1, 2\] is not a JSON object"),
])
def test_plan_fields_are_bounded_as_their_widgets(request_, message):
    with pytest.raises(MalformedRequest, match=message):
        plan(request_)


@pytest.mark.parametrize("official, message", [
    ('{"P": "1x2", "step": 5000}', "step 5000 is above 1000 grid points"),
    ('{"P": "1x2", "ts": NaN}', "sample config holds NaN, which is not a finite number"),
    ('{"P": "1x2", "cfg": [4, [0.5, 1e400]]}', "sample config holds 1e400"),
    ('{"P": ' + "[" * 2000 + "]" * 2000 + "}", "nests lists and objects more than 8 deep"),
])
def test_an_official_text_outside_the_limits_gets_a_verdict_the_page_shows(official, message):
    with pytest.raises(ValueError, match=message):
        plan({"official": official})


@pytest.mark.parametrize("request_, message", [
    ({**SIZE, "frames": -9}, r"frames -9 is outside \[1, 1025\]"),
    ({**SIZE, "frames": MAX_FRAMES + 8}, r"frames 1033 is outside \[1, 1025\]"),
    ({**SIZE, "width": 9000}, r"width 9000 is outside \[8, 8192\]"),
    ({**SIZE, "height": 64.5}, "height 64.5 is not a whole number"),
    ({**SIZE, "width": INF}, "width inf is not a whole number"),
    ({**SIZE, "resolution": None}, "resolution None is not a string"),
])
def test_latent_size_fields_are_bounded_as_their_widgets(request_, message):
    with pytest.raises(MalformedRequest, match=message):
        latent_size(request_)


def test_model_patches_needs_a_loader_entry_name():
    with pytest.raises(MalformedRequest, match="model_name 5 is not a string"):
        model_patches({"model_name": 5})


# -- the handlers --------------------------------------------------------------------------------
def serve(threads: AnswerThreads, answers: dict, talk):
    """Run ``talk(client)`` against an aiohttp app whose POST routes are ``threads``' handlers of ``answers``
    (path -> answer function); returns what it returns."""
    async def main():
        app = web.Application()
        for path, answer in answers.items():
            app.router.add_post(path, threads.handler(answer))
        async with TestClient(TestServer(app)) as client:
            return await talk(client)
    return asyncio.run(main())


async def status_and_body(client, path: str, text: str) -> tuple[int, dict]:
    response = await client.post(path, data=text.encode(), headers={"Content-Type": "application/json"})
    return response.status, await response.json()


@pytest.mark.parametrize("text, message", [
    ('{"preset": "demo", "steps": 1e400}', "request body holds 1e400, which is not a finite number"),
    ('{"preset": "demo", "steps": Infinity}', "request body holds Infinity"),
    ('{"preset": "demo", "steps": NaN}', "request body holds NaN"),
    ('{"preset": "demo", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}", "request body is over 65536 bytes"),
    ('{"preset": "demo", "steps": ' + "[" * 20_000 + "]" * 20_000 + "}", "nests lists and objects more than 8 deep"),
    ('{"resolution": "custom", "width": 64, "height": 64, "frames": -9}', "frames -9 is outside"),
    ('{"resolution": "custom", "width": 64, "height": 64, "frames": 1e300}', r"frames 1e\+300 is outside \[1, 1025\]"),
])
def test_malformed_bodies_are_answered_400_with_a_message(text, message):
    path = "/latent_size" if "resolution" in text else "/plan"
    status, body = serve(AnswerThreads(), {"/plan": plan, "/latent_size": latent_size},
                         lambda client: status_and_body(client, path, text))
    assert status == 400 and re.search(message, body["error"]), body


def test_verdicts_are_answers_and_the_unforeseen_is_a_400_without_a_traceback():
    def broken(body):
        raise RuntimeError("an unforeseen case")

    longest = {"official": json.dumps({"P": "1x2", "step": 10}) + " " * (MAX_JSON_BYTES - 200)}  # read whole

    async def talk(client):
        return [await status_and_body(client, path, json.dumps(body)) for path, body in (
            ("/plan", {"stages": [{**STAGE, "t_start": 0.5, "t_end": 0.2}], "steps": 7, "shift": 3.0}),
            ("/plan", {"preset": "demo", "steps": 10}),
            ("/plan", longest),
            ("/broken", {}),
        )]

    verdict, answer, long_answer, unforeseen = serve(AnswerThreads(), {"/plan": plan, "/broken": broken}, talk)
    assert verdict[0] == 200 and "t range [0.5, 0.2)" in verdict[1]["error"]
    assert answer == (200, plan({"preset": "demo", "steps": 10}))
    assert long_answer[0] == 200 and long_answer[1]["total_calls"] == 9
    assert unforeseen == (400, {"error": "could not answer this request (RuntimeError: 'an unforeseen case')"})


def test_answers_run_off_the_event_loop_with_a_cap_on_waiting_requests_and_on_time():
    """Two threads, two places: while an answer blocks its thread, another request is answered on the other; once
    two requests hold both places, one more is refused at once; a blocked request gets 503 when its time is up."""
    release, started = threading.Event(), []

    def blocking(body):
        started.append(body)
        release.wait(60)  # a hang guard; the test releases it
        return {"done": True}

    threads = AnswerThreads(threads=2, pending=2, timeout=1.0)

    async def until_started(count: int):
        while len(started) < count:
            await asyncio.sleep(0.01)

    async def talk(client):
        first = asyncio.ensure_future(status_and_body(client, "/blocking", "{}"))
        await until_started(1)
        answered = await status_and_body(client, "/latent_size", json.dumps(SIZE))
        second = asyncio.ensure_future(status_and_body(client, "/blocking", "{}"))
        await until_started(2)
        refused = await status_and_body(client, "/latent_size", json.dumps(SIZE))
        timed_out = [await first, await second]
        release.set()
        return answered, refused, timed_out

    answered, refused, timed_out = serve(threads, {"/blocking": blocking, "/latent_size": latent_size}, talk)
    assert answered == (200, {"latent": [4, 8, 8]})
    assert refused == (503, {"error": "2 Lumina-Video requests are waiting; ask again in a moment"})
    assert timed_out == [(503, {"error": "no answer within 1 s (the server is busy); ask again in a moment"})] * 2
