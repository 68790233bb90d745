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


class RerunFailed(ChildProcessError):
    """The rerun of ``climai verify`` failed (its Snakemake error is in the message; an OSError,
    so that the command line prints it as its error)."""


def link_other_campaigns(reused: list[Path], source: Path, results: Path) -> None:
    """Link each of ``reused`` (paths under ``source``, the campaign's ``results``, that other
    campaigns made: :func:`climai.reuse.other_campaigns_inputs`) into the fresh ``results``: a
    rerun makes only its own campaign, and reads the others' outputs it was made from."""
    for rel in reused:
        src = (source / rel).resolve()
        if src.exists():
            (results / rel).parent.mkdir(parents=True, exist_ok=True)
            (results / rel).symlink_to(src, target_is_directory=src.is_dir())


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
        raise RerunFailed(f"the rerun failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def verify(
    reference: Path,
    configfiles: list[str],
    campaign: str,
    cores: int,
    device: str = "cpu",
    workdir: Path | None = None,
    reused: tuple[list[Path], Path] = ([], Path("results")),
) -> list[Comparison]:
    """Rerun the campaign into a fresh folder and compare every artifact with ``reference``.
    ``reused``: the paths under the campaign's ``results`` folder (the second item) that other
    campaigns made and it reads (:func:`link_other_campaigns`)."""
    with tempfile.TemporaryDirectory(prefix="climai-verify-", dir=workdir) as tmp:
        fresh = Path(tmp) / "results"
        link_other_campaigns(reused[0], reused[1], fresh)
        rerun_campaign(configfiles, fresh, cores)
        return compare_campaigns(reference, fresh / campaign, device)
