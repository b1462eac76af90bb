"""The registry icon: pyproject's [tool.comfy] Icon is a URL the registry can fetch (the repository's raw file
address of a committed PNG), the image fits the registry's limits (at most 800 x 400 pixels; ours is square), and
scripts/icon.py draws exactly the committed file."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("icon", ROOT / "scripts" / "icon.py")
icon = importlib.util.module_from_spec(spec)
spec.loader.exec_module(icon)


def pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_icon_is_the_raw_address_of_a_committed_png():
    config = pyproject()
    repository = config["project"]["urls"]["Repository"]
    owner_and_name = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", repository).group(1)
    url = config["tool"]["comfy"]["Icon"]
    prefix = f"https://raw.githubusercontent.com/{owner_and_name}/main/"
    assert url.startswith(prefix), f"Icon {url!r} is not a raw file address of {repository}"
    path = ROOT / url.removeprefix(prefix)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == image.height and image.height <= 400


def test_the_script_draws_the_committed_icon():
    with Image.open(ROOT / "docs" / "icon.png") as image:
        committed = np.asarray(image.convert("RGB"))
    assert np.array_equal(icon.draw(committed.shape[0]), committed)
