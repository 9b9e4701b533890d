"""Structure checks of packages/*/src: import cycles between a package's modules, file lengths;
and that the README's step 0 installs uv exactly as `.ci/run` does on a machine without it.

    python tools/check_structure.py            # both checks; exit 1 on a cycle or a long file
    python tools/check_structure.py --list     # also print every file's line count, longest first

Every import counts, including those inside functions and under `TYPE_CHECKING` (a cycle held
together by a deferred import is still a cycle a reader has to untangle). `from pkg import name`
counts as importing `pkg.name` when that is a module, else `pkg` (its `__init__`). Imports of a
package's own `__init__` are left out: `__init__` re-exports everything, so every module that
re-exports through it would form a trivial cycle.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500


def _modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `src` (a src layout)."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `module`)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's own modules that `module` imports anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node, is_package)
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            # `import a.b.c` imports a.b.c; keep the longest prefix that is one of our modules
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and "." in name:  # skip the top-level __init__
                targets.add(name)
    return targets


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def bootstrap_problems() -> list[str]:
    """The README's Quickstart must install uv with pip exactly as `.ci/run` does without uv."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.partition("## Quickstart")[2].partition("\n## ")[0]
    found = re.search(r'python3 -m pip install --quiet ("uv[^"]*")', ci)
    if found is None:
        return ['.ci/run: no `python3 -m pip install --quiet "uv..."` fallback']
    command = f"python3 -m pip install {found.group(1)}"
    if command not in quickstart:
        return [f"README.md Quickstart: step 0 `{command}` (as in .ci/run) is missing"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every file's line count")
    args = parser.parse_args()
    failed = False
    lengths: list[tuple[int, Path]] = []
    for src in sorted(ROOT.glob("packages/*/src")):
        known = _modules(src)
        graph = {name: imports_of(name, path, known) for name, path in known.items()}
        for cycle in find_cycles(graph):
            failed = True
            print(f"import cycle: {' <-> '.join(cycle)}")
        for path in known.values():
            lengths.append((len(path.read_text(encoding="utf-8").splitlines()), path))
    for problem in bootstrap_problems():
        failed = True
        print(problem)
    lengths.sort(reverse=True)
    for count, path in lengths:
        if count > MAX_LINES:
            failed = True
            print(f"too long: {path.relative_to(ROOT)} has {count} lines (at most {MAX_LINES})")
    if args.list:
        for count, path in lengths:
            print(f"{count:6d} {path.relative_to(ROOT)}")
    if not failed:
        print(f"ok: no import cycles, no file over {MAX_LINES} lines ({len(lengths)} files)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
