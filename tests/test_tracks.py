"""Track reading, validation and along-track strips."""

from __future__ import annotations

import json

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from shapely.geometry import LineString, Point, Polygon

from toolkit import TrackError, read_tracks, track_strips

CRS = "EPSG:32652"


def _cube(n_t=2, ny=120, nx=200, res=0.5, x0=500_000.0, y0=4_700_060.0, chunks=None):
    """A cube whose band 0 holds the easting and band 1 the northing of each pixel centre."""
    x = x0 + res / 2 + res * np.arange(nx)
    y = y0 - res / 2 - res * np.arange(ny)
    xx, yy = np.meshgrid(x, y)
    data = np.stack([np.stack([xx - x0, y0 - yy])] * n_t).astype("float32")
    cube = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(["2023-10-01", "2023-10-05"][:n_t], dtype="datetime64[ns]"),
            "band": ["east", "south"],
            "y": y,
            "x": x,
        },
    ).rio.write_crs(CRS)
    valid = np.ones((n_t, ny, nx), bool)
    cube = cube.assign_coords(valid=(("time", "y", "x"), valid))
    if chunks:
        cube = cube.chunk(chunks)
        cube = cube.assign_coords(valid=cube["valid"].chunk(chunks_of(chunks)))
    return cube


def chunks_of(chunks):
    return {k: v for k, v in chunks.items() if k != "band"}


def _tracks(geoms, ids, crs=CRS):
    return gpd.GeoDataFrame({"track_id": ids}, geometry=geoms, crs=crs)


def test_geojson_ids_stay_strings_and_lonlat_is_reprojected(tmp_path):
    # "07" must stay "07" and "10" must not become 10
    utm = _tracks(
        [
            LineString([(500010, 4700030), (500090, 4700030)]),
            LineString([(500010, 4700035), (500090, 4700040)]),
        ],
        ["07", "10"],
    )
    path = tmp_path / "tracks.geojson"
    utm.to_crs(4326).to_file(path, driver="GeoJSON")
    raw = json.loads(path.read_text())
    assert raw["features"][0]["properties"]["track_id"] == "07"
    t = read_tracks(path, crs=CRS)
    assert list(t.index) == ["07", "10"]
    assert t.loc["07", "length_m"] == pytest.approx(80.0, abs=0.01)
    assert t.geometry.iloc[0].coords[0][0] == pytest.approx(500010, abs=0.01)


@pytest.mark.parametrize(
    ("geoms", "ids", "message"),
    [
        ([LineString([(0, 0), (1, 0)])] * 2, ["a", "a"], "duplicate track_id ['a']"),
        ([Point(0, 0)], ["a"], "is a Point; expected a LineString"),
        ([Polygon([(0, 0), (1, 0), (1, 1)])], ["a"], "is a Polygon"),
        ([LineString()], ["a"], "empty geometry"),
    ],
)
def test_bad_geometries_give_one_line_errors(tmp_path, geoms, ids, message):
    path = tmp_path / "bad.gpkg"
    _tracks(geoms, ids).to_file(path, driver="GPKG")
    with pytest.raises(TrackError) as err:
        read_tracks(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_missing_id_column(tmp_path):
    with pytest.raises(TrackError, match="tracks file not found"):
        read_tracks(tmp_path / "nope.geojson")
    path = tmp_path / "noid.geojson"
    gpd.GeoDataFrame({"name": ["x"]}, geometry=[LineString([(0, 0), (1, 1)])], crs=4326).to_file(
        path, driver="GeoJSON"
    )
    with pytest.raises(TrackError, match="no 'track_id' property"):
        read_tracks(path)
    junk = tmp_path / "junk.geojson"
    junk.write_text("{ this is not json")
    with pytest.raises(TrackError, match="cannot be read as a vector file"):
        read_tracks(junk)


def test_track_outside_the_image_is_an_error():
    cube = _cube()
    far = _tracks([LineString([(600000, 4700030), (600080, 4700030)])], ["far"])
    with pytest.raises(TrackError, match=r"track\(s\) \['far'\] lie outside every scene"):
        track_strips(cube, far)


def test_strip_samples_land_where_the_geometry_says():
    cube = _cube()
    # a diagonal track (not aligned with the pixel grid) and a curved one
    diag = LineString([(500010.3, 4700010.7), (500080.1, 4700045.2)])
    arc_t = np.linspace(0, np.pi / 3, 40)
    arc = LineString(np.c_[500050 + 30 * np.cos(arc_t) - 30, 4700015 + 30 * np.sin(arc_t)].tolist())
    strips = track_strips(cube, _tracks([diag, arc], ["d", "c"]), half_width_m=2.0)
    assert strips.value.dims == ("time", "track", "along", "across", "band")
    v = strips.value.isel(time=0)
    east = v.sel(band="east") + 500_000.0
    south = 4_700_060.0 - v.sel(band="south")
    on = strips.on_track & strips.valid.isel(time=0).all("across")
    # bilinear samples of a linear ramp are exact
    np.testing.assert_allclose(
        east.where(on).values, strips.x_sample.where(on).values, atol=1e-3, equal_nan=True
    )
    np.testing.assert_allclose(
        south.where(on).values, strips.y_sample.where(on).values, atol=1e-3, equal_nan=True
    )
    # centre samples sit on the centreline, across samples 2 m to each side
    d_len = strips.length_m.sel(track="d").item()
    assert d_len == pytest.approx(diag.length, rel=1e-9)
    centre = strips.across.size // 2
    for k in (0, 30, 60):
        p = Point(
            strips.x_sample.sel(track="d")[k, centre].item(),
            strips.y_sample.sel(track="d")[k, centre].item(),
        )
        assert diag.distance(p) < 1e-6
        edge = Point(
            strips.x_sample.sel(track="d")[k, -1].item(),
            strips.y_sample.sel(track="d")[k, -1].item(),
        )
        assert diag.distance(edge) == pytest.approx(2.0, abs=1e-6)
    # the curved track is unrolled along its arc length, and padded past its end
    assert strips.on_track.sel(track="c").sum().item() == int(arc.length // strips.step_m) + 1
    assert strips.on_track.sel(track="d").sum().item() == int(diag.length // strips.step_m) + 1


def test_invalid_pixels_make_samples_invalid():
    cube = _cube()
    valid = cube["valid"].values.copy()
    valid[1, :, 100:] = False  # the east half of the second scene is cloud
    cube = cube.assign_coords(valid=(("time", "y", "x"), valid))
    x_edge = float(cube.x[100]) - 0.25  # left edge of the first invalid pixel
    t = _tracks([LineString([(500010, 4700030), (500090, 4700030)])], ["01"])
    s = track_strips(cube, t, half_width_m=1.0)
    ok = s.valid.isel(time=1, across=s.across.size // 2).sel(track="01").values
    xs = s.x_sample.sel(track="01").isel(across=s.across.size // 2).values
    on = s.on_track.sel(track="01").values
    assert ok[on & (xs < x_edge - 0.6)].all()
    assert not ok[on & (xs > x_edge)].any()
    assert s.valid.isel(time=0).sel(track="01").values[on].all()


def test_lazy_cube_gives_lazy_strips_with_the_same_values():
    eager = _cube()
    lazy = _cube(chunks={"time": 1, "band": -1, "y": 64, "x": 64})
    t = _tracks([LineString([(500010.2, 4700012.9), (500091.7, 4700049.3)])], ["a"])

    def forbid(*args, **kwargs):
        raise AssertionError("building strips must not compute")

    with dask.config.set(scheduler=forbid):
        s_lazy = track_strips(lazy, t)
    assert isinstance(s_lazy.value.data, da.Array)
    s_eager = track_strips(eager, t)
    xr.testing.assert_allclose(s_lazy.value.compute(), s_eager.value)
    xr.testing.assert_equal(s_lazy.valid.compute(), s_eager.valid)


@pytest.mark.parametrize(
    "pixel_m, step_m, across_m",
    [
        (0.5, 0.5, [-2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
        (1.0, 1.0, [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]),
        # coarser pixels are sampled every half pixel (at least 1 m), so a 3 m strip still
        # has samples on both sides of the centreline
        (3.0, 1.5, [-2.25, -0.75, 0.75, 2.25]),
        (4.0, 2.0, [-2.0, 0.0, 2.0]),
        (10.0, 10.0, [0.0]),  # a car is under two pixels wide: one sample across
    ],
)
def test_default_step_by_pixel_size(pixel_m, step_m, across_m):
    n = 40
    x0, y0 = 500_000.0, 4_700_000.0
    cube = xr.DataArray(
        np.ones((1, 1, n, n), "uint8"),
        dims=("time", "band", "y", "x"),
        coords={
            "time": [np.datetime64("2023-10-05")],
            "band": ["red"],
            "y": y0 + pixel_m * (n - 0.5 - np.arange(n)),
            "x": x0 + pixel_m * (0.5 + np.arange(n)),
        },
    ).rio.write_crs(32652)
    mid = y0 + pixel_m * n / 2
    line = LineString([(x0 + 5 * pixel_m, mid), (x0 + 35 * pixel_m, mid)])
    strips = track_strips(cube, _tracks([line], ["01"]))
    assert strips.attrs["step_m"] == step_m
    assert strips.attrs["pixel_size_m"] == pixel_m
    np.testing.assert_allclose(strips["across_m"].values, across_m)
    assert strips.on_track.sum().item() == int(30 * pixel_m // step_m) + 1
