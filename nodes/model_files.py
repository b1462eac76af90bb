"""Where the loaders find weights: files and model folders inside ComfyUI's model folders, plus
the built-in demo entry that needs no file at all."""

from __future__ import annotations

import os

import folder_paths

from ..lumina_core.app.node_table import DEMO_ENTRY as DEMO


def model_folders(folder_name: str, markers: tuple[str, ...]) -> list[str]:
    """Sub-folders (relative, '/'-separated) of ComfyUI's ``folder_name`` folders holding a marker file."""
    found = set()
    for root in folder_paths.get_folder_paths(folder_name):
        for current, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = [name for name in dirs if not name.startswith(".")]
            if current != root and any(marker in files for marker in markers):
                found.add(os.path.relpath(current, root).replace(os.sep, "/"))
    return sorted(found)


def choices(folder_name: str, markers: tuple[str, ...], extensions: tuple[str, ...]) -> list[str]:
    """The demo entry, then model folders, then single files that do not sit inside a listed folder."""
    folders = model_folders(folder_name, markers)
    files = [name for name in folder_paths.get_filename_list(folder_name)
             if name.lower().endswith(extensions) and not any(name.startswith(f"{folder}/") for folder in folders)]
    return [DEMO, *folders, *files]


def missing_file_message(folder_name: str, name: str, markers: tuple[str, ...], what: str) -> str | bool:
    """True when ``name`` is the demo entry or a listed file/folder; otherwise the message a user sees on
    Queue, naming the file, the folder it belongs in and the fix (e.g. for a workflow shared without files)."""
    if name == DEMO or folder_paths.get_full_path(folder_name, name) is not None or name in model_folders(
            folder_name, markers):
        return True
    roots = ", ".join(folder_paths.get_folder_paths(folder_name))
    return (f"{what} {name!r} is not installed: put it into ComfyUI's models/{folder_name} folder ({roots}) under "
            f"that name, then press R in the page to refresh the lists; or pick '{DEMO}'")


def resolve(folder_name: str, name: str, markers: tuple[str, ...]) -> str:
    """Absolute path of a listed file or model folder."""
    path = folder_paths.get_full_path(folder_name, name)
    if path is not None:
        return path
    if name in model_folders(folder_name, markers):
        for root in folder_paths.get_folder_paths(folder_name):
            if os.path.isdir(os.path.join(root, name)):
                return os.path.join(root, name)
    roots = ", ".join(folder_paths.get_folder_paths(folder_name))
    raise FileNotFoundError(f"{name!r} is not a file or model folder in ComfyUI's '{folder_name}' folders ({roots}); "
                            "put it there and refresh the node list (press R), or pick another entry")
