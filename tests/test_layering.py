"""Imports go one way: base <- adapters <- core <- views <- presentation.

Every ``import`` in the package is parsed (module level, inside functions and under
``TYPE_CHECKING`` alike); a module may import convlens modules of its own layer or below.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import convlens

PACKAGE = Path(convlens.__file__).parent

#: Top-level names of the package, by layer (lowest first). ``convlens/__init__.py`` is the
#: public API and may import anything.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "images", "progress", "runtime", "render"}),
    ("adapters", {"models"}),
    ("core", {"capture", "gradients", "batching", "targets"}),
    ("views", {"activations", "cam", "filters", "scan", "evaluate"}),
    ("presentation", {"report", "web", "cli", "notebook"}),
]
LEVEL = {name: level for level, (_, names) in enumerate(LAYERS) for name in names}


def _top(parts: list[str]) -> str | None:
    """The package's top-level name a module path starts with (None for the package itself)."""
    return parts[0] if parts else None


def _imported(path: Path, root: Path) -> list[tuple[int, list[str]]]:
    """(line, module path inside convlens) of every convlens import in one file."""
    here = list(path.relative_to(root).with_suffix("").parts)
    package = here if path.name == "__init__.py" else here[:-1]
    if path.name == "__init__.py":
        package = here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if not node.module:  # `from . import x`: x is a submodule or a name
                    for alias in node.names:
                        found.append((node.lineno, [*target, alias.name]))
                    continue
            elif node.module and node.module.split(".")[0] == "convlens":
                target = node.module.split(".")[1:]
            else:
                continue
            found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "convlens":
                    found.append((node.lineno, parts[1:]))
    return found


def violations(root: Path) -> list[str]:
    """Every import of a higher layer, as ``file:line: a -> b``."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts == ["__init__"] or parts[0] == "__main__":
            continue
        mine = _top(parts)
        assert mine in LEVEL, f"{path}: put {mine!r} in a layer of tests/test_layering.py"
        for line, target in _imported(path, root):
            theirs = _top(target)
            if theirs is None or theirs == "__init__":
                bad.append(f"{path.relative_to(root)}:{line}: {mine} -> the convlens package")
            elif theirs not in LEVEL:
                continue  # e.g. `from . import x` of a name defined in the same package
            elif LEVEL[theirs] > LEVEL[mine]:
                bad.append(
                    f"{path.relative_to(root)}:{line}: {mine} ({LAYERS[LEVEL[mine]][0]}) imports "
                    f"{'.'.join(target)} ({LAYERS[LEVEL[theirs]][0]})"
                )
    return bad


def test_imports_point_down_the_layers():
    assert violations(PACKAGE) == []


def test_a_reversed_import_is_caught(tmp_path):
    copy = tmp_path / "convlens"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = copy / "models" / "base.py"
    base.write_text(base.read_text() + "\n\ndef _cam():\n    from ..cam import compute_cam\n")
    found = violations(copy)
    assert len(found) == 1 and "models/base.py" in found[0] and "cam" in found[0]
    notebook_free = copy / "activations" / "result.py"
    notebook_free.write_text(notebook_free.read_text() + "\nimport convlens.notebook\n")
    assert len(violations(copy)) == 2
