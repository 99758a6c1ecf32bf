"""The package graph: one namespace, imports at the top, no cycles, no upward imports.

    python tests/test_layering.py            # the graph between packages, and any cycle
    python tests/test_layering.py --modules  # every module-level edge between our modules

Layers, lowest first: the `zooens` core <- `zoo` <- `selection` <- `ensemble` <- `service`;
`migrations` sees only the ORM models (and the core's settings). A module may import its own
layer and the ones below. Module-level imports form no cycle (`if TYPE_CHECKING:` blocks do
not count: they never run). An import inside a function body is allowed for an optional
extra, for a documented environment step, and in CLI command bodies (start-up time).

The script reads the source with `ast` (it imports nothing of ours), maps the repository's
folders to module names through pyproject's `package-dir`, and also reads the pre-namespace
layout (bare `import zoo`), so `git worktree add /tmp/old <commit>` and running it there
draws the old graph for comparison.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "zooens"
SUBPACKAGES = ("zoo", "selection", "ensemble", "service", "migrations")
LAYERS = {NAMESPACE: 0, "zoo": 1, "selection": 2, "ensemble": 3, "service": 4, "migrations": 5}
# What migrations may import: the ORM models, and the core below everything.
MIGRATIONS_MAY_IMPORT = ("zooens.service.db.models",)
# Function-local imports that are allowed anywhere, each with its reason.
OPTIONAL_EXTRAS = {
    "ray": "optional extra zooens[ray]",
    "tensorflow_datasets": "optional extra zooens[vtab]",
    "tensorflow": "optional extra zooens[vtab]",
    "faiss": "imported after OpenBLAS' core type is set (zooens.selection.knn)",
    "triton": "imported before TensorFlow, which segfaults it otherwise (zooens.selection.vtab.sources._tfds)",
}
CLI_PACKAGE = "zooens.service.cli"
FACADE = NAMESPACE
"""`zooens/__init__.py`: the timm-style public functions (fit, load, list_models, load_dataset) import their
layer on first use, so `import zooens` stays light; its function-local imports may reach any layer."""


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (ours: resolved to a module that exists)
    line: int
    local: bool  # inside a function body
    type_checking: bool  # inside `if TYPE_CHECKING:`
    bare: bool = False  # spelled without the namespace (`import zoo`)


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Module prefix -> folder, from pyproject's `package-dir` (or the old flat layout)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    mapping = config.get("tool", {}).get("setuptools", {}).get("package-dir") or {}
    if mapping:
        return {name: root / folder for name, folder in mapping.items()}
    dirs = {NAMESPACE: root / NAMESPACE}
    dirs.update({f"{NAMESPACE}.{sub}": root / sub for sub in SUBPACKAGES})
    return dirs


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Every module of ours: dotted name -> file."""
    modules: dict[str, Path] = {}
    for prefix, folder in package_dirs(root).items():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "__pycache__" in rel.parts:
                continue
            if not (folder / Path(*rel.parts[:-1]) / "__init__.py").exists():
                continue  # a script in a folder that is not a package
            modules[".".join([prefix, *parts])] = path
    return modules


def canonical(name: str) -> str:
    """`zoo.x` (the old bare layout) -> `zooens.zoo.x`; our names unchanged."""
    head = name.split(".", 1)[0]
    return f"{NAMESPACE}.{name}" if head in SUBPACKAGES else name


def is_ours(name: str) -> bool:
    return name == NAMESPACE or name.startswith(NAMESPACE + ".") or name.split(".", 1)[0] in SUBPACKAGES


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of `name` that is one of our modules."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, local: bool, type_checking: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, local, True)
            for child in node.orelse:
                visit(child, local, type_checking)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = canonical(alias.name)
                if is_ours(alias.name):
                    target = _resolve(target, modules)
                bare = alias.name.split(".", 1)[0] in SUBPACKAGES
                found.append(Import(module, target, node.lineno, local, type_checking, bare))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = canonical(node.module or "")
            bare = not node.level and (node.module or "").split(".", 1)[0] in SUBPACKAGES
            if is_ours(name):
                for alias in node.names:
                    full = f"{name}.{alias.name}"
                    target = full if full in modules else _resolve(name, modules)
                    found.append(Import(module, target, node.lineno, local, type_checking, bare))
            else:
                found.append(Import(module, name, node.lineno, local, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, local, type_checking)

    for stmt in tree.body:
        visit(stmt, False, False)
    return found


def all_imports(root: Path = ROOT) -> tuple[dict[str, Path], list[Import]]:
    modules = discover(root)
    edges = [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]
    return modules, edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else NAMESPACE


def package_of(module: str, depth: int = 2) -> str:
    return ".".join(module.split(".")[:depth])


def cycles(nodes: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        if a != b:
            graph[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def runtime_edges(modules: dict[str, Path], edges: list[Import]) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in edges if not e.type_checking and not e.local and e.target in modules]


def violations(modules: dict[str, Path], edges: list[Import], root: Path = ROOT) -> dict[str, list[str]]:
    """Every breach of the rules, by rule."""
    found: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        where = f"{modules[e.source].relative_to(root)}:{e.line}"
        if e.source == FACADE and e.local and not e.bare:
            continue
        if e.target in modules or is_ours(e.target):
            if e.bare:
                found["bare import"].append(f"{where} imports {e.target}")
            src, dst = layer_of(e.source), layer_of(e.target)
            if src == "migrations":
                if dst not in (NAMESPACE, "migrations") and not e.target.startswith(MIGRATIONS_MAY_IMPORT):
                    found["upward import"].append(f"{where}: migrations import {e.target}")
            elif dst == "migrations" or LAYERS[dst] > LAYERS[src]:
                found["upward import"].append(f"{where}: {e.source} ({src}) imports {e.target} ({dst})")
            if e.local and not e.type_checking and not e.source.startswith(CLI_PACKAGE):
                found["function-local import"].append(f"{where}: {e.source} imports {e.target} in a function")
        elif e.local and not e.type_checking:
            top = e.target.split(".", 1)[0]
            if top not in OPTIONAL_EXTRAS and not e.source.startswith(CLI_PACKAGE):
                found["function-local import"].append(f"{where}: {e.source} imports {e.target} in a function")
    for component in cycles(sorted(modules), runtime_edges(modules, edges)):
        found["import cycle"].append(" <-> ".join(component))
    return dict(found)


# --------------------------------------------------------------------------------------
# The tests


def test_every_module_parses_and_is_found() -> None:
    modules, _ = all_imports()
    assert "zooens.service.cli" in modules and "zooens.zoo" in modules


def test_no_bare_imports_of_our_packages() -> None:
    modules, edges = all_imports()
    assert violations(modules, edges).get("bare import", []) == []


def test_no_upward_imports() -> None:
    modules, edges = all_imports()
    assert violations(modules, edges).get("upward import", []) == []


def test_no_function_local_imports_outside_the_allowed_cases() -> None:
    modules, edges = all_imports()
    assert violations(modules, edges).get("function-local import", []) == []


def test_no_import_cycles() -> None:
    modules, edges = all_imports()
    assert violations(modules, edges).get("import cycle", []) == []


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The rules fire on a planted cycle, an upward import, a local import and a bare import."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "zooens" = "zooens", "zooens.zoo" = "zoo", "zooens.service" = "service" }\n'
    )
    for folder in ("zooens", "zoo", "service"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "zoo" / "a.py").write_text("from zooens.zoo import b\nfrom zooens.service import s\n")
    (tmp_path / "zoo" / "b.py").write_text("from zooens.zoo import a\n\ndef f():\n    import zooens.zoo.a\n")
    (tmp_path / "service" / "s.py").write_text("import zoo\n")
    modules, edges = all_imports(tmp_path)
    found = violations(modules, edges, tmp_path)
    assert found["import cycle"] == ["zooens.zoo.a <-> zooens.zoo.b"]
    assert len(found["upward import"]) == 1 and "zooens.service.s" in found["upward import"][0]
    assert len(found["function-local import"]) == 1 and "b.py:4" in found["function-local import"][0]
    assert len(found["bare import"]) == 1 and "s.py:1" in found["bare import"][0]


# --------------------------------------------------------------------------------------
# The graph, for people


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="a checkout (default: this one)")
    parser.add_argument("--modules", action="store_true", help="module-level edges, not packages")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    modules, edges = all_imports(root)
    ours = [e for e in edges if e.target in modules]
    local = [e for e in ours if e.local]
    print(
        f"{len(modules)} modules; {len(ours)} imports of our own modules, {len(local)} inside functions; "
        f"{sum(1 for e in edges if e.local)} function-local imports in all"
    )
    depth = 2 if not args.modules else 99
    counts: Counter[tuple[str, str]] = Counter()
    for e in ours:
        if e.type_checking:
            continue
        a, b = package_of(e.source, depth), package_of(e.target, depth)
        if a != b:
            counts[(a, b)] += 1
    print("\npackage graph (importer -> imported: number of import statements):")
    for (a, b), n in sorted(counts.items()):
        print(f"  {a} -> {b}: {n}")
    print("\nmodule-level import cycles:")
    found_cycles = cycles(sorted(modules), runtime_edges(modules, edges))
    for component in found_cycles:
        print("  " + " <-> ".join(component))
    if not found_cycles:
        print("  none")
    hidden = cycles(sorted(modules), [(e.source, e.target) for e in ours if not e.type_checking])
    print("\ncycles once function-local imports are counted:")
    for component in hidden:
        print("  " + " <-> ".join(component))
    if not hidden:
        print("  none")
    found = violations(modules, edges, root)
    for rule, items in sorted(found.items()):
        if rule == "import cycle":
            continue
        print(f"\n{rule}: {len(items)}")
        for item in items[:200]:
            print("  " + item)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
