"""A video made by the command line carries a ComfyUI graph that reproduces it: the UI workflow in the
mp4 converts to the embedded API prompt, and queueing it on the real host gives the CLI's frames
(identical latents; decoded frames equal up to uint8 rounding)."""

import json
import subprocess
import sys

import av
import numpy as np
import pytest
from comfy_host import ROOT, assert_success, require_host, running_server, to_api
from PIL import Image

require_host()

FRAMES, SIZE, GAP, COLUMNS = 16, 64, 2, 4  # the demo's clip and write_contact_sheet's layout


@pytest.fixture(scope="module")
def cli_video(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "clip.mp4"
    subprocess.run([sys.executable, "-m", "lumina_core", "generate", "--prompt", "a green square moving right",
                    "--negative-prompt", "still", "--motion", "8", "--neg-motion", "1", "--seed", "11",
                    "--steps", "5", "--out", str(out)], check=True, capture_output=True, timeout=300, cwd=ROOT)
    return out


def sheet_tiles(path) -> np.ndarray:
    """The frames of a contact sheet of 16 frames (4 x 4 tiles, 2-pixel gaps)."""
    sheet = np.asarray(Image.open(path).convert("RGB"))
    return np.stack([sheet[r * (SIZE + GAP):r * (SIZE + GAP) + SIZE, c * (SIZE + GAP):c * (SIZE + GAP) + SIZE]
                     for r in range(FRAMES // COLUMNS) for c in range(COLUMNS)])


def test_cli_graph_reproduces_the_cli_video_on_the_host(cli_video):
    with av.open(str(cli_video)) as container:
        tags = dict(container.metadata)
    workflow, prompt = json.loads(tags["workflow"]), json.loads(tags["prompt"])
    with running_server() as server:
        object_info = server.get("/object_info")
        assert to_api(workflow, object_info) == prompt  # the UI graph is the prompt the CLI ran
        decode = next(key for key, node in prompt.items() if node["class_type"] == "LuminaVideoVAEDecode")
        prompt["100"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "cli"}}
        entry = server.wait(server.queue(prompt), timeout=240)
        assert_success(entry)
        images = entry["outputs"]["100"]["images"]
        frames = np.stack([np.asarray(Image.open(server.base / "output" / i["subfolder"] / i["filename"]))
                           for i in images])
    cli_frames = sheet_tiles(cli_video.with_suffix(".png"))
    assert frames.shape == cli_frames.shape == (FRAMES, SIZE, SIZE, 3)
    # SaveImage truncates 255*x, the contact sheet rounds it: at most one level apart.
    assert np.abs(frames.astype(int) - cli_frames.astype(int)).max() <= 1
    assert frames.std() > 1  # a real picture, not a constant
