"""Tiled inference: layout, blending weights, seamlessness, missing data, ensembles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from climai.data.features import model_inputs, normalised_static, to_physical
from climai.inference.blend import taper
from climai.inference.predict import model_predictor
from climai.inference.tiling import TiledPredictor, TileLayout, tile_starts
from climai.testing import NoisyUNet, lr_inputs, toy_feature_spec, trained_like_unet


def test_tiles_cover_the_domain_and_the_last_ends_at_its_edge():
    assert tile_starts(384, 256, 128) == [0, 128]
    assert tile_starts(400, 256, 128) == [0, 128, 144]
    assert tile_starts(100, 256, 128) == [0]


def test_layout_keeps_tiles_on_lr_cell_edges_with_a_margin():
    layout = TileLayout.build((50, 30), scale=8, tile=128, overlap=64, multiple=4)
    assert layout.shape == (400, 240) and layout.tile == (128, 128)
    for r in range(len(layout.rows)):
        for c in range(len(layout.cols)):
            t = layout.tile_at(r, c)
            assert t.y0 % 8 == 0 and t.x1 <= 240 and t.y1 <= 400
            assert t.ly0 == max(0, t.y0 // 8 - 2) and t.lx1 == min(30, t.x1 // 8 + 2)
    assert layout.rows[-1] + 128 == 400 and layout.cols[-1] + 128 == 240


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile": 100, "overlap": 32}, "infer.tile=100 is not a multiple of scale=8"),
        ({"tile": 128, "overlap": 12}, "infer.overlap=12 is not a multiple of scale=8"),
        ({"tile": 128, "overlap": 128}, r"infer.overlap=128 must be in \[0, infer.tile=128\)"),
    ],
)
def test_layout_rejects_tiles_off_the_lr_grid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TileLayout.build((32, 32), scale=8, multiple=4, **kwargs)


def test_blending_weights_vanish_near_inner_edges_and_never_all_at_once():
    w = taper(128, 64, start_inner=True, end_inner=False)
    assert (w[:16] == 0).all() and (w[48:] == 1).all()
    assert np.all(np.diff(w[16:48]) > 0)  # smooth monotone rise
    layout = TileLayout.build((50, 30), scale=8, tile=128, overlap=64, multiple=4)
    total = torch.zeros(layout.shape)
    for r in range(len(layout.rows)):
        for c in range(len(layout.cols)):
            t = layout.tile_at(r, c)
            total[t.y0 : t.y1, t.x0 : t.x1] += layout.weights(t)
    assert total.min() > 0.5


def _full_and_tiled(overlap: int, batch: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical predictions of one forward pass over the domain and of tiles, and the blend mask."""
    torch.manual_seed(0)
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16, 32])
    lr, static = lr_inputs(256, 256, 2)
    values = np.stack([lr[v].values for v in spec.variables], 1)
    st = np.stack([static[s].values for s in spec.statics])
    times = pd.DatetimeIndex(lr["time"].values)
    x, base = model_inputs(spec, torch.from_numpy(values), normalised_static(spec, st), times)
    with torch.no_grad():
        full = to_physical(spec, model(x, base)).numpy()
    layout = TileLayout.build((32, 32), 8, 192, overlap, model.multiple)
    tiled = TiledPredictor(
        model_predictor(model, torch.device("cpu"), bf16=False), spec, layout, batch
    )
    bands = list(
        tiled.run(values, lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]), times)
    )
    assert [b[0] for b in bands] == list(layout.rows)
    shared = np.zeros(layout.shape, int)  # tiles with a non-zero weight at each cell
    for r in range(len(layout.rows)):
        for c in range(len(layout.cols)):
            t = layout.tile_at(r, c)
            shared[t.y0 : t.y1, t.x0 : t.x1] += (layout.weights(t) > 0).numpy()
    return full, np.concatenate([b[2] for b in bands], axis=-2), shared > 1


@pytest.mark.slow
def test_tiled_inference_equals_one_forward_pass_over_the_domain():
    """Acceptance 1: overlap ≥ 4 × receptive radius (~30 cells) makes the tiles seamless."""
    full, tiled, border = _full_and_tiled(overlap=128)
    assert border.any() and (~border).any()
    for i in range(full.shape[1]):
        diff = np.abs(tiled[:, i] - full[:, i])
        scale = np.abs(full[:, i]).max()
        assert diff.max() <= 1e-4 * scale
        assert diff.max() <= 1e-4 * full[:, i].std()
        # along tile borders no worse than elsewhere (up to float32 rounding of the values)
        ulp = 4 * np.finfo(np.float32).eps * scale
        assert diff[:, border].max() <= diff[:, ~border].max() + ulp


@pytest.mark.slow
def test_too_small_an_overlap_leaves_seams():
    full, tiled, _ = _full_and_tiled(overlap=32)
    diff = np.abs(tiled[:, 0] - full[:, 0])
    assert diff.max() > 1e-4 * full[:, 0].std()


def test_missing_lr_cells_are_missing_over_their_hr_footprint_only():
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    lr, static = lr_inputs(96, 96, 2)
    values = np.stack([lr[v].values for v in spec.variables], 1)
    values[0, 1, 3:5, 6] = np.nan
    st = np.stack([static[s].values for s in spec.statics])
    layout = TileLayout.build((12, 12), 8, 64, 32, model.multiple)
    tiled = TiledPredictor(model_predictor(model, torch.device("cpu"), False), spec, layout, 2)
    out = np.concatenate(
        [
            b[2]
            for b in tiled.run(
                values,
                lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]),
                pd.DatetimeIndex(lr["time"].values),
            )
        ],
        axis=-2,
    )
    expected = np.zeros(out.shape, bool)
    expected[0, 1, 24:40, 48:56] = True
    np.testing.assert_array_equal(np.isnan(out), expected)


def test_a_stochastic_model_gives_a_member_axis_reproducibly():
    spec = toy_feature_spec()
    lr, static = lr_inputs(64, 64, 2)
    values = np.stack([lr[v].values for v in spec.variables], 1)
    st = np.stack([static[s].values for s in spec.statics])
    layout = TileLayout.build((8, 8), 8, 48, 32, 2)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = NoisyUNet(spec.in_channels, spec.out_channels, [8, 16], seed=3)
        tiled = TiledPredictor(
            model_predictor(model, torch.device("cpu"), False, 4), spec, layout, 3
        )
        bands = tiled.run(
            values,
            lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]),
            pd.DatetimeIndex(lr["time"].values),
        )
        runs.append(np.concatenate([b[2] for b in bands], axis=-2))
    assert runs[0].shape == (2, 4, 2, 64, 64)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0][:, 0, 0].std() > 0 and np.abs(runs[0][:, 0] - runs[0][:, 1]).max() > 0.1
    assert (runs[0][:, :, 1] >= 0).all()  # precipitation stays non-negative


@pytest.mark.parametrize("batch", [1, 3])
def test_tiles_without_lr_values_are_skipped_and_the_rest_is_unchanged(batch):
    """Step 1 has no LR value in its first 6 LR rows (both variables): the two tile rows inside
    them are not computed (the network is called fewer times), their cells are NaN, and every
    other cell equals the run that computes every tile bitwise."""
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    lr, static = lr_inputs(96, 64, 2)
    values = np.stack([lr[v].values for v in spec.variables], 1)
    values[1, :, :6] = np.nan
    st = np.stack([static[s].values for s in spec.statics])
    layout = TileLayout.build((12, 8), 8, 32, 16, model.multiple)  # tile rows at 0, 16, ..., 64
    runs, calls, skipped = [], [], []
    for skip in (False, True):
        predict = model_predictor(model, torch.device("cpu"), False)
        seen: list[int] = []

        def counting(x, base, seed, predict=predict, seen=seen):
            seen.append(x.shape[0])
            return predict(x, base, seed)

        tiled = TiledPredictor(counting, spec, layout, batch, skip_missing=skip)
        bands = tiled.run(
            values,
            lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]),
            pd.DatetimeIndex(lr["time"].values),
        )
        runs.append(np.concatenate([b[2] for b in bands], axis=-2))
        calls.append(sum(seen))
        skipped.append((tiled.samples, tiled.skipped))
    full, holey = runs
    per_row = len(layout.cols)
    assert skipped == [(2 * len(layout), 0), (2 * len(layout), 2 * per_row)]
    assert calls[1] == calls[0] - 2 * per_row  # samples sent to the network
    assert np.isnan(holey[1, :, :48]).all() and np.isfinite(holey[1, :, 48:]).all()
    np.testing.assert_array_equal(holey, full)  # NaN where the skipped tiles are, in both


def _dry_run(spec, model, values, st, times, skip, batch=3, members=1, crop=False):
    """Conserving tiled prediction of ``values``; (output, tile steps seen, skipped, dry, samples
    sent to the network)."""
    layout = TileLayout.build(values.shape[-2:], 8, 32, 16, model.multiple)
    predict = model_predictor(model, torch.device("cpu"), False, members)
    seen: list[int] = []

    def counting(x, base, seed):
        seen.append(x.shape[0])
        return predict(x, base, seed)

    tiled = TiledPredictor(
        counting, spec, layout, batch, True, members, skip_missing=skip, crop_dry=crop
    )
    bands = tiled.run(
        values, lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]), times
    )
    out = np.concatenate([b[2] for b in bands], axis=-2)
    return out, tiled.samples, tiled.skipped, tiled.dry, sum(seen), len(layout.cols)


@pytest.mark.parametrize("batch", [1, 3])
def test_dry_tiles_of_a_conserving_rain_model_are_skipped_with_the_same_values(batch):
    """Rain alone, conserved: step 1 is dry (LR 0) in its first 6 LR rows and has no LR value in
    the next 2, step 0 is dry in one LR cell only. The tile steps whose own LR cells are all 0 or
    missing are not computed; the output equals the run that computes every tile bitwise: 0
    where the LR is 0, NaN where it is missing, the conserved prediction elsewhere. (Whole tiles:
    the parts around the wet cells, ``crop_dry``, are tested below.)"""
    spec = toy_feature_spec().subset(["pr"])
    model = trained_like_unet(spec, [8, 16])
    lr, static = lr_inputs(96, 64, 2)
    values = lr["pr"].values[:, None].copy()  # (T, 1, 12, 8)
    values += 0.5  # wet everywhere...
    values[1, :, :6] = 0.0  # ...but the top of step 1, dry
    values[1, :, 6:8] = np.nan
    values[0, :, 3, 3] = 0.0  # one dry LR cell: its tile is still computed
    st = np.stack([static[s].values for s in spec.statics])
    times = pd.DatetimeIndex(lr["time"].values)
    full, n_full, skip_full, dry_full, calls_full, cols = _dry_run(
        spec, model, values, st, times, False, batch
    )
    part, n, skipped, dry, calls, _ = _dry_run(spec, model, values, st, times, True, batch)
    # tile rows start at HR rows 0, 16, 32, 48, 64: the first three are in the dry rows (LR
    # 0-5), the fourth (LR 6-9) is half missing, half wet
    assert (n_full, skip_full, dry_full) == (n, 0, 0)
    assert (skipped, dry) == (3 * cols, 3 * cols)
    assert calls == calls_full - 3 * cols
    np.testing.assert_array_equal(part, full)
    assert (part[1, 0, :48] == 0).all() and np.isnan(part[1, 0, 48:64]).all()
    assert (part[0, 0, 24:32, 24:32] == 0).all()
    means = part.reshape(2, 1, 12, 8, 8, 8).mean(axis=(3, 5))
    np.testing.assert_allclose(means, values, rtol=1e-5)  # every block conserved, NaN kept


def test_a_band_of_dry_tiles_is_zero_for_every_member_and_not_computed():
    spec = toy_feature_spec().subset(["pr"])
    model = NoisyUNet(spec.in_channels, spec.out_channels, [8, 16], seed=3).eval()
    lr, static = lr_inputs(96, 64, 2)
    values = lr["pr"].values[:, None].copy() + 0.5
    values[:, :, :4] = 0.0  # the first tile row (LR rows 0-3) of both steps is dry
    st = np.stack([static[s].values for s in spec.statics])
    times = pd.DatetimeIndex(lr["time"].values)
    out, n, skipped, dry, calls, cols = _dry_run(spec, model, values, st, times, True, 3, 4)
    assert out.shape == (2, 4, 1, 96, 64)
    assert (skipped, dry, calls) == (2 * cols, 2 * cols, n - 2 * cols)
    assert (out[:, :, :, :32] == 0).all()
    means = out.reshape(2, 4, 1, 12, 8, 8, 8).mean(axis=(4, 6))
    np.testing.assert_allclose(means, np.repeat(values[:, None], 4, 1), rtol=1e-5)
    assert out[:, :, 0, 32:].std(axis=1).mean() > 0.01  # members differ where it rains


def test_dry_tiles_are_computed_where_skipping_would_not_be_exact():
    """With temperature in the model (identity transform, additive conservation) or without the
    constraint, an LR 0 does not make the output 0: no tile is skipped for being dry."""
    spec = toy_feature_spec()
    model = trained_like_unet(spec, [8, 16])
    lr, static = lr_inputs(96, 64, 1)
    values = np.stack([lr[v].values for v in spec.variables], 1)
    values[:, 1] = 0.0  # dry everywhere
    st = np.stack([static[s].values for s in spec.statics])
    times = pd.DatetimeIndex(lr["time"].values)
    _, n, skipped, dry, calls, _ = _dry_run(spec, model, values, st, times, True)
    assert (skipped, dry, calls) == (0, 0, n)
    layout = TileLayout.build((12, 8), 8, 32, 16, model.multiple)
    rain = toy_feature_spec().subset(["pr"])
    tiled = TiledPredictor(lambda x, b, s: b, rain, layout, 3, conserving=False)
    assert not tiled.skip_dry


class _Local(torch.nn.Module):
    """A conserving rain model of receptive radius 1 HR cell: bicubic plus one 3 × 3 convolution
    of the inputs (seeded weights)."""

    multiple = 8

    def __init__(self, spec):
        super().__init__()
        torch.manual_seed(5)
        self.conv = torch.nn.Conv2d(spec.in_channels, spec.out_channels, 3, padding=1)

    def forward(self, x, base):
        return base + 0.3 * self.conv(x)


def _cropped_runs(model, members=1, batch=2):
    """Rain on 128 × 128 HR cells (tiles of 64, overlap 32), wet only in a 2 × 3 LR patch of
    step 0 and along one LR row of step 1: (whole tiles, parts, the parts' cells, the cells of
    their tiles, tiles seen / skipped, the (h, w) of every batch sent)."""
    spec = toy_feature_spec().subset(["pr"])
    lr, static = lr_inputs(128, 128, 2)
    values = np.zeros((2, 1, 16, 16), np.float32)
    values[0, 0, 5:7, 9:12] = lr["pr"].values[0, 5:7, 9:12] + 0.5
    values[1, 0, 12, :] = lr["pr"].values[1, 12, :] + 0.5
    values[1, 0, :2, :] = np.nan  # missing at the top of step 1
    st = np.stack([static[s].values for s in spec.statics])
    times = pd.DatetimeIndex(lr["time"].values)
    layout = TileLayout.build((16, 16), 8, 64, 32, model.multiple)
    outs, cells, counts, shapes = [], [], [], []
    for crop in (False, True):
        predict = model_predictor(model, torch.device("cpu"), False, members)
        sent: list[tuple[int, int]] = []

        def counting(x, base, seed, predict=predict, sent=sent):
            sent.append(tuple(x.shape[-2:]))
            return predict(x, base, seed)

        tiled = TiledPredictor(counting, spec, layout, batch, True, members, crop_dry=crop)
        bands = tiled.run(
            values, lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]), times
        )
        outs.append(np.concatenate([b[2] for b in bands], axis=-2))
        cells.append(tuple(tiled.cells))
        counts.append((tiled.samples, tiled.skipped))
        shapes.append(sent)
    return outs, values, cells, counts, shapes


def test_only_the_wet_part_of_a_tile_is_computed_and_a_local_model_writes_the_same_field():
    """A model of receptive radius 1 (within overlap / 4 = 8 cells): the parts around the wet
    LR cells give the whole tiles' field (to float rounding); the network sees about half the
    cells; every part is on LR cell edges, a multiple of the model's 8 and inside its tile;
    dry blocks are 0, missing ones NaN, wet blocks keep their LR mean."""
    (whole, part), values, cells, counts, shapes = _cropped_runs(
        _Local(toy_feature_spec().subset(["pr"]))
    )
    assert counts[0] == counts[1]  # the same tile steps computed and skipped
    assert cells[0][0] == cells[0][1] and cells[1][1] == cells[0][1]
    assert cells[1][0] < 0.6 * cells[1][1]
    assert all(h % 8 == 0 and w % 8 == 0 and h <= 64 and w <= 64 for h, w in shapes[1])
    assert min(h * w for h, w in shapes[1]) < 64 * 64
    np.testing.assert_allclose(part, whole, rtol=1e-5, atol=1e-6, equal_nan=True)
    dry = np.repeat(np.repeat(values == 0, 8, -2), 8, -1)
    assert (part[dry] == 0).all()
    assert np.isnan(part[1, 0, :16]).all() and np.isfinite(part[1, 0, 16:]).all()
    means = part.reshape(2, 1, 16, 8, 16, 8).mean(axis=(3, 5))
    np.testing.assert_allclose(means[values > 0], values[values > 0], rtol=1e-5)


def test_a_wet_part_starts_and_ends_on_lr_cells_and_stays_inside_its_tile():
    layout = TileLayout.build((16, 16), 8, 64, 32, 16)  # the model's multiple: 2 LR cells
    tile = layout.tile_at(1, 2)  # HR rows 32-96, columns 64-128 (the domain's right edge)
    wet = torch.zeros(8, 8, dtype=torch.bool)
    wet[3, 7] = True
    part = layout.wet_part(tile, wet, 1)
    # rows: LR 2-4 grown to 2 cells' multiples inside the tile: 2-6; columns: 6-8 (edge)
    assert (part.y0, part.y1, part.x0, part.x1) == (48, 80, 112, 128)
    assert (part.ly0, part.ly1, part.lx0, part.lx1) == (4, 12, 12, 16)
    assert (part.row, part.col) == (1, 2)
    wet[:] = True
    assert layout.wet_part(tile, wet, 1) == tile


def test_the_wet_parts_of_an_ensemble_keep_its_members_and_zeros():
    """An ensemble through the parts: the same member axis, dry blocks 0 for every member,
    every wet block conserved by every member, members differing where it rains."""
    spec = toy_feature_spec().subset(["pr"])
    model = NoisyUNet(spec.in_channels, spec.out_channels, [8, 16], seed=3).eval()
    (whole, part), values, cells, _, _ = _cropped_runs(model, members=3)
    assert part.shape == whole.shape == (2, 3, 1, 128, 128)
    dry = np.repeat(np.repeat(values == 0, 8, -2), 8, -1)[:, None].repeat(3, 1)
    assert (part[dry] == 0).all()
    means = part.reshape(2, 3, 1, 16, 8, 16, 8).mean(axis=(4, 6))
    wet = np.repeat((values > 0)[:, None], 3, 1)
    np.testing.assert_allclose(means[wet], np.repeat(values[:, None], 3, 1)[wet], rtol=1e-5)
    assert part[:, :, 0][~dry[:, :, 0] & np.isfinite(part[:, :, 0])].std() > 0
    assert cells[1][0] < 0.6 * cells[1][1]


def test_tiles_without_overlap_weigh_every_cell_one_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it divided by the zero ramp: a RuntimeWarning
        w = taper(64, 0, start_inner=True, end_inner=True)
    np.testing.assert_array_equal(w, np.ones(64))


def test_memory_mb_sizes_the_time_blocks_unless_time_block_is_set():
    """infer.memory_mb of band buffers per block: 1 MiB at 256 KiB a step is 4 steps; a set
    time_block wins; a budget under one step still makes blocks of one; a store chunk stays
    within CHUNK_BYTES."""
    from climai.inference.blocks import CHUNK_BYTES, steps_per_block

    assert steps_per_block(0, 1, 2**18, 16) == 4
    assert steps_per_block(0, 2, 2**18, 16) == 8
    assert steps_per_block(3, 1, 2**18, 16) == 3
    assert steps_per_block(0, 1, 2**30, 16) == 1
    assert steps_per_block(0, 10**6, 1, 2**20) == CHUNK_BYTES // (4 * 2**20)


def test_figure_steps_picks_that_many_of_the_wettest_test_steps_in_time_order():
    import xarray as xr

    from climai.evaluation.cubes import show_steps

    rain = np.zeros((6, 4, 4), np.float32)
    for t, v in {1: 5.0, 4: 3.0, 5: 1.0}.items():
        rain[t] = v
    truth = xr.Dataset({"hr_pr": (("time", "y", "x"), rain)})
    assert show_steps(truth, "pr", 2) == [1, 4]
    assert show_steps(truth, "pr", 3) == [1, 4, 5]
    assert show_steps(truth, "pr", 10) == list(range(6))
    assert show_steps(truth, None, 2) == [2, 3]  # no rain variable: evenly spaced


def test_an_ensembles_spread_does_not_dip_where_tiles_overlap():
    """Each tile draws its own noise, so where two tiles overlap the blend averaged independent
    departures: a member's spread fell to 1/√2 of the tiles' mid-seam (stripes of low spread
    along every seam, a tiled run under-dispersive against an untiled one). The members' mean
    is blended as before; their departures keep the spread the tiles drew."""
    spec = toy_feature_spec()
    lr, static = lr_inputs(32, 128, 6)
    values = np.stack([lr[v].values for v in spec.variables], 1)
    st = np.stack([static[s].values for s in spec.statics])
    members = 8

    def noisy(x: torch.Tensor, base: torch.Tensor, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(base.shape[0], members, *base.shape[1:], generator=gen)
        return base[:, None] + noise  # unit spread (normalised) at every cell of every tile

    layout = TileLayout.build((4, 16), 8, 64, 32)
    assert layout.cols == (0, 32, 64)
    tiled = TiledPredictor(noisy, spec, layout, 3, members=members)
    bands = tiled.run(
        values,
        lambda t: normalised_static(spec, st[:, t.y0 : t.y1, t.x0 : t.x1]),
        pd.DatetimeIndex(lr["time"].values),
    )
    out = np.concatenate([b[2] for b in bands], axis=-2)  # (T, M, V, y, x)
    tas = out[:, :, 0] / spec.stats["tas"]["std"]  # normalised units: identity transform
    spread = np.sqrt(tas.var(axis=1, ddof=1).mean(axis=(0, 1)))  # per column
    w = np.stack([layout.weights(layout.tile_at(0, c))[0].numpy() for c in range(3)])
    cover = np.zeros((3, 128))
    for c, x0 in enumerate(layout.cols):
        cover[c, x0 : x0 + 64] = w[c]
    mid_seam = (cover > 0.3).sum(0) == 2  # two tiles of similar weight
    alone = cover.max(0) == 1.0
    assert mid_seam.sum() >= 8 and alone.sum() >= 32
    assert spread[alone].mean() == pytest.approx(1.0, rel=0.05)
    assert spread[mid_seam].mean() == pytest.approx(spread[alone].mean(), rel=0.06)
