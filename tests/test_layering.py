"""The package graph: one namespace, imports at the top, no cycles, no upward imports.

    python tests/test_layering.py                 # the layers and packages drawn, cycles, violations
    python tests/test_layering.py --modules       # every edge between our modules
    python tests/test_layering.py /path/to/tree   # the same for another checkout

Layers, lowest first: the `zooens` core <- `zoo` <- `selection` <- `ensemble` <- `pipeline` <-
`service`; `migrations` sees only the ORM models (and the core's settings). A module may import
its own layer and the ones below, wherever the import statement is (at the top, in a function,
under `if TYPE_CHECKING:`), so nothing below `service` imports `pipeline` or `service`. On top
of the layers:
- `zooens.pipeline` speaks no SQL and no HTTP: it never imports sqlalchemy, fastapi, starlette,
  uvicorn, httpx or `zooens.service`, at module level, in a function or for type checking;
- under `zooens.service`, the `api` package and the `dashboard` package never import each other;
- an import inside a function body is allowed only for an optional extra, for a documented
  environment step, in CLI command bodies (start-up time), and in the `zooens` facade (whose
  function-local and `if TYPE_CHECKING:` imports may reach any layer: it imports on first use).

Cycles are checked twice: among module-level imports, and counting function-local imports too
(an edge is an edge wherever the import statement is; only `if TYPE_CHECKING:` blocks do not
count, they never run). Each time between modules and between packages, the packages cut at
every depth of the tree: the layers as the package graph draws them (`zooens.service`, and each
module of the core on its own, the facade `zooens/__init__.py` too), then what each layer holds
(`zooens.service.api`, `zooens.service.library`), and so on down. A cycle is reported with its
members and one loop through them, each step with the file and line of its import.

The script reads the source with `ast` (it imports nothing of ours), maps the repository's
folders to module names through pyproject's `package-dir`, and also reads the pre-namespace
layout (bare `import zoo`), so `git worktree add /tmp/old <commit>` and running it there
draws the old graph for comparison.
"""

from __future__ import annotations

import argparse
import ast
import functools
import sys
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "zooens"
SUBPACKAGES = ("zoo", "selection", "ensemble", "pipeline", "service", "migrations")
LAYERS = {NAMESPACE: 0, "zoo": 1, "selection": 2, "ensemble": 3, "pipeline": 4, "service": 5, "migrations": 6}
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
LAZY_FOR_START_UP = {
    ("zooens.pipeline.params", "zooens.ensemble"): "the CLI reads JobParams' fields when it starts, and the "
    "ensemble layer brings torch: its strategy registry and sweep checks are imported on first use",
}
"""Function-local imports of our own modules that keep a light module light, each with its reason."""
FACADE = NAMESPACE
"""`zooens/__init__.py`: the timm-style public functions (fit, load, list_models, load_dataset) import their
layer on first use, so `import zooens` stays light; its function-local imports may reach any layer, and so may
its `if TYPE_CHECKING:` imports (the annotations of those functions; they never run)."""
PIPELINE = "zooens.pipeline"
# What the pipeline never imports: no SQL, no HTTP, not the service that speaks them.
PIPELINE_MAY_NOT_IMPORT = ("sqlalchemy", "fastapi", "starlette", "uvicorn", "httpx", "zooens.service")
# Two packages of the service that never import each other.
APART = ("zooens.service.api", "zooens.service.dashboard")

# The rules whose findings are cycles.
MODULE_CYCLE = "import cycle"
MODULE_CYCLE_LOCAL = "import cycle, counting function-local imports"
PACKAGE_CYCLE = "package cycle"
PACKAGE_CYCLE_LOCAL = "package cycle, counting function-local imports"
CYCLE_RULES = (MODULE_CYCLE, MODULE_CYCLE_LOCAL, PACKAGE_CYCLE, PACKAGE_CYCLE_LOCAL)


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


def within(name: str, prefix: str) -> bool:
    """`name` is the module or package `prefix` or lies under it."""
    return name == prefix or name.startswith(prefix + ".")


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
    return sorted(out)


def runtime_edges(modules: dict[str, Path], edges: list[Import], *, local: bool = False) -> list[Import]:
    """The imports of our own modules that run: never those under `if TYPE_CHECKING:`; those inside
    a function body only when `local`."""
    return [e for e in edges if e.target in modules and not e.type_checking and (local or not e.local)]


def _loop(component: list[str], pairs: set[tuple[str, str]]) -> list[str]:
    """A shortest loop through the component's first member: [first, ..., first]."""
    members = set(component)
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(pairs):
        if a in members and b in members and a != b:
            graph[a].append(b)
    start = component[0]
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in graph[node]:
            if child == start:
                path = [node]  # back from `node` to the start, then turned round
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return [start]  # not reached for a strongly connected component


def cycle_reports(
    modules: dict[str, Path],
    edges: list[Import],
    root: Path = ROOT,
    depth: int | None = None,
    skip: set[frozenset[str]] | None = None,
) -> list[tuple[list[str], str]]:
    """Each cycle among `edges` (between modules, or between packages cut at `depth`, `package_of`),
    but those whose members are in `skip`: its members, and a line naming them and one loop through
    them, each step with where its import statement is."""

    def node(module: str) -> str:
        return module if depth is None else package_of(module, depth)

    witness: dict[tuple[str, str], Import] = {}
    for e in sorted(edges, key=lambda e: (e.local, e.source, e.line)):  # module-level imports shown first
        a, b = node(e.source), node(e.target)
        if a != b:
            witness.setdefault((a, b), e)
    out = []
    for component in cycles(sorted({node(m) for m in modules}), list(witness)):
        if skip and frozenset(component) in skip:
            continue
        loop = _loop(component, set(witness))
        steps = []
        for a, b in zip(loop, loop[1:], strict=False):
            e = witness[(a, b)]
            where = f"{modules[e.source].relative_to(root)}:{e.line}{', in a function' if e.local else ''}"
            via = f"{e.source} imports {e.target}, " if depth is not None else ""
            steps.append(f"{a} -> {b} ({via}{where})")
        text = f"{' <-> '.join(component)}; e.g. {'; '.join(steps)}"
        members = set(component)
        inside = [
            f"{modules[e.source].relative_to(root)}:{e.line} {e.source} -> {e.target}"
            for e in edges
            if e.local and node(e.source) in members and node(e.target) in members and node(e.source) != node(e.target)
        ]
        if inside:
            text += f"; the function-local imports inside it: {', '.join(dict.fromkeys(inside))}"
        out.append((component, text))
    return out


def all_cycles(modules: dict[str, Path], edges: list[Import], root: Path = ROOT) -> dict[str, list[str]]:
    """The four cycle checks: between modules and between packages, among module-level imports and
    counting function-local imports. Packages are cut at every depth, from the layers (`zooens.service`;
    each module of the core is its own node) down; a cycle with the same members as one already told
    (between modules, or at a shallower depth) is not told again."""
    deepest = max((len(m.split(".")) for m in modules), default=2)
    found: dict[str, list[str]] = {}
    for local, module_rule, package_rule in (
        (False, MODULE_CYCLE, PACKAGE_CYCLE),
        (True, MODULE_CYCLE_LOCAL, PACKAGE_CYCLE_LOCAL),
    ):
        runs = runtime_edges(modules, edges, local=local)
        reports = cycle_reports(modules, runs, root)
        found[module_rule] = [text for _, text in reports]
        seen = {frozenset(members) for members, _ in reports}
        found[package_rule] = []
        for depth in range(2, deepest):
            for members, text in cycle_reports(modules, runs, root, depth, seen):
                seen.add(frozenset(members))
                found[package_rule].append(text)
    return found


def is_upward(e: Import) -> bool:
    """An import of one of our modules in a layer above the importer's (from migrations: of anything
    but the ORM models and the core)."""
    src, dst = layer_of(e.source), layer_of(e.target)
    if src == "migrations":
        return dst not in (NAMESPACE, "migrations") and not e.target.startswith(MIGRATIONS_MAY_IMPORT)
    return dst == "migrations" or LAYERS[dst] > LAYERS[src]


def violations(modules: dict[str, Path], edges: list[Import], root: Path = ROOT) -> dict[str, list[str]]:
    """Every breach of the rules, by rule."""
    found: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        where = f"{modules[e.source].relative_to(root)}:{e.line}"
        how = " in a function" if e.local else " for type checking" if e.type_checking else ""
        if within(e.source, PIPELINE) and any(within(e.target, name) for name in PIPELINE_MAY_NOT_IMPORT):
            found["pipeline imports SQL or HTTP"].append(f"{where}: {e.source} imports {e.target}{how}")
        for here, there in (APART, APART[::-1]):
            if within(e.source, here) and within(e.target, there):
                found["service.api and service.dashboard import each other"].append(
                    f"{where}: {e.source} imports {e.target}{how}"
                )
        if e.source == FACADE and (e.local or e.type_checking) and not e.bare:
            continue
        if e.target in modules or is_ours(e.target):
            if e.bare:
                found["bare import"].append(f"{where} imports {e.target}")
            if is_upward(e):
                src, dst = layer_of(e.source), layer_of(e.target)
                found["upward import"].append(f"{where}: {e.source} ({src}) imports {e.target} ({dst}){how}")
            lazy = (e.source, e.target) in LAZY_FOR_START_UP
            if e.local and not e.type_checking and not e.source.startswith(CLI_PACKAGE) and not lazy:
                found["function-local import"].append(f"{where}: {e.source} imports {e.target} in a function")
        elif e.local and not e.type_checking:
            top = e.target.split(".", 1)[0]
            if top not in OPTIONAL_EXTRAS and not e.source.startswith(CLI_PACKAGE):
                found["function-local import"].append(f"{where}: {e.source} imports {e.target} in a function")
    for rule, reports in all_cycles(modules, edges, root).items():
        if reports:
            found[rule] = reports
    return {rule: list(dict.fromkeys(items)) for rule, items in found.items()}  # `import a, b`: one line


# --------------------------------------------------------------------------------------
# The tests


@functools.cache
def _this_tree() -> tuple[dict[str, Path], list[Import]]:
    """This checkout's modules and imports, read once for all the tests below."""
    return all_imports()


def test_every_module_parses_and_is_found() -> None:
    modules, _ = _this_tree()
    assert "zooens.service.cli" in modules and "zooens.zoo" in modules and "zooens.pipeline" in modules


def test_no_bare_imports_of_our_packages() -> None:
    modules, edges = _this_tree()
    assert violations(modules, edges).get("bare import", []) == []


def test_no_upward_imports() -> None:
    modules, edges = _this_tree()
    assert violations(modules, edges).get("upward import", []) == []


def test_no_function_local_imports_outside_the_allowed_cases() -> None:
    modules, edges = _this_tree()
    assert violations(modules, edges).get("function-local import", []) == []


def test_the_pipeline_speaks_no_sql_and_no_http() -> None:
    modules, edges = _this_tree()
    assert violations(modules, edges).get("pipeline imports SQL or HTTP", []) == []


def test_the_service_api_and_dashboard_do_not_import_each_other() -> None:
    modules, edges = _this_tree()
    assert violations(modules, edges).get("service.api and service.dashboard import each other", []) == []


def test_no_module_cycles_among_module_level_imports() -> None:
    modules, edges = _this_tree()
    assert all_cycles(modules, edges)[MODULE_CYCLE] == []


def test_no_package_cycles_among_module_level_imports() -> None:
    modules, edges = _this_tree()
    assert all_cycles(modules, edges)[PACKAGE_CYCLE] == []


def test_no_module_cycles_counting_function_local_imports() -> None:
    modules, edges = _this_tree()
    assert all_cycles(modules, edges)[MODULE_CYCLE_LOCAL] == []


def test_no_package_cycles_counting_function_local_imports() -> None:
    modules, edges = _this_tree()
    assert all_cycles(modules, edges)[PACKAGE_CYCLE_LOCAL] == []


def _plant(root: Path, files: dict[str, str]) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """A tree of every layer with `files` (path -> source) in it, and what the rules find there."""
    root.mkdir(parents=True, exist_ok=True)
    dirs = {NAMESPACE: NAMESPACE, **{f"{NAMESPACE}.{sub}": sub for sub in SUBPACKAGES}}
    table = ", ".join(f'"{name}" = "{folder}"' for name, folder in dirs.items())
    (root / "pyproject.toml").write_text(f"[tool.setuptools]\npackage-dir = {{ {table} }}\n")
    for folder in dirs.values():
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text("")
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent != Path(".") and not (root / parent / "__init__.py").exists():
                (root / parent / "__init__.py").write_text("")
        path.write_text(source)
    modules, edges = all_imports(root)
    return modules, violations(modules, edges, root)


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The rules fire on a planted cycle, an upward import, a local import and a bare import."""
    _, found = _plant(
        tmp_path,
        {
            "zoo/a.py": "from zooens.zoo import b\nfrom zooens.service import s\n",
            "zoo/b.py": "from zooens.zoo import a\n\ndef f():\n    import zooens.zoo.a\n",
            "service/s.py": "import zoo\n",
        },
    )
    assert [c.split(";")[0] for c in found[MODULE_CYCLE]] == ["zooens.zoo.a <-> zooens.zoo.b"]
    assert "zoo/a.py:1" in found[MODULE_CYCLE][0] and "zoo/b.py:1" in found[MODULE_CYCLE][0]
    assert len(found["upward import"]) == 1 and "zooens.service.s" in found["upward import"][0]
    assert len(found["function-local import"]) == 1 and "b.py:4" in found["function-local import"][0]
    assert len(found["bare import"]) == 1 and "s.py:1" in found["bare import"][0]
    # a and b share their package; zoo -> service -> zoo is a cycle between packages
    assert [c.split(";")[0] for c in found[PACKAGE_CYCLE]] == ["zooens.service <-> zooens.zoo"]


def test_the_pipeline_layer_sits_between_ensemble_and_service(tmp_path: Path) -> None:
    _, found = _plant(
        tmp_path,
        {
            "pipeline/plan.py": "from zooens.ensemble import e\nfrom zooens import errors\nfrom zooens.zoo import z\n",
            "ensemble/e.py": "def f():\n    from zooens.pipeline import plan\n",
            "ensemble/g.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from zooens.service import s\n",
            "service/s.py": "from zooens.pipeline import plan\n",
            "selection/t.py": "import zooens.pipeline.plan\n",
            "migrations/m.py": "from zooens.pipeline import plan\n",
            "zooens/errors.py": "",
            "zoo/z.py": "",
        },
    )
    upward = found["upward import"]
    assert len(upward) == 4, upward
    assert any("ensemble/e.py:2" in u and "in a function" in u for u in upward)
    assert any("ensemble/g.py:3" in u and "for type checking" in u for u in upward)
    assert any("selection/t.py:1" in u for u in upward) and any("migrations/m.py:1" in u for u in upward)
    assert not any("pipeline/" in u or "service/s.py" in u for u in upward)


def test_the_pipeline_rule(tmp_path: Path) -> None:
    """No SQL, no HTTP, no service in the pipeline: at the top, in a function, for type checking."""
    _, found = _plant(
        tmp_path,
        {
            "pipeline/a.py": "import sqlalchemy.orm\nfrom fastapi import FastAPI\nimport sqlalchemy_utils\n",
            "pipeline/b.py": "def f():\n    import httpx\n    from starlette.requests import Request\n",
            "pipeline/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from zooens.service.s import X\n"
                "def g():\n    import uvicorn\n"
            ),
            "service/s.py": "import sqlalchemy\nimport httpx\n",
            "ensemble/e.py": "import httpx\n",
        },
    )
    rule = found["pipeline imports SQL or HTTP"]
    assert sorted(r.split(":", 2)[0] + ":" + r.split(":", 2)[1] for r in rule) == [
        "pipeline/a.py:1",
        "pipeline/a.py:2",
        "pipeline/b.py:2",
        "pipeline/b.py:3",
        "pipeline/c.py:3",
        "pipeline/c.py:5",
    ], rule


def test_the_api_and_the_dashboard_stay_apart(tmp_path: Path) -> None:
    _, found = _plant(
        tmp_path,
        {
            "service/api/main.py": "from zooens.service.dashboard import router\nfrom zooens.service import reports\n",
            "service/api/routes/zoo.py": "def f():\n    from zooens.service.dashboard.router import page\n",
            "service/dashboard/router.py": "from zooens.service.api.middleware import token\n",
            "service/api/middleware.py": "",
            "service/reports.py": "from zooens.service.api_tools import x\n",
            "service/api_tools.py": "",
        },
    )
    rule = found["service.api and service.dashboard import each other"]
    assert len(rule) == 3, rule
    assert [r.split(":")[0] for r in rule] == [
        "service/api/main.py",
        "service/api/routes/zoo.py",
        "service/dashboard/router.py",
    ]


def test_cycles_through_function_local_imports(tmp_path: Path) -> None:
    """A cycle closed by a function-local import is not a module-level cycle, but it is a cycle; a
    `TYPE_CHECKING` import closes none. Packages: a cycle between folders, though no module cycles."""
    _, found = _plant(
        tmp_path,
        {
            "ensemble/p.py": "from zooens.ensemble import q\n",
            "ensemble/q.py": "def f():\n    from zooens.ensemble import p\n",
            "ensemble/r.py": "from zooens.ensemble import s\n",
            "ensemble/s.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from zooens.ensemble import r\n",
            "service/api/one.py": "from zooens.service.jobs import two\n",
            "service/jobs/two.py": "",
            "service/jobs/three.py": "def f():\n    from zooens.service.api import four\n",
            "service/api/four.py": "",
        },
    )
    assert MODULE_CYCLE not in found and PACKAGE_CYCLE not in found
    local = found[MODULE_CYCLE_LOCAL]
    assert len(local) == 1 and local[0].startswith("zooens.ensemble.p <-> zooens.ensemble.q;"), local
    assert "ensemble/q.py:2, in a function" in local[0] and "ensemble/p.py:1" in local[0]
    packages = found[PACKAGE_CYCLE_LOCAL]
    assert len(packages) == 1 and packages[0].startswith("zooens.service.api <-> zooens.service.jobs;"), packages
    assert "zooens.service.api.one imports zooens.service.jobs.two" in packages[0]
    assert "zooens.service.jobs.three imports zooens.service.api.four, service/jobs/three.py:2" in packages[0]


def test_the_facade_and_the_core_modules_are_separate_package_nodes(tmp_path: Path) -> None:
    """The facade reaches every layer on first use (and names them for type checking) and every layer
    imports `zooens.errors`: no cycle, no upward import. A layer importing the facade itself
    (`from zooens import __version__`) closes a cycle."""
    _, found = _plant(
        tmp_path,
        {
            "zooens/__init__.py": (
                "from typing import TYPE_CHECKING\nfrom zooens.errors import E\n"
                "if TYPE_CHECKING:\n    import zooens.service.lib\n\n"
                "def fit():\n    from zooens.service.lib import fit\n"
            ),
            "zooens/errors.py": "",
            "zooens/settings.py": "import typing\nif typing.TYPE_CHECKING:\n    import zooens.service.lib\n",
            "service/lib.py": "from zooens.errors import E\n",
        },
    )
    assert not set(CYCLE_RULES) & set(found), found
    assert [u.split(":")[0] for u in found["upward import"]] == ["zooens/settings.py"]  # the facade only
    _, found = _plant(
        tmp_path / "again",
        {
            "zooens/__init__.py": "def load():\n    from zooens.ensemble import bundle\n",
            "ensemble/bundle.py": "from zooens import __version__\n",
        },
    )
    assert MODULE_CYCLE not in found
    assert found[MODULE_CYCLE_LOCAL][0].startswith("zooens <-> zooens.ensemble.bundle;")
    assert found[PACKAGE_CYCLE_LOCAL][0].startswith("zooens <-> zooens.ensemble;")


# --------------------------------------------------------------------------------------
# The graph, for people


def draw_layers(modules: dict[str, Path], edges: list[Import]) -> list[str]:
    """The layers in a line, lowest first, then each layer's imports of the others: how many import
    statements at module level, in functions, under `if TYPE_CHECKING:`; UPWARD where the rules say no."""
    chain = "  <-  ".join(
        f"{NAMESPACE} (core)" if layer == NAMESPACE else layer for layer in LAYERS if layer != "migrations"
    )
    lines = [f"  {chain};  migrations -> {', '.join(MIGRATIONS_MAY_IMPORT)} and the core"]
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    wrong: set[tuple[str, str]] = set()
    for e in edges:
        if e.target not in modules:
            continue
        pair = (layer_of(e.source), layer_of(e.target))
        if pair[0] == pair[1]:
            continue
        counts[pair]["for type checking" if e.type_checking else "in functions" if e.local else ""] += 1
        if is_upward(e) and not (e.source == FACADE and (e.local or e.type_checking)):
            wrong.add(pair)
    width = max(len(layer) for layer in LAYERS)
    for src in LAYERS:
        parts = []
        for dst in LAYERS:
            if (src, dst) not in counts:
                continue
            how = counts[(src, dst)]
            told = " + ".join(f"{n} {where}".strip() for where, n in sorted(how.items()))
            note = " (UPWARD)" if (src, dst) in wrong else " (the facade, on first use)" if src == NAMESPACE else ""
            parts.append(f"{dst} {told}{note}")
        present = any(layer_of(m) == src for m in modules)
        told = ", ".join(parts) if parts else "nothing of ours" if present else "(no such layer in this tree)"
        lines.append(f"  {src:<{width}} -> {told}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="a checkout (default: this one)")
    parser.add_argument("--modules", action="store_true", help="every edge between modules, not packages")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    modules, edges = all_imports(root)
    ours = [e for e in edges if e.target in modules]
    local = [e for e in ours if e.local]
    print(
        f"{len(modules)} modules; {len(ours)} imports of our own modules, {len(local)} inside functions; "
        f"{sum(1 for e in edges if e.local)} function-local imports in all"
    )
    print("\nthe layers, lowest first (importer -> imported: import statements, at module level unless told):")
    for line in draw_layers(modules, edges):
        print(line)
    depth = 2 if not args.modules else 99
    counts: Counter[tuple[str, str]] = Counter()
    for e in ours:
        if e.type_checking:
            continue
        a, b = package_of(e.source, depth), package_of(e.target, depth)
        if a != b:
            counts[(a, b)] += 1
    kind = "module" if args.modules else "package"
    print(f"\n{kind} graph (importer -> imported: number of import statements, in functions included):")
    for (a, b), n in sorted(counts.items()):
        print(f"  {a} -> {b}: {n}")
    found = violations(modules, edges, root)
    for rule in CYCLE_RULES:
        label = rule.replace("import cycle", "cycles among modules").replace("package cycle", "cycles among packages")
        if "counting" not in rule:
            label += ", module-level imports only"
        items = found.get(rule, [])
        print(f"\n{label}: {len(items) or 'no cycle'}")
        for item in items:
            print("  " + item)
    for rule, items in sorted(found.items()):
        if rule in CYCLE_RULES:
            continue
        print(f"\n{rule}: {len(items)}")
        for item in items[:200]:
            print("  " + item)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
