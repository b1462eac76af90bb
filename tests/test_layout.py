"""The rooms of the code and what each may import (docs/architecture.md), read from every module's imports (inside
functions too, relative ones resolved): the library never imports the app, the parallel backends, the demo, the
nodes, ComfyUI, Ray or yunchang; parallel and demo import only the library; nothing shipped imports training/,
benchmarks/ or tests/."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFY = ("comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "server", "nodes")
DEVELOPMENT = ("training", "benchmarks", "tests")
FORBIDDEN = {
    # room: imports it must not make (a name forbids the module and everything below it)
    "library": ("lumina_core.app", "lumina_core.parallel", "lumina_core.demo", *COMFY, "ray", "yunchang", *DEVELOPMENT),
    "parallel": ("lumina_core.app", "lumina_core.demo", *COMFY, *DEVELOPMENT),
    "demo": ("lumina_core.app", "lumina_core.parallel", *COMFY, "ray", "yunchang", *DEVELOPMENT),
    "app": (*COMFY, *DEVELOPMENT),
    "nodes": DEVELOPMENT,
    "entry": DEVELOPMENT,
    "training": ("benchmarks", "tests"),
}


def module_name(path: Path) -> str:
    """Dotted name of a file under the repository root (the root is the pack's package, named ``""`` here)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(name: str) -> str:
    """The room of a module of this repository."""
    if name in ("", "__main__"):
        return "entry"
    if name == "lumina_core.__main__" or name.startswith("lumina_core.app"):
        return "app"  # `python -m lumina_core` is the command line's entry point
    for prefix in ("lumina_core.parallel", "lumina_core.demo"):
        if name == prefix or name.startswith(prefix + "."):
            return prefix.split(".")[1]
    top = name.split(".")[0]
    return {"lumina_core": "library", "nodes": "nodes", "training": "training"}[top]


def imports(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module ``source`` imports (at any depth of the tree), relative imports resolved against module
    ``name``; ``from package import module`` names the module when ``known`` has it."""
    found = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}".lstrip(".") for alias in node.names
                         if f"{target}.{alias.name}".lstrip(".") in known)
    return {target for target in found if target}


def violations(name: str, targets: set[str]) -> list[str]:
    banned = FORBIDDEN[room(name)]
    return sorted(f"{name or '__init__'} imports {target}" for target in targets
                  if any(target == ban or target.startswith(ban + ".") for ban in banned))


def shipped_and_training_files() -> list[Path]:
    files = [ROOT / "__init__.py", *(ROOT / "lumina_core").rglob("*.py"), *(ROOT / "nodes").rglob("*.py"),
             *(ROOT / "training").rglob("*.py")]
    return [path for path in files if "__pycache__" not in path.parts]


FILES = shipped_and_training_files()
KNOWN = {module_name(path) for path in FILES}
PACKAGES = {module_name(path) for path in FILES if path.name == "__init__.py"}


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_module_keeps_to_its_room(path):
    name = module_name(path)
    assert not violations(name, imports(path.read_text(), name, name in PACKAGES, KNOWN))


def test_the_rooms_are_where_docs_say():
    rooms = {room(name) for name in KNOWN}
    assert rooms == {"entry", "library", "app", "parallel", "demo", "nodes", "training"}
    for gone in ("cli", "pipeline", "workflow", "parallel", "ray_ranks", "ray_worker", "train", "demo_data", "demo"):
        assert not (ROOT / "lumina_core" / f"{gone}.py").exists(), gone
    assert (ROOT / "lumina_core" / "demo" / "models" / "transformer.safetensors").is_file()


@pytest.mark.parametrize("name, source, expected", [
    ("lumina_core.sampling", "def f():\n    from .app.cli import main\n",
     ["lumina_core.sampling imports lumina_core.app.cli"]),
    ("lumina_core.sampling", "from . import demo\n", ["lumina_core.sampling imports lumina_core.demo"]),
    ("lumina_core.vae", "import ray\n", ["lumina_core.vae imports ray"]),
    ("lumina_core.parallel.sampler", "from ...nodes.native import x\n",
     ["lumina_core.parallel.sampler imports nodes.native"]),
    ("lumina_core.demo", "from ..app import pipeline\n",
     ["lumina_core.demo imports lumina_core.app", "lumina_core.demo imports lumina_core.app.pipeline"]),
    ("nodes.sampler", "from ..training.train import main\n", ["nodes.sampler imports training.train"]),
    ("lumina_core.app.cli", "from ..parallel import ParallelPlan\nfrom ..demo import DEMO_SCHEDULE\n", []),
    ("nodes.sampler", "from ..lumina_core.draft import decode_draft\nimport comfy.utils\n", []),
])
def test_the_rule_check_catches_a_forbidden_import(name, source, expected):
    assert violations(name, imports(source, name, name in PACKAGES, KNOWN)) == expected
