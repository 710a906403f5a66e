"""The tree is the architecture (docs/architecture.md): every import goes down a
layer, never up nor sideways between the parts of one layer, and never into
another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ctipipe"

# Each part of ctipipe and its layer: a part imports only from lower layers
# (and from itself).
LAYERS = {
    "core": 0,
    "relay": 1, "stages": 1,
    "pcap": 2, "replay": 2, "diff": 2, "demo": 2, "check": 2, "report": 2,
    "wrappers": 3,
    "commands": 4, "__main__": 4,
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _part(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if bits[0] == "ctipipe" and len(bits) > 1 else None


def test_every_part_has_a_layer():
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if path.name != "__init__.py" and not path.name.startswith((".", "__pycache__"))
             and (path.is_dir() or path.suffix == ".py")}
    assert parts == set(LAYERS)


def test_imports_go_down_and_never_into_private_names():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if mine == "__init__":
            continue
        for module, names in _imports(path):
            theirs = _part(module)
            if theirs is None or theirs == mine:
                continue
            if LAYERS[theirs] >= LAYERS[mine] and {mine, theirs} != {"commands", "__main__"}:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
            wrong += [f"{path.relative_to(PACKAGE)} imports {module}.{name}" for name in names
                      if name.startswith("_") and not name.startswith("__")]
    assert wrong == []
