"""``climai verify``: rerun a campaign into a fresh folder and compare it with the reference."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from climai.manifest import Comparison, compare_campaigns


def snakefile() -> Path:
    """The workflow's Snakefile: the workflow checkout's (``$CLIMAI_WORKFLOW_DIR`` or the working
    folder, as for provenance), else the one beside the climai package (a source tree)."""
    from climai.io.provenance import workflow_dir

    for folder in (workflow_dir(), Path(__file__).resolve().parents[1]):
        if (folder / "Snakefile").is_file():
            return folder / "Snakefile"
    raise FileNotFoundError(
        f"no Snakefile in {workflow_dir()} nor beside the climai package: run climai verify "
        "in the workflow checkout"
    )


def rerun_campaign(configfiles: list[str], results: Path, cores: int) -> None:
    """Run the whole campaign with its outputs under ``results`` (a fresh folder)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile()),
        "--cores",
        str(cores),
    ]
    if configfiles:
        cmd += ["--configfile", *configfiles]
    cmd += ["--config", f"results={results}"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the rerun failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def verify(
    reference: Path,
    configfiles: list[str],
    campaign: str,
    cores: int,
    device: str = "cpu",
    workdir: Path | None = None,
) -> list[Comparison]:
    """Rerun the campaign into a fresh folder and compare every artifact with ``reference``."""
    with tempfile.TemporaryDirectory(prefix="climai-verify-", dir=workdir) as tmp:
        fresh = Path(tmp) / "results"
        rerun_campaign(configfiles, fresh, cores)
        return compare_campaigns(reference, fresh / campaign, device)
