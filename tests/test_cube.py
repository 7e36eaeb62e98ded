"""Tests for toolkit.cube: loading scenes into one aligned lazy cube, and its zarr cache.

Small GeoTIFFs are written with rasterio into tmp_path (all synthetic); the real
rasters in ../shared/data/real/ check the loader on real files.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from datetime import UTC, datetime
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.windows import Window

from toolkit.cube import cache_cube, load_cube, open_cube, scene_quality
from toolkit.errors import InputError, SceneError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
NAIP = REAL / "naip_nd_timeseries"
LANDSAT = REAL / "landsat7_rgb_byte" / "RGB.byte.tif"
WV2 = REAL / "spacenet_atlanta_wv2" / "sample_geotiff.tif"
EOPATCH = REAL / "s2_eopatch_slovenia"

X0, Y0 = 500_000.0, 4_700_000.0  # upper-left corner of the synthetic site, EPSG:32652


def _write(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine,
    crs: str | None = "EPSG:32652",
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
    descriptions: tuple[str, ...] | None = None,
    **profile: object,
) -> Path:
    """Write a (band, y, x) array as a synthetic GeoTIFF."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    kwargs = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        transform=transform,
        nodata=nodata,
    )
    if crs is not None:
        kwargs["crs"] = crs
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(data)
        dst.update_tags(SYNTHETIC="yes: written by tests/test_cube.py", **(tags or {}))
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    return path


def _ramp(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A ground-truth field linear in EPSG:32652 metres (bilinear reproduces it exactly)."""
    return (xs - X0) * 0.5 + (Y0 - ys) * 0.25 + 10.0


def _centres(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs = transform.c + cols * transform.a
    ys = transform.f + rows * transform.e
    return xs, ys


def _one_line(err: pytest.ExceptionInfo, *names: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def _raise_on_compute(*args: object, **kwargs: object) -> None:
    raise AssertionError("something was computed while only building a lazy result")


# --------------------------------------------------------------------------- alignment


@pytest.fixture(scope="module")
def mixed_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic scenes of one ramp: 1 m reference, 2 m with a 0.5 m offset, UTM 51N."""
    folder = tmp_path_factory.mktemp("mixed")
    t1 = Affine(1.0, 0, X0, 0, -1.0, Y0)
    xs, ys = _centres(t1, 60, 80)
    _write(folder / "ref_20230901.tif", _ramp(xs, ys).astype("float32")[None], transform=t1)
    t2 = Affine(2.0, 0, X0 - 10.5, 0, -2.0, Y0 + 9.5)
    xs, ys = _centres(t2, 40, 50)
    _write(folder / "coarse_20230902.tif", _ramp(xs, ys).astype("float32")[None], transform=t2)
    # The same ground in the neighbouring UTM zone: values are the ramp of the 32652 position.
    to52 = Transformer.from_crs("EPSG:32651", "EPSG:32652", always_xy=True)
    to51 = Transformer.from_crs("EPSG:32652", "EPSG:32651", always_xy=True)
    x51, y51 = to51.transform(X0 - 5, Y0 + 5)
    t3 = Affine(1.0, 0, round(x51, 1), 0, -1.0, round(y51, 1))
    xs, ys = _centres(t3, 75, 95)
    gx, gy = to52.transform(xs, ys)
    _write(
        folder / "zone51_20230903.tif",
        _ramp(gx, gy).astype("float32")[None],
        transform=t3,
        crs="EPSG:32651",
    )
    return folder


def test_mixed_grids_align_to_reference_and_keep_ground_values(mixed_scenes: Path) -> None:
    cube = load_cube(mixed_scenes)
    assert cube.dims == ("time", "band", "y", "x")
    assert cube.rio.crs.to_epsg() == 32652  # two of three scenes
    t = cube.rio.transform()
    assert (t.a, t.e) == (1.0, -1.0)  # finest pixel size
    # Anchored on the 1 m scene: its origin is a whole number of pixels from the grid's.
    assert (X0 - t.c) % 1.0 == 0 and (t.f - Y0) % 1.0 == 0
    assert cube.attrs["scenes_on_grid"].startswith("1 of 3")
    values = cube.compute()
    gx, gy = np.meshgrid(values.x.values, values.y.values)
    truth = _ramp(gx, gy)
    for i, name in enumerate(["ref", "coarse", "zone51"]):
        step = values.isel(time=i, band=0)
        inner = step.valid.values.copy()
        # Bilinear needs both neighbours: drop a 2-pixel rim inside each footprint.
        from scipy.ndimage import binary_erosion

        inner = binary_erosion(inner, iterations=2)
        assert inner.sum() > 1500, name
        err = np.abs(step.values[inner] - truth[inner])
        tol = 1e-4 if name != "zone51" else 0.05  # exact for a linear field; UTM 51->52 bends
        assert err.max() < tol, (name, err.max())
    # The reference scene is on the grid: byte-identical to a direct read.
    ref = values.isel(time=0, band=0)
    with rasterio.open(mixed_scenes / "ref_20230901.tif") as src:
        direct = src.read(1)
    r0 = round((t.f - Y0) / 1.0)
    c0 = round((X0 - t.c) / 1.0)
    np.testing.assert_array_equal(ref.values[r0 : r0 + 60, c0 : c0 + 80], direct)
    # Outside the reference footprint: nodata fill (NaN for float) and not valid.
    assert not ref.valid.values[:r0].any() and np.isnan(ref.values[:r0]).all()
    assert ref.valid.values[r0 : r0 + 60, c0 : c0 + 80].all()


def test_crs_resolution_bounds_options(mixed_scenes: Path) -> None:
    cube = load_cube(
        mixed_scenes,
        crs="EPSG:32652",
        resolution=2.0,
        bounds=(X0 + 0.3, Y0 - 39.7, X0 + 60.2, Y0 - 0.4),
    )
    t = cube.rio.transform()
    assert (t.a, t.e) == (2.0, -2.0)
    # Snapped outward to the grid of the scene already at 2 m (origin X0 - 10.5, Y0 + 9.5).
    assert (t.c, t.f) == (X0 - 0.5, Y0 + 1.5)
    assert cube.sizes["x"] == 31 and cube.sizes["y"] == 21
    assert cube.attrs["scenes_on_grid"].startswith("1 of 3")
    assert "anchored on coarse_20230902.tif" in cube.attrs["grid"]
    with pytest.raises(SceneError) as err:
        load_cube(mixed_scenes, bounds=(X0 + 1000, Y0 - 100, X0 + 1100, Y0))
    _one_line(err, "ref_20230901.tif", "does not overlap")
    with pytest.raises(InputError):
        load_cube(mixed_scenes, resolution=-1)
    with pytest.raises(InputError):
        load_cube(mixed_scenes, resampling="bicubicle")


# --------------------------------------------------------------------------- fast path


@pytest.fixture(scope="module")
def grid_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two uint16 scenes on one 0.5 m grid, 10 and 6 pixels apart, nodata 0, with tags."""
    folder = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(42)
    t = Affine(0.5, 0, X0, 0, -0.5, Y0)
    a = rng.integers(1, 60_000, size=(3, 50, 70), dtype="uint16")
    a[:, 5:8, 10:20] = 0  # a nodata patch
    a[1, 30, 30] = 0  # nodata in one band only -> that pixel is not valid
    _write(
        folder / "scene_a.tif",
        a,
        transform=t,
        nodata=0,
        tags={"TIFFTAG_DATETIME": "2023:10:05 02:15:00"},
        descriptions=("red", "green", "blue"),
        tiled=True,
        blockxsize=16,
        blockysize=16,
    )
    b = rng.integers(1, 60_000, size=(3, 50, 70), dtype="uint16")
    tb = Affine(0.5, 0, X0 + 6 * 0.5, 0, -0.5, Y0 - 10 * 0.5)
    _write(
        folder / "scene_b.tif",
        b,
        transform=tb,
        nodata=0,
        tags={"TIFFTAG_DATETIME": "2023:09:18 01:00:00"},
        descriptions=("red", "green", "blue"),
    )
    return folder


def test_fast_path_is_byte_identical_to_rasterio(grid_scenes: Path) -> None:
    cube = load_cube(grid_scenes, chunks={"y": 16, "x": 32})
    assert cube.attrs["scenes_on_grid"].startswith("2 of 2")
    assert cube.dtype == np.uint16 and cube.rio.nodata == 0
    assert list(cube.band.values) == ["red", "green", "blue"]
    assert cube.sizes == {"time": 2, "band": 3, "y": 60, "x": 76}
    # Time sorted: scene_b (Sep 18) comes first although its name sorts last.
    assert list(cube.scene.values) == ["scene_b.tif", "scene_a.tif"]
    assert cube.time.values[1] == np.datetime64("2023-10-05T02:15:00", "ns")
    assert cube.time.dtype == np.dtype("datetime64[ns]")
    values = cube.compute()
    with rasterio.open(grid_scenes / "scene_a.tif") as src:
        a = src.read()
        mask = src.dataset_mask()
    with rasterio.open(grid_scenes / "scene_b.tif") as src:
        b = src.read()
    np.testing.assert_array_equal(values.isel(time=1).values[:, :50, :70], a)
    np.testing.assert_array_equal(values.isel(time=0).values[:, 10:, 6:], b)
    valid_a = values.valid.isel(time=1).values
    # Valid: inside, not nodata in any band (stricter than GDAL's any-band dataset mask).
    np.testing.assert_array_equal(valid_a[:50, :70], (a != 0).all(axis=0))
    assert not valid_a[6, 15] and not valid_a[30, 30] and mask[30, 30] == 255
    assert not valid_a[50:].any() and not valid_a[:, 70:].any()
    assert (values.isel(time=1).values[:, 50:, :] == 0).all()
    # Cube coordinates are pixel centres and rioxarray sees the grid.
    assert values.x.values[0] == X0 + 0.25 and values.y.values[0] == Y0 - 0.25
    assert cube.rio.transform() == Affine(0.5, 0, X0, 0, -0.5, Y0)


def test_chunking_does_not_change_values(mixed_scenes: Path, grid_scenes: Path) -> None:
    for folder in (mixed_scenes, grid_scenes):
        ref = load_cube(folder, chunks={"y": -1, "x": -1}).compute()
        for chunks in ({"y": 7, "x": 13}, {"time": 2, "band": 1, "y": 32, "x": 5}):
            other = load_cube(folder, chunks=chunks)
            assert other.chunks[2][0] == chunks["y"]
            xr.testing.assert_identical(other.compute(), ref)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ych=st.integers(min_value=8, max_value=90),
    xch=st.integers(min_value=8, max_value=110),
    tch=st.integers(min_value=1, max_value=3),
)
def test_values_do_not_depend_on_chunks(mixed_scenes: Path, ych: int, xch: int, tch: int) -> None:
    ref = _mixed_reference(mixed_scenes)
    got = load_cube(mixed_scenes, chunks={"time": tch, "y": ych, "x": xch}).compute()
    xr.testing.assert_identical(got, ref)


_MIXED_CACHE: dict[Path, xr.DataArray] = {}


def _mixed_reference(folder: Path) -> xr.DataArray:
    if folder not in _MIXED_CACHE:
        _MIXED_CACHE[folder] = load_cube(folder, chunks={"y": -1, "x": -1}).compute()
    return _MIXED_CACHE[folder]


def test_progress_bar_does_not_change_the_cube(grid_scenes: Path, capsys) -> None:
    plain = load_cube(grid_scenes)
    shown = load_cube(grid_scenes, progress=True)
    xr.testing.assert_identical(shown.compute(), plain.compute())
    assert "checking scenes" in capsys.readouterr().err


def test_building_cube_and_quality_computes_nothing(mixed_scenes: Path, tmp_path: Path) -> None:
    mask = np.zeros((60, 80), "uint8")
    shutil.copy(mixed_scenes / "ref_20230901.tif", tmp_path / "ref_20230901.tif")
    _write(tmp_path / "ref_20230901.mask.tif", mask, transform=Affine(1.0, 0, X0, 0, -1.0, Y0))
    with dask.config.set(scheduler=_raise_on_compute):
        cube = load_cube(tmp_path)
        quality = scene_quality(cube)
        masked = cube.where(cube.valid)
    assert isinstance(cube.data, da.Array) and isinstance(cube.valid.data, da.Array)
    assert isinstance(cube.mask.data, da.Array)
    assert all(isinstance(v.data, da.Array) for v in quality.data_vars.values())
    assert isinstance(masked.data, da.Array)


# --------------------------------------------------------------------------- time and duplicates


def test_acquisition_times_from_tag_and_file_names(tmp_path: Path) -> None:
    t = Affine(1.0, 0, X0, 0, -1.0, Y0)
    img = np.ones((1, 4, 4), "uint8")
    names = {
        "yard_20231005T021500.tif": "2023-10-05T02:15:00",
        "yard_2023-10-06.tif": "2023-10-06T00:00:00",
        "yard_20231007_101112_3B.tif": "2023-10-07T10:11:12",
        "m_4709963_se_14_1_20090818.tif": "2009-08-18T00:00:00",
        "20231008.tiff": "2023-10-08T00:00:00",
    }
    for name in names:
        _write(tmp_path / name, img, transform=t)
    # A date the datetime64[ns] axis cannot hold is an error, not a silent wrap-around.
    future = tmp_path / "future"
    future.mkdir()
    _write(future / "f.tif", img, transform=t, tags={"TIFFTAG_DATETIME": "2263:01:01 02:15:00"})
    with pytest.raises(SceneError) as err:
        load_cube(future)
    _one_line(err, "f.tif", "2263-01-01", "outside the supported range")
    # The tag wins over a (misleading) date in the name.
    _write(
        tmp_path / "yard_20200101.tif",
        img,
        transform=t,
        tags={"TIFFTAG_DATETIME": "2023:10:04 10:00:00"},
    )
    cube = load_cube(tmp_path)
    expected = sorted([*names.values(), "2023-10-04T10:00:00"])
    np.testing.assert_array_equal(cube.time.values, np.array(expected, dtype="datetime64[ns]"))
    assert cube.scene.values[1] == "yard_20200101.tif"


@pytest.fixture
def duplicate_scenes(tmp_path: Path) -> Path:
    t = Affine(1.0, 0, X0, 0, -1.0, Y0)
    first = np.full((2, 4, 6), 11, "uint8")
    first[:, :, :3] = 0  # left half nodata
    second = np.full((2, 4, 6), 22, "uint8")
    second[:, 0, :] = 0  # top row nodata
    tag = {"TIFFTAG_DATETIME": "2023:10:05 02:15:00"}
    _write(tmp_path / "a_first.tif", first, transform=t, nodata=0, tags=tag)
    _write(tmp_path / "b_second.tif", second, transform=t, nodata=0, tags=tag)
    _write(tmp_path / "c_other_20231006.tif", second, transform=t, nodata=0)
    return tmp_path


def test_duplicate_times_policies(duplicate_scenes: Path) -> None:
    mosaic = load_cube(duplicate_scenes).compute()
    assert mosaic.sizes["time"] == 2
    assert mosaic.scene.values[0] == "a_first.tif+b_second.tif"
    assert "mosaicked a_first.tif, b_second.tif" in mosaic.attrs["duplicate_times_report"]
    step = mosaic.isel(time=0, band=0).values
    expected = np.array(
        [[0, 0, 0, 11, 11, 11], [22, 22, 22, 11, 11, 11], [22, 22, 22, 11, 11, 11]]
        + [[22] * 3 + [11] * 3]
    )
    np.testing.assert_array_equal(step, expected.astype("uint8"))
    np.testing.assert_array_equal(mosaic.valid.values[0], expected != 0)

    first = load_cube(duplicate_scenes, duplicate_times="first").compute()
    assert list(first.scene.values) == ["a_first.tif", "c_other_20231006.tif"]
    assert (first.isel(time=0, band=0).values[:, 3:] == 11).all()
    last = load_cube(duplicate_scenes, duplicate_times="last")
    assert list(last.scene.values) == ["b_second.tif", "c_other_20231006.tif"]
    assert "dropped a_first.tif" in last.attrs["duplicate_times_report"]
    keep = load_cube(duplicate_scenes, duplicate_times="keep")
    assert keep.sizes["time"] == 3 and not keep.indexes["time"].is_unique
    with pytest.raises(SceneError) as err:
        load_cube(duplicate_scenes, duplicate_times="error")
    _one_line(err, "a_first.tif", "b_second.tif", "2023-10-05T02:15:00")


# --------------------------------------------------------------------------- masks


def test_sidecar_mask_is_read_aligned_and_folded_into_valid(tmp_path: Path) -> None:
    t = Affine(2.0, 0, X0, 0, -2.0, Y0)
    img = np.full((1, 10, 10), 100, "uint16")
    img[0, 9, 9] = 0
    _write(tmp_path / "s_20231005.tif", img, transform=t, nodata=0)
    mask = np.zeros((10, 10), "uint8")
    mask[:2] = 1  # 20 px cloud
    mask[2, :5] = 2  # 5 px shadow
    mask[3, 0] = 255  # 1 px no data
    _write(tmp_path / "s_20231005.mask.tif", mask, transform=t)
    # A second scene without a mask, on a finer grid: the mask follows the 1 m grid.
    t2 = Affine(1.0, 0, X0, 0, -1.0, Y0)
    _write(tmp_path / "t_20231006.tif", np.full((1, 20, 20), 50, "uint16"), transform=t2, nodata=0)
    cube = load_cube(tmp_path, resampling="nearest")
    assert cube.mask.dtype == np.uint8 and cube.mask.dims == ("time", "y", "x")
    values = cube.compute()
    m = values.mask.values[0]
    np.testing.assert_array_equal(m, np.kron(mask, np.ones((2, 2), "uint8")))
    assert (values.mask.values[1] == 0).all()  # scene without a mask: clear where it has data
    valid = values.valid.values[0]
    assert valid.sum() == (100 - 20 - 5 - 1 - 1) * 4
    q = scene_quality(cube).compute()
    np.testing.assert_allclose(q.valid_fraction.values, [0.73, 1.0])
    np.testing.assert_allclose(q.cloud_fraction.values, [25 / 99, 0.0])
    np.testing.assert_allclose(q.nodata_fraction.values, [0.02, 0.0])
    np.testing.assert_allclose(q.mean_brightness.values, [100.0, 50.0])
    ignored = load_cube(tmp_path, masks=None)
    assert "mask" not in ignored.coords
    assert int(ignored.valid.isel(time=0).sum()) == 99 * 4


# --------------------------------------------------------------------------- errors


def test_errors_name_the_file_on_one_line(tmp_path: Path, grid_scenes: Path) -> None:
    t = Affine(1.0, 0, X0, 0, -1.0, Y0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no scenes")
    with pytest.raises(SceneError) as err:
        load_cube(empty)
    _one_line(err, str(empty), "no scene files")
    with pytest.raises(SceneError) as err:
        load_cube(str(tmp_path / "nothing_*.tif"))
    _one_line(err, "nothing_*.tif", "matched no")
    with pytest.raises(SceneError) as err:
        load_cube(tmp_path / "missing_20231005.tif")
    _one_line(err, "missing_20231005.tif", "no such file")

    junk = tmp_path / "junk_20231005.tif"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype="uint8").tobytes())
    with pytest.raises(SceneError) as err:
        load_cube(junk)
    _one_line(err, "junk_20231005.tif", "cannot be read as a raster")

    whole = _write(
        tmp_path / "whole_20231005.tif",
        np.random.default_rng(1).integers(0, 255, (3, 200, 200), dtype="uint8"),
        transform=t,
    )
    cut = tmp_path / "cut_20231005.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(SceneError) as err:
        load_cube(cut)
    _one_line(err, "cut_20231005.tif", "truncated")
    tiled = _write(
        tmp_path / "tiled_20231005.tif",
        np.random.default_rng(2).integers(0, 255, (2, 256, 256), dtype="uint8"),
        transform=t,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    cut = tmp_path / "cut_tiled_20231005.tif"
    cut.write_bytes(tiled.read_bytes()[: int(tiled.stat().st_size * 0.9)])
    with pytest.raises(SceneError) as err:
        load_cube(cut)
    _one_line(err, "cut_tiled_20231005.tif")

    # A zero-width raster (GDAL cannot write one: patch the TIFF ImageWidth tag to 0).
    small = _write(tmp_path / "small_20231005.tif", np.ones((1, 4, 4), "uint8"), transform=t)
    raw = bytearray(small.read_bytes())
    assert raw[:4] == b"II*\x00"
    ifd = struct.unpack("<I", raw[4:8])[0]
    for k in range(struct.unpack("<H", raw[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", raw[entry : entry + 4])
        if tag == 256:  # ImageWidth, SHORT or LONG
            raw[entry + 8 : entry + 12] = (
                bytes(4) if kind == 4 else bytes(2) + raw[entry + 10 : entry + 12]
            )
    zero = tmp_path / "zero_20231005.tif"
    zero.write_bytes(bytes(raw))
    with pytest.raises(SceneError) as err:
        load_cube(zero)
    _one_line(err, "zero_20231005.tif", "zero")

    nocrs = tmp_path / "nocrs"
    nocrs.mkdir()
    _write(nocrs / "nocrs_20231005.tif", np.ones((1, 4, 4), "uint8"), transform=t, crs=None)
    with pytest.raises(SceneError) as err:
        load_cube(nocrs)
    _one_line(err, "nocrs_20231005.tif", "no CRS", "write_crs")

    nodate = _write(tmp_path / "yard_site.tif", np.ones((1, 4, 4), "uint8"), transform=t)
    with pytest.raises(SceneError) as err:
        load_cube([grid_scenes, nodate])
    _one_line(err, "yard_site.tif", "no acquisition date", "TIFFTAG_DATETIME")

    two = _write(tmp_path / "two_20231005.tif", np.ones((2, 4, 4), "uint16"), transform=t)
    with pytest.raises(SceneError) as err:
        load_cube([grid_scenes, two])
    _one_line(err, "two_20231005.tif", "2 bands", "3")
    other = _write(tmp_path / "f_20231005.tif", np.ones((3, 4, 4), "float32"), transform=t)
    with pytest.raises(SceneError) as err:
        load_cube([grid_scenes, other])
    _one_line(err, "f_20231005.tif", "float32", "uint16")
    with pytest.raises(SceneError):
        load_cube([])
    with pytest.raises(InputError):
        load_cube(grid_scenes, duplicate_times="average")
    with pytest.raises(InputError):
        load_cube(grid_scenes, chunks={"z": 3})


def test_scene_removed_after_loading_is_named_at_compute_time(grid_scenes: Path, tmp_path):
    shutil.copytree(grid_scenes, tmp_path / "scenes")
    cube = load_cube(tmp_path / "scenes")
    (tmp_path / "scenes" / "scene_b.tif").unlink()
    with pytest.raises(SceneError) as err:
        cube.compute()
    _one_line(err, "scene_b.tif", "load_cube again")


# --------------------------------------------------------------------------- STAC


def _stac_items(folder: Path, *, remote: bool = False) -> object:
    import pystac

    items = []
    for path in sorted(folder.glob("*.tif")):
        with rasterio.open(path) as src:
            bounds = src.bounds
            when = src.tags().get("TIFFTAG_DATETIME")
        dt = datetime.strptime(when, "%Y:%m:%d %H:%M:%S")
        item = pystac.Item(
            id=path.stem,
            geometry=None,
            bbox=list(bounds),
            datetime=dt,
            properties={"synthetic": True},
        )
        href = f"https://example.invalid/{path.name}" if remote else str(path)
        item.add_asset(
            "data",
            pystac.Asset(href=href, media_type=pystac.MediaType.GEOTIFF, roles=["data"]),
        )
        items.append(item)
    return pystac.ItemCollection(items)


def test_stac_items_load_the_same_cube_as_files(grid_scenes: Path, tmp_path: Path) -> None:
    files = load_cube(grid_scenes).compute()
    items = _stac_items(grid_scenes)
    from_items = load_cube(items).compute()
    xr.testing.assert_identical(from_items, files)
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps(items.to_dict()))
    xr.testing.assert_identical(load_cube(collection).compute(), files)
    with pytest.raises(SceneError) as err:
        load_cube(_stac_items(grid_scenes, remote=True))
    msg = _one_line(err, "scene_a", "https://example.invalid/scene_a.tif", "local")
    assert "remote" in msg


def test_stac_item_json_with_relative_href_uses_the_item_datetime(
    grid_scenes: Path, tmp_path: Path
) -> None:
    import pystac

    shutil.copy(grid_scenes / "scene_a.tif", tmp_path / "scene_a.tif")
    mask = np.zeros((50, 70), "uint8")
    mask[:5] = 2
    _write(tmp_path / "scene_a_udm.tif", mask, transform=Affine(0.5, 0, X0, 0, -0.5, Y0))
    item = pystac.Item(
        id="yard-a",
        geometry=None,
        bbox=None,
        datetime=datetime(2024, 6, 17, 2, 0, 0, tzinfo=UTC),  # differs from the file's tag
        properties={"synthetic": True},
    )
    item.add_asset("visual", pystac.Asset(href="./scene_a.tif", roles=["data"]))
    item.add_asset("udm", pystac.Asset(href="./scene_a_udm.tif", roles=["cloud"]))
    path = tmp_path / "yard-a.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    cube = load_cube(path)
    assert cube.time.values[0] == np.datetime64("2024-06-17T02:00:00", "ns")
    assert list(cube.scene.values) == ["scene_a.tif"]
    assert int((cube.mask.isel(time=0) == 2).sum()) == 5 * 70
    assert not bool(cube.valid.isel(time=0, y=slice(0, 5)).any())
    with rasterio.open(grid_scenes / "scene_a.tif") as src:
        np.testing.assert_array_equal(cube.isel(time=0).values, src.read())


# --------------------------------------------------------------------------- zarr cache


def test_cache_round_trip(grid_scenes: Path, tmp_path: Path) -> None:
    shutil.copytree(grid_scenes, tmp_path / "scenes")
    mask = np.zeros((50, 70), "uint8")
    mask[:10] = 1
    _write(
        tmp_path / "scenes" / "scene_a.mask.tif", mask, transform=Affine(0.5, 0, X0, 0, -0.5, Y0)
    )
    cube = load_cube(tmp_path / "scenes", chunks={"y": 32, "x": 32})
    store = cache_cube(cube, tmp_path / "cube.zarr")
    assert store == tmp_path / "cube.zarr" and store.is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    back = open_cube(store)
    assert isinstance(back.data, da.Array) and isinstance(back.valid.data, da.Array)
    assert back.dtype == np.uint16 and back.mask.dtype == np.uint8
    assert back.rio.crs == cube.rio.crs and back.rio.transform() == cube.rio.transform()
    assert back.rio.nodata == 0
    xr.testing.assert_identical(back.compute(), cube.compute())
    with pytest.raises(InputError) as err:
        cache_cube(cube, store)
    _one_line(err, "cube.zarr", "overwrite=True")
    cache_cube(cube.isel(time=[0]), store, overwrite=True)
    assert open_cube(store).sizes["time"] == 1
    with pytest.raises(InputError) as err:
        open_cube(tmp_path / "nope.zarr")
    _one_line(err, "nope.zarr")


# --------------------------------------------------------------------------- distributed


@pytest.mark.distributed
def test_distributed_processes_compute_the_same_values(mixed_scenes: Path) -> None:
    from distributed import Client, LocalCluster

    cube = load_cube(mixed_scenes, chunks={"y": 32, "x": 32})
    expected = cube.compute(scheduler="threads")
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            scheduler_port=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        got = cube.compute(scheduler=client)
    xr.testing.assert_identical(got, expected)


@pytest.mark.parametrize("user_setting", [None, "200"])
def test_reading_bounds_gdal_block_cache_unless_the_user_set_it(grid_scenes, user_setting):
    # GDAL keeps decoded tiles of compressed scenes in a cache of 5 % of the machine's
    # memory per process, past a worker's memory limit (the out-of-core test in
    # test_distributed.py reads compressed scenes on 600 MiB workers). A fresh process
    # shows what a worker sees.
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from rasterio.env import get_gdal_config\n"
        "from toolkit.cube import load_cube\n"
        "before = get_gdal_config('GDAL_CACHEMAX')\n"
        "load_cube(sys.argv[1]).compute(scheduler='synchronous')\n"
        "print(before, get_gdal_config('GDAL_CACHEMAX'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    if user_setting is not None:
        env["GDAL_CACHEMAX"] = user_setting
    out = subprocess.run(
        [sys.executable, "-c", script, str(grid_scenes)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    before, after = out
    if user_setting is None:
        assert int(before) > 64 * 2**20  # GDAL's default on this machine, 5 % of memory
        assert int(after) == 64 * 2**20
    else:  # the user's 200 (MB, to GDAL) stays
        assert int(before) == int(after) == 200 * 2**20


# --------------------------------------------------------------------------- real rasters


def test_naip_time_series_loads_onto_one_grid() -> None:
    cube = load_cube(NAIP)
    assert cube.sizes["time"] == 10 and cube.sizes["band"] == 4
    dates = [str(d)[:10] for d in cube.time.values]
    assert dates == [
        "2009-08-18",
        "2010-06-29",
        "2012-07-31",
        "2014-07-20",
        "2015-09-26",
        "2016-08-16",
        "2017-08-27",
        "2018-07-16",
        "2019-09-04",
        "2020-08-31",
    ]
    assert cube.rio.crs.to_epsg() == 26914 and cube.rio.resolution() == (5.0, -5.0)
    # Origins differ by up to 3 m: one grid a pixel or two larger than a single scene.
    assert 934 <= cube.sizes["x"] <= 936 and 724 <= cube.sizes["y"] <= 726
    assert cube.dtype == np.uint8
    valid = cube.valid.mean(("y", "x")).compute()
    assert (valid > 0.98).all()  # not the 95 % NaN of an outer-join concat
    # The 2009 scene anchors the grid: read without resampling, equal to rasterio.
    with rasterio.open(NAIP / "m_4709963_se_14_1_20090818.tif") as src:
        direct = src.read(window=Window(0, 0, 200, 150))
        r0 = round((cube.rio.transform().f - src.transform.f) / 5.0)
        c0 = round((src.transform.c - cube.rio.transform().c) / 5.0)
    got = cube.isel(time=0, y=slice(r0, r0 + 150), x=slice(c0, c0 + 200)).values
    np.testing.assert_array_equal(got, direct)


def test_landsat_collar_valid_fraction_matches_dataset_mask(tmp_path: Path) -> None:
    # The file carries no date: give a copy one in its name.
    path = tmp_path / "RGB.byte_2000-01-01.tif"
    shutil.copy(LANDSAT, path)
    os.chmod(path, 0o644)
    cube = load_cube(path)
    with rasterio.open(LANDSAT) as src:
        expected = (src.dataset_mask() > 0).mean()
        direct = src.read()
    assert list(cube.band.values) == ["red", "green", "blue"]
    got = float(cube.valid.mean())
    assert abs(got - expected) < 0.005, (got, expected)
    np.testing.assert_array_equal(cube.isel(time=0).values, direct)


def test_worldview_chip_keeps_uint16_and_grid(tmp_path: Path) -> None:
    # The file has no date: give a copy one in its name.
    path = tmp_path / "sample_geotiff_20170101.tif"
    shutil.copy(WV2, path)
    os.chmod(path, 0o644)
    cube = load_cube(path)
    assert cube.dtype == np.uint16 and cube.rio.crs.to_epsg() == 32616
    assert cube.rio.resolution() == (0.5, -0.5) and cube.sizes["y"] == cube.sizes["x"] == 900
    assert float(cube.source_resolution_m[0]) == 0.5
    with rasterio.open(WV2) as src:
        np.testing.assert_array_equal(cube.isel(time=0).values, src.read())
    with pytest.raises(SceneError) as err:
        load_cube(WV2)
    _one_line(err, "sample_geotiff.tif", "no acquisition date")


def test_sentinel2_eopatch_duplicate_day_is_mosaicked(tmp_path: Path) -> None:
    ndvi = np.load(EOPATCH / "data_NDVI.npy")[..., 0]
    clm = np.load(EOPATCH / "mask_CLM.npy")[..., 0]
    times = json.loads((EOPATCH / "timestamps.json").read_text())
    bbox = json.loads((EOPATCH / "bbox.geojson").read_text())["coordinates"][0]
    xs, ys = [p[0] for p in bbox], [p[1] for p in bbox]
    height, width = ndvi.shape[1:]
    t = Affine((max(xs) - min(xs)) / width, 0, min(xs), 0, -(max(ys) - min(ys)) / height, max(ys))
    picked = [
        i for i, s in enumerate(times) if s[:10] in ("2015-12-08", "2015-09-29", "2015-12-18")
    ]
    assert len(picked) == 4
    for i in picked:
        # File names carry the day only, so the two 2015-12-08 acquisitions share a time.
        name = f"s2_ndvi_{times[i][:10]}_{i:02d}.tif"
        _write(tmp_path / name, ndvi[i][None], transform=t, crs="EPSG:32633", nodata=np.nan)
        _write(
            tmp_path / name.replace(".tif", ".mask.tif"),
            clm[i].astype("uint8"),
            transform=t,
            crs="EPSG:32633",
        )
    cube = load_cube(tmp_path).compute()
    assert cube.sizes["time"] == 3 and cube.dtype == np.float32
    day = cube.sel(time=slice("2015-12-08", "2015-12-08")).isel(time=0, band=0)
    a, b = picked[1], picked[2]
    first_ok = clm[a] == 0
    second_only = ~first_ok & (clm[b] == 0)
    np.testing.assert_array_equal(day.values[first_ok], ndvi[a][first_ok])
    np.testing.assert_array_equal(day.values[second_only], ndvi[b][second_only])
    np.testing.assert_array_equal(day.valid.values, first_ok | (clm[b] == 0))
    assert "mosaicked" in cube.attrs["duplicate_times_report"]
    q = scene_quality(cube)
    for k, i in enumerate([picked[0], picked[3]]):  # the single-acquisition days
        k = 2 * k  # time steps 0 and 2
        np.testing.assert_allclose(float(q.cloud_fraction[k]), (clm[i] == 1).mean())
        np.testing.assert_allclose(float(q.valid_fraction[k]), (clm[i] == 0).mean())
    np.testing.assert_allclose(float(q.valid_fraction[1]), (first_ok | (clm[b] == 0)).mean())
