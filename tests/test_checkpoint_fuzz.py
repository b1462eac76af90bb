"""Damaged safetensors checkpoints: every corrupt header or truncation is a CheckpointError naming the
tensor and the problem, never another exception and never a model with garbage weights.
"""

import json

import pytest

from lumina_core.checkpoint import CheckpointError, load_model
from conftest import PARITY

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
    ({"shape": [96, -96]}, "has shape [96, -96]; expected a list of integers"),
    ({"data_offsets": [0]}, "has data_offsets [0]; expected [begin, end]"),
    ({"data_offsets": None}, "has data_offsets None; expected [begin, end]"),
])
def test_entry_that_disagrees_with_itself_is_refused(tmp_path, original, change, problem):
    assert f"tensor {WQ!r} {problem}" in refusal(tmp_path, edited(original, WQ, **change))


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
