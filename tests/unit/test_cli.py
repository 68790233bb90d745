"""The ``climai`` command itself: what a Snakemake job pays before its stage starts."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_stages_that_do_not_train_or_infer_never_import_torch():
    """Every Snakemake job is one ``climai <stage>`` process: importing torch costs ~1.5 s of CPU
    each time, so ingest, preprocess, evaluate, compare and export must not pay for it."""
    code = (
        "import sys\n"
        "from climai.cli import main\n"
        "assert main(['validate', '--configfile', 'config/config.yaml']) == 0\n"
        "import climai.stages.ingest, climai.stages.preprocess, climai.stages.evaluate\n"
        "import climai.stages.compare, climai.stages.export, climai.stages.manifest\n"
        "import climai.stages.sweep, climai.stages.lineage\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "False", result.stdout


def test_stage_threads_help_names_what_sets_torch_threads(capsys):
    """``climai train --threads 1`` trained with compute.threads (2) torch threads, as the
    config documents, while its help said only 'CPU threads'."""
    import pytest

    from climai.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "train and infer compute with compute.threads" in text
