"""What ``climai downscale --output P`` may replace: checked before any work is done.

- ``P`` does not exist: written.
- ``P`` is an output climai wrote (a zarr store whose top level holds only zarr metadata and
  arrays and whose attributes carry ``climai_version``, or a NetCDF file with that global
  attribute): replaced only with ``--overwrite``.
- anything else at ``P`` (a folder with other files, a user's NetCDF or other file), and any
  ``P`` that is, contains or lies inside the model file or an input: never replaced, not even with
  ``--overwrite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

#: Files Snakemake or the OS may leave in a store's top folder.
_HARMLESS = {"zarr.json", ".snakemake_timestamp", ".DS_Store"}


class UnsafeOutputError(ValueError):
    """The output path would replace something climai must not touch; the message says why."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def foreign_entries(store: Path) -> list[str]:
    """Top-level entries of folder ``store`` that a climai zarr store would not hold."""
    if not (store / "zarr.json").is_file():
        return sorted(p.name for p in store.iterdir()) or ["(no zarr.json: not a zarr store)"]
    try:
        meta = json.loads((store / "zarr.json").read_text())
    except (OSError, ValueError):
        return ["zarr.json (unreadable)"]
    if "climai_version" not in meta.get("attributes", {}):
        return ["zarr.json (a store climai did not write: no 'climai_version' attribute)"]
    return sorted(
        p.name
        for p in store.iterdir()
        if p.name not in _HARMLESS and not (p.is_dir() and (p / "zarr.json").is_file())
    )


def _climai_netcdf(path: Path) -> bool:
    import xarray as xr

    try:
        with xr.open_dataset(path, decode_cf=False) as ds:
            return "climai_version" in ds.attrs
    except Exception:  # not NetCDF (backends raise many types): not climai's
        return False


def check_output(output: str | Path, overwrite: bool, protected: Mapping[str, str | Path]) -> None:
    """Raise unless writing ``output`` is safe: ``protected`` maps roles (``model``, ``input``,
    ``static``) to paths the output must not be, contain or lie inside; an existing output is
    replaced only when climai wrote it and ``overwrite`` is set."""
    out = Path(output)
    real = out.resolve()
    for role, path in protected.items():
        other = Path(path).resolve()
        if _inside(other, real) or _inside(real, other) or _same(out, Path(path)):
            raise UnsafeOutputError(
                f"--output {str(output)!r} would overwrite the {role} {str(path)!r} (it is, "
                f"contains or lies inside it); climai never does that, not even with "
                "--overwrite: choose another --output"
            )
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        raise UnsafeOutputError(
            f"--output {str(output)!r} is a symbolic link; climai does not replace links: "
            "choose another --output"
        )
    if out.is_dir():
        foreign = foreign_entries(out)
        if foreign:
            raise UnsafeOutputError(
                f"--output {str(output)!r} is a folder holding files climai did not write "
                f"({', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}); climai never "
                "replaces it, not even with --overwrite: choose another --output"
            )
    elif not (out.suffix.lower() in (".nc", ".nc4") and _climai_netcdf(out)):
        raise UnsafeOutputError(
            f"--output {str(output)!r} is a file climai did not write; climai never replaces "
            "it, not even with --overwrite: choose another --output"
        )
    if not overwrite:
        raise FileExistsError(
            f"--output {str(output)!r} already exists (an earlier climai output); pass "
            "--overwrite to replace it, or choose another --output"
        )
