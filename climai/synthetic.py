"""The toy world: a seeded, deterministic, physically plausible km-scale dataset.

Everything is generated from one integer seed, so the default campaign needs no files and every
rerun gives the same bytes. The fields are built the way the real ones behave:

* terrain: a fractal surface by spectral synthesis (isotropic power spectrum ∝ k^-2.2) shaped by a few
  Gaussian ranges, scaled so the highest peaks reach ~3 km; the lowest ~15 % is sea;
* ``tas`` (K): large-scale gradient + seasonal and diurnal cycles (stronger over land) + a lapse
  rate that varies in time (−6.5 K/km ± the diurnal cycle, −8 in the afternoon, plus inversions
  on clear nights: −5.1 K/km on average over the default campaign's 480 steps)
  + weather noise with a red spectrum advected by the wind;
* ``pr`` (mm h-1): intermittent rain areas advected by the wind, enhanced where the wind blows up
  the slope (wind · terrain gradient), plus moving convective cells triggered over high terrain;
  never negative, zero over most of the domain most of the time;
* ``sfcWind`` (m s-1, only on request: :data:`OPTIONAL_FIELDS`): 10 m wind speed, the prevailing
  wind sped up over ridges and slowed in the lee and in valleys, with advected gusts; drawn after
  the other fields, so asking for it leaves ``tas`` and ``pr`` unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS

from climai.grids import crs_variable

TOY_CRS = CRS.from_epsg(3035)  # ETRS89-LAEA Europe: the toy domain sits in the Alps
_ORIGIN = (4_300_000.0, 2_600_000.0)  # south-west corner of the toy domain, metres
LAPSE_RATE_MEAN = -6.5e-3  # K per metre, the mean before night inversions (with them: −5.1e-3)


def _wavenumbers(ny: int, nx: int) -> np.ndarray:
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    return np.hypot(ky, kx)


def spectral_field(
    rng: np.random.Generator, ny: int, nx: int, slope: float, kmin: float = 0.0
) -> np.ndarray:
    """A zero-mean, unit-variance random field with isotropic power spectrum ∝ k^-slope.

    ``kmin`` (cycles per cell) removes scales larger than 1/kmin cells.
    """
    k = _wavenumbers(ny, nx)
    amp = np.zeros_like(k)
    ok = k > max(kmin, 0.0)
    # 2-D spectral density k^-(slope+1) gives a radially averaged 1-D spectrum ∝ k^-slope
    amp[ok] = k[ok] ** (-(slope + 1.0) / 2.0)
    noise = rng.standard_normal((ny, nx)) + 1j * rng.standard_normal((ny, nx))
    field = np.fft.ifft2(noise * amp).real
    return (field - field.mean()) / field.std()


def make_terrain(
    rng: np.random.Generator, ny: int, nx: int, dx: float, peak: float = 3000.0
) -> tuple[np.ndarray, np.ndarray]:
    """Terrain height (m, ≥ 0) and land-sea mask (1 land, 0 sea) on an ``ny`` × ``nx`` grid."""
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    envelope = 0.35 * spectral_field(rng, ny, nx, slope=3.0)  # broad hills and basins
    for _ in range(3):  # a few mountain ranges
        cy, cx = rng.uniform(0.15, 0.85) * ny, rng.uniform(0.15, 0.85) * nx
        angle = rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        length, width = rng.uniform(0.25, 0.5) * nx, rng.uniform(0.08, 0.15) * nx
        envelope += np.exp(-0.5 * ((along / length) ** 2 + (across / width) ** 2))
    roughness = spectral_field(rng, ny, nx, slope=2.2)  # fractal valleys and ridges
    relief = envelope * (1.0 + 0.6 * roughness) + 0.15 * roughness
    sea_level = np.quantile(relief, 0.15)
    height = np.clip(relief - sea_level, 0.0, None)
    height *= peak / height.max()
    lsm = (height > 0).astype(np.float32)
    return height.astype(np.float32), lsm


def _shift(field: np.ndarray, dy_cells: float, dx_cells: float) -> np.ndarray:
    """Periodic sub-cell shift of ``field`` by a phase ramp (advection of a frozen pattern)."""
    ny, nx = field.shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    phase = np.exp(-2j * np.pi * (ky * dy_cells + kx * dx_cells))
    return np.fft.ifft2(np.fft.fft2(field) * phase).real


def _smooth(field: np.ndarray, sigma_cells: float) -> np.ndarray:
    """Periodic Gaussian smoothing by FFT."""
    k = _wavenumbers(*field.shape)
    return np.fft.ifft2(np.fft.fft2(field) * np.exp(-2 * (np.pi * sigma_cells * k) ** 2)).real


def _red_series(rng: np.random.Generator, n: int, tau: float) -> np.ndarray:
    """An AR(1) series with unit variance and e-folding time ``tau`` steps."""
    a = np.exp(-1.0 / tau)
    out = np.empty(n)
    out[0] = rng.standard_normal()
    shocks = rng.standard_normal(n) * np.sqrt(1 - a * a)
    for i in range(1, n):
        out[i] = a * out[i - 1] + shocks[i]
    return out


def _wind(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Wind components (m/s) per step: a prevailing westerly that veers and changes speed."""
    direction = np.deg2rad(250.0) + 0.35 * _red_series(rng, steps, tau=48.0)
    speed = 8.0 + 3.0 * _red_series(rng, steps, tau=36.0)
    speed = np.clip(speed, 2.0, None)
    # meteorological convention: direction the wind blows *from*
    return -speed * np.sin(direction), -speed * np.cos(direction)


def _drifts(u: np.ndarray, v: np.ndarray, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative advection (cells) of a frozen pattern at every step, summed in step order."""
    drift_y = drift_x = 0.0
    ys, xs = np.empty(u.size), np.empty(u.size)
    for t in range(u.size):
        drift_y += v[t] * 3600.0 / dx
        drift_x += u[t] * 3600.0 / dx
        ys[t], xs[t] = drift_y, drift_x
    return ys, xs


class _Tas:
    """``tas`` (K) of any block of steps: every random draw is made here, in the toy world's
    order, so a block is a pure function of its steps."""

    def __init__(
        self,
        rng: np.random.Generator,
        height: np.ndarray,
        lsm: np.ndarray,
        times: pd.DatetimeIndex,
        u: np.ndarray,
        v: np.ndarray,
        dx: float,
    ) -> None:
        steps = times.size
        ny, nx = height.shape
        hour = times.hour.to_numpy() + times.minute.to_numpy() / 60.0
        doy = times.day_of_year.to_numpy()
        yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
        self.gradient = 288.0 - 2.0 * yy + 0.8 * xx
        self.seasonal = 6.0 * np.cos(2 * np.pi * (doy - 200) / 365.25)
        self.diurnal = np.cos(2 * np.pi * (hour - 15.0) / 24.0)
        self.clear = 1.0 / (1.0 + np.exp(-1.5 * _red_series(rng, steps, tau=30.0)))  # 0..1 clear
        night = np.clip(-np.cos(2 * np.pi * (hour - 15.0) / 24.0), 0, None)
        # inversions: lapse > 0
        self.lapse = LAPSE_RATE_MEAN - 1.5e-3 * self.diurnal + 9.0e-3 * night * self.clear
        self.noise = spectral_field(rng, ny, nx, slope=3.5, kmin=0.5 / max(ny, nx))
        self.weather = 1.5 * _red_series(rng, steps, tau=72.0)
        self.height, self.lsm, self.shape = height, lsm, height.shape
        self.drift = _drifts(u, v, dx)

    def block(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.height.shape), np.float32)
        for i, t in enumerate(range(start, stop)):
            amp = (3.0 + 3.0 * self.clear[t]) * self.diurnal[t] * (0.4 + 0.6 * self.lsm)
            out[i] = (
                self.gradient
                + self.seasonal[t]
                + amp
                + self.lapse[t] * self.height
                + self.weather[t]
                + 0.6 * _shift(self.noise, self.drift[0][t], self.drift[1][t])
            )
        return out


class _Pr:
    """``pr`` (mm h-1) of any block of steps. The convective cells' life cycles (every random
    draw of every step, in the toy world's order) are traced here once, without any field:
    a block then only evaluates the cells alive at its steps."""

    def __init__(
        self,
        rng: np.random.Generator,
        height: np.ndarray,
        times: pd.DatetimeIndex,
        u: np.ndarray,
        v: np.ndarray,
        dx: float,
    ) -> None:
        steps = times.size
        ny, nx = height.shape
        self.gy, self.gx = np.gradient(_smooth(height, 1.5), dx)  # m/m, slightly smoothed
        self.moisture = 0.5 + 0.5 * np.tanh(_red_series(rng, steps, tau=24.0))  # wet/dry spells
        self.areas = spectral_field(rng, 2 * ny, 2 * nx, slope=3.0)  # larger than the domain
        self.u, self.v, self.shape = u, v, (ny, nx)
        self.drift = _drifts(u, v, dx)
        # per step: (y, x, radius (cells), peak (mm/h), life factor) of every cell alive
        self.alive: list[list[tuple[float, float, float, float, float]]] = []
        cells: list[list[float]] = []  # y, x, radius, peak, age, life (h)
        for t in range(steps):
            n_new = rng.poisson(1.2 * self.moisture[t])
            for _ in range(n_new):
                y0, x0 = rng.integers(0, ny), rng.integers(0, nx)
                if rng.uniform() < 0.3 + 0.7 * height[y0, x0] / height.max():
                    cells.append(
                        [y0, x0, rng.uniform(4, 10), rng.gamma(2.0, 2.0), 0.0, rng.uniform(2, 6)]
                    )
            now = []
            for c in cells:
                c[0] += v[t] * 3600.0 / dx
                c[1] += u[t] * 3600.0 / dx
                c[4] += 1.0
                now.append((c[0], c[1], c[2], c[3], np.sin(np.pi * min(c[4] / c[5], 1.0))))
            self.alive.append(now)
            cells = [c for c in cells if c[4] < c[5]]

    def block(self, start: int, stop: int) -> np.ndarray:
        ny, nx = self.shape
        u, v, gx, gy = self.u, self.v, self.gx, self.gy
        out = np.empty((stop - start, ny, nx), np.float32)
        yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
        for i, t in enumerate(range(start, stop)):
            field = _shift(self.areas, self.drift[0][t], self.drift[1][t])[:ny, :nx]
            moisture = self.moisture[t]
            stratiform = np.clip(field - 0.7 + 1.2 * (moisture - 0.5), 0, None) * 0.8
            upslope = np.clip(u[t] * gx + v[t] * gy, 0, None)  # m/s of forced ascent
            orographic = 1.5 * upslope * moisture * (stratiform > 0)
            rain = stratiform * (1.0 + 1.5 * upslope) + orographic
            # convective cells: born over high terrain when moist, advected by the wind
            for cy, cx, radius, peak, life in self.alive[t]:
                r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2
                rain += peak * life * np.exp(-0.5 * r2)
            rain[rain < 0.05] = 0.0  # below the rain gauge threshold: dry
            out[i] = rain
        return out


def _sfc_wind(
    rng: np.random.Generator,
    height: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    dx: float,
) -> np.ndarray:
    """10 m wind speed (m s-1, ≥ 0): the prevailing speed, faster with height and on windward
    slopes, slower in the lee, times advected gusts."""
    steps = u.size
    ny, nx = height.shape
    smooth = _smooth(height, 2.0)
    gy, gx = np.gradient(smooth, dx)
    exposure = 1.0 + 0.3 * smooth / max(float(smooth.max()), 1.0)  # ridges and peaks: faster
    gusts = spectral_field(rng, ny, nx, slope=3.0)
    gust_amp = 0.1 + 0.1 * (0.5 + 0.5 * np.tanh(_red_series(rng, steps, tau=12.0)))
    out = np.empty((steps, ny, nx), np.float32)
    drift_y = drift_x = 0.0
    for t in range(steps):
        drift_y += v[t] * 3600.0 / dx
        drift_x += u[t] * 3600.0 / dx
        speed = np.hypot(u[t], v[t])
        slope = (u[t] * gx + v[t] * gy) / speed  # along-wind terrain slope, m/m
        terrain = exposure * np.clip(1.0 + 2.0 * slope, 0.5, 1.5)  # windward up, lee down
        gust = 1.0 + gust_amp[t] * _shift(gusts, drift_y, drift_x)
        out[t] = np.clip(speed * terrain * gust, 0.0, None)
    return out


#: Fields the toy world draws only when asked (``toy_world(extra=...)``): name → CF attributes.
OPTIONAL_FIELDS: dict[str, tuple[str, str, str]] = {
    "sfcWind": ("wind_speed", "m s-1", "10 m wind speed"),
}


def toy_axes(nx: int, ny: int, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: the cell centres (metres, :data:`TOY_CRS`) of the toy world's HR grid."""
    return _ORIGIN[0] + dx * (np.arange(nx) + 0.5), _ORIGIN[1] + dx * (np.arange(ny) + 0.5)


def toy_world(
    seed: int = 0,
    nx: int = 128,
    ny: int = 128,
    dx: float = 500.0,
    steps: int = 480,
    start: str = "2020-06-01T00:00",
    extra: tuple[str, ...] = (),
    time_chunk: int | None = None,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Build the toy world: ``(target, static)`` datasets on one projected HR grid.

    ``target`` holds ``tas`` (K) and ``pr`` (mm h-1) on ``(time, y, x)``, and the
    :data:`OPTIONAL_FIELDS` named in ``extra`` (drawn after the others: ``tas`` and ``pr`` are
    the same with or without them); ``static`` holds ``orography`` (m) and ``lsm`` (1 = land).
    The same arguments always give the same values. With ``time_chunk``, ``tas`` and ``pr`` are
    lazy dask arrays of that many steps per chunk, each computed on demand (the same values;
    memory bounded by the chunks, not the series).

    Examples
    --------
    >>> target, static = toy_world(seed=1, nx=32, ny=32, steps=8)
    >>> target["tas"].dims, float(target["pr"].min()) >= 0.0
    (('time', 'y', 'x'), True)
    """
    rng = np.random.default_rng(seed)
    height, lsm = make_terrain(rng, ny, nx, dx)
    times = pd.date_range(start, periods=steps, freq="h")
    u, v = _wind(rng, steps)
    tas = _fields(_Tas(rng, height, lsm, times, u, v, dx), steps, time_chunk)
    pr = _fields(_Pr(rng, height, times, u, v, dx), steps, time_chunk)
    unknown = sorted(set(extra) - set(OPTIONAL_FIELDS))
    if unknown:
        raise ValueError(
            f"toy_world: no optional field(s) {unknown}; optional fields: "
            f"{', '.join(OPTIONAL_FIELDS)}"
        )
    optional = {"sfcWind": _sfc_wind(rng, height, u, v, dx)} if "sfcWind" in extra else {}

    x, y = toy_axes(nx, ny, dx)
    coords = {
        "time": ("time", times.values),
        "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate", "axis": "Y"}),
        "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate", "axis": "X"}),
    }
    crs = crs_variable(TOY_CRS)
    target = xr.Dataset(
        {
            "tas": (("time", "y", "x"), tas, _attrs("air_temperature", "K", "2 m temperature")),
            "pr": (
                ("time", "y", "x"),
                pr,
                _attrs("lwe_precipitation_rate", "mm h-1", "precipitation rate"),
            ),
            **{
                name: (("time", "y", "x"), values, _attrs(*OPTIONAL_FIELDS[name]))
                for name, values in optional.items()
            },
            "crs": crs,
        },
        coords=coords,
        attrs={"title": "climai toy world", "source": f"climai.synthetic.toy_world(seed={seed})"},
    )
    static = xr.Dataset(
        {
            "orography": (("y", "x"), height, _attrs("surface_altitude", "m", "terrain height")),
            "lsm": (("y", "x"), lsm, _attrs("land_binary_mask", "1", "land-sea mask")),
            "crs": crs,
        },
        coords={k: coords[k] for k in ("y", "x")},
        attrs={"title": "climai toy world static fields"},
    )
    return target, static


def toy_world_counts(
    target: xr.Dataset, names: list[str]
) -> tuple[dict[str, xr.DataArray], xr.DataArray]:
    """Valid cells per step of each of ``names`` and per cell, of the toy world ``target``
    without reading it: every cell of every step is valid (and ``pr`` ≥ 0) by construction."""
    steps, ny, nx = target.sizes["time"], target.sizes["y"], target.sizes["x"]
    per_step = {
        n: xr.DataArray(np.full(steps, ny * nx), coords={"time": target["time"]}, dims="time")
        for n in names
    }
    cells = np.full((ny, nx), steps)
    per_cell = xr.DataArray(cells, coords={"y": target["y"], "x": target["x"]}, dims=("y", "x"))
    return per_step, per_cell


def _fields(maker: _Tas | _Pr, steps: int, time_chunk: int | None) -> Any:
    """All steps of ``maker``'s field: in memory, or lazily by chunks of ``time_chunk`` steps."""
    if time_chunk is None:
        return maker.block(0, steps)
    import dask
    import dask.array as da

    blocks = []
    for start in range(0, steps, time_chunk):
        stop = min(steps, start + time_chunk)
        block = dask.delayed(maker.block, pure=False)(start, stop)
        shape = (stop - start, *maker.shape)
        blocks.append(da.from_delayed(block, shape, dtype=np.float32))
    return da.concatenate(blocks)


def _attrs(standard_name: str, units: str, long_name: str) -> dict[str, str]:
    return {
        "standard_name": standard_name,
        "units": units,
        "long_name": long_name,
        "grid_mapping": "crs",
    }
