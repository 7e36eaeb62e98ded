"""Co-registration of scenes against the stack, against the simulator's recorded shifts."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import toolkit
from toolkit.errors import InputError, TrackError


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Held-out seed 21 at 0.5 m, ten scenes, no clouds or snow (every scene comparable)."""
    history = toolkit.five_year_history(seed=21)
    return toolkit.simulate_site(
        tmp_path_factory.mktemp("reg") / "site",
        resolution_m=0.5,
        seed=21,
        clouds=False,
        snow=False,
        dates=list(history["time"].iloc[-10:]),
    )


def _true_shifts(site, cube):
    truth = pd.read_csv(site.truth_path, parse_dates=["time"])
    per_scene = truth.groupby("time")[["shift_x_m", "shift_y_m"]].first()
    idx = per_scene.index.get_indexer(pd.DatetimeIndex(cube["time"].values), method="nearest")
    return per_scene.to_numpy()[idx]


def test_shifts_match_the_simulated_georeferencing_error(site):
    cube = toolkit.load_cube(site.path / "scenes")
    shifts = toolkit.coregister(cube, tracks=site.tracks_path).compute()
    est = np.stack([shifts["shift_x_m"].values, shifts["shift_y_m"].values], axis=1)
    true = _true_shifts(site, cube)
    assert np.abs(true).max() > 0.5  # the scenes really are misregistered
    # the stack's mean position is the reference: compare after removing the common offset
    err = np.hypot(*(est - true - np.median(est - true, axis=0)).T)
    print(f"\nshift error: median {np.median(err):.2f} m, max {err.max():.2f} m")
    # measured: median 0.09-0.11 m, max 0.27 m on three 0.5 m sites (0.2 and 0.5 pixel)
    assert bool(shifts["registered"].all())
    assert np.median(err) <= 0.2
    assert err.max() <= 0.5


def test_registered_strips_line_up_and_lazy_equals_eager(site):
    cube = toolkit.load_cube(site.path / "scenes")
    lazy = toolkit.coregister(cube, tracks=site.tracks_path)
    assert isinstance(lazy["shift_x_m"].data, da.Array)  # nothing read yet
    eager = toolkit.coregister(cube.compute(), tracks=site.tracks_path)
    # the same numbers to a micrometre (float32 sums in a different order)
    np.testing.assert_allclose(lazy["shift_x_m"].values, eager["shift_x_m"].values, atol=1e-6)

    from toolkit._fast import nanmedian_axis0

    def spread(strips):
        v = strips["value"].where(strips["valid"]).mean("band").values
        return float(np.nanmean(np.abs(v - nanmedian_axis0(v))))

    plain = spread(toolkit.track_strips(cube, site.tracks_path).compute())
    lined_up = spread(toolkit.track_strips(cube, site.tracks_path, shifts_m=lazy).compute())
    print(f"\nmean distance to the median strip: {plain:.2f} -> {lined_up:.2f} DN")
    # measured: 8.33 -> 7.15 DN (14 % less spread between scenes once registered)
    assert lined_up <= 0.9 * plain


def test_a_known_shift_is_recovered_exactly():
    rng = np.random.default_rng(3)
    base = rng.random((96, 96)).astype("float32")
    frames = [np.roll(np.roll(base, dy, axis=0), dx, axis=1) for dy, dx in [(0, 0)] * 5 + [(1, -3)]]
    cube = xr.DataArray(
        np.stack(frames)[:, None],
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.arange(6).astype("datetime64[D]"),
            "band": ["pan"],
            "y": 95.5 - np.arange(96.0),
            "x": 0.5 + np.arange(96.0),
        },
    ).rio.write_crs(32652)
    s = toolkit.coregister(cube, highpass_m=2.0)
    dx = s["shift_x_m"].values - np.median(s["shift_x_m"].values)
    dy = s["shift_y_m"].values - np.median(s["shift_y_m"].values)
    # content moved 3 columns west and 1 row south: -3 m east, -1 m north
    assert dx[-1] == pytest.approx(-3.0, abs=0.15) and dy[-1] == pytest.approx(-1.0, abs=0.15)
    assert np.abs(dx[:-1]).max() < 0.15 and np.abs(dy[:-1]).max() < 0.15


def test_bad_inputs_give_one_line_errors(site):
    cube = toolkit.load_cube(site.path / "scenes")
    with pytest.raises(InputError, match="bounds"):
        toolkit.coregister(cube, bounds=(0.0, 0.0, 10.0, 10.0))
    with pytest.raises(InputError, match="dims"):
        toolkit.coregister(cube.isel(band=0))
    with pytest.raises(TrackError, match="shifts_m"):
        toolkit.track_strips(cube, site.tracks_path, shifts_m=np.zeros((3, 2)))
    with pytest.raises(TrackError, match="finite"):
        toolkit.track_strips(
            cube, site.tracks_path, shifts_m=np.full((cube.sizes["time"], 2), np.nan)
        )


@pytest.mark.parametrize("shape", [(8, 8), (37, 53), (120, 90)])
def test_erosion_equals_iterated_cross_erosion(shape):
    from scipy import ndimage

    from toolkit.registration import _erode_cross

    rng = np.random.default_rng(shape[0])
    masks = [np.ones(shape, bool), np.zeros(shape, bool)]
    for density in (0.002, 0.02, 0.2):
        # scattered holes and blobs, some touching the border
        holes = rng.random(shape) < density
        masks += [~holes, ~ndimage.binary_dilation(holes, iterations=3)]
    edge = np.ones(shape, bool)
    edge[:, : shape[1] // 3] = False
    masks.append(edge)
    for ok in masks:
        for iterations in (1, 2, 5, 16, 40):
            np.testing.assert_array_equal(
                _erode_cross(ok, iterations), ndimage.binary_erosion(ok, iterations=iterations)
            )


@pytest.mark.parametrize("shape, sigma", [((5, 7), 8.0), ((40, 33), 2.0), ((90, 130), 8.0)])
def test_highpass_equals_scipy_gaussian(shape, sigma):
    from scipy import ndimage

    from toolkit.registration import _gaussian_weights, _highpass

    rng = np.random.default_rng(1)
    band = (rng.random(shape) * 2).astype("float32")
    rim = rng.random(shape) < 0.7
    expected = np.where(rim, band - ndimage.gaussian_filter(band, sigma), 0.0)
    got = _highpass(band, _gaussian_weights(sigma), rim)
    assert got.dtype == np.float32
    # scipy's summation order in float64: equal to float32 rounding (bit for bit on x86-64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("n_valid", [63, 500, 501])
def test_normalised_band_equals_the_median_formula(dtype, n_valid):
    from toolkit.registration import _normalised_band

    rng = np.random.default_rng(n_valid)
    top = 255 if dtype == "uint8" else 4000
    img = rng.integers(0, top, (4, 30, 40)).astype(dtype)
    ok = np.zeros(30 * 40, bool)
    ok[rng.choice(ok.size, n_valid, replace=False)] = True
    ok = ok.reshape(30, 40)
    got = _normalised_band(img, ok)
    if n_valid < 64:
        assert got is None
        return
    band = img.astype("float32").mean(axis=0)
    expected = np.where(ok, band / float(np.median(band[ok])), 1.0).astype("float32")
    np.testing.assert_array_equal(got, expected)
