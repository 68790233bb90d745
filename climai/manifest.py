"""Campaign manifest and verification: what made a campaign, and whether a rerun matches it.

The manifest (``results/<campaign>/manifest.json``) records the validated config and its sha256,
the identity of every input (checksums, or sizes and metadata hashes for large stores), package
versions, the git commit, seeds, the platform, and a checksum of every output artifact. Output
checksums are taken over *values* (decoded zarr arrays, model tensors, JSON numbers), not bytes on
disk, so they do not depend on compression or attribute order, and provenance attributes that
legitimately differ between runs (git commit, climai version) are left out of them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("climai", "numpy", "xarray", "dask", "zarr", "torch", "snakemake", "scipy", "pandas")
_LARGE = 256 * 2**20  # files above this size are identified by size, mtime and edge hashes


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` where absent)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def platform_info() -> dict[str, Any]:
    """The machine and runtime: results on another platform may differ in the last bits."""
    import torch

    return {
        "python": platform.python_version(),
        "system": platform.system(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda or "none",
    }


def _sha256_file(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        if limit is None:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        else:
            h.update(fh.read(limit))
            fh.seek(max(0, path.stat().st_size - limit))
            h.update(fh.read(limit))
    return h.hexdigest()


def path_identity(path: str | Path) -> dict[str, Any]:
    """A cheap but faithful identity of an input file or store.

    Small files get their full sha256; large files their size, mtime and a hash of the first and
    last MiB; folders (zarr stores) the sizes of all files and the hashes of metadata files.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input {str(p)!r} does not exist")
    if p.is_file():
        size = p.stat().st_size
        if size <= _LARGE:
            return {"path": str(p), "size": size, "sha256": _sha256_file(p)}
        return {
            "path": str(p),
            "size": size,
            "mtime": p.stat().st_mtime,
            "edges_sha256": _sha256_file(p, 2**20),
        }
    files = sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(p).as_posix()
        h.update(f"{rel}:{f.stat().st_size}\n".encode())
        if f.name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
            h.update(f.read_bytes())
    return {"path": str(p), "files": len(files), "identity_sha256": h.hexdigest()}


_VOLATILE_ATTRS = {"climai_version", "git_commit", "created_by_rule"}


def _hash_array(h: Any, name: str, values: np.ndarray) -> None:
    h.update(f"{name}:{values.dtype}:{values.shape}\n".encode())
    h.update(np.ascontiguousarray(values).tobytes())


def artifact_checksum(path: str | Path) -> str:
    """sha256 over the values of an output (zarr store, model file, JSON/CSV/other file)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.suffix == ".zarr":
        from climai.io import open_store

        ds = open_store(p)
        for name in sorted(map(str, ds.variables)):
            _hash_array(h, name, ds[name].values)
            attrs = {k: v for k, v in ds[name].attrs.items() if k not in _VOLATILE_ATTRS}
            h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
        attrs = {k: v for k, v in ds.attrs.items() if k not in _VOLATILE_ATTRS}
        h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    elif p.suffix == ".pt":
        from climai.io.checkpoints import load_model_file

        state, _ = load_model_file(p)
        for name in sorted(state):
            _hash_array(h, name, state[name].float().numpy())
    else:
        h.update(p.read_bytes())
    return h.hexdigest()


def campaign_artifacts(root: str | Path) -> list[Path]:
    """The artifacts of a campaign folder that reruns must reproduce (logs and figures excluded)."""
    root = Path(root)
    found: list[Path] = []
    for pattern in (
        "ingest/*.zarr",
        "prep/*.zarr",
        "prep/*.json",
        "models/*/model.pt",
        "downscaled/*/*.zarr",
        "evaluation/*/metrics.json",
    ):
        found.extend(sorted(root.glob(pattern)))
    return found


def build_manifest(
    config: dict[str, Any], config_sha256: str, root: str | Path, inputs: list[str]
) -> dict[str, Any]:
    """The manifest of a finished campaign in ``root``."""
    from climai.io.provenance import git_commit

    root = Path(root)
    return {
        "campaign": config["campaign"],
        "config": config,
        "config_sha256": config_sha256,
        "seed": config["seed"],
        "git_commit": git_commit(),
        "packages": package_versions(),
        "platform": platform_info(),
        "inputs": [path_identity(p) for p in inputs],
        "artifacts": {
            a.relative_to(root).as_posix(): artifact_checksum(a) for a in campaign_artifacts(root)
        },
    }


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one artifact of two campaign folders."""

    artifact: str
    ok: bool
    detail: str


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    same_nan = np.array_equal(np.isnan(a), np.isnan(b))
    if not same_nan:
        return math.inf
    ok = np.isfinite(a)
    if not ok.any():
        return 0.0
    scale = max(np.abs(a[ok]).max(), 1e-30)
    return float(np.abs(a[ok] - b[ok]).max() / scale)


def _metric_leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(obj, dict):
        out: dict[str, float] = {}
        for k, v in obj.items():
            out.update(_metric_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): float(obj)} if isinstance(obj, int | float) else {}


def compare_artifact(name: str, a: Path, b: Path, rtol: float) -> Comparison:
    """Compare artifact ``name``: bitwise when ``rtol`` is 0, else within ``rtol`` (relative)."""
    if not b.exists():
        return Comparison(name, False, f"missing in the rerun: {b}")
    if rtol == 0.0:
        same = artifact_checksum(a) == artifact_checksum(b)
        return Comparison(name, same, "bitwise identical" if same else "values differ")
    if a.suffix == ".json":
        la, lb = (
            _metric_leaves(json.loads(a.read_text())),
            _metric_leaves(json.loads(b.read_text())),
        )
        if la.keys() != lb.keys():
            return Comparison(name, False, "different metric keys")
        worst = max((abs(la[k] - lb[k]) / max(abs(la[k]), 1e-12) for k in la), default=0.0)
    elif a.suffix == ".pt":
        from climai.io.checkpoints import load_model_file

        sa, sb = load_model_file(a)[0], load_model_file(b)[0]
        worst = max(_max_rel_diff(sa[k].float().numpy(), sb[k].float().numpy()) for k in sa)
    else:
        from climai.io import open_store

        da, db = open_store(a), open_store(b)
        worst = max(
            _max_rel_diff(da[v].values, db[v].values)
            for v in da.data_vars
            if da[v].dtype.kind == "f"
        )
    return Comparison(
        name, worst <= rtol, f"max relative difference {worst:.3g} (tolerance {rtol:g})"
    )


# Tolerances per artifact kind. CPU reruns are bitwise; GPU kernels (cuDNN, atomics in reductions)
# are not deterministic, so trained weights and everything downstream get a relative tolerance.
TOLERANCES = {
    "cpu": {"ingest": 0.0, "prep": 0.0, "models": 0.0, "downscaled": 0.0, "evaluation": 0.0},
    "gpu": {"ingest": 0.0, "prep": 0.0, "models": 5e-2, "downscaled": 5e-2, "evaluation": 5e-2},
}


def compare_campaigns(
    reference: str | Path, rerun: str | Path, device: str = "cpu"
) -> list[Comparison]:
    """Compare every artifact of ``reference`` with the same artifact in ``rerun``."""
    reference, rerun = Path(reference), Path(rerun)
    artifacts = campaign_artifacts(reference)
    if not artifacts:
        raise FileNotFoundError(f"no campaign artifacts under {str(reference)!r}")
    tol = TOLERANCES[device]
    out = []
    for a in artifacts:
        rel = a.relative_to(reference)
        out.append(compare_artifact(rel.as_posix(), a, rerun / rel, tol[rel.parts[0]]))
    return out


def input_paths(cfg: Any) -> list[str]:
    """Paths of the campaign's input files (none for the synthetic toy world)."""
    specs = [cfg.data.target, getattr(cfg.data, "input", None)]
    specs += list((getattr(cfg.data, "static", None) or {}).values())
    paths: list[str] = []
    for spec in specs:
        value = getattr(spec, "path", None)
        if isinstance(value, str):
            is_glob = any(c in value for c in "*?[")
            paths.extend(sorted(glob.glob(value)) if is_glob else [value])
        elif isinstance(value, list):
            paths.extend(map(str, value))
    return paths
