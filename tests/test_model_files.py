"""Where the loaders find model folders: a walk that ends on linked loops, a listing kept until a folder changes,
and messages that name folders relative to ComfyUI's models folder. Needs COMFYUI_PATH (folder_paths)."""

import os
import threading

from comfy_pack import pack  # noqa: F401  boots ComfyUI in-process: before any comfy import

# isort: split
import folder_paths
import pytest
from lumina_video_pack.nodes import model_files
from lumina_video_pack.nodes.model_files import missing_file_message, model_folders, resolve

MARKERS = ("config.json",)
WALK_BOUND_S = 60  # a hang guard for a loaded machine, not a speed check


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A models folder of its own: models/vae with one VAE folder, and two links back to models/vae."""
    root = tmp_path / "models"
    vae = root / "vae"
    (vae / "CogVideoX-2b" / "vae").mkdir(parents=True)
    (vae / "CogVideoX-2b" / "vae" / "config.json").write_text("{}")
    (vae / "CogVideoX-2b" / "loop").symlink_to(vae, target_is_directory=True)
    (vae / "CogVideoX-2b" / "vae" / "loop").symlink_to(vae, target_is_directory=True)
    monkeypatch.setattr(folder_paths, "models_dir", str(root))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vae", ([str(vae)], {".safetensors"}))
    monkeypatch.setattr(model_files, "_listings", {}, raising=False)  # a fresh listing per test
    return root


def bounded(function, *args):
    """``function(*args)`` on a thread that must end within WALK_BOUND_S (a walk that never ends fails the test
    instead of hanging the suite)."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.setdefault("value", function(*args)), daemon=True)
    thread.start()
    thread.join(WALK_BOUND_S)
    assert not thread.is_alive(), f"{function.__name__} still walking after {WALK_BOUND_S} s"
    return answer["value"]


def test_links_back_to_a_parent_end_the_walk(models):
    """Two links to a parent folder made the walk endless (173k folders after 10 s); each folder is entered once."""
    assert bounded(model_folders, "vae", MARKERS) == ["CogVideoX-2b/vae"]
    assert bounded(missing_file_message, "vae", "no-such-vae", MARKERS, "VAE").startswith("VAE 'no-such-vae' is not")
    assert resolve("vae", "CogVideoX-2b/vae", MARKERS) == str(models / "vae" / "CogVideoX-2b/vae")


def test_listing_is_kept_until_a_folder_changes(models, monkeypatch):
    walks = []
    real = model_files._listing
    monkeypatch.setattr(model_files, "_listing", lambda *args: walks.append(args) or real(*args))
    assert model_folders("vae", MARKERS) == ["CogVideoX-2b/vae"]
    assert model_folders("vae", MARKERS) == ["CogVideoX-2b/vae"] and len(walks) == 1
    (models / "vae" / "other").mkdir()
    (models / "vae" / "other" / "config.json").write_text("{}")
    assert model_folders("vae", MARKERS) == ["CogVideoX-2b/vae", "other"] and len(walks) == 2


def test_messages_name_folders_relative_to_the_models_folder(models, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere" / "vae"
    outside.mkdir(parents=True)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vae",
                        ([str(models / "vae"), str(outside)], {".safetensors"}))
    message = missing_file_message("vae", "CogVideoX-5b/vae", MARKERS, "VAE")
    assert "(models/vae, 1 folder(s) from extra_model_paths.yaml)" in message
    with pytest.raises(FileNotFoundError) as refused:
        resolve("vae", "CogVideoX-5b/vae", MARKERS)
    for text in (message, str(refused.value)):
        assert str(tmp_path) not in text and os.sep + "elsewhere" not in text
