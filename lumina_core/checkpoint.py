"""Loading and saving Multi-scale Next-DiT weights.

Accepted inputs:
- an official folder: ``consolidated.00-of-01.safetensors`` (or ``.pth``, as Alpha-VLLM/Lumina-Video-f24R960
  ships it) plus ``model_args.pth``, a pickled ``types.SimpleNamespace`` (the published file) or
  ``argparse.Namespace`` read with ``weights_only=True`` (only these two classes are allowed);
- a single ``.safetensors`` file, with our ``config`` metadata or none (the architecture is then
  inferred from the key shapes; t/motion scales and RoPE theta take the official values);
- a single ``.pth``/``.pt`` file, read with ``weights_only=True`` only.

Safetensors are streamed tensor by tensor straight into the model's storage (the model is built
on the meta device first), so loading needs about one copy of the weights in memory. The header is
validated completely before any tensor is read (as the safetensors library validates it); a damaged
file is a CheckpointError naming the tensor and the problem.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import pickle
import re
import tempfile
import types
from pathlib import Path
from typing import Iterator, Optional

import torch

from .model import OFFICIAL_NAMES, PRESETS, NextDiT, NextDiTConfig

log = logging.getLogger(__name__)

OFFICIAL_WEIGHT_FILES = ("consolidated.00-of-01.safetensors", "consolidated.00-of-01.pth")
OFFICIAL_ARGS_FILE = "model_args.pth"
# The classes model_args.pth may pickle: the published checkpoint's, and the training script's parser result.
ARGS_CLASSES = (types.SimpleNamespace, argparse.Namespace)
CONFIG_METADATA_KEY = "config"
FORMAT_METADATA = {"format": "pt", "model": "lumina-video-nextdit"}
EXPECTED = ("a Lumina-Video Multi-scale Next-DiT checkpoint (keys such as 'all_x_embedder.2-1.weight', "
            "'t_embedder.mlp.0.weight', 'motion_embedder.*', 'layers.0.attention.wq.weight', 'pad_token')")
REQUIRED_KEYS = ("pad_token", "t_embedder.mlp.0.weight", "motion_embedder.mlp.0.weight", "cap_embedder.0.weight",
                 "cap_embedder.1.weight", "layers.0.attention.gate", "layers.0.attention.wq.weight",
                 "layers.0.attention.wk.weight", "layers.0.feed_forward.w1.weight")
# Tensors whose shapes give the architecture, and their number of dimensions (the patch embedders: 2).
SHAPE_RANKS = {"pad_token": 1, "layers.0.attention.gate": 1, "layers.0.attention.wk.weight": 2,
               "cap_embedder.0.weight": 1, "layers.0.feed_forward.w1.weight": 2}
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # as in the safetensors library
MAX_TENSOR_RANK = 8  # no weight of any model this loader reads has more dimensions
DAMAGED = "the file is damaged; download or copy it again"


class CheckpointError(ValueError):
    """The file is not a loadable Lumina-Video checkpoint; the message says what was expected."""


# -- safetensors, streamed --------------------------------------------------------------------
def _brief(value) -> str:
    """repr of a header value, shortened (a damaged header can hold huge lists and strings)."""
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:100]}... ({len(text)} characters)"


def _is_index(value) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _byte_count(shape: list, itemsize: int, limit: int) -> Optional[int]:
    """Bytes of a tensor of ``shape``, or None when they pass ``limit`` (the bytes its offsets hold). Multiplied step
    by step and checked at each step, as the safetensors library does against overflow, so a crafted shape never
    builds a huge number."""
    if 0 in shape:
        return 0
    nbytes = itemsize
    for size in shape:
        nbytes *= size
        if nbytes > limit:
            return None
    return nbytes


def _tensor_span(path: Path, name: str, entry) -> tuple[int, int]:
    """(begin, end) data offsets of one header entry, checked against its dtype and shape."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: tensor {name!r} has the header entry {_brief(entry)}; expected an object "
                              f"with dtype, shape and data_offsets; {DAMAGED}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {_brief(dtype)}, which this loader does not read "
                              f"(supported: {', '.join(SAFETENSORS_DTYPES)})")
    if not isinstance(shape, list) or len(shape) > MAX_TENSOR_RANK or not all(_is_index(size) for size in shape):
        raise CheckpointError(f"{path}: tensor {name!r} has shape {_brief(shape)}; expected a list of at most "
                              f"{MAX_TENSOR_RANK} integers from 0 to 2**63 - 1; {DAMAGED}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_index(offset) for offset in offsets):
        raise CheckpointError(f"{path}: tensor {name!r} has data_offsets {_brief(offsets)}; expected [begin, end], "
                              f"two integers from 0 to 2**63 - 1; {DAMAGED}")
    begin, end = offsets
    if begin > end:
        raise CheckpointError(f"{path}: tensor {name!r} has data_offsets [{begin}, {end}]: begin is after end "
                              f"(begin must be <= end); {DAMAGED}")
    nbytes = _byte_count(shape, SAFETENSORS_DTYPES[dtype].itemsize, end - begin)
    if end - begin != nbytes:
        size = f"{nbytes} bytes" if nbytes is not None else f"more than {end - begin} bytes"
        raise CheckpointError(f"{path}: tensor {name!r} is {dtype} of shape {shape} ({size}) but its "
                              f"data_offsets [{begin}, {end}] hold {end - begin} bytes (dtype, shape and offsets "
                              f"must agree); {DAMAGED}")
    return begin, end


def read_safetensors_header(path: Path) -> tuple[dict, dict, int]:
    """(tensor entries, metadata, data start offset) of a safetensors file, validated as the safetensors
    library does: a sane header length, a JSON object, string metadata, for every tensor a supported
    dtype, a shape and offsets that agree, and byte ranges that tile the data area exactly (no overlap,
    no hole, ending at the end of the file). Any violation is a CheckpointError naming the tensor."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is {size} bytes long: too short to be a safetensors file; "
                                  f"expected {EXPECTED}")
        header_len = int.from_bytes(prefix, "little")
        limit = min(MAX_HEADER_BYTES, size - 8)
        if header_len > limit:
            raise CheckpointError(f"{path} does not start with a valid safetensors header: its header length is "
                                  f"{header_len} bytes, at most {limit} for a {size}-byte file; it is truncated or "
                                  "not safetensors")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path} has an unreadable safetensors header ({error}); the file is damaged or "
                              "not safetensors") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a safetensors header that is a JSON {type(header).__name__}; expected "
                              "a JSON object. The file is damaged or not safetensors")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: the safetensors __metadata__ is {_brief(metadata)}; expected an object "
                              f"of strings; {DAMAGED}")
    spans = sorted((*_tensor_span(path, name, entry), name) for name, entry in header.items())
    data_start, cursor, last = 8 + header_len, 0, "the header"
    for begin, end, name in spans:
        if begin != cursor:
            problem = "overlaps" if begin < cursor else f"leaves a hole of {begin - cursor} bytes after"
            raise CheckpointError(f"{path}: tensor {name!r} starts at data offset {begin}, which {problem} {last} "
                                  f"(ending at data offset {cursor}); tensors are stored back to back, so {DAMAGED}")
        if data_start + end > size:
            raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {data_start + end} but the "
                                  f"file has {size} bytes; download or copy it again")
        cursor, last = end, f"tensor {name!r}"
    if data_start + cursor != size:
        raise CheckpointError(f"{path} has {size - data_start - cursor} bytes after {last}, which ends at byte "
                              f"{data_start + cursor}; a safetensors file ends with its last tensor, so {DAMAGED}")
    return header, metadata, data_start


def iter_safetensors(path: Path, names, dtype: Optional[torch.dtype] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for ``names``, each read from disk into its own storage (no mmap)."""
    header, _, data_start = read_safetensors_header(path)
    with open(path, "rb") as handle:
        for name in names:
            entry = header[name]
            begin, end = entry["data_offsets"]
            tensor = torch.empty(entry["shape"], dtype=SAFETENSORS_DTYPES[entry["dtype"]])
            handle.seek(data_start + begin)
            if end > begin:
                view = tensor.reshape(-1).view(torch.uint8).numpy()
                if handle.readinto(view) != end - begin:
                    raise CheckpointError(f"{path} ended while reading tensor {name!r}; the file is truncated")
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            yield name, tensor


# -- .pth -------------------------------------------------------------------------------------
def _torch_load_weights(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} could not be read as plain tensors with weights_only=True ({first_line}); "
                              f"expected {EXPECTED}. Files that need arbitrary code to unpickle are refused; "
                              "convert the checkpoint to .safetensors") from None
    for key in ("model", "state_dict"):  # training checkpoints that wrap the state dict
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a dict of tensors; expected {EXPECTED}")
    return data


def read_model_args(path: Path) -> dict:
    """The official ``model_args.pth`` (a pickled types.SimpleNamespace in the published checkpoint, an
    argparse.Namespace from the training script) as a dict, without running code."""
    try:
        with torch.serialization.safe_globals(list(ARGS_CLASSES)):
            args = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a plain argparse.Namespace or types.SimpleNamespace of training "
                              f"arguments ({first_line}); it was not unpickled. Delete it to infer the architecture "
                              "from the weights") from None
    if isinstance(args, ARGS_CLASSES):
        return vars(args)
    if isinstance(args, dict):
        return args
    raise CheckpointError(f"{path} holds a {type(args).__name__}; expected the training arguments "
                          "(types.SimpleNamespace or argparse.Namespace)")


PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")


def check_safetensors_folder(folder: Path, what: str, source: str) -> None:
    """Refuse a Hugging Face folder whose weights are pickled (``.bin``/``.pt``...) and not ``.safetensors``: they
    would be read with ``torch.load``, which runs code stored in the file on torch versions before 2.6 (this pack
    does not require a newer one). For the text encoder and VAE folders; a folder with no weights at all is left to
    the loader's own message."""
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(path.name for path in folder.iterdir() if path.suffix.lower() in PICKLED_WEIGHTS)
    if pickled:
        raise ValueError(f"the {what} folder {folder.name!r} holds only pickled weights ({', '.join(pickled[:3])}"
                         f"{'...' if len(pickled) > 3 else ''}), no .safetensors file; pickled weights are never "
                         f"loaded (reading them can run code). Download the .safetensors files of {source}, or, if "
                         "you trust these files, convert them once with save_pretrained(..., safe_serialization=True)")


# -- architecture inference -------------------------------------------------------------------
def strip_prefixes(name: str) -> str:
    """Remove torch.compile's ``_orig_mod.`` segments (as the official loader does)."""
    return name.replace("_orig_mod.", "")


def check_keys(shapes: dict, source: Path) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in shapes]
    embedders = [key for key in shapes if re.fullmatch(r"all_x_embedder\.\d+-\d+\.weight", key)]
    if missing or not embedders:
        sample = ", ".join(sorted(shapes)[:5]) or "no tensors at all"
        raise CheckpointError(f"{source} is not {EXPECTED}: {len(shapes)} tensors were found ({sample}...), "
                              f"missing {', '.join(missing) or 'all_x_embedder.P-F.weight'}")
    for key, rank in [*SHAPE_RANKS.items(), *((key, 2) for key in embedders)]:
        if len(shapes[key]) != rank or 0 in shapes[key]:
            raise CheckpointError(f"{source}: tensor {key!r} has shape {list(shapes[key])}; expected a {rank}-D shape "
                                  "with no zero-size dimension, as in every Next-DiT. The file is damaged or not a "
                                  "Lumina-Video checkpoint")


def infer_config(shapes: dict, hints: Optional[dict] = None) -> NextDiTConfig:
    """Architecture from key shapes; ``hints`` (metadata or training args) supply what shapes can't
    (t_scale, motion_scale, rope_theta, norm_eps, embedder order) and must agree with the shapes."""
    hints = {OFFICIAL_NAMES.get(k, k): v for k, v in (hints or {}).items() if v is not None}
    pairs = sorted((int(m.group(1)), int(m.group(2))) for key in shapes
                   if (m := re.fullmatch(r"all_x_embedder\.(\d+)-(\d+)\.weight", key)))
    if "patch_sizes" in hints and "f_patch_sizes" in hints:
        ordered = [(int(p), int(f)) for p, f in zip(hints["patch_sizes"], hints["f_patch_sizes"])]
        if sorted(ordered) == pairs:
            pairs = ordered
    dim = shapes["pad_token"][0]
    p, f = pairs[0]
    n_heads = shapes["layers.0.attention.gate"][0]
    head_dim = dim // n_heads
    derived = dict(
        patch_sizes=tuple(p for p, _ in pairs), f_patch_sizes=tuple(f for _, f in pairs),
        in_channels=shapes[f"all_x_embedder.{p}-{f}.weight"][1] // (f * p * p), dim=dim,
        n_layers=len({key.split(".")[1] for key in shapes if key.startswith("layers.")}),
        n_heads=n_heads, n_kv_heads=shapes["layers.0.attention.wk.weight"][0] // head_dim,
        qk_norm="layers.0.attention.q_norm.weight" in shapes, cap_feat_dim=shapes["cap_embedder.0.weight"][0],
    )
    for key in ("dim", "n_layers", "n_heads", "in_channels", "cap_feat_dim"):
        if key in hints and int(hints[key]) != derived[key]:
            raise CheckpointError(f"the checkpoint's config says {key} = {hints[key]} but its weights have "
                                  f"{key} = {derived[key]}; the config does not belong to these weights")
    values = {**PRESETS["2B_GQA"].to_dict(), **hints, **derived, "ffn_hidden_dim": None}
    ffn_hidden = shapes["layers.0.feed_forward.w1.weight"][0]
    if NextDiTConfig.from_dict(values).swiglu_hidden_dim != ffn_hidden:
        values["ffn_hidden_dim"] = ffn_hidden  # a width the multiple_of rule doesn't give: keep it explicit
    return NextDiTConfig.from_dict(values)


# -- public API -------------------------------------------------------------------------------
def resolve_weights(path: str | os.PathLike) -> tuple[Path, Optional[Path]]:
    """(weights file, official model_args.pth or None) for a folder or file path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; give a Lumina-Video .safetensors/.pth file "
                                f"or an official folder with {OFFICIAL_WEIGHT_FILES[0]}")
    if path.is_dir():
        for name in OFFICIAL_WEIGHT_FILES:
            if (path / name).is_file():
                args = path / OFFICIAL_ARGS_FILE
                return path / name, args if args.is_file() else None
        raise CheckpointError(f"folder {path} has neither {' nor '.join(OFFICIAL_WEIGHT_FILES)}; expected an official "
                              "Lumina-Video checkpoint folder")
    return path, None


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == ".safetensors"


def _file_signature(path: Optional[Path]) -> Optional[tuple]:
    """What says a file changed: its resolved path, size and modification time."""
    if path is None:
        return None
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def read_config(path: str | os.PathLike, remember: bool = False) -> NextDiTConfig:
    """The architecture of a checkpoint without loading its weights. With ``remember`` the answer is kept per file
    (path, size and modification time), so asking again for an unchanged file reads nothing: for the page, which
    asks for every model loader it shows on every refresh (a loader reads the file anyway)."""
    weights, args_file = resolve_weights(path)
    if remember:
        return _remembered_config(weights, args_file, _file_signature(weights), _file_signature(args_file))
    return _read_config(weights, args_file)


@functools.lru_cache(maxsize=64)
def _remembered_config(weights: Path, args_file: Optional[Path], *signatures) -> NextDiTConfig:
    """_read_config, kept for the last 64 files; ``signatures`` (see _file_signature) tell a changed file."""
    return _read_config(weights, args_file)


def _read_config(weights: Path, args_file: Optional[Path]) -> NextDiTConfig:
    if _is_safetensors(weights):
        header, metadata, _ = read_safetensors_header(weights)
        shapes = {strip_prefixes(k): tuple(v["shape"]) for k, v in header.items()}
        hints = _metadata_config(metadata, weights)
    else:
        shapes = {strip_prefixes(k): tuple(v.shape) for k, v in _torch_load_weights(weights).items()}
        hints = {}
    check_keys(shapes, weights)
    if args_file is not None:
        hints = {**read_model_args(args_file), **hints}
    try:
        return infer_config(shapes, hints)
    except CheckpointError:
        raise
    except (ArithmeticError, TypeError, ValueError) as error:
        raise CheckpointError(f"{weights}: its tensor shapes and config do not make a valid Next-DiT ({error}); "
                              f"the file is damaged or not {EXPECTED}") from None


def _metadata_config(metadata: dict, source: Path) -> dict:
    text = metadata.get(CONFIG_METADATA_KEY)
    if not text:
        return {}
    try:
        values = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{source}: the '{CONFIG_METADATA_KEY}' metadata is not JSON") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: the '{CONFIG_METADATA_KEY}' metadata is not a JSON object")
    return values


def load_model(path: str | os.PathLike, dtype: Optional[torch.dtype] = None, device: str | torch.device = "cpu",
               ) -> NextDiT:
    """Load a Lumina-Video NextDiT (strict, official key names) from a folder or a file.

    ``dtype`` converts floating weights while streaming (None keeps the file's dtype).
    """
    weights, _ = resolve_weights(path)
    config = read_config(path)
    with torch.device("meta"):
        model = NextDiT(config)
    expected = set(model.state_dict())
    if _is_safetensors(weights):
        header, _, _ = read_safetensors_header(weights)
        names = {strip_prefixes(name): name for name in header}
        _check_names(set(names), expected, weights)
        tensors = ((strip_prefixes(k), v) for k, v in iter_safetensors(weights, names.values(), dtype))
    else:
        data = {strip_prefixes(k): v for k, v in _torch_load_weights(weights).items()}
        _check_names(set(data), expected, weights)
        tensors = ((k, v.to(dtype) if dtype is not None and v.is_floating_point() else v.clone())
                   for k, v in data.items())
    for name, tensor in tensors:
        _assign(model, name, tensor.to(device))
    return model.eval()


def _check_names(found: set, expected: set, source: Path) -> None:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match the architecture its shapes imply: missing "
                              f"{missing[:5] or 'none'}{'...' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5] or 'none'}{'...' if len(unexpected) > 5 else ''}")


def _assign(model: NextDiT, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    current = getattr(module, attr)
    if tuple(current.shape) != tuple(tensor.shape):
        raise CheckpointError(f"tensor {name!r} has shape {tuple(tensor.shape)}; the model expects "
                              f"{tuple(current.shape)}")
    if not tensor.is_floating_point():
        raise CheckpointError(f"tensor {name!r} has dtype {tensor.dtype}; Next-DiT weights are floating point. "
                              "Store them as F32, F16 or BF16")
    setattr(module, attr, torch.nn.Parameter(tensor, requires_grad=False))


def save_model(model: NextDiT, path: str | os.PathLike, metadata: Optional[dict] = None) -> Path:
    """Write a single .safetensors with the config in its metadata (atomically: temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    extra = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta = {**FORMAT_METADATA, **extra, CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())}
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(suffix=".safetensors.tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temp, metadata=meta)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path
