"""Damaged safetensors checkpoints: every corrupt header or truncation is a CheckpointError naming the
tensor and the problem, never another exception and never a model with garbage weights.

The fuzz cases are seeded (deterministic). Each case is bounded by construction: the loader's loops
run over the header's entries and read fixed byte counts, so a case ends or raises; nothing is timed.
"""

import json
import math
import random
from collections.abc import Iterator

import pytest
import torch
from conftest import PARITY
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from lumina_core import checkpoint
from lumina_core.checkpoint import CheckpointError, load_model, read_config, read_safetensors_header

ORIGINAL = PARITY / "tiny_weights.safetensors"


def split(content: bytes) -> tuple[dict, bytes]:
    """(header as a dict, data area) of a safetensors file's bytes."""
    length = int.from_bytes(content[:8], "little")
    return json.loads(content[8:8 + length]), content[8 + length:]


def join(header: dict, data: bytes) -> bytes:
    body = json.dumps(header).encode()
    return len(body).to_bytes(8, "little") + body + data


def edited(content: bytes, name: str, **changes) -> bytes:
    header, data = split(content)
    header[name] = {**header[name], **changes}
    return join(header, data)


@pytest.fixture(scope="module")
def original() -> bytes:
    return ORIGINAL.read_bytes()


@pytest.fixture(scope="module")
def original_state() -> dict:
    return load_file(ORIGINAL)


def refusal(tmp_path, content: bytes) -> str:
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    return str(info.value)


# -- each named problem -----------------------------------------------------------------------
WO, WQ = "layers.0.attention.wo.weight", "layers.0.attention.wq.weight"  # F32 [96, 96], stored in this order
LAST = "t_embedder.mlp.2.weight"  # F32 [96, 96], the last tensor of the file


def offsets(content: bytes, name: str) -> list:
    return split(content)[0][name]["data_offsets"]


def test_begin_after_end_is_refused(tmp_path, original):
    begin, end = offsets(original, WQ)
    message = refusal(tmp_path, edited(original, WQ, data_offsets=[end, begin]))
    assert f"tensor {WQ!r} has data_offsets [{end}, {begin}]: begin is after end" in message


def test_overlap_names_the_overlapping_tensor(tmp_path, original):
    header, data = split(original)
    begin, end = header[WQ]["data_offsets"]
    header[WQ]["data_offsets"] = [begin - 8, end - 8]
    message = refusal(tmp_path, join(header, data))
    assert f"tensor {WQ!r} starts at data offset {begin - 8}, which overlaps tensor {WO!r}" in message


def test_hole_between_tensors_is_refused(tmp_path, original):
    header, data = split(original)
    begin = header[WQ]["data_offsets"][0]
    for entry in header.values():  # every tensor from wq on moves 4 bytes later; 4 bytes of padding before wq
        if isinstance(entry, dict) and "data_offsets" in entry and entry["data_offsets"][0] >= begin:
            entry["data_offsets"] = [offset + 4 for offset in entry["data_offsets"]]
    message = refusal(tmp_path, join(header, data[:begin] + b"\0" * 4 + data[begin:]))
    assert f"tensor {WQ!r} starts at data offset {begin + 4}, which leaves a hole of 4 bytes" in message
    assert f"after tensor {WO!r}" in message


def test_offsets_past_the_file_are_refused(tmp_path, original):
    begin, end = offsets(original, LAST)  # one row more than the file holds
    content = edited(original, LAST, shape=[97, 96], data_offsets=[begin, end + 96 * 4])
    message = refusal(tmp_path, content)
    assert f"is truncated: tensor {LAST!r} ends at byte {len(content) + 96 * 4} but the file has" in message


@pytest.mark.parametrize("change, problem", [
    ({"shape": [96, 95]}, "is F32 of shape [96, 95] (36480 bytes) but its data_offsets"),
    ({"dtype": "F16"}, "is F16 of shape [96, 96] (18432 bytes) but its data_offsets"),
    ({"dtype": "U32"}, "has dtype 'U32', which this loader does not read"),
    ({"shape": [96, -96]}, "has shape [96, -96]; expected a list of at most 8 integers"),
    # the same 96 * 96 elements in 9 dimensions: no tensor has so many, so the header is refused as it is read
    ({"shape": [1] * 7 + [96, 96]}, "has shape [1, 1, 1, 1, 1, 1, 1, 96, 96]; expected a list of at most 8"),
    # the product passes the 36864 bytes the offsets hold at the first dimension; multiplied no further
    ({"shape": [2**62] * 8}, f"is F32 of shape {[2**62] * 8} (more than 36864 bytes) but its data_offsets"),
    ({"data_offsets": [0]}, "has data_offsets [0]; expected [begin, end]"),
    ({"data_offsets": None}, "has data_offsets None; expected [begin, end]"),
])
def test_entry_that_disagrees_with_itself_is_refused(tmp_path, original, change, problem):
    assert f"tensor {WQ!r} {problem}" in refusal(tmp_path, edited(original, WQ, **change))


def test_a_header_of_many_dimensions_is_refused_at_its_first_tensor(tmp_path, original):
    """A crafted file whose shapes have 80,000 dimensions (an 800 KB header) took 31 s to refuse when their
    products were computed whole; the rank limit refuses it before any product."""
    header, data = split(original)
    header[WQ] = {**header[WQ], "shape": [2**62] * 80_000}
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(join(header, data))
    with pytest.raises(CheckpointError, match=f"tensor {WQ!r} has shape .* expected a list of at most 8 integers"):
        read_safetensors_header(path)


def test_remembered_config_reads_an_unchanged_file_once(tmp_path, original, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(original)
    reads = []
    real = checkpoint.read_safetensors_header
    monkeypatch.setattr(checkpoint, "read_safetensors_header", lambda file: reads.append(file) or real(file))
    first = read_config(path, remember=True)
    assert read_config(path, remember=True) == first and len(reads) == 1
    read_config(path)  # without remember: always reads
    assert len(reads) == 2
    path.write_bytes(original + b"junk")  # another size: read again (and refused)
    with pytest.raises(CheckpointError, match="has 4 bytes after"):
        read_config(path, remember=True)
    assert len(reads) == 3


def test_entry_that_is_not_an_object_is_refused(tmp_path, original):
    header, data = split(original)
    header[WQ] = [1, 2]
    assert f"tensor {WQ!r} has the header entry [1, 2]; expected an object" in refusal(tmp_path, join(header, data))


@pytest.mark.parametrize("length, problem", [
    (2**64 - 1, f"header length is {2**64 - 1} bytes, at most"),
    (10**9, "header length is 1000000000 bytes, at most"),
])
def test_absurd_header_length_is_refused(tmp_path, original, length, problem):
    assert problem in refusal(tmp_path, length.to_bytes(8, "little") + original[8:])


@pytest.mark.parametrize("content, problem", [
    (b"[" * 100_000, "unreadable safetensors header"),  # nesting deeper than Python's recursion limit
    (b'{"a": 1' + b"0" * 5000 + b"}", "unreadable safetensors header"),  # an integer too long to convert
    (b"\xff\xfe", "unreadable safetensors header"),
    (b"[]", "header that is a JSON list; expected a JSON object"),
    (b'{"__metadata__": {"config": 1}}', "__metadata__ is {'config': 1}; expected an object of strings"),
])
def test_malformed_json_is_refused(tmp_path, content, problem):
    assert problem in refusal(tmp_path, len(content).to_bytes(8, "little") + content)


def test_trailing_bytes_are_refused(tmp_path, original):
    message = refusal(tmp_path, original + b"junk")
    assert f"has 4 bytes after tensor {LAST!r}" in message


def test_integer_tensor_where_the_model_has_floats_is_refused(tmp_path, original):
    message = refusal(tmp_path, edited(original, WQ, dtype="I32"))
    assert f"tensor {WQ!r} has dtype torch.int32; Next-DiT weights are floating point" in message


@pytest.mark.parametrize("name, shape, problem", [
    ("pad_token", [1, 96], "tensor 'pad_token' has shape [1, 96]; expected a 1-D shape"),
    ("all_x_embedder.2-1.weight", [1536], "tensor 'all_x_embedder.2-1.weight' has shape [1536]; expected a 2-D"),
    ("layers.0.attention.wk.weight", [2, 2304], "shapes and config do not make a valid Next-DiT (integer modulo"),
])
def test_shapes_that_give_no_architecture_are_refused(tmp_path, original, name, shape, problem):
    assert problem in refusal(tmp_path, edited(original, name, shape=shape))


# -- fuzz -------------------------------------------------------------------------------------
def flip(content: bytes, rng: random.Random) -> bytes:
    """One byte of the header JSON replaced, mostly by a JSON-significant character."""
    length = int.from_bytes(content[:8], "little")
    at = 8 + rng.randrange(length)
    value = rng.choice(b'0123456789[]{},:" -.eEIFUB\\' + bytes([rng.randrange(256)]))
    return content[:at] + bytes([value]) + content[at + 1:]


def json_edit(content: bytes, rng: random.Random) -> bytes:
    """One structural edit of a random tensor's entry, or of the metadata."""
    header, data = split(content)
    name = rng.choice(sorted(key for key in header if key != "__metadata__"))
    entry = header[name]
    begin, end = entry["data_offsets"]
    shift = rng.choice([1, 2, 4, 8, 4096])
    kind = rng.randrange(10)
    if kind == 0:
        entry["data_offsets"] = [end, begin]
    elif kind == 1:
        entry["data_offsets"] = [begin + rng.choice([-shift, shift]), end + rng.choice([-shift, 0, shift])]
    elif kind == 2:
        entry["data_offsets"] = [begin, len(data) + shift]
    elif kind == 3:
        entry["shape"] = [size + rng.choice([-1, 1]) for size in entry["shape"]]
    elif kind == 4:
        entry["shape"] = rng.choice([[], [math.prod(entry["shape"])], entry["shape"][::-1],
                                     [*entry["shape"], 1]])  # same byte count, not this tensor's shape
    elif kind == 5:
        entry["dtype"] = rng.choice(["F16", "BF16", "I32", "U32", "F64", "X9", None, 32])
    elif kind == 6:
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
    elif kind == 7:
        header[name] = rng.choice([None, [begin, end], "F32", {}])
    elif kind == 8:
        header["__metadata__"] = rng.choice([{"config": 1}, ["config"], "config", {"config": "{"}])
    else:
        data = data[:rng.randrange(len(data))]
    return join(header, data)


def fuzz_cases(original: bytes) -> Iterator[tuple[str, bytes]]:
    """(label, file content) of 320 damaged copies, made one at a time."""
    rng = random.Random(20240613)
    length = int.from_bytes(original[:8], "little")
    for i in range(128):
        yield f"flip {i}", flip(original, rng)
    for i in range(120):
        yield f"json edit {i}", json_edit(original, rng)
    for n in (0, 1, length - 1, length + 1, len(original), 2**63, 2**64 - 1, 100 * 2**20 + 1):
        yield f"header length {n}", n.to_bytes(8, "little") + original[8:]
    for cut in (*range(16), 8 + length - 1, 8 + length, 8 + length + 1, len(original) - 1,
                *(rng.randrange(len(original)) for _ in range(40))):
        yield f"truncated at {cut}", original[:cut]
    for n in (1, 7, 8, 4096):
        yield f"{n} bytes appended", original + rng.randbytes(n)


def library_accepts(path) -> bool:
    try:
        with safe_open(path, framework="pt") as handle:
            handle.keys()
    except SafetensorError:
        return False
    return True


def test_fuzzed_headers_and_truncations_load_exactly_or_raise_checkpoint_error(tmp_path, original, original_state):
    path = tmp_path / "fuzzed.safetensors"
    cases = loaded = 0
    for label, content in fuzz_cases(original):
        cases += 1
        path.write_bytes(content)
        try:
            read_safetensors_header(path)
            verdict = True
        except CheckpointError as error:  # our dtype list is shorter than the library's
            verdict = None if "which this loader does not read" in str(error) else False
        if verdict is not None:
            assert verdict == library_accepts(path), f"{label}: the safetensors library disagrees"
        try:
            model = load_model(path)
        except CheckpointError:
            continue
        state = model.state_dict()
        assert sorted(state) == sorted(original_state), label
        assert all(torch.equal(state[name], tensor) for name, tensor in original_state.items()), label
        loaded += 1
    assert cases == 320
    assert loaded > 0  # some flips (in the config metadata, say) leave a valid file: it must load exactly
