"""Property tests (Hypothesis): the loader on random small rasters, change points on random series.

Loader: any small georeferenced raster (1-4 bands, integer or float, with or
without nodata, any pixel size and origin) loads to a cube whose values are
byte-identical to rasterio's, whose ``valid`` mask is exactly "no band at
nodata", and whose time is the file's tag; two scenes offset by whole pixels
land on one grid with every pixel where it belongs. Change points: on any
series, the functions either raise a one-line ``SeriesError`` or return sorted
changes in range, segments that tile the series and respect ``min_size``, and
levels within the data's range; ``change_map`` gives the same answer whatever
the chunking. All rasters are SYNTHETIC.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.transform import from_origin

import toolkit

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

DTYPES = ("uint8", "uint16", "int16", "float32")
CRSS = ("EPSG:32652", "EPSG:32633", "EPSG:3857")


@st.composite
def rasters(draw):
    dtype = draw(st.sampled_from(DTYPES))
    count = draw(st.integers(1, 4))
    height = draw(st.integers(2, 12))
    width = draw(st.integers(2, 12))
    if dtype == "float32":
        elems = st.floats(-1e4, 1e4, width=32, allow_nan=False)
    else:
        info = np.iinfo(dtype)
        elems = st.integers(int(info.min), int(info.max))
    data = draw(arrays(dtype, (count, height, width), elements=elems))
    nodata = draw(st.one_of(st.none(), st.sampled_from([0, 1, -9999, 255])))
    if nodata is not None and dtype != "float32":
        info = np.iinfo(dtype)
        assume(info.min <= nodata <= info.max)
    if nodata is not None and draw(st.booleans()):
        data[:, 0, 0] = nodata  # at least one nodata pixel
    res = draw(st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    x0 = draw(st.integers(-50, 50)) * 97.0 + 500_000.0
    y0 = draw(st.integers(-50, 50)) * 89.0 + 4_700_000.0
    # acquisition dates of real sensors; dates past 2262 are a bad-input entry of their own
    day = draw(
        st.dates(
            min_value=pd.Timestamp("1972-07-23").date(), max_value=pd.Timestamp("2100-01-01").date()
        )
    )
    return {
        "data": data,
        "nodata": nodata,
        "res": res,
        "x0": x0,
        "y0": y0,
        "crs": draw(st.sampled_from(CRSS)),
        "when": pd.Timestamp(day) + pd.Timedelta(hours=2, minutes=15),
    }


def _write(path: Path, r: dict, *, x0=None, y0=None, data=None) -> Path:
    data = r["data"] if data is None else data
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype,
        nodata=r["nodata"],
        crs=r["crs"],
        transform=from_origin(
            r["x0"] if x0 is None else x0, r["y0"] if y0 is None else y0, r["res"], r["res"]
        ),
    ) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME=r["when"].strftime("%Y:%m:%d %H:%M:%S"), SYNTHETIC="yes")
    return path


def _expected_valid(data: np.ndarray, nodata) -> np.ndarray:
    ok = np.ones(data.shape[1:], bool)
    if nodata is not None:
        ok &= ~(data == np.asarray(nodata, data.dtype)).any(axis=0)
    if np.issubdtype(data.dtype, np.floating):
        ok &= ~np.isnan(data).any(axis=0)
    return ok


@FUZZ
@given(r=rasters(), chunk=st.integers(1, 8))
def test_loader_round_trips_any_small_raster(r, chunk):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "synthetic.tif", r)
        cube = toolkit.load_cube(path, chunks={"y": chunk, "x": chunk})
        with rasterio.open(path) as src:
            expected = src.read()
        got = cube.compute()
    assert got.dims == ("time", "band", "y", "x")
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got.values[0], expected)
    np.testing.assert_array_equal(got["valid"].values[0], _expected_valid(expected, r["nodata"]))
    assert pd.Timestamp(got.time.values[0]) == r["when"]
    # pixel centres
    np.testing.assert_allclose(got.x.values, r["x0"] + (np.arange(got.sizes["x"]) + 0.5) * r["res"])
    np.testing.assert_allclose(got.y.values, r["y0"] - (np.arange(got.sizes["y"]) + 0.5) * r["res"])
    assert got.rio.crs.to_string() == r["crs"]


@FUZZ
@given(r=rasters(), dx=st.integers(-5, 5), dy=st.integers(-5, 5), later=st.integers(1, 400))
def test_two_scenes_offset_by_whole_pixels_share_one_grid(r, dx, dy, later):
    second = np.flip(r["data"], axis=2).copy()
    when2 = r["when"] + pd.Timedelta(days=later)
    with tempfile.TemporaryDirectory() as tmp:
        a = _write(Path(tmp) / "a.tif", r)
        b = _write(
            Path(tmp) / "b.tif",
            {**r, "when": when2},
            x0=r["x0"] + dx * r["res"],
            y0=r["y0"] - dy * r["res"],
            data=second,
        )
        cube = toolkit.load_cube([a, b]).compute()
    h, w = r["data"].shape[1:]
    assert cube.sizes["y"] == h + abs(dy) and cube.sizes["x"] == w + abs(dx)
    assert [pd.Timestamp(t) for t in cube.time.values] == [r["when"], when2]
    # each scene's pixels sit at their own offset in the union grid
    ra, ca = max(-dy, 0), max(-dx, 0)
    rb, cb = max(dy, 0), max(dx, 0)
    np.testing.assert_array_equal(cube.values[0][:, ra : ra + h, ca : ca + w], r["data"])
    np.testing.assert_array_equal(cube.values[1][:, rb : rb + h, cb : cb + w], second)
    # outside its footprint a scene is never valid
    outside = np.ones((cube.sizes["y"], cube.sizes["x"]), bool)
    outside[ra : ra + h, ca : ca + w] = False
    assert not cube["valid"].values[0][outside].any()


# --------------------------------------------------------------------------- change points

series_values = st.lists(
    st.one_of(st.floats(0, 200, allow_nan=False), st.just(float("nan"))), min_size=0, max_size=60
)


@FUZZ
@given(
    values=series_values,
    model=st.sampled_from(["normal_mean", "normal_meanvar", "poisson", "negbin"]),
    method=st.sampled_from(["pelt", "binseg"]),
    min_size=st.integers(1, 6),
    integer=st.booleans(),
)
def test_detect_changepoints_on_random_series(values, model, method, min_size, integer):
    x = np.asarray(values, float)
    if integer:
        x = np.round(x)
    s = pd.Series(x, index=pd.date_range("2019-01-01", periods=x.size, freq="7D"))
    try:
        res = toolkit.detect_changepoints(s, model=model, method=method, min_size=min_size)
    except toolkit.SeriesError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    n = x.size
    ok = ~np.isnan(x)
    pos = list(res.positions)
    assert pos == sorted(set(pos))
    assert all(0 < p < n for p in pos)
    assert res.segment_start[0] == 0 and res.segment_end[-1] == n
    assert list(res.segment_start[1:]) == list(res.segment_end[:-1]) == pos
    assert sum(res.n_obs) == ok.sum()
    assert all(k >= min_size for k in res.n_obs)
    lo, hi = x[ok].min(), x[ok].max()
    assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in res.level)
    assert len(res.summary()) > 0


def test_summary_without_changes():
    s = pd.Series([0.0, 0.0, 0.0], index=pd.date_range("2019-01-01", periods=3, freq="7D"))
    res = toolkit.detect_changepoints(s, min_size=1)
    assert res.positions == ()
    assert "no change" in res.summary().lower()


@FUZZ
@given(
    values=st.lists(st.floats(0, 100, allow_nan=False), min_size=3, max_size=40),
    shift=st.floats(0, 100),
)
def test_cusum_and_online_probability_are_probabilities(values, shift):
    x = np.asarray(values, float)
    x[len(x) // 2 :] += shift
    try:
        cs = toolkit.cusum(x)
    except toolkit.SeriesError as exc:
        assert "\n" not in str(exc)
        return
    assert 0.0 <= cs.p_value <= 1.0
    probs = toolkit.online_changepoint_probability(x)["change_probability"].values
    assert probs.shape[0] == x.size
    assert np.all((probs[np.isfinite(probs)] >= 0) & (probs[np.isfinite(probs)] <= 1 + 1e-9))


@FUZZ
@given(
    cube=arrays(
        "float32",
        st.tuples(st.integers(3, 12), st.integers(1, 6), st.integers(1, 6)),
        elements=st.one_of(st.floats(-50, 50, width=32), st.just(np.float32("nan"))),
    ),
    ty=st.integers(1, 4),
    tx=st.integers(1, 4),
    min_size=st.integers(1, 3),
)
def test_change_map_in_range_and_unchanged_by_chunking(cube, ty, tx, min_size):
    t = pd.date_range("2020-01-01", periods=cube.shape[0], freq="10D")
    arr = xr.DataArray(cube, dims=("time", "y", "x"), coords={"time": t})
    try:
        eager = toolkit.change_map(arr, min_size=min_size)
    except toolkit.SeriesError as exc:
        assert "\n" not in str(exc)
        return
    lazy = toolkit.change_map(
        arr.copy(data=da.from_array(cube, chunks=(1, ty, tx))), min_size=min_size
    ).compute(scheduler="synchronous")
    xr.testing.assert_identical(lazy, eager)
    idx = eager.change_index.values
    assert ((idx == -1) | ((idx >= 1) & (idx < cube.shape[0]))).all()
    p = eager.p_value.values
    assert np.all(np.isnan(p) | ((p >= 0) & (p <= 1)))
    assert (eager.n_valid.values == (~np.isnan(cube)).sum(axis=0)).all()


@FUZZ
@given(
    values=st.lists(st.integers(0, 40), min_size=0, max_size=40),
    event=st.integers(0, 80),
)
def test_compare_with_baseline_on_random_counts(values, event):
    x = np.asarray([*values, event], float)
    s = pd.Series(x, index=pd.date_range("2018-10-01", periods=x.size, freq="45D"))
    try:
        cmp = toolkit.compare_with_baseline(s, exclude=(), seed=1)
    except toolkit.SeriesError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert 0.0 <= cmp.p_exceed <= 1.0
    assert cmp.event_value == event
    assert cmp.n_baseline >= 3
    assert cmp.baseline_max >= cmp.baseline_median >= 0
    assert cmp.unprecedented == (cmp.unprecedented and event > cmp.baseline_max)
