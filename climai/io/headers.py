"""Checks of the source files' headers before any job runs (when the Snakefile loads the config).

Whatever the headers tell is checked here, so that ``snakemake --configfile bad.yaml`` names the
culprit in its own output instead of in a failed job's log: the files exist, the variables are
in them, their units are known and convertible to the configured ones, the x/y coordinates and
the CRS are found, and a GRIB field is selected by ``filter_by_keys`` with known units. Only the
first file of a series is opened, lazily (headers and coordinates, no data values); passed
checks are remembered by the file's size and modification time, so a rerun does not reopen it.
Remote stores (URLs) and reader plugins are left to ingest.

:func:`target_shape` reads the HR grid and the number of steps ingest will write from the same
headers, so that the cost model sizes a fresh campaign's jobs before ingest has run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from climai.config import (
    CampaignConfig,
    ConfigError,
    DerivedStatic,
    PluginSource,
    SyntheticConfig,
)
from climai.grids import GridError, crs_from_dataset, find_xy, standardise
from climai.io.readers import READERS, SourceError, expand_paths, open_source
from climai.plugins import PluginError
from climai.units import (
    UnitsError,
    affine,
    amount_to_rate,
    convert,
    is_amount,
    is_rate,
    lookup,
    normalise,
)
from climai.variables import known_variable

CACHE = Path(".snakemake") / "climai-header-checks.json"
"""Passed checks, by a hash of the source's config and its first file's size and mtime."""


def _sources(cfg: CampaignConfig) -> Iterator[tuple[str, Any, list[tuple[str, str | None]]]]:
    """``(key, spec, [(name in the file, units to convert to or None)])`` of each file source."""
    data = cfg.data
    if not isinstance(data.target, SyntheticConfig):
        yield (
            "data.target",
            data.target,
            [(v.source_name or v.name, None if v.converter else v.units) for v in cfg.variables],
        )
    if data.input is not None:
        names = [(v.input_name or v.source_name or v.name, v.units) for v in cfg.variables]
        yield "data.input", data.input, names
    for name, spec in data.static.items():
        if not isinstance(spec, DerivedStatic):
            yield f"data.static.{name}", spec, [(str(spec.variable), spec.units)]


def _check_units(ds: xr.Dataset, name: str, units: str, where: str) -> None:
    """The units of ``ds[name]`` convert to ``units`` as ingest will convert them."""
    attrs = ds[name].attrs
    if "units" not in attrs:
        raise UnitsError(
            f"variable {name!r}{where} has no 'units' attribute; expected units convertible "
            f"to {units!r}"
        )
    probe = xr.DataArray(np.zeros(1, np.float32), attrs={"units": str(attrs["units"])})
    lookup(units, name, " (config 'variables')")  # the configured units are known
    if is_rate(units) and is_amount(str(attrs["units"])):  # an accumulation, as ingest sees it
        probe = amount_to_rate(probe, 1.0, name)
    convert(probe, units, name, where)


def check_source(
    key: str, spec: Any, names: list[tuple[str, str | None]], cfg: CampaignConfig | None = None
) -> None:
    """Check one source's first file: variables, units, coordinates, CRS, GRIB selection. With
    ``cfg`` (the target's check), also remember the target's shape (:func:`target_shape`) from
    the same open file: a GRIB2 header costs seconds."""
    paths = expand_paths(spec.path, key)
    where = f" in {paths[0]!r} ({key})"
    variables = list(dict.fromkeys(n for n, _ in names))
    probe = _first_files(spec, paths, variables)  # one file, or the first of each variable's
    ds = open_source(spec.model_copy(update={"path": probe}), variables, key)
    try:
        for name, units in names:
            if units is not None:
                _check_units(ds, name, units, where)
        x, _ = find_xy(ds, variables[0])
        crs_from_dataset(ds, variables[0], x, spec.crs)
        if cfg is not None:
            _remember_shape(cfg, _shape_of(ds, cfg, len(paths) // len(probe)))
        else:  # the grid and time checks ingest makes (calendar, spacing, dimensions)
            standardise(ds, variables, key, spec.crs)
    except (UnitsError, GridError) as err:
        raise SourceError(f"{key}: {err}" if key not in str(err) else str(err)) from None
    finally:
        ds.close()


def _first_files(spec: Any, paths: list[str], variables: list[str]) -> list[str]:
    """The first file of a NetCDF series, and where it lacks some of ``variables`` (each in
    files of its own: ``tas_*.nc``, ``pr_*.nc``) the first file holding each of them."""
    if spec.source != "netcdf" or len(paths) == 1:
        return paths[:1]
    out: list[str] = []
    missing = list(variables)
    for path in paths:
        try:
            with xr.open_dataset(path, decode_times=False) as ds:
                held = [v for v in missing if v in ds.data_vars]
        except Exception:  # unreadable: the reader names it
            return paths[:1]
        if held or not out:
            out.append(path)
        missing = [v for v in missing if v not in held]
        if not missing:
            break
    return out


def _fingerprint(key: str, spec: Any, names: list[tuple[str, str | None]]) -> str | None:
    """What a passed check depends on: the config of the source and its first file's identity
    (None: not checkable here, e.g. a URL)."""
    paths = spec.path if isinstance(spec.path, list) else [spec.path]
    if not paths or any("://" in str(p) for p in paths):
        return None
    first = Path(expand_paths(spec.path, key)[0])
    stat = first.stat()
    content = [key, spec.model_dump(mode="json"), names, str(first), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _load_cache(cache: Path) -> set[str]:
    try:
        return set(json.loads(cache.read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def check_headers(cfg: CampaignConfig, cache: Path | None = CACHE) -> int:
    """Check every local file source of ``cfg`` (see the module); raises :class:`SourceError`
    naming the config key, the file and the fix. Returns the number of sources opened (those
    remembered as passed in ``cache`` are not)."""
    if cfg.reuses_data:
        return 0
    passed = _load_cache(cache) if cache is not None else set()
    opened = 0
    for key, spec, names in _sources(cfg):
        if isinstance(spec, PluginSource):
            try:  # a plugin reader is loaded (and its signature checked) now, not in ingest
                READERS.get(spec.source)
            except PluginError as err:
                raise SourceError(f"{key}.source: {err}") from None
            continue
        fingerprint = _fingerprint(key, spec, names)
        if fingerprint is None or fingerprint in passed:
            continue
        remember = key == "data.target" and cache is not None
        check_source(key, spec, names, cfg if remember else None)
        opened += 1
        passed.add(fingerprint)
    if cache is not None and opened:
        _save_cache(cache, passed)
    return opened


def _save_cache(cache: Path, passed: set[str]) -> None:
    """Remember passed checks (best effort: a read-only folder only costs a reopen)."""
    _save_json(cache, sorted(passed))


def _save_json(cache: Path, data: Any) -> None:
    """Write ``data`` to ``cache`` atomically, best effort (a read-only folder: no cache)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, cache)
    except OSError:
        return


SHAPES = Path(".snakemake") / "climai-target-shapes.json"
"""Target shapes already read, by the same fingerprint as the header checks."""


def target_shape(cfg: CampaignConfig, cache: Path | None = SHAPES) -> tuple[int, int, int] | None:
    """``(steps, ny, nx)`` of the HR target that ingest will write, read from the headers before
    it has run (so that a fresh campaign's jobs are sized by the cost model, not by fixed sizes):
    the first file's grid cut to ``domain`` and trimmed to a multiple of ``scale`` as ingest
    does, and the series' steps as the first file's times the number of files (exact for series
    of equal files: one step per GRIB2 or Rainfields file, a year per NetCDF file give or take a
    leap day). None for a synthetic target, a URL or a reader plugin (ingest tells)."""
    key = _shape_key(cfg)
    if key is None:
        return None
    known = _load_shapes(cache)
    if key in known:
        return known[key]
    src = cfg.data.target
    paths = expand_paths(src.path, "data.target")
    probe = _first_files(src, paths, _target_names(cfg))
    ds = open_source(src.model_copy(update={"path": probe}), _target_names(cfg), "data.target")
    try:
        shape = _shape_of(ds, cfg, len(paths) // len(probe))
    finally:
        ds.close()
    if cache is not None:
        _remember_shape(cfg, shape, cache)
    return shape


def check_target(cfg: CampaignConfig, cache: Path | None = SHAPES) -> None:
    """The target's grid as ingest will write it (:func:`target_shape`: cut to ``domain``, which
    must hold some of it, and trimmed to ``scale``) holds every emulator's training patch; a
    :class:`SourceError` names the key otherwise. Before any job, as the header checks."""
    shape = target_shape(cfg, cache)
    if shape is not None:
        try:
            where = "data.target's grid cut to domain and scale"
            cfg.check_patches(shape[1], shape[2], where)
            cfg.check_multiples(shape[1], shape[2], where)
        except ValueError as err:
            raise SourceError(str(err)) from None


def check_synthetic_target(cfg: CampaignConfig) -> None:
    """A synthetic target as ingest and preprocess will cut it, from its parameters alone: the
    domain holds some of the toy world, every emulator's patch fits what it keeps (trimmed to
    ``scale``), and each split holds some of its time steps; a :class:`SourceError` names the
    key otherwise (the config alone checks the uncut grid and the splits' own consistency)."""
    import pandas as pd

    from climai.grids import Grid, subset_and_trim
    from climai.preprocess.splits import make_split_labels
    from climai.synthetic import TOY_CRS, toy_axes

    src = cfg.data.target
    if not isinstance(src, SyntheticConfig):
        return
    try:
        if cfg.domain is not None:
            x, y = toy_axes(src.nx, src.ny, src.dx)
            coords = xr.Dataset(coords={"y": y, "x": x})
            _, grid, _ = subset_and_trim(coords, Grid(x, y, TOY_CRS.to_wkt()), cfg)
            where = "the synthetic data.target cut to domain and scale"
            cfg.check_patches(*grid.shape, where)
            cfg.check_multiples(*grid.shape, where)
        times = pd.date_range(src.start, periods=src.steps, freq="h").values
        make_split_labels(times, cfg.split.model_dump())
    except ValueError as err:  # GridError too
        raise SourceError(str(err)) from None


def check_before_jobs(cfg: CampaignConfig, files: bool = True, cache: bool = True) -> None:
    """Everything checked before any job, by the workflow when it builds the DAG and by
    ``climai validate``: the converters, the metrics (plugins loaded), a reused dataset and,
    with ``files`` and a file target, the sources' headers, the domain and the patches
    (:func:`check_headers`, :func:`check_target`), and a CMIP short name's units
    (:func:`check_known_units`). ``cache``: remember passed checks under ``.snakemake/`` (validate
    writes nothing). Raises ``ConfigError`` or :class:`SourceError` naming the key."""
    from climai.converters import check_converters
    from climai.evaluation.registry import check_metrics
    from climai.reuse import check_other_inputs, check_reused_dataset

    check_converters(cfg)
    try:
        check_metrics(cfg.evaluate.metrics)
    except PluginError as err:
        raise ConfigError(f"config key 'evaluate.metrics': {err}") from None
    check_reused_dataset(cfg)
    check_other_inputs(cfg)  # train_on/validate_on data and init_from models made elsewhere
    check_synthetic_target(cfg)  # no file read
    if files and not isinstance(cfg.data.target, SyntheticConfig):
        check_headers(cfg, CACHE if cache else None)
        check_target(cfg, SHAPES if cache else None)
    check_known_units(cfg)


def check_known_units(cfg: CampaignConfig) -> None:
    """A variable named like a CMIP short name (:data:`climai.variables.KNOWN_VARIABLES`) is
    exported with that name's CF ``standard_name``: its ``units`` must convert to that name's,
    or the export would be, e.g., a ``wind_speed`` in K. pint is loaded only for units spelt
    otherwise than the canonical ones."""
    for i, var in enumerate(cfg.variables):
        known = known_variable(var.name)
        if known is None or normalise(var.units) == normalise(known.units):
            continue
        try:
            affine(var.units, known.units, var.name, " (config 'variables')")
        except UnitsError as err:
            raise ConfigError(
                f"config key 'variables.{i}.units' = {var.units!r}: {var.name!r} is the CMIP "
                f"short name of {known.standard_name!r} (its exports' CF standard_name), in "
                f"units convertible to {known.units!r} ({err}); set such units, or give the "
                "variable another name"
            ) from None


def _target_names(cfg: CampaignConfig) -> list[str]:
    return list(dict.fromkeys(v.source_name or v.name for v in cfg.variables))


def _shape_key(cfg: CampaignConfig) -> str | None:
    """What the target's shape depends on: its files (as the header checks' fingerprint), the
    domain and the scale; None where the headers are not read here."""
    src = cfg.data.target
    if cfg.reuses_data or isinstance(src, SyntheticConfig | PluginSource):
        return None  # another campaign's prepared data (its files may be gone), or not read here
    fingerprint = _fingerprint("data.target", src, [(n, None) for n in _target_names(cfg)])
    if fingerprint is None:
        return None
    return hashlib.sha256(f"{fingerprint}{cfg.domain}{cfg.scale}".encode()).hexdigest()


def _shape_of(ds: xr.Dataset, cfg: CampaignConfig, files: int) -> tuple[int, int, int]:
    """The shape ingest writes from the open first file ``ds`` of ``files``."""
    from climai.grids import standardise, subset_and_trim

    try:
        std, grid = standardise(ds, _target_names(cfg), "data.target", cfg.data.target.crs)
        _, grid, _ = subset_and_trim(std, grid, cfg)
    except GridError as err:
        raise SourceError(str(err)) from None
    ny, nx = grid.shape
    return int(std.sizes.get("time", 1)) * files, int(ny), int(nx)


def _remember_shape(cfg: CampaignConfig, shape: tuple[int, int, int], cache: Path = SHAPES) -> None:
    key = _shape_key(cfg)
    if key is not None:
        _save_json(cache, {**_load_shapes(cache), key: list(shape)})


def _load_shapes(cache: Path | None) -> dict[str, tuple[int, int, int]]:
    try:
        data = json.loads(cache.read_text()) if cache is not None else {}
        return {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in data.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}
