"""Site profiles: link ``profiles/<name>`` where ``snakemake --profile <name>`` finds it.

Snakemake looks a profile name up in the current folder, then in its user configuration folder
(``~/.config/snakemake`` on Linux, ``$XDG_CONFIG_HOME/snakemake`` when that is set), then in the
site folder. ``climai install-profile leonardo`` links the checkout's ``profiles/leonardo`` into the
user folder, so that the profile stays in step with the checkout (``git pull`` updates it).

It also sizes each job of the workflow (:func:`job_size`): cores, memory, time and GPUs per rule
and, for ``train`` and ``infer``, per method. Snakemake's rules ask these as resources; the site
profile only says where such jobs may run (its partitions and their limits), and the SLURM plugin
picks the partition that fits (``profiles/leonardo/partitions.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import climai

SITE_PROFILES = ("leonardo", "leonardo-debug")


def repo_profiles_dir() -> Path:
    """``profiles/`` of the checkout climai was installed from (``pip install -e .``)."""
    return Path(climai.__file__).resolve().parents[1] / "profiles"


def snakemake_config_dir() -> Path:
    """The user folder where ``snakemake --profile NAME`` looks (the same lookup as Snakemake)."""
    from platformdirs import AppDirs

    return Path(AppDirs("snakemake", "snakemake").user_config_dir)


def install_profile(
    name: str, profiles_dir: Path | None = None, config_dir: Path | None = None, force: bool = False
) -> Path:
    """Link ``<profiles_dir>/<name>`` to ``<config_dir>/<name>``; return the link.

    An existing link to the same folder is kept; anything else there is an error unless ``force``
    (then a link is replaced; a real folder or file is never deleted).
    """
    source = (profiles_dir or repo_profiles_dir()) / name
    if not (source / "config.yaml").is_file():
        raise FileNotFoundError(
            f"profile {name!r}: no config.yaml in {str(source)!r} (profiles here: "
            f"{', '.join(sorted(p.parent.name for p in source.parent.glob('*/config.yaml'))) or 'none'}; "
            "install climai from a checkout with `pip install -e .` or pass --profiles-dir)"
        )
    target = (config_dir or snakemake_config_dir()) / name
    if target.is_symlink():
        if target.resolve() == source.resolve():
            return target
        if not force:
            raise FileExistsError(
                f"{str(target)!r} already links to {str(target.resolve())!r}, not {str(source)!r}; "
                "pass --force to relink it"
            )
        target.unlink()
    elif target.exists():
        raise FileExistsError(
            f"{str(target)!r} exists and is not a link: move it away, then rerun "
            "`climai install-profile`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve(), target_is_directory=True)
    return target


@dataclass(frozen=True)
class JobSize:
    """What one job asks of a cluster: cores, memory (MB), wall time (minutes) and GPUs."""

    cpus: int
    mem_mb: int
    runtime: int
    gpus: int = 0

    def resources(self) -> dict[str, int | str]:
        """Snakemake resources of the SLURM plugin: ``cpus_per_task``, ``mem_mb``, ``runtime``
        and, for GPU jobs only, ``gres: gpu:N`` (the plugin ignores a ``gpus`` resource)."""
        out: dict[str, int | str] = {
            "cpus_per_task": self.cpus,
            "mem_mb": self.mem_mb,
            "runtime": self.runtime,
        }
        if self.gpus:
            out["gres"] = f"gpu:{self.gpus}"
        return out


# Sized for nodes of Leonardo's kinds (Booster: 32 cores, 4 GPUs, 512 GB; Data Centric: 112 cores,
# 512 GB; serial: 4 cores, 30.8 GB). Keys: rule, or (rule, where it runs) for train and infer.
JOB_SIZES: dict[str, JobSize] = {
    "ingest": JobSize(cpus=4, mem_mb=30000, runtime=240),  # parallel reads; a serial slot
    "preprocess": JobSize(cpus=112, mem_mb=480000, runtime=720),  # dask on a whole CPU node
    "train": JobSize(cpus=32, mem_mb=480000, runtime=1440, gpus=4),  # one rank per GPU
    "infer/gpu": JobSize(cpus=32, mem_mb=480000, runtime=240, gpus=4),  # a whole GPU node
    "infer/cpu": JobSize(cpus=56, mem_mb=240000, runtime=240),  # an emulator on CPU cores
    "infer/baseline": JobSize(cpus=8, mem_mb=60000, runtime=240),  # interpolation, numpy
    "evaluate": JobSize(cpus=56, mem_mb=240000, runtime=240),  # two methods per CPU node
    "compare": JobSize(cpus=4, mem_mb=15000, runtime=60),
    "export": JobSize(cpus=4, mem_mb=15000, runtime=60),  # NetCDF compression
    "manifest": JobSize(cpus=1, mem_mb=15000, runtime=60),  # checksums of every artifact
    "sweep": JobSize(cpus=1, mem_mb=7000, runtime=60),
    "lineage": JobSize(cpus=1, mem_mb=7000, runtime=60),
}


def infer_kind(kind: Literal["emulator", "baseline"], device: str) -> str:
    """Where a method's inference runs: ``gpu`` for an emulator unless ``infer.device`` is
    ``cpu``, ``cpu`` for an emulator on CPU cores, ``baseline`` for the baselines (numpy)."""
    if kind == "baseline":
        return "baseline"
    return "cpu" if device == "cpu" else "gpu"


def job_size(
    rule: str, kind: Literal["emulator", "baseline"] | None = None, device: str = "auto"
) -> JobSize:
    """The size of a job of ``rule``; for ``infer`` it follows the method's ``kind`` (the
    registry's) and ``infer.device``: only emulators that run on a GPU ask for GPUs."""
    key = f"infer/{infer_kind(kind, device)}" if rule == "infer" and kind is not None else rule
    if key not in JOB_SIZES:
        known = ", ".join(sorted({k.split("/")[0] for k in JOB_SIZES}))
        raise KeyError(
            f"no job size for rule {rule!r}"
            + (" without a method kind" if rule == "infer" else "")
            + f" (sized rules: {known}; climai.hpc.JOB_SIZES)"
        )
    return JOB_SIZES[key]
