"""A video made by the command line carries a ComfyUI graph that reproduces it: the UI workflow in the
mp4 converts to the embedded API prompt, and queueing it on the real host gives the CLI's frames. In fp32
the latents are identical (decoded frames equal up to uint8 rounding). The default dtype (bf16 on a CPU with
bf16 instructions) is pinned in the graph's loaders, but the host computes attention with ComfyUI's choice for
a CPU (sub-quadratic attention) where the CLI uses torch's SDPA: in bf16 their roundings differ, measured 49 dB
PSNR between the two videos (identical with --use-pytorch-cross-attention)."""

import json
import subprocess
import sys

import av
import numpy as np
import pytest
from comfy_host import ROOT, assert_success, require_host, running_server, to_api
from PIL import Image

from lumina_core.precision import resolve_dtype

require_host()

FRAMES, SIZE, GAP, COLUMNS = 16, 64, 2, 4  # the demo's clip and write_contact_sheet's layout


@pytest.fixture(scope="module", params=["fp32", "auto"])
def cli_video(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "clip.mp4"
    subprocess.run([sys.executable, "-m", "lumina_core", "generate", "--prompt", "a green square moving right",
                    "--negative-prompt", "still", "--motion", "8", "--neg-motion", "1", "--seed", "11",
                    "--steps", "5", "--dtype", request.param, "--out", str(out)],
                   check=True, capture_output=True, timeout=300, cwd=ROOT)
    return out, resolve_dtype(request.param, "cpu")


def sheet_tiles(path) -> np.ndarray:
    """The frames of a contact sheet of 16 frames (4 x 4 tiles, 2-pixel gaps)."""
    sheet = np.asarray(Image.open(path).convert("RGB"))
    return np.stack([sheet[r * (SIZE + GAP):r * (SIZE + GAP) + SIZE, c * (SIZE + GAP):c * (SIZE + GAP) + SIZE]
                     for r in range(FRAMES // COLUMNS) for c in range(COLUMNS)])


def test_cli_graph_reproduces_the_cli_video_on_the_host(cli_video):
    cli_video, dtype = cli_video
    with av.open(str(cli_video)) as container:
        tags = dict(container.metadata)
    workflow, prompt = json.loads(tags["workflow"]), json.loads(tags["prompt"])
    with running_server() as server:
        object_info = server.get("/object_info")
        assert to_api(workflow, object_info) == prompt  # the UI graph is the prompt the CLI ran
        decode = next(key for key, node in prompt.items() if node["class_type"] == "LuminaVideoMSVAEDecode")
        prompt["100"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "cli"}}
        entry = server.wait(server.queue(prompt), timeout=240)
        assert_success(entry)
        images = entry["outputs"]["100"]["images"]
        frames = np.stack([np.asarray(Image.open(server.base / "output" / i["subfolder"] / i["filename"]))
                           for i in images])
    cli_frames = sheet_tiles(cli_video.with_suffix(".png"))
    assert frames.shape == cli_frames.shape == (FRAMES, SIZE, SIZE, 3)
    if dtype == "fp32":
        # SaveImage truncates 255*x, the contact sheet rounds it: at most one level apart.
        assert np.abs(frames.astype(int) - cli_frames.astype(int)).max() <= 1
    else:
        # bf16 under two attention kernels (see the module docstring): 49 dB measured; a wrong seed, prompt
        # or schedule gives < 20 dB
        mse = ((frames.astype(float) - cli_frames.astype(float)) ** 2).mean()
        assert 10 * np.log10(255 ** 2 / mse) > 40
    assert frames.std() > 1  # a real picture, not a constant
