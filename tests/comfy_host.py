"""A real ComfyUI server for host tests (COMFYUI_PATH): boots ``main.py --cpu`` with the pack linked into a
temporary base directory, on a free loopback port, and talks to it over HTTP. Shared by test_host.py and
test_workflows.py; not a test module itself."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lumina_core.app.node_table import DEMO_ENTRY as DEMO

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
HOST_MISSING = None if COMFYUI_PATH and Path(COMFYUI_PATH, "main.py").is_file() else (
    "no ComfyUI host: COMFYUI_PATH is unset or has no main.py (set it to a ComfyUI source tree, e.g. "
    "../shared/comfyui)")
"""Why host tests cannot run, or None when a host is there."""
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")


def require_host() -> None:
    """Stop a test (or, at import, a whole test module) that needs the host when there is none: a skip on a
    developer's machine, a failure in CI, where every node and frontend test must run."""
    if HOST_MISSING is None:
        return
    if IN_CI:
        pytest.fail(f"CI is set but there is {HOST_MISSING}", pytrace=False)
    pytest.skip(HOST_MISSING, allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
NEWEST_FRONTEND = "1.58.1"  # the newest comfyui-frontend-package, tested beside the pinned one (in .venv)
NEWEST_FRONTEND_ROOT = ROOT / ".venv" / "frontends" / NEWEST_FRONTEND
"""The newest frontend's static files (for ``--front-end-root``): scripts/test.sh reads NEWEST_FRONTEND above and
fetches that version's wheel into this folder."""
LINK_NAME = "comfyui-lumina-video"
BOOT_TIMEOUT_S = 300  # hang guards for a loaded machine, not speed checks
RUN_TIMEOUT_S = 300


class Server:
    def __init__(self, url: str, base: Path, log: Path):
        self.url, self.base, self.log = url, base, log

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, payload: dict):
        with urllib.request.urlopen(self._request(path, payload), timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def post_answer(self, path: str, payload: dict) -> dict:
        """{"status": HTTP status, "body": JSON answer}, for refusals (4xx) too."""
        try:
            with urllib.request.urlopen(self._request(path, payload), timeout=30) as response:
                return {"status": response.status, "body": json.loads(response.read() or b"null")}
        except urllib.error.HTTPError as error:
            return {"status": error.code, "body": json.loads(error.read() or b"null")}

    def _request(self, path: str, payload: dict) -> urllib.request.Request:
        return urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                      headers={"Content-Type": "application/json"})

    def queue(self, prompt: dict) -> str:
        answer = self.post("/prompt", {"prompt": prompt, "client_id": "lumina-video-tests"})
        assert not answer.get("node_errors"), answer["node_errors"]
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log tail:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(prepare: Callable[[Path], None] | None = None, args: tuple[str, ...] = ()) -> Iterator[Server]:
    """Boot ComfyUI with this pack in a fresh base directory and yield it; stop it and delete the base
    directory afterwards. ``prepare(base)`` runs before the boot (e.g. to put files into base/models); ``args``
    are more command-line arguments (e.g. ``("--preview-method", "latent2rgb")``)."""
    import pytest

    base = Path(tempfile.mkdtemp(prefix="lumina-video-comfyui-"))
    process = None
    try:
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / LINK_NAME).symlink_to(ROOT, target_is_directory=True)
        if prepare is not None:
            prepare(base)
        port, log = free_port(), base / "comfyui.log"
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "DO_NOT_TRACK": "1", "LUMINA_VIDEO_CACHE_DIR": str(base / "lumina_video_cache")}  # calibrations
        command = [sys.executable, str(Path(COMFYUI_PATH, "main.py")), "--cpu", "--disable-api-nodes", "--listen",
                   "127.0.0.1", "--port", str(port), "--base-directory", str(base),
                   "--database-url", f"sqlite:///{base}/comfyui.db", *args]
        with open(log, "w") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=base)
        host = Server(f"http://127.0.0.1:{port}", base, log)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {process.returncode} while booting:\n{host.log_tail()}")
            try:
                host.get("/system_stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer /system_stats in {BOOT_TIMEOUT_S} s:\n{host.log_tail()}")
                time.sleep(0.2)
        yield host
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


def demo_inputs(size: int, frames: int) -> dict:
    """API-format nodes "1" to "5" of a demo graph: the three loaders on their demo entries, Text Encode ("a red
    circle moving left") and a custom-size Empty Latent Video; a test adds its sampler and outputs."""
    return {
        "1": {"class_type": "LuminaVideoMSModelLoader", "inputs": {"model_name": DEMO, "weight_dtype": "default"}},
        "2": {"class_type": "LuminaVideoMSTextEncoderLoader",
              "inputs": {"text_encoder_name": DEMO, "tokenizer": "(from the text encoder folder)",
                         "weight_dtype": "default"}},
        "3": {"class_type": "LuminaVideoMSVAELoader", "inputs": {"vae_name": DEMO, "weight_dtype": "default"}},
        "4": {"class_type": "LuminaVideoMSTextEncode",
              "inputs": {"text_encoder": ["2", 0], "prompt": "a red circle moving left", "negative_prompt": ""}},
        "5": {"class_type": "LuminaVideoMSEmptyLatentVideo",
              "inputs": {"resolution": "custom", "width": size, "height": size, "frames": frames, "batch_size": 1}},
    }


def messages(entry: dict) -> dict:
    """A /history entry's status messages by name (execution_start, execution_cached, execution_error, ...)."""
    return {name: data for name, data in entry["status"]["messages"]}


def assert_success(entry: dict) -> None:
    assert entry["status"]["status_str"] == "success", json.dumps(messages(entry).get("execution_error"), indent=1)


UI_ONLY = {"Note", "MarkdownNote"}  # frontend-only nodes: not in /object_info, never executed
SKIPPED_MODES = {2, 4}  # "never" (muted) and bypassed nodes are left out of the API prompt
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# --------------------------------------------------------------------------- UI -> API conversion
def widget_inputs(info: dict) -> list[tuple[str, bool]]:
    """(name, has a control_after_generate value) of a node type's widget inputs, in the order the frontend
    stores their values: required, then optional, each in schema order. forceInput values are sockets."""
    widgets = []
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, []):
            kind, options = (info["input"][section][name] + [{}])[:2]
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):
                widgets.append((name, bool(options.get("control_after_generate"))))
    return widgets


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow: widgets_values mapped onto the widget inputs in order
    (skipping each control_after_generate value; trailing frontend-only values such as an upload button's
    are ignored), links as [origin id, origin slot] (they override a widget's value). UI-only nodes and
    muted/bypassed ones are left out (an input linked to one is dropped; no bypass pass-through)."""
    links = {link[0]: link for link in workflow["links"]}
    kept = {node["id"] for node in workflow["nodes"]
            if node["type"] not in UI_ONLY and node["mode"] not in SKIPPED_MODES}
    prompt = {}
    for node in workflow["nodes"]:
        if node["id"] not in kept:
            continue
        values, inputs = iter(node["widgets_values"]), {}
        for name, has_control in widget_inputs(object_info[node["type"]]):
            inputs[name] = next(values)
            if has_control:
                next(values)
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                _, origin, origin_slot, *_ = links[slot["link"]]
                if origin in kept:
                    inputs[slot["name"]] = [str(origin), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


# --------------------------------------------------------------------------- files a workflow picks
LOADER_FOLDERS = {"LuminaVideoMSModelLoader": "diffusion_models", "LuminaVideoMSTextEncoderLoader": "text_encoders",
                  "LuminaVideoMSVAELoader": "vae"}
CORE_LOADERS = {"LoraLoaderModelOnly": "loras", "CLIPLoader": "text_encoders"}  # core loaders a workflow may use
FILE_FOLDERS = {**LOADER_FOLDERS, **CORE_LOADERS}
INPUT_NODES = ("LoadVideo", "LoadImage")  # nodes that pick a file from the input folder


def referenced_files(workflow: dict) -> set[tuple[str, str]]:
    """(node type, file name) pairs a UI-format workflow's loaders (the pack's, core LoRA and CLIP loaders) and Load
    Video / Load Image nodes pick; the built-in demo entry is left out."""
    names = set()
    for node in workflow.get("nodes", []):
        if node.get("type") in FILE_FOLDERS or node.get("type") in INPUT_NODES:
            name = (node.get("widgets_values") or [None])[0]  # the first widget names the file
            if isinstance(name, str) and name != DEMO:
                names.add((node["type"], name))
    return names
