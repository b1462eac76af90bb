"""In-process ComfyUI for node tests without a server: puts COMFYUI_PATH first on sys.path (ComfyUI's top-level
`nodes` must win over the pack's `nodes/`), sets --cpu and imports the pack as a package the way ComfyUI loads
it (relative imports). Imported by test_nodes.py and test_native.py; not a test module itself."""

import importlib.util
import sys
from pathlib import Path

from comfy_host import COMFYUI_PATH, require_host

require_host()

sys.path.insert(0, COMFYUI_PATH)
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing(False)
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True

ROOT = Path(__file__).resolve().parents[1]
PACK = "lumina_video_pack"


def import_pack():
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module


pack = import_pack()


def run(node, *args, **kwargs):
    """A V3 node's outputs, as ComfyUI's executor gets them."""
    return node.execute(*args, **kwargs).result


def demo_model():
    """The built-in demo transformer as a MODEL (Lumina-Video Model Loader)."""
    from lumina_video_pack.nodes.loaders import LuminaVideoMSModelLoader
    from lumina_video_pack.nodes.model_files import DEMO
    return run(LuminaVideoMSModelLoader, DEMO, "default")[0]


def demo_captions(prompt: str, negative: str):
    """(positive, negative) CONDITIONING from the built-in demo text encoder (Lumina-Video Text Encode)."""
    from lumina_video_pack.nodes.loaders import SAME_FOLDER, LuminaVideoMSTextEncoderLoader
    from lumina_video_pack.nodes.model_files import DEMO
    from lumina_video_pack.nodes.text import LuminaVideoMSTextEncode
    encoder = run(LuminaVideoMSTextEncoderLoader, DEMO, SAME_FOLDER, "default")[0]
    return run(LuminaVideoMSTextEncode, encoder, prompt, negative)
