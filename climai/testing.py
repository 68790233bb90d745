"""Seeded factories for tests (and for users' own tests of extensions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
import yaml

from climai.config import deep_merge
from climai.data.features import FeatureSpec
from climai.data.prepared import PreparedDataset
from climai.models.unet import ResidualUNet
from climai.synthetic import toy_world


def create_test_data(
    nx: int = 32, ny: int = 32, steps: int = 24, seed: int = 0
) -> tuple[xr.Dataset, xr.Dataset]:
    """A tiny toy world: ``(target, static)`` with ``tas`` and ``pr``."""
    return toy_world(seed=seed, nx=nx, ny=ny, steps=steps)


def create_prepared_test_data(
    nx: int = 32, ny: int = 32, steps: int = 20, scale: int = 8, seed: int = 0
) -> xr.Dataset:
    """The tiny toy world as ``preprocess`` prepares it (lazy, not written): ``hr_``/``lr_`` of
    ``tas`` and ``pr``, its static fields, and 60/20/20 % train/val/test splits."""
    from climai.preprocess.dataset import build_dataset

    target, static = create_test_data(nx=nx, ny=ny, steps=steps, seed=seed)
    variables = {"tas": "temperature", "pr": "precipitation"}
    return build_dataset(target, static, variables, scale, {"train": 0.6, "val": 0.2, "test": 0.2})


def radar_mask(ny: int, nx: int, radius: float = 0.45, blocked_deg: float = 20.0) -> np.ndarray:
    """Boolean ``(ny, nx)``, True where a radar sees: a disc of ``radius`` × the domain size
    around the centre, minus a beam-blocked wedge of ``blocked_deg`` degrees (pointing north-east).
    """
    yy, xx = np.meshgrid(np.arange(ny) + 0.5 - ny / 2, np.arange(nx) + 0.5 - nx / 2, indexing="ij")
    inside = np.hypot(yy, xx) <= radius * min(ny, nx)
    angle = np.degrees(np.arctan2(yy, xx))
    return inside & ~((angle > 45 - blocked_deg / 2) & (angle < 45 + blocked_deg / 2))


def create_masked_test_data(
    nx: int = 32, ny: int = 32, steps: int = 24, seed: int = 0, radius: float = 0.45
) -> tuple[xr.Dataset, xr.Dataset]:
    """The tiny toy world with ``pr`` NaN outside a radar's range and in a blocked wedge.

    Like the radar composites of the KNMI and FMI campaigns: ``tas`` stays complete.
    """
    target, static = create_test_data(nx=nx, ny=ny, steps=steps, seed=seed)
    seen = radar_mask(ny, nx, radius)
    target["pr"] = target["pr"].where(xr.DataArray(seen, dims=("y", "x")))
    return target, static


def random_field(shape: tuple[int, ...], seed: int = 0, nan_fraction: float = 0.0) -> np.ndarray:
    """Seeded float32 normal noise with a fraction of NaN cells."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal(shape).astype(np.float32)
    if nan_fraction:
        out[rng.uniform(size=shape) < nan_fraction] = np.nan
    return out


TINY_CAMPAIGN: dict[str, Any] = {
    "campaign": "tiny",
    "data": {"target": {"source": "synthetic", "nx": 32, "ny": 32, "steps": 48}},
    # one test step in the maps (the default, 2, doubles the evaluate and compare figures' rows:
    # matplotlib's ~0.1 s per panel made them a fifth of a tiny campaign's time)
    "evaluate": {"figure_steps": 1},
    # the default ensemble (config/config.yaml) off: tests that want it switch it on
    "methods": {"bicubic": {}, "unet": {"epochs": 1, "patch": 32, "batch": 8}, "unet-crps": None},
}


def reference_roughness(lr: np.ndarray) -> np.ndarray:
    """The coefficient of variation of each LR cell's valid 3 × 3 neighbours, one cell at a time:
    the plain loop that ``climai.models.constraints.lr_roughness`` is tested against."""
    out = np.zeros_like(lr)
    for i in range(lr.shape[0]):
        for j in range(lr.shape[1]):
            v = lr[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            v = v[np.isfinite(v)]
            out[i, j] = v.std() / v.mean() if v.size and v.mean() > 0 else 0.0
    return out


def write_config(path: str | Path, **overrides: Any) -> Path:
    """Write a tiny campaign config (``TINY_CAMPAIGN`` updated with ``overrides``) to ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump(deep_merge(TINY_CAMPAIGN, overrides), sort_keys=False))
    return path


def synthetic_ensemble_store(
    truth: xr.Dataset, variables: list[str], members: int = 4, noise: float = 0.5, seed: int = 0
) -> xr.Dataset:
    """A downscaled store with a ``member`` dimension, as an ensemble method writes it: each
    member is the HR truth (``hr_<var>``) plus seeded noise of std ``noise`` × the truth's std
    (non-negative variables clipped at 0)."""
    rng = np.random.default_rng(seed)
    out = xr.Dataset(coords={c: truth[c] for c in ("time", "y", "x")})
    prep = PreparedDataset(truth)
    for var in variables:
        t = prep.hr(var).values
        ens = t[None] + noise * float(np.nanstd(t)) * rng.standard_normal((members, *t.shape))
        if np.nanmin(t) >= 0:
            ens = np.clip(ens, 0, None)
        out[var] = (
            ("member", "time", "y", "x"),
            ens.astype(np.float32),
            {"units": prep.hr(var).attrs.get("units", "")},
        )
    return out.assign_coords(member=np.arange(members))


def write_cf_netcdf(
    path: str | Path,
    fields: dict[str, tuple[np.ndarray, str]],
    x: np.ndarray,
    y: np.ndarray,
    crs: Any = None,
    times: Any = None,
    time_bounds: bool = False,
    x_name: str = "x",
    y_name: str = "y",
) -> Path:
    """Write a small CF NetCDF file: ``fields`` maps name → (array, units) on (time,)y,x.

    ``crs`` (anything pyproj reads) adds a grid-mapping variable; ``times`` (datetimes) a time
    axis, with ``time_bnds`` of the step before each time when ``time_bounds``; lat/lon grids use
    ``x_name='lon', y_name='lat'`` and ``crs=None``.
    """
    from pyproj import CRS

    from climai.grids import crs_variable

    geographic = x_name in ("lon", "longitude")
    coords: dict[str, Any] = {
        y_name: (
            y_name,
            np.asarray(y, dtype=np.float64),
            {"units": "degrees_north", "standard_name": "latitude"}
            if geographic
            else {"units": "m", "standard_name": "projection_y_coordinate", "axis": "Y"},
        ),
        x_name: (
            x_name,
            np.asarray(x, dtype=np.float64),
            {"units": "degrees_east", "standard_name": "longitude"}
            if geographic
            else {"units": "m", "standard_name": "projection_x_coordinate", "axis": "X"},
        ),
    }
    dims: tuple[str, ...] = (y_name, x_name)
    ds = xr.Dataset(coords=coords)
    if times is not None:
        times = pd.DatetimeIndex(times)
        ds = ds.assign_coords(time=("time", times.values, {"standard_name": "time", "axis": "T"}))
        dims = ("time", *dims)
        if time_bounds:
            step = times[1] - times[0] if times.size > 1 else pd.Timedelta("5min")
            bnds = np.stack([(times - step).values, times.values], axis=1)
            ds["time_bnds"] = (("time", "nv"), bnds)
            ds["time"].attrs["bounds"] = "time_bnds"
    for name, (values, units) in fields.items():
        attrs = {"units": units} if units else {}
        if crs is not None:
            attrs["grid_mapping"] = "crs"
        ds[name] = (dims, np.asarray(values, dtype=np.float32), attrs)
    if crs is not None:
        ds["crs"] = crs_variable(CRS.from_user_input(crs))
    enc = (
        {"time": {"units": "minutes since 1970-01-01", "dtype": "int64"}}
        if times is not None
        else {}
    )
    if "time_bnds" in ds:
        enc["time_bnds"] = {"units": "minutes since 1970-01-01", "dtype": "int64"}
    path = Path(path)
    ds.to_netcdf(path, encoding=enc)
    return path


def write_toy_series(
    folder: str | Path,
    n_files: int,
    steps_per_file: int,
    nx: int = 32,
    ny: int = 32,
    seed: int = 0,
) -> list[Path]:
    """A multi-file NetCDF series of the toy world's ``pr`` (mm h-1) and ``tas`` (K), one file
    per ``steps_per_file`` hourly steps, named ``toy_000.nc``... in time order."""
    from climai.synthetic import TOY_CRS

    target, _ = toy_world(seed=seed, nx=nx, ny=ny, steps=n_files * steps_per_file)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        part = target.isel(time=slice(i * steps_per_file, (i + 1) * steps_per_file))
        paths.append(
            write_cf_netcdf(
                folder / f"toy_{i:03d}.nc",
                {n: (part[n].values, part[n].attrs["units"]) for n in ("pr", "tas")},
                part["x"].values,
                part["y"].values,
                crs=TOY_CRS,
                times=part["time"].values,
            )
        )
    return paths


def toy_feature_spec(scale: int = 8) -> FeatureSpec:
    """The toy campaign's features (tas, pr; orography, lsm) with round-number statistics."""
    stats: dict[str, Any] = {
        "tas": {"transform": "identity", "offset": 1.0, "mean": 285.0, "std": 5.0},
        "pr": {"transform": "log1p", "offset": 1.0, "mean": 0.2, "std": 0.4},
        "static": {"lsm": {"mean": 0.5, "std": 0.5}, "orography": {"mean": 800.0, "std": 600.0}},
    }
    return FeatureSpec(
        variables=["tas", "pr"], statics=["lsm", "orography"], scale=scale, stats=stats
    )


def trained_like_unet(
    spec: FeatureSpec, channels: list[int] | None = None, seed: int = 0
) -> ResidualUNet:
    """A residual U-Net with seeded random weights everywhere, the head included (an untrained
    one returns its base exactly, which would hide any tiling error)."""
    torch.manual_seed(seed)
    model = ResidualUNet(spec.in_channels, spec.out_channels, channels or [16, 32, 64])
    torch.nn.init.normal_(model.head.weight, std=0.3)
    torch.nn.init.normal_(model.head.bias, std=0.1)
    return model.eval()


class NoisyUNet(ResidualUNet):
    """A tiny stochastic model: the U-Net's correction plus noise from a seeded generator.

    ``sample(x, base, members)`` → ``(N, members, V, h, w)``; the same seed gives the same members.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: list[int], seed: int = 0):
        super().__init__(in_channels, out_channels, channels)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, x: torch.Tensor, base: torch.Tensor, members: int) -> torch.Tensor:
        mean = self(x, base)
        noise = torch.randn(
            (x.shape[0], members, *mean.shape[1:]), generator=self.generator, dtype=mean.dtype
        )
        return mean[:, None] + 0.5 * noise


def model_card_for(spec: FeatureSpec, channels: list[int], dx: float = 500.0) -> dict[str, Any]:
    """A model card like the train stage's (toy CRS, ``dx`` m HR spacing)."""
    from climai.synthetic import TOY_CRS

    return {
        "method": "unet",
        "architecture": {"name": "ResidualUNet", "norm": "channel", "channels": channels},
        "features": spec.as_dict(),
        "config": {
            "variables": [
                {"name": "tas", "units": "K", "kind": "temperature"},
                {"name": "pr", "units": "mm h-1", "kind": "precipitation"},
            ]
        },
        "config_sha256": "0" * 64,
        "grid": {"hr_dx": dx, "hr_dy": dx, "crs_wkt": TOY_CRS.to_wkt()},
        "units": {"tas": "K", "pr": "mm h-1"},
        "static_units": {"orography": "m", "lsm": "1"},
    }


def lr_inputs(
    ny: int, nx: int, steps: int, scale: int = 8, seed: int = 0, dx: float = 500.0
) -> tuple[xr.Dataset, xr.Dataset]:
    """``(lr, static)``: LR ``tas``/``pr`` of a toy world of ``ny × nx`` HR cells (block means)
    with CF units and CRS, as ``climai downscale`` reads them, and its HR static fields."""
    from climai.preprocess.coarsen import coarsen_block_mean

    target, static = toy_world(seed=seed, nx=nx, ny=ny, dx=dx, steps=steps)
    lr = xr.Dataset({v: coarsen_block_mean(target[v], scale) for v in ("tas", "pr")})
    lr["crs"] = target["crs"]
    for axis in ("x", "y"):
        lr[axis].attrs = dict(target[axis].attrs)
    return lr, static


def prepare_campaign(workdir: str | Path, **overrides: Any) -> Path:
    """Write a tiny config in ``workdir`` and run ingest and preprocess there; return the config.

    Outputs go under ``workdir/results`` whatever the current folder (the config's ``results``
    is made absolute), so subprocesses can train on it.
    """
    from climai.config import config_sha256, load_config, stage_slice
    from climai.stages import StageContext
    from climai.stages.ingest import run as run_ingest
    from climai.stages.preprocess import run as run_preprocess

    workdir = Path(workdir)
    path = write_config(workdir / "tiny.yaml", results=str(workdir / "results"), **overrides)
    cfg = load_config(path)
    for stage, run in (("ingest", run_ingest), ("preprocess", run_preprocess)):
        run(StageContext(cfg, config_sha256(stage_slice(cfg, stage)), stage, 1))
    return path


def tiny_sources(
    steps: int = 40,
    seed: int = 0,
    nan_box: bool = False,
    size: int = 32,
    variables: tuple[str, ...] = ("tas", "pr"),
):
    """``(spec, train, val, hr)``: a FeatureSpec and in-memory train/val patch sources of a tiny
    toy world (``size`` × ``size`` HR cells, scale 8; 80 % of the steps train, the rest val) with
    ``variables`` (of tas, pr); ``nan_box`` blanks the target's top-left quarter."""
    import pandas as pd

    from climai.data.dataset import MemorySource
    from climai.data.features import FeatureSpec
    from climai.preprocess import coarsen_block_mean

    target, static = create_test_data(nx=size, ny=size, steps=steps, seed=seed)
    names = ["tas", "pr"]  # the statistics are of both; ``variables`` picks the model's
    hr = np.stack([target[v].values for v in names], axis=1).astype(np.float32)
    lr = np.stack([coarsen_block_mean(target[v], 8).values for v in names], axis=1)
    if nan_box:
        hr[:, :, : size // 2, : size // 2] = np.nan
    st = np.stack([static[s].values for s in ("lsm", "orography")]).astype(np.float32)
    stats: dict[str, Any] = {
        "tas": {
            "transform": "identity",
            "offset": 1.0,
            "mean": float(np.nanmean(hr[:, 0])),
            "std": float(np.nanstd(hr[:, 0])),
        },
        "pr": {
            "transform": "log1p",
            "offset": 1.0,
            "mean": float(np.nanmean(np.log1p(hr[:, 1]))),
            "std": float(np.nanstd(np.log1p(hr[:, 1]))),
        },
        "static": {
            s: {"mean": float(v.mean()), "std": float(v.std()) or 1.0}
            for s, v in zip(("lsm", "orography"), st, strict=True)
        },
    }
    spec = FeatureSpec(
        names, ["lsm", "orography"], 8, stats, ["temperature", "precipitation"]
    ).subset(list(variables))
    keep = [names.index(v) for v in variables]
    hr, lr = hr[:, keep], lr[:, keep]
    times = pd.DatetimeIndex(target["time"].values)
    n = int(steps * 0.8)
    train = MemorySource(lr[:n].astype(np.float32), hr[:n], st, times[:n])
    val = MemorySource(lr[n:].astype(np.float32), hr[n:], st, times[n:])
    return spec, train, val, hr


def write_plugin_package(
    root: str | Path,
    dist: str,
    files: dict[str, str],
    entry_points: dict[str, dict[str, str]],
    version: str = "0.1.0",
) -> Path:
    """Write an installed-looking package under ``root``: its ``files`` (relative path → text)
    and a ``<dist>-<version>.dist-info`` declaring ``entry_points`` (group → name → "module:attr").

    With ``root`` on ``sys.path`` (and on ``PYTHONPATH`` for subprocesses such as Snakemake's
    jobs), ``importlib.metadata`` finds the entry points exactly as for a package installed with
    pip, so climai's registries load the plugin. Returns ``root``.
    """
    root = Path(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    sections = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items())
        for group, eps in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))
    return root


def write_calendar_series(
    folder: str | Path, calendar: str, years: list[int], n: int = 8, seed: int = 0
) -> list[Path]:
    """One CF NetCDF file per year, ``pr_<year>.nc``, of daily-mean ``pr`` (kg m-2 s-1, seeded,
    ``cell_methods: time: mean``) on an ``n`` × ``n`` 1 km EPSG:3035 grid, in ``calendar``: times
    at 12:00 with bounds ``time_bnds`` [00:00, 24:00), encoded as days since 1950 in ``calendar``
    (decoded by xarray as cftime dates unless the calendar is a standard one)."""
    import datetime as dt

    import cftime
    from pyproj import CRS

    from climai.grids import crs_variable

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    axis = np.arange(n) * 1000.0 + 4_000_000.0
    paths = []
    for year in years:
        start = cftime.datetime(year, 1, 1, calendar=calendar)
        days = round((cftime.datetime(year + 1, 1, 1, calendar=calendar) - start).days)
        edges = [start + dt.timedelta(days=d) for d in range(days + 1)]
        ds = xr.Dataset(
            coords={
                "time": ("time", [e + dt.timedelta(hours=12) for e in edges[:-1]]),
                "y": ("y", axis, {"units": "m", "standard_name": "projection_y_coordinate"}),
                "x": ("x", axis, {"units": "m", "standard_name": "projection_x_coordinate"}),
            }
        )
        ds["time"].attrs = {"standard_name": "time", "axis": "T", "bounds": "time_bnds"}
        ds["time_bnds"] = (("time", "nv"), np.stack([edges[:-1], edges[1:]], axis=1))
        pr = rng.gamma(0.5, 2e-5, (days, n, n)).astype(np.float32)
        attrs = {"units": "kg m-2 s-1", "cell_methods": "time: mean", "grid_mapping": "crs"}
        ds["pr"] = (("time", "y", "x"), pr, attrs)
        ds["crs"] = crs_variable(CRS.from_epsg(3035))
        enc = {"units": "days since 1950-01-01", "calendar": calendar, "dtype": "float64"}
        path = folder / f"pr_{year}.nc"
        ds.to_netcdf(path, encoding={"time": enc, "time_bnds": dict(enc)})
        paths.append(path)
    return paths
