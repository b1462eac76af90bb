"""Live previews in a real ComfyUI server booted with --preview-method latent2rgb: core KSampler and the pack's
Sampler on the demo model send preview images over the websocket, each showing every latent frame."""

import asyncio
import io
import json
import struct

import aiohttp
import pytest
from comfy_host import RUN_TIMEOUT_S, assert_success, demo_inputs, require_host, running_server
from PIL import Image

from lumina_core.preview import grid_layout

require_host()

CLIENT_ID = "lumina-video-tests"  # the client id Server.queue sends
PREVIEW_IMAGE = 1  # server.BinaryEventTypes.PREVIEW_IMAGE: event type, image type (1 JPEG), image bytes
PREVIEW_SIZE = 512  # ComfyUI's default --preview-size: the longest side it scales a preview to
SIZE, FRAMES, LATENT_FRAMES = 32, 8, 2  # 8 frames encode to 2 latent frames of 4 x 4


@pytest.fixture(scope="module")
def server():
    with running_server(args=("--preview-method", "latent2rgb")) as host:
        yield host


def prompt(sampler: str) -> dict:
    """Demo loaders -> text encode -> empty latent -> ``sampler`` (KSampler or the pack's) -> decode -> Preview."""
    nodes = {
        **demo_inputs(SIZE, FRAMES),
        "8": {"class_type": "LuminaVideoMSVAEDecode",
              "inputs": {"vae": ["3", 0], "latent": ["7", 0], "tiled": "auto", "fps": 8.0}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    common = {"model": ["1", 0], "positive": ["4", 0], "negative": ["4", 1]}
    if sampler == "KSampler":
        nodes["7"] = {"class_type": "KSampler",
                      "inputs": {**common, "latent_image": ["5", 0], "seed": 3, "steps": 3, "cfg": 3.0,
                                 "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    else:
        nodes["6"] = {"class_type": "LuminaVideoMSSchedulePreset", "inputs": {"preset": "demo", "steps": 3}}
        nodes["7"] = {"class_type": "LuminaVideoMSSampler",
                      "inputs": {**common, "latent": ["5", 0], "schedule": ["6", 0], "seed": 3}}
    return nodes


async def run_and_collect_previews(server, api_prompt: dict) -> tuple[str, list[Image.Image]]:
    """Queue a prompt with a websocket open as the queuing client; (prompt id, preview images received) once it
    has finished."""
    previews = []
    url = f"{server.url.replace('http', 'ws', 1)}/ws?clientId={CLIENT_ID}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as socket:
        prompt_id = await asyncio.to_thread(server.queue, api_prompt)
        async for message in socket:
            if message.type == aiohttp.WSMsgType.BINARY:
                (event,) = struct.unpack(">I", message.data[:4])
                if event == PREVIEW_IMAGE:
                    previews.append(Image.open(io.BytesIO(message.data[8:])))
            elif message.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(message.data)
                done = event["type"] in ("execution_success", "execution_error", "execution_interrupted")
                if done and event["data"].get("prompt_id") == prompt_id:
                    break
            else:
                break
    return prompt_id, previews


@pytest.mark.parametrize("sampler", ["KSampler", "LuminaVideoMSSampler"])
def test_sampler_sends_previews_of_every_latent_frame(server, sampler):
    prompt_id, previews = asyncio.run(asyncio.wait_for(run_and_collect_previews(server, prompt(sampler)),
                                                       RUN_TIMEOUT_S))
    assert_success(server.wait(prompt_id))
    rows, columns = grid_layout(LATENT_FRAMES, SIZE // 8, SIZE // 8)  # one row of two square frames
    expected = (PREVIEW_SIZE, PREVIEW_SIZE * rows // columns)
    assert previews and all(image.size == expected for image in previews), [image.size for image in previews]
