"""config/README.md is generated from the config models and stays in step with them."""

from __future__ import annotations

from climai.cli import main
from climai.config import json_schema
from climai.config.docs import config_markdown
from tests.conftest import REPO


def test_config_readme_matches_the_schema():
    assert (REPO / "config" / "README.md").read_text() == config_markdown(), (
        "config/README.md is out of date; regenerate with: "
        "climai schema --markdown > config/README.md"
    )


def test_every_schema_key_is_documented():
    text = config_markdown()
    for name, model in json_schema()["$defs"].items():
        for key in model.get("properties", {}):
            assert f"| `{key}` |" in text, f"{name}.{key}"


def test_every_key_has_a_description():
    """A field added without ``description=`` would be a row with an empty last cell."""
    rows = [line for line in config_markdown().splitlines() if line.startswith("| `")]
    assert rows
    empty = [row.split(" | ")[0] for row in rows if row.rstrip().endswith("|  |")]
    assert not empty, f"config keys without a description (Field(description=...)): {empty}"


def test_schema_markdown_command_prints_the_readme(capsys):
    assert main(["schema", "--markdown"]) == 0
    assert capsys.readouterr().out == config_markdown()
