"""``climai verify``: rerun a campaign into a fresh folder and compare it with the reference."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from climai.manifest import Comparison, campaign_artifacts, compare_campaigns


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
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            _, stderr = proc.communicate()
        except BaseException:  # Ctrl-C, or SIGTERM (see verify): the rerun stops too
            proc.terminate()  # Snakemake stops its jobs
            proc.wait()
            raise
    if proc.returncode != 0:
        raise RerunFailed(f"the rerun failed (exit {proc.returncode}):\n{stderr[-3000:]}")


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM (a SLURM time limit, ``kill``) raises SystemExit(143) meanwhile, so that the
    rerun is stopped and the temporary folder removed, instead of both being left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    if not campaign_artifacts(reference):  # before a rerun of minutes or hours, not after it
        raise FileNotFoundError(
            f"no campaign artifacts under {str(reference)!r} (ingest/, prep/, models/, "
            "downscaled/, evaluation/, export/): name the reference folder with --reference, or "
            "run the campaign first"
        )
    with (
        terminated_as_exit(),
        tempfile.TemporaryDirectory(prefix="climai-verify-", dir=workdir) as tmp,
    ):
        fresh = Path(tmp) / "results"
        link_other_campaigns(reused[0], reused[1], fresh)
        rerun_campaign(configfiles, fresh, cores)
        return compare_campaigns(reference, fresh / campaign, device)
