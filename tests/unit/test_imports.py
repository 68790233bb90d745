"""climai's imports agree with pyproject.toml, and climai's own modules form no import cycle.

Both checks read the source (an AST walk of every ``climai/**/*.py``, imports at module level and
inside functions alike), so they see imports that a test run may never execute.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import deque
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.conftest import REPO

# Declared dependencies that climai never imports, each needed at run time all the same.
RUN_TIME_ONLY = {
    # The workflow engine: the Snakefile runs on it, and `climai verify` starts
    # `python -m snakemake` (climai/verify.py).
    "snakemake": "workflow engine",
    # profiles/leonardo sets `executor: slurm`; Snakemake loads the plugin by entry point.
    "snakemake-executor-plugin-slurm": "Snakemake executor plugin",
    # xarray's engine for GRIB sources (climai/io/readers.py: engine="cfgrib"); a core dependency.
    "cfgrib": "xarray engine",
}
# Extras of developer tools (pytest, ruff, mypy): run on climai, never imported by it.
TOOL_EXTRAS = {"dev"}


def canonical(distribution: str) -> str:
    """A distribution's normalised name (PEP 503): ``PyYAML`` → ``pyyaml``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_name(requirement: str) -> str:
    """The canonical distribution name of a requirement: ``h5netcdf[h5py]>=1.3`` → ``h5netcdf``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"pyproject.toml: cannot read a distribution name from {requirement!r}"
    return canonical(match[1])


def _is_type_checking(node: ast.If) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(
    tree: ast.AST, type_checking: bool = True
) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` (functions included); ``type_checking=False`` skips the
    bodies of ``if TYPE_CHECKING:`` blocks (their ``else`` still counts)."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and not type_checking and _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name → file for every module of ``package`` (a package's own is its
    ``__init__.py``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def third_party_imports(package: Path) -> dict[str, set[str]]:
    """Top-level third-party module → the files of ``package`` that import it."""
    found: dict[str, set[str]] = {}
    for path in module_files(package).values():
        for node in import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                names = [alias.name for alias in node.names]
            for name in names:
                top = name.partition(".")[0]
                if top != package.name and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(path.relative_to(package.parent).as_posix())
    return found


def declared_distributions() -> dict[str, str]:
    """Canonical distribution name → where pyproject.toml declares it (``dependencies`` or the
    extra's name), developer-tool extras left out."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        if extra not in TOOL_EXTRAS:
            groups[f"optional-dependencies.{extra}"] = reqs
    return {requirement_name(req): group for group, reqs in groups.items() for req in reqs}


def test_every_third_party_module_climai_imports_is_declared():
    declared = declared_distributions()
    providers = packages_distributions()
    undeclared = []
    for module, files in sorted(third_party_imports(REPO / "climai").items()):
        dists = {canonical(d) for d in providers.get(module, [])}
        if not dists & declared.keys():
            which = ", ".join(sorted(dists)) or "no installed distribution"
            undeclared.append(f"{module} ({which}; imported by {', '.join(sorted(files))})")
    assert not undeclared, "pyproject.toml does not declare these imports:\n  " + "\n  ".join(
        undeclared
    )


def test_every_declared_dependency_is_imported_or_needed_at_run_time():
    providers = packages_distributions()
    imported = {
        canonical(dist)
        for module in third_party_imports(REPO / "climai")
        for dist in providers.get(module, [])
    }
    unused = [
        f"{dist} ({group})"
        for dist, group in sorted(declared_distributions().items())
        if dist not in imported and dist not in RUN_TIME_ONLY
    ]
    assert not unused, (
        "declared in pyproject.toml but imported nowhere in climai/ (remove them, or add them to "
        "RUN_TIME_ONLY with the reason):\n  " + "\n  ".join(unused)
    )


def test_the_run_time_allow_list_names_only_declared_unimported_dependencies():
    declared = declared_distributions()
    providers = packages_distributions()
    imported = {
        canonical(dist)
        for module in third_party_imports(REPO / "climai")
        for dist in providers.get(module, [])
    }
    assert set(RUN_TIME_ONLY) <= declared.keys(), set(RUN_TIME_ONLY) - declared.keys()
    assert not set(RUN_TIME_ONLY) & imported, "imported, so not run-time only"


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <...> import`` in ``module``."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules``."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def _with_packages(name: str) -> list[str]:
    """``a.b.c`` → ``["a", "a.b", "a.b.c"]``: importing a module first runs its packages'
    ``__init__``."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports (``if TYPE_CHECKING:`` blocks ignored).

    ``from a.b import c`` imports the module ``a.b.c`` when there is one, else ``a.b``. Importing a
    module also runs the ``__init__`` of each package above it: an implicit edge to each of those
    too, except to the importer's own packages, which are already running when it runs (so a
    package's ``__init__`` importing its own submodules is no cycle, while a submodule importing
    from its package's ``__init__``, explicitly, is an edge).
    """
    modules = module_files(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        running = set(_with_packages(name))
        for node in import_nodes(ast.parse(path.read_text(), str(path)), type_checking=False):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _resolve(name, is_package, node)
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            for target in filter(None, (_known(t, modules) for t in targets)):
                packages = _with_packages(target)[:-1]
                graph[name].update(m for m in packages if m not in running)
                if target != name:
                    graph[name].add(target)
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _shortest_path(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list:
    """The shortest path from ``start`` to ``goal`` through nodes of ``within`` (BFS)."""
    before: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo:
        v = todo.popleft()
        if v == goal:
            path = [v]
            while (prev := before[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        for w in sorted(graph[v] & within):
            if w not in before:
                before[w] = v
                todo.append(w)
    raise AssertionError(f"{goal} is not reachable from {start} inside its component")


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One shortest cycle through each edge that lies on a cycle, as ``a -> b -> a``."""
    cycles = set()
    for component in _strongly_connected(graph):
        for u in sorted(component):
            for v in sorted(graph[u] & component):
                cycle = [u, *_shortest_path(graph, v, u, component)]
                start = cycle.index(min(cycle[:-1]))  # the same cycle once, whatever its edge
                cycles.add(" -> ".join([*cycle[start:-1], *cycle[:start], cycle[start]]))
    return sorted(cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_import_graph_resolves_relative_imports_packages_and_type_checking(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.sub import leaf\n",
            "pkg/sub/__init__.py": "from . import leaf\n",
            "pkg/sub/leaf.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    import pkg.other\n",
            "pkg/other.py": "def f():\n    from .sub.leaf import name\n",
        },
    )
    assert import_graph(tmp_path / "pkg") == {
        "pkg": {"pkg.sub", "pkg.sub.leaf"},
        "pkg.sub": {"pkg.sub.leaf"},  # its own package pkg is already running
        "pkg.sub.leaf": set(),  # the TYPE_CHECKING import is no edge
        "pkg.other": {"pkg.sub", "pkg.sub.leaf"},  # `name` is no module: the edge is to leaf
    }


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "from pkg.a.x import X\n",
            "pkg/a/x.py": "import pkg.b\n",
            "pkg/a/y.py": "",
            "pkg/b.py": "from pkg.a import y\n",  # runs pkg/a/__init__.py first
        },
    )
    assert import_cycles(import_graph(tmp_path / "pkg")) == ["pkg.a -> pkg.a.x -> pkg.b -> pkg.a"]


def test_a_submodule_importing_from_its_own_package_init_is_a_cycle(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/c/__init__.py": "from pkg.c.d import f\nG = 1\n",
            "pkg/c/d.py": "from pkg.c import G\n",  # G is not defined yet when pkg.c runs first
        },
    )
    assert import_cycles(import_graph(tmp_path / "pkg")) == ["pkg.c -> pkg.c.d -> pkg.c"]


def test_climai_has_no_import_cycle():
    cycles = import_cycles(import_graph(REPO / "climai"))
    assert not cycles, "import cycles among climai's modules:\n  " + "\n  ".join(cycles)
