"""Where the loaders find weights: files and model folders inside ComfyUI's model folders, plus
the built-in demo entry that needs no file at all."""

from __future__ import annotations

import os

import folder_paths

from ..lumina_core import demo
from ..lumina_core.app.node_table import DEMO_ENTRY as DEMO


def _listing(root: str, markers: tuple[str, ...]) -> tuple[set[str], dict[str, int]]:
    """(folders under ``root`` holding a marker file, relative and '/'-separated; the modification time of every
    folder looked at). Links are followed, but each real folder is entered once, so links back to a parent
    folder end the walk instead of repeating it forever."""
    found, looked_at, entered = set(), {}, set()
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            status = os.stat(current)
            with os.scandir(current) as scan:
                entries = list(scan)
        except OSError:  # vanished, unreadable or a dangling link: nothing in it to offer
            continue
        if (status.st_dev, status.st_ino) in entered:
            continue
        entered.add((status.st_dev, status.st_ino))
        looked_at[current] = status.st_mtime_ns
        names = {entry.name for entry in entries}
        if current != root and any(marker in names for marker in markers):
            found.add(os.path.relpath(current, root).replace(os.sep, "/"))
        folders = sorted((entry for entry in entries
                          if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=True)),
                         key=lambda entry: (not entry.is_symlink(), entry.name), reverse=True)
        pending.extend(entry.path for entry in folders)  # last in, first entered: real folders before links
    return found, looked_at


_listings: dict[tuple, tuple[list[str], dict[str, int]]] = {}


def _unchanged(looked_at: dict[str, int]) -> bool:
    try:
        return all(os.stat(folder).st_mtime_ns == mtime for folder, mtime in looked_at.items())
    except OSError:
        return False


def model_folders(folder_name: str, markers: tuple[str, ...]) -> list[str]:
    """Sub-folders (relative, '/'-separated) of ComfyUI's ``folder_name`` folders holding a marker file. The listing
    is kept until a folder it looked at changes (files added or removed change their folder's modification time),
    as ComfyUI keeps its own file lists."""
    key = (folder_name, markers, tuple(folder_paths.get_folder_paths(folder_name)))
    kept = _listings.get(key)
    if kept is not None and _unchanged(kept[1]):
        return kept[0]
    found, looked_at = set(), {}
    for root in key[2]:
        folders, times = _listing(root, markers)
        found |= folders
        looked_at.update(times)
    _listings[key] = (sorted(found), looked_at)
    return _listings[key][0]


def shown_folders(folder_name: str) -> str:
    """ComfyUI's ``folder_name`` folders as a message names them: relative to ComfyUI's models folder (an absolute
    path tells a visitor of a shared server how the machine is laid out)."""
    inside, outside = [], 0
    for root in folder_paths.get_folder_paths(folder_name):
        relative = os.path.relpath(root, folder_paths.models_dir)
        if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
            outside += 1
        else:
            inside.append("models/" + relative.replace(os.sep, "/"))
    if outside:
        inside.append(f"{outside} folder(s) from extra_model_paths.yaml")
    return ", ".join(inside) or f"no {folder_name} folder is configured"


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
    return (f"{what} {name!r} is not installed: put it into ComfyUI's models/{folder_name} folder "
            f"({shown_folders(folder_name)}) under "
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
    raise FileNotFoundError(f"{name!r} is not a file or model folder in ComfyUI's '{folder_name}' folders "
                            f"({shown_folders(folder_name)}); "
                            "put it there and refresh the node list (press R), or pick another entry")


def register_demo_loras() -> None:
    """Add the folder of the LoRAs that ship with the demo (lumina_core/demo/loras) to ComfyUI's 'loras' folders,
    after the user's own (as ComfyUI adds output/loras), so Load LoRA lists them without a copy. Other LoRAs keep
    their names and paths; a user's file of the same name comes first."""
    folder_paths.add_model_folder_path("loras", str(demo.LORAS_DIR))
