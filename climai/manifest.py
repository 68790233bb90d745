"""Campaign manifest and verification: what made a campaign, and whether a rerun matches it.

The manifest (``results/<campaign>/manifest.json``) records the validated config and its sha256,
the identity of every input (checksums, or sizes and metadata hashes for large stores), package
versions, the code (the workflow checkout's commit and dirty flag, the installed climai's version
and commit), seeds, the platform, what each train and infer ran with (``runtime``: threads,
library versions, CPU flags, GPU, precision, determinism) and a checksum of every output artifact. Output
checksums are taken over *values* (decoded zarr arrays, model tensors and the model card's fields
that applying the model reads, JSON numbers), not bytes on
disk, so they do not depend on compression or attribute order, and provenance attributes that
legitimately differ between runs (git commit, climai version; an export's ``history`` and
``source``) are left out of them. NetCDF exports and ``evaluation/summary.csv`` are covered too.
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

from climai.config.sources import REDACTED, redact  # noqa: F401 (REDACTED: re-exported)
from climai.io.provenance import path_identity

PACKAGES = ("climai", "numpy", "xarray", "dask", "zarr", "torch", "snakemake", "pandas")


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
    """The machine the manifest was written on (what train and infer ran on and with is in
    ``runtime``: their threads, libraries, CPU flags, GPU)."""
    return {"python": platform.python_version(), "system": platform.system(),
            "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count()}  # fmt: skip


def collect_runtime(root: Path) -> dict[str, Any]:
    """Every rule's runtime record of the campaign folder ``root``, by ``<rule>_<method>``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(root.glob("runtime/*.json"))}


_VOLATILE_ATTRS = {"climai_version", "climai_commit", "git_commit", "created_by_rule"}
#: A NetCDF export's attributes that name the time it was written and the code's version.
_VOLATILE_EXPORT_ATTRS = {"history", "source"}


def _open_values(path: Path) -> Any:
    """A zarr store or NetCDF file as a lazily decoded dataset (close it after use)."""
    import xarray as xr

    from climai.io import open_store

    return open_store(path) if path.suffix == ".zarr" else xr.open_dataset(path)


def _hash_array(h: Any, name: str, values: np.ndarray) -> None:
    h.update(f"{name}:{values.dtype}:{values.shape}\n".encode())
    h.update(np.ascontiguousarray(values).tobytes())


_HASH_BLOCK = 64 * 2**20  # bytes of an array read at once by a checksum


def _hash_variable(h: Any, name: str, var: Any) -> None:
    """:func:`_hash_array` of a lazy (dask-backed) variable, read block by block: the same bytes
    in the same (C) order, so the same checksum, in bounded memory."""
    if var.nbytes <= _HASH_BLOCK or var.ndim == 0 or var.dtype.kind not in "biuf":
        _hash_array(h, name, var.values)
        return
    h.update(f"{name}:{var.dtype}:{var.shape}\n".encode())
    _hash_blocks(h, var)


def _hash_blocks(h: Any, var: Any) -> None:
    """The values of ``var`` in C order, by slices of its first axis that are whole storage
    chunks (merged up to _HASH_BLOCK bytes), or element by element of it when one is too big."""
    if var.nbytes <= _HASH_BLOCK or var.ndim == 1:
        h.update(np.ascontiguousarray(var.values).tobytes())
        return
    n = var.shape[0]
    per_index = var.nbytes // n
    if per_index > _HASH_BLOCK:
        for i in range(n):
            _hash_blocks(h, var[i])
        return
    chunk = var.chunks[0][0] if var.chunks else 1
    step = max(1, _HASH_BLOCK // (per_index * chunk)) * chunk
    for start in range(0, n, step):
        h.update(np.ascontiguousarray(var[start : start + step].values).tobytes())


def artifact_checksum(path: str | Path) -> str:
    """sha256 over the values of an output (zarr store, model file, JSON/CSV/other file)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.suffix in (".zarr", ".nc"):
        with _open_values(p) as ds:
            volatile = _VOLATILE_ATTRS | (_VOLATILE_EXPORT_ATTRS if p.suffix == ".nc" else set())
            for name in sorted(map(str, ds.variables)):
                _hash_variable(h, name, ds[name].variable)
                attrs = {k: v for k, v in ds[name].attrs.items() if k not in volatile}
                h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
            attrs = {k: v for k, v in ds.attrs.items() if k not in volatile}
            h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    elif p.suffix == ".pt":
        from climai.io.checkpoints import applied_card, load_model_file

        state, card = load_model_file(p)
        for name in sorted(state):
            _hash_array(h, name, state[name].float().numpy())
        h.update(json.dumps(applied_card(card), sort_keys=True, default=str).encode())
    else:
        h.update(p.read_bytes())
    return h.hexdigest()


def _methods(config: dict[str, Any]) -> set[str]:
    return {m for m, c in config["methods"].items() if c is not None}


def campaign_artifacts(root: str | Path, config: dict[str, Any] | None = None) -> list[Path]:
    """The artifacts of a campaign folder that reruns must reproduce (logs and figures excluded),
    the prepared data of ``prepared.folder`` too (an extra rule's: what train read); with
    ``config`` (the validated config as JSON) only its methods' and variables': a method
    set to null, or a variable removed, since it ran leaves its outputs in the folder."""
    root, found = Path(root), list[Path]()
    own = ((config or {}).get("prepared") or {}).get("folder", "prep")
    for pattern in dict.fromkeys((
        "ingest/*.zarr",
        *(f"{folder}/*.{ext}" for folder in ("prep", own) for ext in ("zarr", "json")),
        "models/*/model.pt",
        "downscaled/*/*.zarr",
        "evaluation/*/metrics.json",
        "evaluation/summary.csv",
        "export/*.nc",
    )):  # fmt: skip
        found.extend(sorted(root.glob(pattern)))
    if config is None:
        return found
    methods = _methods(config)
    exports = {f"{m}_{v['name']}.nc" for m in methods for v in config["variables"]}

    def kept(p: tuple[str, ...]) -> bool:  # a method's own folder (models/<m>/...) or export
        return p[1] in exports if p[0] == "export" else len(p) < 3 or p[1] in methods

    return [a for a in found if kept(a.relative_to(root).parts)]


def build_manifest(
    config: dict[str, Any], config_sha256: str, root: str | Path, inputs: list[str]
) -> dict[str, Any]:
    """The manifest of a finished campaign in ``root``."""
    from climai.io.provenance import git_commit, package_code, workflow_code

    root = Path(root)
    return {
        "campaign": config["campaign"],
        "config": redact(config),
        "config_sha256": config_sha256,
        "seed": config["seed"],
        "git_commit": git_commit(),
        "code": {"workflow": workflow_code(), "package": package_code()},
        "packages": package_versions(),
        "platform": platform_info(),
        "runtime": collect_runtime(root),
        "inputs": [path_identity(p) for p in inputs],
        "artifacts": {
            a.relative_to(root).as_posix(): artifact_checksum(a)
            for a in campaign_artifacts(root, config)
        },
    }


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one artifact of two campaign folders."""

    artifact: str
    ok: bool
    detail: str


def _max_diffs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference, and that relative to the largest magnitude of ``a``
    (``inf`` both when the arrays differ in shape or where they are NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return math.inf, math.inf
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return 0.0, 0.0
    worst = float(np.abs(a[ok] - b[ok]).max())
    return worst, worst / max(float(np.abs(a[ok]).max()), 1e-30)


def _metric_leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(obj, dict):
        out: dict[str, float] = {}
        for k, v in obj.items():
            out.update(_metric_leaves(v, f"{prefix}{k}."))
        return out
    if obj is None:  # a score that could not be computed (write_json's null)
        return {prefix.rstrip("."): math.nan}
    return {prefix.rstrip("."): float(obj)} if isinstance(obj, int | float) else {}


def value_differences(a: Path, b: Path) -> tuple[float, float]:
    """The largest absolute and relative difference between the values of two artifacts (metric
    leaves of JSON files, model tensors, float variables of zarr stores and NetCDF files, number
    columns of CSV tables whose other columns are equal)."""
    pairs: list[tuple[np.ndarray, np.ndarray]]
    if a.suffix == ".json":
        la = _metric_leaves(json.loads(a.read_text()))
        lb = _metric_leaves(json.loads(b.read_text()))
        if la.keys() != lb.keys():
            return math.inf, math.inf
        pairs = [(np.array([la[k] for k in la]), np.array([lb[k] for k in la]))]
    elif a.suffix == ".pt":
        from climai.io.checkpoints import card_numbers, load_model_file

        (sa, ca), (sb, cb) = load_model_file(a), load_model_file(b)
        (na, ra), (nb, rb) = card_numbers(ca), card_numbers(cb)  # what applying them reads
        if sa.keys() != sb.keys() or ra != rb:
            return math.inf, math.inf
        pairs = [(sa[k].float().numpy(), sb[k].float().numpy()) for k in sa]
        pairs.append((np.array(na), np.array(nb)))
    elif a.suffix in (".zarr", ".nc"):
        with _open_values(a) as da, _open_values(b) as db:
            names = [v for v in da.data_vars if da[v].dtype.kind == "f"]
            if any(v not in db for v in names):
                return math.inf, math.inf
            pairs = [(da[v].values, db[v].values) for v in names]
    elif a.suffix == ".csv":
        import pandas as pd

        ta, tb = pd.read_csv(a), pd.read_csv(b)
        if list(ta.columns) != list(tb.columns) or ta.shape != tb.shape:
            return math.inf, math.inf
        numbers = [c for c in ta.columns if ta[c].dtype.kind == "f" and tb[c].dtype.kind == "f"]
        text = [c for c in ta.columns if c not in numbers]
        if not ta[text].astype(str).equals(tb[text].astype(str)):
            return math.inf, math.inf
        pairs = [(ta[numbers].to_numpy(), tb[numbers].to_numpy())]
    else:
        return (0.0, 0.0) if a.read_bytes() == b.read_bytes() else (math.inf, math.inf)
    diffs = [_max_diffs(x, y) for x, y in pairs] or [(0.0, 0.0)]
    return max(d[0] for d in diffs), max(d[1] for d in diffs)


# Tolerances (relative) per artifact kind. Reruns whose recorded runtime items (climai.runtime:
# library versions, threads, CPU flags, GPU, precision, determinism) all match are bitwise. Where
# they differ (another CPU model, another torch, bf16 on one machine only, a GPU), trained
# weights and everything downstream get a relative tolerance; ingest and preprocess do not
# depend on them (numpy on the same data), so they stay bitwise.
TOLERANCES = {
    "same": dict.fromkeys(("ingest", "prep", "models", "downscaled", "evaluation", "export"), 0.0),
    "other": {
        "ingest": 0.0,
        "prep": 0.0,
        **dict.fromkeys(("models", "downscaled", "evaluation", "export"), 5e-2),
    },
}
#: Record items that say what ran, not what it depended on.
_NOT_COMPARED = {"rule", "method"}


def _recorded_methods(root: Path) -> set[str]:
    """The methods with a train or infer record under ``root/runtime/``."""
    return {p.stem.split("_", 1)[1] for rule in ("train", "infer")
            for p in root.glob(f"runtime/{rule}_*.json")}  # fmt: skip


def runtime_records(root: Path, artifact: str, of: set[str] | None = None) -> dict[str, Any]:
    """The runtime records (``runtime/<rule>_<method>.json``) of the rules an artifact of the
    campaign folder ``root`` depends on, by file name: a model its training; a downscaled store,
    metrics file or export (``export/<method>_<variable>.nc``) its training and inference; the
    summary table every method's (of the methods ``of``, if given: not a method since nulled)."""
    parts = artifact.split("/")
    recorded = _recorded_methods(root) if of is None else _recorded_methods(root) & of
    if artifact == "evaluation/summary.csv":
        methods = sorted(recorded)
    elif parts[0] == "export" and len(parts) == 2:  # the longest method name the file starts with
        starts = [m for m in recorded if parts[1].startswith(f"{m}_")]
        methods = sorted(starts, key=len)[-1:]
    elif parts[0] in ("models", "downscaled", "evaluation") and len(parts) >= 3:
        methods = [parts[1]]
    else:
        return {}
    rules = ("train",) if parts[0] == "models" else ("train", "infer")
    found = {}
    for method in methods:
        for rule in rules:
            path = root / "runtime" / f"{rule}_{method}.json"
            if path.exists():
                found[path.stem] = json.loads(path.read_text())
    return found


def record_differences(
    reference: dict[str, dict[str, Any]], rerun: dict[str, dict[str, Any]]
) -> list[str]:
    """``"train_unet.threads: 2 → 1"`` for each recorded item that differs between two runs."""
    from climai.runtime import flatten

    out = []
    for name in sorted(reference.keys() | rerun.keys()):
        if name not in reference or name not in rerun:
            out.append(f"{name}: recorded in {'the rerun' if name in rerun else 'the reference'}")
            continue
        fa, fb = flatten(reference[name]), flatten(rerun[name])
        for key in sorted((fa.keys() | fb.keys()) - _NOT_COMPARED):
            if fa.get(key) != fb.get(key):
                out.append(f"{name}.{key}: {fa.get(key)} → {fb.get(key)}")
    return out


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((root / "manifest.json").read_text()))
    except (OSError, ValueError):
        return None


def _code_and_packages(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest's code commits and dirty flags and package versions, flat (not the paths)."""
    from climai.runtime import flatten

    items = flatten(
        {"code": manifest.get("code") or {}, "packages": manifest.get("packages") or {}}
    )
    return {k: v for k, v in items.items() if not k.endswith(".path")}


def manifest_differences(reference: Path, rerun: Path) -> list[str]:
    """What the two folders' ``manifest.json`` say they were made of that differs: the config
    hash, the code (``code.package.commit: 4c77… → d2ff…``) and package versions, each input
    file's identity (``input a.nc ...: sha256 1f2e… → 9a8b…``); [] without one."""
    ma, mb = _read_manifest(reference), _read_manifest(rerun)
    if ma is None or mb is None:
        return []
    ha, hb = (str(m.get("config_sha256"))[:12] for m in (ma, mb))
    out = [f"config_sha256: {ha}… → {hb}… (the reference had another config)"] if ha != hb else []
    ca, cb = (_code_and_packages(m) for m in (ma, mb))  # another commit or library version
    out += [
        f"{k}: {ca.get(k)} → {cb.get(k)}"
        for k in sorted(ca.keys() | cb.keys())
        if ca.get(k) != cb.get(k)
    ]
    ia, ib = ({i["path"]: i for i in m.get("inputs", [])} for m in (ma, mb))
    for path in sorted(ia.keys() | ib.keys()):
        a, b = ia.get(path, {}), ib.get(path, {})
        keys = sorted(k for k in (a.keys() | b.keys()) - {"path"} if a.get(k) != b.get(k))
        if not a or not b:
            out.append(f"input {path}: only in the {'rerun' if b else 'reference'}")
        elif keys:
            diffs = ", ".join(f"{k} {str(a.get(k))[:12]} → {str(b.get(k))[:12]}" for k in keys)
            out.append(f"input {path} changed since the reference was made: {diffs}")
    return out


def card_differences(a: Path, b: Path) -> str:
    """The fields of the two model files' applied cards that differ (dotted, at most 5, with
    both values); empty when they agree."""
    from climai.io.checkpoints import applied_card, load_model_file
    from climai.runtime import flatten

    fa, fb = (flatten(applied_card(load_model_file(p)[1])) for p in (a, b))
    keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    shown = "; ".join(f"{k} ({fa.get(k)!r} → {fb.get(k)!r})" for k in keys[:5])
    return shown + (f"; and {len(keys) - 5} more" if len(keys) > 5 else "")


def compare_artifact(
    name: str, a: Path, b: Path, rtol: float, items: list[str], made_of: list[str] | None = None
) -> Comparison:
    """Compare artifact ``name``: bitwise when ``rtol`` is 0, else within ``rtol`` (relative);
    a difference is reported with its largest absolute and relative size, the recorded runtime
    ``items`` that differ between the runs, and what the manifests say the two were made of that
    differs (``made_of``: :func:`manifest_differences`)."""
    if not b.exists():
        return Comparison(name, False, f"missing in the rerun: {b}")
    sums = []
    for side, path in (("reference", a), ("rerun", b)):
        try:
            sums.append(artifact_checksum(path))
        except Exception as err:  # a damaged chunk or file: zarr, netCDF, torch raise their own
            why = (str(err).strip().splitlines() or [""])[0][:200]
            return Comparison(
                name, False, f"unreadable in the {side}: {path}: {type(err).__name__}: {why}"
            )
    if sums[0] == sums[1]:
        return Comparison(name, True, "bitwise identical")
    worst_abs, worst_rel = value_differences(a, b)
    ok = rtol > 0 and worst_rel <= rtol
    size = (
        f"max abs difference {worst_abs:.3g}, max relative {worst_rel:.3g}"
        if worst_abs
        else "equal values, other attributes or metadata"
    )
    why = f"recorded items that differ: {'; '.join(items)}" if items else ""
    if a.suffix == ".pt" and (cards := card_differences(a, b)):
        why += ("; " if why else "") + f"the model cards differ in {cards}"
    if made_of:
        why += ("; " if why else "") + f"made from other data or config: {'; '.join(made_of)}"
    why = why or (
        "no recorded item differs (a nondeterministic kernel, a change not recorded, or a file "
        "changed since it was made)"
    )
    tolerance = f"tolerance {rtol:g}" if rtol else "bitwise expected"
    return Comparison(name, ok, f"values differ: {size} ({tolerance}); {why}")


def _own_config_hash(path: Path) -> str | None:
    """The hash of the config slice a model card or zarr store says it was made with."""
    try:
        if path.suffix == ".pt":
            from climai.io.checkpoints import load_model_file

            return str(load_model_file(path)[1]["config_sha256"])
        return str(json.loads((path / "zarr.json").read_text())["attributes"]["config_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def compare_campaigns(
    reference: str | Path, rerun: str | Path, device: str = "cpu"
) -> list[Comparison]:
    """Compare every artifact of ``reference`` with the same artifact in ``rerun``: bitwise where
    the runtime records of the rules it depends on match, else within :data:`TOLERANCES`
    (``device="gpu"``: the tolerances whatever the records say); a difference names the input
    files whose manifest records differ and the config hash (not where a model card or store
    records the same stage slice hash in both). One the rerun made that the reference lacks
    though its ``manifest.json`` lists it fails as missing in the reference."""
    reference, rerun = Path(reference), Path(rerun)
    # the artifacts and records of the campaign that was rerun (not of methods since nulled)
    config = (_read_manifest(rerun) or {}).get("config")
    artifacts, of = campaign_artifacts(reference, config), config and _methods(config)
    if not artifacts:
        raise FileNotFoundError(f"no campaign artifacts under {str(reference)!r}")
    made_of = manifest_differences(reference, rerun)
    out = []
    for a in artifacts:
        rel = a.relative_to(reference).as_posix()
        items = record_differences(
            runtime_records(reference, rel, of), runtime_records(rerun, rel, of)
        )
        kind = "other" if items or device == "gpu" else "same"
        tol = TOLERANCES[kind].get(rel.split("/")[0], TOLERANCES[kind]["prep"])  # prepared.folder
        own = {_own_config_hash(a), _own_config_hash(rerun / rel)}  # its stage's slice
        same = len(own) == 1 and None not in own  # so the whole config's hash is not the cause
        why = [m for m in made_of if not (same and m.startswith("config_sha256"))]
        out.append(compare_artifact(rel, a, rerun / rel, tol, items, why))
    # made by the rerun and listed by the reference's manifest, yet gone from the reference:
    # lost since (a reference made in part, e.g. with --until, lists only what it made)
    made = {a.relative_to(rerun).as_posix() for a in campaign_artifacts(rerun, config)}
    listed = set((_read_manifest(reference) or {}).get("artifacts") or {})
    for rel in sorted((made & listed) - {a.relative_to(reference).as_posix() for a in artifacts}):
        out.append(
            Comparison(rel, False, f"missing in the reference (its manifest.json lists it): "
                       f"{reference / rel}")
        )  # fmt: skip
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
