"""The pack's routes against a real ComfyUI server (COMFYUI_PATH): a few hundred seeded random and mutated request
bodies (huge numbers, NaN and Infinity, 1e400, deep lists, wrong types, huge strings, missing keys, bytes that are
not JSON) are answered 200 or 400, never 500; and while the heaviest requests the limits allow are in flight, with
hostile ones beyond the limits refused, the server still answers a normal plan request and /system_stats."""

import copy
import json
import random
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from comfy_host import DEMO, require_host, running_server

from lumina_core import demo
from lumina_core.cost import CALIBRATION_FILE, CallCosts, CostKey, architecture_hash, store_calibration
from lumina_core.limits import MAX_STAGES, MAX_STEPS

require_host()

PLAN, PATCHES, SIZE_ROUTE = "/lumina_video/plan", "/lumina_video/model_patches", "/lumina_video/latent_size"
SIZE = {"resolution": "custom", "width": 64, "height": 64, "frames": 16}
COST = {"model_name": DEMO, "latent": {**SIZE, "batch_size": 1}}
HANG_GUARD_S = 60  # a stalled event loop answers nothing for minutes; a loaded 2-core machine answers in seconds
FUZZ_BODIES = 300
TEMPLATES = [
    (PLAN, {"preset": "demo", "steps": 12}),
    (PLAN, {"preset": "f24F96R960-MultiScale", "steps": None, "cost": COST}),
    (PLAN, {"official": json.dumps(demo.DEMO_SCHEDULE)}),
    (PLAN, {"stages": [{"patch": "2x2", "t_start": 0.0, "t_end": 0.3}, {"patch": "1x2", "t_start": 0.3, "t_end": 1.0}],
            "steps": 20, "shift": 3.0, "cost": COST}),
    (PLAN, {"budget": {"seconds": 2.0, "base": {"preset": "demo", "steps": 20}}, "cost": COST}),
    (PATCHES, {"model_name": DEMO}),
    (SIZE_ROUTE, SIZE),
]
RAW = ("NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1" + "0" * 400)  # numbers JSON has no finite value for


def calibrate_demo(base: Path) -> None:
    """A cached calibration of the demo architecture at SIZE (0.25 s an unguided call, 0.5 s a guided one), so
    plan requests with COST predict seconds and fit budgets."""
    key = CostKey(architecture_hash(demo.TRANSFORMER_CONFIG), "float32", "test device", (1, 16, 4, 8, 8), 32)
    pairs = [f"{f}x{p}" for p, f in demo.TRANSFORMER_CONFIG.patch_pairs]
    store_calibration(CallCosts(key, dict.fromkeys(pairs, 0.5), dict.fromkeys(pairs, 0.25), 1.0),
          base / "lumina_video_cache" / CALIBRATION_FILE)


@pytest.fixture(scope="module")
def server():
    with running_server(prepare=calibrate_demo) as host:
        yield host


def post(server, route: str, body, timeout: float = HANG_GUARD_S) -> tuple[int, object]:
    """(status, JSON answer or the text of one that is not JSON) of a POST of ``body`` (bytes as they are)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.url + route, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")


# -- seeded bodies ---------------------------------------------------------------------------------
def random_json(rng: random.Random, depth: int):
    kind = rng.randrange(7 if depth > 0 else 5)
    if kind == 0:
        return rng.choice([0, 1, -1, 2, 1000, 1001, -9, 10**30, 2**63, -(2**63)])
    if kind == 1:
        return rng.choice([0.5, -0.0, 1e-300, 1e308, -1e308, 3.7, 64.5])
    if kind == 2:
        return rng.choice(["", "demo", "1x2", "2x4", "custom", "x" * rng.choice([10, 5000]), "\u0000", "../../x"])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return f"__raw_{rng.randrange(len(RAW))}__"
    if kind == 5:
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = ["preset", "steps", "official", "stages", "shift", "budget", "seconds", "base", "cost", "latent",
            "model_name", "resolution", "width", "height", "frames", "patch", "t_start", "t_end", "batch_size"]
    return {rng.choice(keys): random_json(rng, depth - 1) for _ in range(rng.randrange(4))}


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def hostile(rng: random.Random):
    """A value to put where a field was: huge or non-finite numbers, deep lists, a huge string, a wrong type."""
    return rng.choice([
        lambda: random_json(rng, 2),
        lambda: f"__raw_{rng.randrange(len(RAW))}__",
        lambda: nested(rng.choice([3, 9, 50, 200])),
        lambda: "x" * rng.choice([1000, 70_000]),
        lambda: rng.choice([10**30, 2**63, 1e308, -1e308, 9.9e15, -9, -1000, 0]),
    ])()


def places(value, path=()):
    """Every (path) inside a JSON value, the value itself first."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from places(item, (*path, key))


def mutated(rng: random.Random, body: dict):
    """``body`` with one to three places replaced, removed or wrapped."""
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        inside = [path for path in places(body) if path]
        if not inside:  # every key removed
            break
        path = rng.choice(inside)
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        action = rng.randrange(4)
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1:
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = hostile(rng)
    return body


def encoded(body) -> bytes:
    text = json.dumps(body)
    for index, number in enumerate(RAW):
        text = text.replace(f'"__raw_{index}__"', number)
    return text.encode()


def fuzz_bodies(seed: int = 0) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    bodies = []
    for _ in range(FUZZ_BODIES):
        route, template = rng.choice(TEMPLATES)
        kind = rng.randrange(10)
        if kind == 0:  # any JSON value
            body = encoded(random_json(rng, 4))
        elif kind == 1:  # not JSON, or cut short
            body = rng.choice([bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
                               encoded(template)[:rng.randrange(1, 20)], b"", b"[" * 100_000])
        else:
            body = encoded(mutated(rng, template))
        bodies.append((route, body))
    return bodies


# -- the tests -------------------------------------------------------------------------------------
def test_seeded_random_and_mutated_bodies_are_answered_200_or_400_never_500(server):
    for route, body in TEMPLATES:  # the bodies the mutations start from are answered
        status, answer = post(server, route, body)
        assert status == 200 and "error" not in answer, (route, body, answer)
    assert post(server, *TEMPLATES[3])[1]["seconds"] > 0  # with the calibration
    bodies = fuzz_bodies()
    with ThreadPoolExecutor(4) as clients:
        answers = list(clients.map(lambda item: post(server, *item), bodies))
    wrong = [(route, body[:120], status, str(answer)[:300]) for (route, body), (status, answer) in zip(bodies, answers)
             if status not in (200, 400) or not isinstance(answer, dict)
             or (status == 400 and not answer.get("error"))]
    assert not wrong, f"{len(wrong)} of {len(bodies)} bodies: {wrong[:5]}"
    assert sum(status == 400 for status, _ in answers) > FUZZ_BODIES // 3  # the bodies do reach the checks


def test_a_normal_request_is_answered_while_the_heaviest_are_in_flight_and_hostile_ones_are_refused(server):
    bounds = [index / MAX_STAGES for index in range(MAX_STAGES + 1)]
    stages = [{"patch": ("2x2", "1x2", "1x1")[index % 3], "t_start": start, "t_end": end}
              for index, (start, end) in enumerate(zip(bounds, bounds[1:]))]
    heaviest = {"budget": {"seconds": 0.01, "base": {"stages": stages, "steps": MAX_STEPS, "shift": 3.0}},
                "cost": COST}  # every grid tried, 32 stages each: refused with the minimum it needs
    beyond = [{"preset": "demo", "steps": 100_000_000},
              {"budget": {"seconds": 0.01, "base": {"preset": "demo", "steps": 20_000}}, "cost": COST},
              {"official": json.dumps({"P": "1x2", "step": 10_000_000})}]
    with ThreadPoolExecutor(8) as clients:
        in_flight = [clients.submit(post, server, PLAN, body) for body in [heaviest] * 4 + beyond]
        normal = post(server, PLAN, {"preset": "demo", "steps": 12})
        stats = server.get("/system_stats")
        answers = [job.result() for job in in_flight]
    assert normal[0] == 200 and normal[1]["total_calls"] == 11
    assert "system" in stats
    for status, answer in answers[:4]:
        assert status == 200 and "raise the budget to at least" in answer["error"], answer
    assert [status for status, _ in answers[4:]] == [400, 400, 200]
    assert "steps 100000000 is outside [0, 1000]" in answers[4][1]["error"]
    assert "steps 20000 is outside [0, 1000]" in answers[5][1]["error"]
    assert "step 10000000 is above 1000 grid points" in answers[6][1]["error"]
