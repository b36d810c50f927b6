"""Which of the project's source files a script runs: its import closure, read from the code with `ast`.

Every import counts, at module level or inside a function (lazy imports run too), and so does
`importlib.import_module("...")` with a literal name. Importing `a.b.c` also runs `a/__init__.py` and
`a/b/__init__.py`, so those are in the closure. DVC's `deps` of a stage must cover this closure (a test checks
it), and the `train` stage fingerprints it so that a code change starts a fresh run instead of a resume.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "semivl_edge"
SRC = Path(__file__).resolve().parents[1]  # the folder that holds the package (src/)
# Package files that a module reads at run time (not imports): they are part of what its stage depends on.
PACKAGE_DATA = {"semivl_edge/model/clip.py": ("semivl_edge/model/configs",)}


def module_file(name: str, src: Path = SRC) -> Path | None:
    """The file of a project module or package, or None when `name` is not the project's."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(tree: ast.AST, current: str, is_package: bool) -> set[str]:
    """Absolute names of every module this file may import (a `from x import y` may name module x.y)."""
    names: set[str] = set()
    package = current if is_package else current.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def import_closure(script: str | Path, src: Path = SRC) -> set[Path]:
    """The project source files that running `script` (a stage script or a module file) imports, plus the
    package data those files read (PACKAGE_DATA)."""
    script = Path(script).resolve()
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        inside = path.is_relative_to(src)
        current = _module_name(path, src) if inside else ""
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imported_names(tree, current, path.name == "__init__.py"):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # parents run their __init__ first
                found = module_file(".".join(parts[:depth]), src)
                if found is not None and found not in seen:
                    todo.append(found)
    data = {src / extra for path in seen if path.is_relative_to(src)
            for extra in PACKAGE_DATA.get(path.relative_to(src).as_posix(), ())}
    return seen | data
