"""Figures in the data's coordinates: maps north up whichever way y runs (rendered pixels),
labelled in km or lon/lat; spectra against wavelength in km (lat/lon: at the mean latitude); the
whole domain with an automatic zoom; learning curves."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from climai.evaluation import figures, overview
from climai.evaluation.figures import draw_map, learning_curves_figure, spectra_figure
from climai.evaluation.mapgrid import KM_PER_DEGREE, MapGrid
from climai.evaluation.metrics import SpectralRegion
from climai.evaluation.overview import overview_figure, zoom_box, zoom_size
from climai.testing import create_prepared_test_data


def _grid(ny: int, nx: int, y_increasing: bool, geographic: bool) -> MapGrid:
    """A grid of ``ny``×``nx`` cells: 0.01° around 37°N, 100°W, or 500 m cells in metres."""
    if geographic:
        x, y = -100 + 0.01 * np.arange(nx), 37 + 0.01 * np.arange(ny)
    else:
        x, y = 4e6 + 500.0 * np.arange(nx), 2e6 + 500.0 * np.arange(ny)
    return MapGrid(x, y if y_increasing else y[::-1], geographic)


def _north_bright(grid: MapGrid) -> np.ndarray:
    """1 on the northern half of the grid (the larger y), 0 on the southern half, in data order."""
    north = grid.y > np.median(grid.y)
    return np.broadcast_to(north[:, None], grid.shape).astype(float)


def _rendered_halves(fig: plt.Figure, ax: plt.Axes) -> tuple[float, float]:
    """Mean grey level of the top and the bottom half of ``ax``'s drawn image (0 black, 1 white)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].mean(axis=-1) / 255
    box = ax.get_window_extent()  # pixels from the bottom left; the buffer's row 0 is the top
    h = rgba.shape[0]
    x0, x1 = math.ceil(box.x0) + 2, math.floor(box.x1) - 2
    top, bottom = h - math.floor(box.y1) + 2, h - math.ceil(box.y0) - 2
    pixels = rgba[top:bottom, x0:x1]
    half = pixels.shape[0] // 2
    return float(pixels[: half - 2].mean()), float(pixels[half + 2 :].mean())


@pytest.mark.parametrize(
    ("ny", "nx", "y_increasing", "geographic", "labels"),
    [
        (40, 60, True, False, ("x (km)", "y (km)")),
        (40, 60, False, False, ("x (km)", "y (km)")),  # FMI, BOM: y from north to south
        (40, 60, True, True, ("longitude (°E)", "latitude (°N)")),
        (40, 60, False, True, ("longitude (°E)", "latitude (°N)")),  # MRMS: latitude decreasing
        (1400, 700, False, True, ("longitude (°E)", "latitude (°N)")),  # decimated for drawing
    ],
)
def test_maps_are_north_up_in_the_data_coordinates(ny, nx, y_increasing, geographic, labels):
    grid = _grid(ny, nx, y_increasing, geographic)
    field = _north_bright(grid)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    im = draw_map(ax, field, grid, vmin=0, vmax=1, cmap="gray")
    top, bottom = _rendered_halves(fig, ax)
    assert top > 0.95 and bottom < 0.05, (top, bottom)  # the bright north is at the top
    # the image's extent is the data's coordinates, south below north
    west, east, south, north = im.get_extent()
    scale, cell = (1, 0.01) if geographic else (1000, 0.5)  # plot units: degrees or km
    assert south < north and west < east
    assert south == pytest.approx(grid.y.min() / scale, abs=3 * cell)  # within a block
    assert north == pytest.approx(grid.y.max() / scale, abs=3 * cell)
    assert west == pytest.approx(grid.x.min() / scale, abs=3 * cell)
    assert (ax.get_xlabel(), ax.get_ylabel()) == labels
    assert ax.get_ylim()[0] < ax.get_ylim()[1]  # the y axis is not inverted
    plt.close(fig)


@pytest.mark.parametrize(
    ("units", "geographic", "factor"),
    [("m", False, 1.0), ("km", False, 1000.0), ("degrees_north", True, 1.0)],
)
def test_map_grid_of_a_dataset_reads_units(units, geographic, factor):
    x_units = "degrees_east" if geographic else units
    ds = xr.Dataset(
        coords={
            "x": ("x", [1.0, 2.0, 3.0], {"units": x_units}),
            "y": ("y", [9.0, 8.0], {"units": units}),
        }
    )
    grid = MapGrid.of(ds)
    assert grid.geographic is geographic
    np.testing.assert_array_equal(grid.x, np.array([1.0, 2.0, 3.0]) * factor)
    np.testing.assert_array_equal(grid.y, np.array([9.0, 8.0]) * factor)


def test_a_rotated_pole_grid_is_labelled_in_rotated_degrees():
    """x a CF grid_longitude (how ingest writes a rotated-pole grid): the axes say rotated
    degrees, in every panel (subsets, decimated maps); they said longitude (°E), latitude
    (°N), which a rotated grid's numbers are not."""
    attrs = {"units": "degrees"}
    ds = xr.Dataset(
        coords={
            "x": ("x", np.arange(8) * 0.1 - 2.0, {**attrs, "standard_name": "grid_longitude"}),
            "y": ("y", np.arange(6) * 0.1 + 1.0, {**attrs, "standard_name": "grid_latitude"}),
        }
    )
    grid = MapGrid.of(ds)
    want = ("rotated longitude (°)", "rotated latitude (°)")
    assert grid.geographic and grid.rotated and grid.labels == want
    assert grid.subset(slice(0, 3), slice(0, 4)).labels == want
    assert grid.decimated(np.ones((6, 8)), 3)[1].labels == want
    plain = MapGrid.of(ds.assign_coords(x=ds["x"].assign_attrs(standard_name="longitude")))
    assert plain.labels == ("longitude (°E)", "latitude (°N)") and not plain.rotated


@pytest.mark.parametrize(
    ("grid", "cell_km", "note"),
    [
        (MapGrid(np.arange(4) * 500.0, np.arange(3) * 500.0, False), 0.5, "1 cell = 0.5 km"),
        (
            MapGrid(np.arange(4) * 0.01, 60 - np.arange(3) * 0.01, True),
            math.sqrt(0.01 * KM_PER_DEGREE * math.cos(math.radians(59.99)) * 0.01 * KM_PER_DEGREE),
            "mean latitude 60.0°",
        ),
    ],
)
def test_spectra_are_drawn_against_wavelength_in_km(monkeypatch, grid, cell_km, note):
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig))
    wl = np.array([16.0, 8.0, 4.0, 2.0])
    region = SpectralRegion(slice(0, 16), slice(0, 16), np.arange(3))
    spectra_figure(
        {"pr": {"truth": (wl, wl**2), "unet": (wl, wl**2.5)}},
        {"pr": region},
        {"pr": "mm h-1"},
        "t",
        "unused.png",
        grid,
    )
    ax = drawn[0].axes[0]
    assert ax.get_xlabel().startswith("wavelength (km)") and note in ax.get_xlabel()
    np.testing.assert_allclose(ax.lines[0].get_xdata(), wl * cell_km)
    assert grid.cell_km == pytest.approx(cell_km)
    plt.close(drawn[0])


@pytest.mark.parametrize(
    ("shape", "peak", "size", "align", "expected"),
    [
        ((64, 64), (40, 10), 16, 1, (slice(32, 48), slice(2, 18))),  # centred on the peak
        ((64, 64), (40, 10), 16, 8, (slice(32, 48), slice(0, 16))),  # corner on the LR blocks
        ((64, 96), (2, 94), 16, 4, (slice(0, 16), slice(80, 96))),  # clipped at the corner
        ((3500, 7000), (1234, 5678), 256, 8, (slice(1088, 1344), slice(5536, 5792))),  # MRMS
    ],
)
def test_zoom_box_is_around_the_largest_values(shape, peak, size, align, expected):
    field = np.zeros(shape, np.float32)
    field[0, :] = np.nan  # missing cells count as 0
    r, c = peak
    field[max(r - 3, 1) : r + 3, max(c - 3, 0) : c + 3] = 5.0  # the largest-value region
    ys, xs = zoom_box(field, size, align)
    assert (ys, xs) == expected
    assert np.nanmax(field[ys, xs]) == 5.0 and ys.start % align == 0 and xs.start % align == 0
    if min(r, c) > size and max(r - shape[0], c - shape[1]) < -size:  # away from the edges
        assert abs((ys.start + ys.stop) / 2 - r) < size / 4
        assert abs((xs.start + xs.stop) / 2 - c) < size / 4


@pytest.mark.parametrize(
    ("shape", "align", "size"),
    [((32, 32), 4, 8), ((128, 128), 8, 32), ((512, 512), 8, 128), ((3500, 7000), 8, 256)],
)
def test_zoom_size(shape, align, size):
    assert zoom_size(shape, align) == size


def test_overview_figure_outlines_the_zoom_on_the_whole_domain(monkeypatch):
    drawn = []
    monkeypatch.setattr(overview, "save_figure", lambda fig, path: drawn.append(fig))
    grid = _grid(200, 300, y_increasing=False, geographic=True)
    whole = np.zeros(grid.shape)
    whole[150:170, 40:60] = 3.0  # data rows 150..170: the south (y decreasing)
    box = zoom_box(whole, 32, 4)
    zooms = {"truth": whole[box], "unet": whole[box] * 0.9}
    overview_figure(whole, grid, box, zooms, "mm h-1", "t", "unused.png")
    fig = drawn[0]
    ax = fig.axes[0]
    (rect,) = ax.patches  # the zoom box, in lon/lat, where the data's rows put it
    zx0, zx1, zy0, zy1 = grid.subset(*box).extent
    assert rect.get_width() == pytest.approx(zx1 - zx0)
    assert (rect.get_x(), rect.get_y()) == pytest.approx((zx0, zy0))
    assert rect.get_height() == pytest.approx(zy1 - zy0)
    assert zy1 < np.median(grid.y)  # in the southern half
    assert [a.get_title() for a in fig.axes[1:3]] == ["truth (zoom)", "unet (zoom)"]
    assert fig.axes[1].get_images()[0].get_extent() == pytest.approx(grid.subset(*box).extent)
    plt.close(fig)


def test_learning_curves_figure_draws_every_method_and_group(monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig))
    rows = [
        {"epoch": str(e), "group": g, "train_loss": "0.5", "val_loss": "0.6", "lr": "1e-3"}
        | {"samples_per_s": "100"}
        for g in ("pr", "tas")
        for e in (1, 2, 3)
    ]
    learning_curves_figure({"unet": rows}, "t", "unused.png")
    loss, lr, speed = drawn[0].axes[:3]
    assert [line.get_label() for line in loss.lines] == [
        "unet/pr train",
        "unet/pr val",
        "unet/tas train",
        "unet/tas val",
    ]
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3] and loss.get_yscale() == "log"
    assert speed.get_ylabel() == "training samples / s" and len(lr.lines) == 2
    assert loss.get_ylabel() == "loss (training objective)"  # it was "training loss" over val too
    plt.close(drawn[0])


@pytest.mark.parametrize("max_cells", [600, 20])
def test_map_panels_are_read_step_by_step_and_reduced_to_what_a_panel_draws(max_cells):
    """map_panels keeps each panel at most ``max_cells`` per side (block means of the full field,
    NaN-aware) and gives the grid they are on; a field that already fits is kept as read."""
    from climai.data.prepared import PreparedDataset
    from climai.evaluation.cubes import map_panels

    ds = create_prepared_test_data(nx=64, ny=48, steps=10, scale=4)
    prep = PreparedDataset(ds)
    ens = xr.concat([prep.hr("pr"), prep.hr("pr") * 2], dim="member")  # a 2-member "ensemble"
    arrays = {"pr": {"truth": prep.hr("pr"), "ens": ens}}
    shown, grid = map_panels(ds, arrays, [1, 3], scale=4, max_cells=max_cells)
    full = MapGrid.of(ds)
    k = max(1, math.ceil(64 / max_cells))
    assert grid.shape == (48 // k, 64 // k)
    for i, t in enumerate([1, 3]):
        panels = shown[i]["pr"]
        assert list(panels) == ["LR input", "truth", "ens mean", "ens member 0"]
        truth = prep.hr("pr").isel(time=t).values
        np.testing.assert_allclose(panels["truth"], full.decimated(truth, max_cells)[0], rtol=1e-6)
        np.testing.assert_allclose(panels["ens mean"], 1.5 * panels["truth"], rtol=1e-5)
        np.testing.assert_allclose(panels["ens member 0"], panels["truth"], rtol=1e-6)
        lr = np.kron(prep.lr("pr").isel(time=t).values, np.ones((4, 4)))
        np.testing.assert_allclose(panels["LR input"], full.decimated(lr, max_cells)[0], rtol=1e-6)
        assert all(p.shape == grid.shape for p in panels.values())


def test_figures_fix_title_heights_and_map_ticks_without_changing_the_users_settings(monkeypatch):
    """maps_figure draws under FIGURE_RC (titles at the top of their axes, not measured against
    every tick label at each draw) with at most MAP_TICKS intervals per map axis, titles above
    their panels; matplotlib's settings outside the call are the user's own."""
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig))
    grid = _grid(32, 48, True, False)
    rng = np.random.default_rng(0)
    steps = [{"pr": {k: rng.random(grid.shape) for k in ("LR input", "truth", "unet")}}]
    with plt.rc_context({"axes.titley": None}):  # a user's setting: matplotlib's automatic
        figures.maps_figure(steps, ["t"], {"pr": "mm h-1"}, "maps", "unused.png", grid)
        assert plt.rcParams["axes.titley"] is None
        _, user_ax = plt.subplots()
        assert user_ax._autotitlepos  # the user's own axes keep the automatic title height
    fig = drawn[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4  # LR input, truth, unet; then the error of unet
    for ax in panels:
        assert ax.title.get_position()[1] == 1.0 and not ax._autotitlepos
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert 2 <= len(ticks) <= figures.MAP_TICKS + 1
        assert ax.title.get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1
    plt.close("all")
