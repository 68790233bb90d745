"""Each job kind's settings as it last ran: ``<results>/<campaign>/settings/<stage>[_<method>].json``.

Snakemake reruns a job whose settings (its ``params``) changed only while it holds a record of
them: ``.snakemake/`` of the working folder, per output path as spelled. Run the same campaign
from another folder, or with ``results:`` spelled otherwise (absolute against relative), and
that record is missing: a changed setting reran nothing and the old outputs stayed, with no
error. So every stage's rule also takes its settings file as an input: the file is rewritten,
and so is newer than the outputs, exactly when the settings changed; Snakemake then reruns the
job by modification time, which needs no record, and everything after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from climai.config import config_sha256
from climai.config.slices import split_run_keys
from climai.io.atomic import write_text


def settings_text(stage_slice: dict[str, Any]) -> str:
    """The settings file of a stage slice: its config hash (what the outputs record) and the
    slice without the output location and the keys that change no output (RUN_KEYS)."""
    content, _ = split_run_keys({k: v for k, v in stage_slice.items() if k != "results"})
    record = {"config_sha256": config_sha256(stage_slice), "config": content}
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def refresh_settings(path: str | Path, text: str, *, write: bool = True) -> str:
    """Bring the settings file ``path`` to ``text``; return ``"same"``, ``"new"`` (there was
    none) or ``"changed"``.

    A changed file is rewritten (now its modification time: the stage reruns). A new one is
    dated 1970, older than any output, so that outputs written before settings files existed
    (or before this file was deleted) are trusted as before and only a later change reruns them.
    With ``write=False`` (a dry run, --summary, a graph) nothing is written, so that a setting
    tried and reverted never reruns a job.
    """
    path = Path(path)
    try:
        old = path.read_text()
    except FileNotFoundError:
        if write:
            write_text(path, text)
            os.utime(path, (0, 0))
        return "new"
    if old == text:
        return "same"
    if write:
        write_text(path, text)
    return "changed"


INSPECT_OPTIONS = frozenset((
    "--summary", "-S", "--detailed-summary", "-D", "--list-changes", "--lc",
    "--list-input-changes", "--li", "--list-params-changes", "--lp", "--list-untracked", "--lu",
    "--dag", "--rulegraph", "--filegraph", "--d3dag", "--report", "--lint", "--list",
    "--list-rules", "--list-target-rules", "--lt", "--unlock", "--cleanup-metadata", "--cm",
    "--delete-all-output", "--delete-temp-output", "--archive", "--containerize", "--export-cwl",
    "--generate-unit-tests", "--print-compilation", "--list-conda-envs",
    "--conda-create-envs-only", "--conda-cleanup-envs", "--cleanup-shadow",
))  # fmt: skip
"""Snakemake's options that show or tidy the workflow without running a job (a dry run is
known from its output settings)."""


def only_inspects(argv: list[str]) -> bool:
    """Whether Snakemake's command line ``argv`` runs no job (see :data:`INSPECT_OPTIONS`)."""
    return any(a.split("=", 1)[0] in INSPECT_OPTIONS for a in argv)
