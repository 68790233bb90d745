"""docs/architecture.md is true of the code: the modules it names exist, every rule has its stage
module, and no module imports from a layer above its own."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from climai.stages import STAGES
from tests.conftest import REPO
from tests.unit.test_imports import _known, _resolve, import_nodes, module_files

PAGE = (REPO / "docs" / "architecture.md").read_text()
MODULES = module_files(REPO / "climai")
MAX_LINES = 500


def named_paths() -> set[str]:
    """Every ``climai/...``, ``docs/...``, ``workflow/...`` or ``config/...`` path on the page."""
    return set(re.findall(r"`((?:climai|docs|workflow|config)/[\w./<>-]+)`", PAGE))


def named_names() -> set[str]:
    """Every dotted ``climai.x`` name on the page (modules, or a module's attribute), except the
    plugins' entry-point groups (``entry point `climai.methods```)."""
    return set(re.findall(r"(?<!entry point )`(climai(?:\.\w+)*)`", PAGE))


def layers() -> dict[str, int]:
    """Module prefix → layer number, from the page's layer table."""
    table = {}
    for number, modules in re.findall(r"^\| (\d)\. [^|]+\| ([^|]+)\|", PAGE, re.MULTILINE):
        for name in re.findall(r"`(climai(?:\.\w+)*)`", modules):
            table[name] = int(number)
    return table


def layer_of(module: str, table: dict[str, int]) -> int:
    """The layer of the longest prefix of ``module`` in the table."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in table:
            return table[".".join(parts[:i])]
    raise AssertionError(f"module {module} is in no layer of docs/architecture.md")


def explicit_imports(name: str, path: Path) -> set[str]:
    """climai modules that ``name`` imports by name (module or function level, not for typing)."""
    out = set()
    for node in import_nodes(ast.parse(path.read_text()), type_checking=False):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            source = _resolve(name, path.name == "__init__.py", node)
            targets = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                for a in node.names
            ]
        out |= {t for t in map(lambda t: _known(t, MODULES), targets) if t}
    return out


@pytest.mark.parametrize("path", sorted(named_paths()))
def test_every_path_the_page_names_exists(path):
    pattern = re.sub(r"<[^>]+>", "*", path)
    if "*" in pattern:
        assert list(REPO.glob(pattern)), f"docs/architecture.md names {path}, which matches nothing"
    else:
        assert (REPO / path).exists(), f"docs/architecture.md names {path}, which does not exist"


def test_every_module_and_name_the_page_names_exists():
    missing = []
    for name in sorted(named_names()):
        parts = name.split(".")
        module = next(
            ".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in MODULES
        )
        attrs = parts[len(module.split(".")) :]
        if attrs and not hasattr(importlib.import_module(module), attrs[0]):
            missing.append(name)
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


def test_every_rule_runs_its_own_stage_module():
    rules = set(
        re.findall(
            r"^rule (\w+):",
            "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")),
            re.MULTILINE,
        )
    )
    assert rules == set(STAGES), "each workflow rule is a climai stage, and each stage a rule"
    for name in rules:
        assert f"climai.stages.{name}" in MODULES, name
        assert f"| {name} | `climai/stages/{name}.py` |" in PAGE, f"rule {name} not in the page"


def test_no_module_imports_from_a_layer_above_its_own():
    table = layers()
    wrong = [
        f"{name} (layer {layer_of(name, table)}) imports {dep} (layer {layer_of(dep, table)})"
        for name, path in MODULES.items()
        for dep in sorted(explicit_imports(name, path))
        if layer_of(dep, table) > layer_of(name, table)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_of_climai_is_over_500_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert not {n: k for n, k in long.items() if k > MAX_LINES}, sorted(
        long.items(), key=lambda x: -x[1]
    )[:3]
