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
    """Bring the settings file ``path`` to ``text``; return ``"same"``, ``"new"`` or
    ``"changed"``.

    A changed file is rewritten (now its modification time: the stage reruns). A new one is
    dated 1970, older than any output, so that outputs written before settings files existed
    (or before this file was deleted) are trusted as before and only a later change reruns them.
    With ``write=False`` (a dry run) nothing existing is rewritten, so that a setting tried and
    reverted never reruns a job; a missing file is still created, since Snakemake needs its
    inputs to exist even to plan.
    """
    path = Path(path)
    try:
        old = path.read_text()
    except FileNotFoundError:
        write_text(path, text)
        os.utime(path, (0, 0))
        return "new"
    if old == text:
        return "same"
    if write:
        write_text(path, text)
    return "changed"
