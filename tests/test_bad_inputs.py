"""The bad-input catalogue: one test per entry, each with its own id.

For the command line (``toolkit count``, run in-process through
``toolkit.cli.main`` and, for a few entries, as a real subprocess): exit
status 2, exactly one line on stderr that names the input, no traceback, the
previous output file byte-identical, no other file written, and every input
file unmodified. For the Python functions: the documented ``ToolkitError``
subclass with a one-line message naming the input. Entries that are *not*
errors (scenes in different CRSs, duplicate dates, all-cloud or all-nodata
scenes, NaN in a series) assert the documented behaviour instead.

Every raster here is SYNTHETIC, written by the helpers below.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import LineString, Point, Polygon

import toolkit
from toolkit.cli import main as cli_main

CRS = "EPSG:32652"
X0, Y0, RES = 500_000.0, 4_700_100.0, 0.5
TRACK_Y = 4_700_050.0


# --------------------------------------------------------------------------- synthetic inputs


def scene(
    path: Path,
    when: str | None = "2023:10:05 02:15:00",
    *,
    crs: str | None = CRS,
    cars=((40, 55.2),),
    count: int = 3,
    dtype: str = "uint8",
    fill: int | None = None,
) -> Path:
    """A SYNTHETIC 200 x 200 px scene: ballast along y = TRACK_Y, blue cars at x (m)."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    img = (120 + rng.integers(0, 6, (count, 200, 200))).astype(dtype)
    row = int((Y0 - TRACK_Y) / RES)
    img[:, row - 4 : row + 5, :] = 160
    blue = np.linspace(30, 120, count).astype(dtype)  # a painted car, not a grey shadow
    for a, b in cars:
        img[:, row - 3 : row + 4, int(a / RES) : int(b / RES)] = blue[:, None, None]
    if fill is not None:
        img[:] = fill
    profile = dict(
        driver="GTiff",
        width=200,
        height=200,
        count=count,
        dtype=dtype,
        nodata=0,
        transform=from_origin(X0, Y0, RES, RES),
        tiled=True,
        blockxsize=64,
        blockysize=64,
    )
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
        tags = {"SYNTHETIC": "yes"}
        if when:
            tags["TIFFTAG_DATETIME"] = when
        dst.update_tags(**tags)
    return path


def reprojected(src_path: Path, dst_path: Path, dst_crs: str) -> Path:
    """The same SYNTHETIC scene resampled into another CRS (with its date tag)."""
    with rasterio.open(src_path) as src:
        transform, w, h = calculate_default_transform(
            src.crs, dst_crs, src.width, src.height, *src.bounds
        )
        profile = src.profile | {"crs": dst_crs, "transform": transform, "width": w, "height": h}
        with rasterio.open(dst_path, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, b),
                    rasterio.band(dst, b),
                    resampling=Resampling.nearest,
                )
            dst.update_tags(**src.tags())
    return dst_path


def mask_sidecar(scene_path: Path, value: int) -> Path:
    """A usable-data mask beside the scene: 0 clear, 1 cloud, 255 nodata (uint8)."""
    out = scene_path.with_name(scene_path.name.replace(".tif", ".mask.tif"))
    with rasterio.open(scene_path) as src:
        profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": None}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.full((1, 200, 200), value, "uint8"))
    return out


def tracks_file(path: Path, geoms=None, ids=("01",), *, crs=CRS, props=None) -> Path:
    if geoms is None:
        geoms = [LineString([(X0 + 5, TRACK_Y), (X0 + 95, TRACK_Y)])] * len(ids)
    data = {"track_id": list(ids)} if props is None else props
    gdf = gpd.GeoDataFrame(data, geometry=list(geoms), crs=crs)
    if crs is not None:
        gdf = gdf.to_crs(4326)
    gdf.to_file(path, driver="GeoJSON")
    return path


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- the CLI catalogue


@dataclass(frozen=True)
class CliCase:
    """A bad ``toolkit count`` input: build(tmp) -> (scene args, tracks), and the error's text."""

    build: Callable[[Path], tuple[list[Path | str], Path]]
    needle: str  # must appear in the one-line error (names the input)
    kind: str  # what the message must also say


def _good_tracks(tmp: Path) -> Path:
    return tracks_file(tmp / "tracks.geojson")


def _corrupt(tmp: Path):
    p = tmp / "corrupt_20231005.tif"
    p.write_bytes(b"II*\x00" + bytes(np.random.default_rng(1).integers(0, 256, 5000, "uint8")))
    return [p], _good_tracks(tmp)


def _truncated(tmp: Path):
    good = scene(tmp / "full.tif")
    p = tmp / "20231005_truncated.tif"
    p.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    good.unlink()
    return [p], _good_tracks(tmp)


def _not_a_raster(tmp: Path):
    p = tmp / "notes_20231005.tif"
    p.write_text("this is not an image\n")
    return [p], _good_tracks(tmp)


def _band_mismatch(tmp: Path):
    d = tmp / "scenes"
    d.mkdir()
    scene(d / "a.tif", "2023:10:01 02:00:00")
    scene(d / "b4.tif", "2023:10:05 02:00:00", count=4)
    return [d], _good_tracks(tmp)


def _dtype_mismatch(tmp: Path):
    d = tmp / "scenes"
    d.mkdir()
    scene(d / "a.tif", "2023:10:01 02:00:00")
    scene(d / "b16.tif", "2023:10:05 02:00:00", dtype="uint16")
    return [d], _good_tracks(tmp)


def _scenes(tmp: Path) -> Path:
    d = tmp / "scenes"
    d.mkdir(exist_ok=True)
    scene(d / "a.tif", "2023:09:20 02:00:00", cars=())
    scene(d / "c.tif", "2023:10:05 02:15:00")
    return d


def _tracks_case(make_tracks: Callable[[Path], Path]):
    def build(tmp: Path):
        return [_scenes(tmp)], make_tracks(tmp)

    return build


def _stac_remote(tmp: Path):
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "remote-scene-20231005",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[130.6, 42.4], [130.61, 42.4], [130.61, 42.41], [130.6, 42.4]]],
        },
        "bbox": [130.6, 42.4, 130.61, 42.41],
        "properties": {"datetime": "2023-10-05T02:15:00Z"},
        "links": [],
        "assets": {
            "data": {
                "href": "https://example.invalid/scenes/20231005.tif",
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
            }
        },
    }
    p = tmp / "item.json"
    p.write_text(json.dumps(item))
    return [p], _good_tracks(tmp)


def _geographic(tmp: Path):
    d = tmp / "scenes"
    d.mkdir()
    reprojected(scene(tmp / "native.tif"), d / "wgs84.tif", "EPSG:4326")
    (tmp / "native.tif").unlink()
    return [d], _good_tracks(tmp)


CLI_CASES = {
    "missing-scene-file": CliCase(
        lambda t: ([t / "missing_20231005.tif"], _good_tracks(t)),
        "missing_20231005.tif",
        "no such file",
    ),
    "not-a-raster": CliCase(_not_a_raster, "notes_20231005.tif", "cannot be read"),
    "corrupt-geotiff": CliCase(_corrupt, "corrupt_20231005.tif", "corrupt"),
    "truncated-geotiff": CliCase(_truncated, "20231005_truncated.tif", "truncated"),
    "scene-without-crs": CliCase(
        lambda t: ([scene(t / "nocrs_20231005.tif", crs=None)], _good_tracks(t)),
        "nocrs_20231005.tif",
        "no CRS",
    ),
    "no-date-anywhere": CliCase(
        lambda t: ([scene(t / "nodate.tif", when=None)], _good_tracks(t)),
        "nodate.tif",
        "no acquisition date",
    ),
    "unparseable-date-tag": CliCase(
        lambda t: ([scene(t / "baddate.tif", when="yesterday")], _good_tracks(t)),
        "baddate.tif",
        "unparseable",
    ),
    "empty-folder": CliCase(
        lambda t: ([(t / "empty").mkdir() or t / "empty"], _good_tracks(t)),
        "empty",
        "no scene files",
    ),
    "glob-matches-nothing": CliCase(
        lambda t: ([str(t / "nothing_*.tif")], _good_tracks(t)),
        "nothing_*.tif",
        "matched no scene files",
    ),
    "date-beyond-2262": CliCase(
        lambda t: ([scene(t / "future.tif", when="2263:01:01 02:15:00")], _good_tracks(t)),
        "future.tif",
        "outside the supported range",
    ),
    "band-count-mismatch": CliCase(_band_mismatch, "b4.tif", "bands"),
    "dtype-mismatch": CliCase(_dtype_mismatch, "b16.tif", "dtype"),
    "stac-remote-href": CliCase(_stac_remote, "remote-scene-20231005", "remote"),
    "geographic-crs-scenes": CliCase(_geographic, "tracks.geojson", "not projected"),
    "tracks-file-missing": CliCase(
        _tracks_case(lambda t: t / "none.geojson"), "none.geojson", "not found"
    ),
    "tracks-not-vector": CliCase(
        _tracks_case(lambda t: (t / "bad.geojson").write_text("{not json") and t / "bad.geojson"),
        "bad.geojson",
        "cannot be read",
    ),
    "tracks-without-track-id": CliCase(
        _tracks_case(
            lambda t: tracks_file(
                t / "noid.geojson",
                [LineString([(X0 + 5, TRACK_Y), (X0 + 95, TRACK_Y)])],
                props={"name": ["main"]},
            )
        ),
        "noid.geojson",
        "track_id",
    ),
    "tracks-no-features": CliCase(
        _tracks_case(
            lambda t: (
                (t / "nofeat.geojson").write_text('{"type": "FeatureCollection", "features": []}')
                and t / "nofeat.geojson"
            )
        ),
        "nofeat.geojson",
        "no tracks",
    ),
    "track-outside-every-scene": CliCase(
        _tracks_case(
            lambda t: tracks_file(
                t / "far.geojson", [LineString([(X0 + 5005, TRACK_Y), (X0 + 5095, TRACK_Y)])]
            )
        ),
        "far.geojson",
        "outside every scene",
    ),
    "empty-geometry": CliCase(
        _tracks_case(lambda t: tracks_file(t / "emptygeom.geojson", [LineString()])),
        "emptygeom.geojson",
        "empty geometry",
    ),
    "point-geometry": CliCase(
        _tracks_case(lambda t: tracks_file(t / "point.geojson", [Point(X0 + 50, TRACK_Y)])),
        "point.geojson",
        "expected a LineString",
    ),
    "polygon-geometry": CliCase(
        _tracks_case(
            lambda t: tracks_file(
                t / "poly.geojson",
                [Polygon([(X0, TRACK_Y), (X0 + 50, TRACK_Y), (X0 + 50, TRACK_Y + 5)])],
            )
        ),
        "poly.geojson",
        "expected a LineString",
    ),
    "duplicate-track-ids": CliCase(
        _tracks_case(lambda t: tracks_file(t / "dup.geojson", ids=("07", "07"))),
        "dup.geojson",
        "duplicate track_id",
    ),
}


# ``toolkit areas``: the same rules, with storage-area polygons instead of tracks.
AREA_BOX = Polygon([(X0 + 10, TRACK_Y - 30), (X0 + 60, TRACK_Y - 30), (X0 + 60, TRACK_Y - 10),
                    (X0 + 10, TRACK_Y - 10)])  # fmt: skip


def areas_file(path: Path, geoms=None, ids=("yard",), *, crs=CRS, props=None) -> Path:
    """A SYNTHETIC areas file: polygons with an ``area_id`` (GeoJSON in lon/lat)."""
    if geoms is None:
        geoms = [AREA_BOX] * len(ids)
    data = {"area_id": list(ids)} if props is None else props
    gdf = gpd.GeoDataFrame(data, geometry=list(geoms), crs=crs)
    if path.suffix == ".gpkg":
        import warnings

        with warnings.catch_warnings():  # writing without a CRS is the point of this input
            warnings.simplefilter("ignore", UserWarning)
            gdf.to_file(path, driver="GPKG")
        return path
    if crs is not None:
        gdf = gdf.to_crs(4326)
    gdf.to_file(path, driver="GeoJSON")
    return path


def _areas_case(make_areas: Callable[[Path], Path]):
    def build(tmp: Path):
        return [_scenes(tmp)], make_areas(tmp)

    return build


AREA_CLI_CASES = {
    "areas-missing-scene-file": CliCase(
        lambda t: ([t / "missing_20231005.tif"], areas_file(t / "areas.geojson")),
        "missing_20231005.tif",
        "no such file",
    ),
    "areas-no-date-anywhere": CliCase(
        lambda t: ([scene(t / "nodate.tif", when=None)], areas_file(t / "areas.geojson")),
        "nodate.tif",
        "no acquisition date",
    ),
    "areas-file-missing": CliCase(
        _areas_case(lambda t: t / "none.geojson"), "none.geojson", "not found"
    ),
    "areas-not-vector": CliCase(
        _areas_case(lambda t: (t / "bad.geojson").write_text("{not json") and t / "bad.geojson"),
        "bad.geojson",
        "cannot be read",
    ),
    "areas-without-area-id": CliCase(
        _areas_case(lambda t: areas_file(t / "noid.geojson", props={"name": ["apron"]})),
        "noid.geojson",
        "area_id",
    ),
    "areas-no-features": CliCase(
        _areas_case(
            lambda t: (
                (t / "nofeat.geojson").write_text('{"type": "FeatureCollection", "features": []}')
                and t / "nofeat.geojson"
            )
        ),
        "nofeat.geojson",
        "no areas",
    ),
    "areas-without-crs": CliCase(
        _areas_case(lambda t: areas_file(t / "nocrs.gpkg", crs=None)), "nocrs.gpkg", "no CRS"
    ),
    "areas-line-geometry": CliCase(
        _areas_case(
            lambda t: areas_file(
                t / "line.geojson", [LineString([(X0 + 5, TRACK_Y), (X0 + 95, TRACK_Y)])]
            )
        ),
        "line.geojson",
        "expected a Polygon",
    ),
    "areas-duplicate-ids": CliCase(
        _areas_case(lambda t: areas_file(t / "dup.geojson", ids=("07", "07"))),
        "dup.geojson",
        "duplicate area_id",
    ),
    "area-outside-every-scene": CliCase(
        _areas_case(
            lambda t: areas_file(
                t / "far.geojson",
                [Polygon([(X0 + 5000, TRACK_Y), (X0 + 5050, TRACK_Y), (X0 + 5050, TRACK_Y + 20)])],
            )
        ),
        "far.geojson",
        "outside every scene",
    ),
}


class _NoNetwork:
    """Fail loudly if anything in this process opens a network connection."""

    def __init__(self, monkeypatch):
        self.attempts: list[object] = []
        real = socket.socket.connect

        def guarded(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.attempts.append(address)
                raise OSError(f"network access attempted: {address}")
            return real(sock, address)

        monkeypatch.setattr(socket.socket, "connect", guarded)


_LIBRARY_BUGS: dict[str, str] = {}


@pytest.mark.parametrize(
    "case_id",
    [
        pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=_LIBRARY_BUGS[k]))
        if k in _LIBRARY_BUGS
        else k
        for k in CLI_CASES
    ],
)
def test_cli_bad_input(case_id, tmp_path, capsys, monkeypatch):
    _check_cli_bad_input(CLI_CASES[case_id], "count", "--tracks", tmp_path, capsys, monkeypatch)


def _check_cli_bad_input(case, command, option, tmp_path, capsys, monkeypatch):
    """One line naming the input, exit status 2, no output written, inputs untouched."""
    work = tmp_path / "in"
    work.mkdir()
    scene_args, vectors = case.build(work)
    before = digest_tree(work)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / f"{command}.csv"
    out.write_text("previous run\n")
    guard = _NoNetwork(monkeypatch)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    status = cli_main([command, *map(str, scene_args), option, str(vectors), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert case.needle in lines[0], lines[0]
    assert case.kind.lower() in lines[0].lower(), lines[0]
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in outdir.iterdir()) == [out.name]  # no temp debris
    assert digest_tree(work) == before  # inputs untouched
    assert guard.attempts == []


@pytest.mark.parametrize("case_id", list(AREA_CLI_CASES))
def test_cli_areas_bad_input(case_id, tmp_path, capsys, monkeypatch):
    _check_cli_bad_input(AREA_CLI_CASES[case_id], "areas", "--areas", tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize(
    "case_id", ["truncated-geotiff", "duplicate-track-ids", "stac-remote-href"]
)
def test_cli_bad_input_exit_status_of_the_process(case_id, tmp_path):
    case = CLI_CASES[case_id]
    work = tmp_path / "in"
    work.mkdir()
    scene_args, tracks = case.build(work)
    out = tmp_path / "counts.csv"
    out.write_text("previous run\n")
    r = subprocess.run(
        [sys.executable, "-m", "toolkit", "count", *map(str, scene_args), "--tracks", str(tracks)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and case.needle in r.stderr, r.stderr
    assert out.read_text() == "previous run\n"


# --------------------------------------------------------------------------- not errors


def _count_csv(tmp_path: Path, scene_args, tracks) -> pd.DataFrame:
    out = tmp_path / "counts.csv"
    status = cli_main(["count", *map(str, scene_args), "--tracks", str(tracks), "--out", str(out)])
    assert status == 0
    return pd.read_csv(out, dtype={"track_id": str})


def test_scenes_in_different_crs_are_aligned_not_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    d = tmp_path / "scenes"
    d.mkdir()
    scene(d / "a.tif", "2023:09:20 02:00:00", cars=())
    scene(d / "b.tif", "2023:09:25 02:00:00", cars=())
    scene(d / "c.tif", "2023:10:01 02:00:00", cars=((20, 35.2),))
    native = scene(tmp_path / "d_native.tif", "2023:10:05 02:00:00", cars=((50, 65.2),))
    reprojected(native, d / "d_utm51.tif", "EPSG:32651")
    before = digest_tree(d)
    df = _count_csv(tmp_path, [d], tracks_file(tmp_path / "t.geojson"))
    assert len(df) == 4
    assert df["railcars"].tolist() == [0, 0, 1, 1]  # the car is found on both grids
    assert df["occupied_m"].tolist()[2:] == pytest.approx([15.2, 15.2], abs=2.0)
    assert df["valid_fraction"].tolist() == pytest.approx([1, 1, 1, 1], abs=0.02)
    assert digest_tree(d) == before


def test_duplicate_dates_are_mosaicked_or_an_error_on_request(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    d = tmp_path / "scenes"
    d.mkdir()
    scene(d / "a.tif", "2023:10:05 02:15:00")
    scene(d / "b.tif", "2023:10:05 02:15:00")
    df = _count_csv(tmp_path, [d], tracks_file(tmp_path / "t.geojson"))
    assert df["time"].tolist() == ["2023-10-05T02:15:00"]  # one row: one time step
    with pytest.raises(toolkit.SceneError, match=r"b\.tif.*same acquisition time") as exc:
        toolkit.load_cube(d, duplicate_times="error")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("kind", ["all-cloud", "all-nodata"])
def test_unusable_scene_gives_missing_counts_not_zero(kind, tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    d = tmp_path / "scenes"
    d.mkdir()
    scene(d / "a.tif", "2023:09:25 02:00:00", cars=())
    scene(d / "b.tif", "2023:09:28 02:00:00", cars=())
    scene(d / "c.tif", "2023:10:01 02:00:00")
    if kind == "all-cloud":
        bad = scene(d / "d.tif", "2023:10:05 02:00:00")
        mask_sidecar(bad, 1)
    else:
        scene(d / "d.tif", "2023:10:05 02:00:00", fill=0)
    df = _count_csv(tmp_path, [d], tracks_file(tmp_path / "t.geojson"))
    assert df["railcars"].tolist()[:3] == [0, 0, 1]
    assert df["valid_fraction"].tolist() == [1, 1, 1, 0]
    unusable = df.iloc[3]
    assert pd.isna(unusable["railcars"]) and pd.isna(unusable["occupied_m"])
    assert pd.isna(unusable["railcars_low"]) and pd.isna(unusable["railcars_high"])


# --------------------------------------------------------------------------- series


def _series(values, start="2019-01-01", freq="30D") -> pd.Series:
    return pd.Series(
        np.asarray(values, float), index=pd.date_range(start, periods=len(values), freq=freq)
    )


_BASE = [5, 7, 4, 9, 6, 8, 5, 7, 6, 9, 4, 6, 8, 5, 7, 6, 5, 8, 7, 6, 9, 5, 6, 7, 73]

SERIES_CASES = {
    "changepoints-all-nan": (
        lambda: toolkit.detect_changepoints(_series([np.nan] * 10)),
        r"needs at least \d+ non-missing observations, found 0",
    ),
    "changepoints-too-short": (
        lambda: toolkit.detect_changepoints(_series([3.0, 4.0]), min_size=2),
        r"needs at least \d+ (non-missing )?observations, found 2",
    ),
    "changepoints-negative-counts-poisson": (
        lambda: toolkit.detect_changepoints(_series([3, 4, -1, 5, 6, 7]), model="poisson"),
        r"counts >= 0, found -1",
    ),
    "changepoints-infinite": (
        lambda: toolkit.detect_changepoints(_series([3, 4, np.inf, 5, 6, 7])),
        r"infinite values",
    ),
    "changepoints-unsorted-times": (
        lambda: toolkit.detect_changepoints(
            [1.0, 2.0, 3.0, 4.0], times=["2023-01-05", "2023-01-01", "2023-01-09", "2023-01-12"]
        ),
        r"times: expected ascending",
    ),
    "changepoints-times-length": (
        lambda: toolkit.detect_changepoints([1.0, 2.0, 3.0], times=["2023-01-01"]),
        r"times: expected 3 time stamps",
    ),
    "changepoints-dataframe": (
        lambda: toolkit.detect_changepoints(pd.DataFrame({"a": [1, 2], "b": [3, 4]})),
        r"expected one series, found a DataFrame",
    ),
    "baseline-negative-counts": (
        lambda: toolkit.compare_with_baseline(
            _series([*_BASE[:5], -2, *_BASE[6:]]), exclude=(), seed=0
        ),
        r"counts must be >= 0, found -2",
    ),
    "baseline-event-before-data": (
        lambda: toolkit.compare_with_baseline(_series(_BASE), "2010-01-01", exclude=()),
        r"event_date: 2010-01-01 is outside the data",
    ),
    "baseline-event-after-data": (
        lambda: toolkit.compare_with_baseline(_series(_BASE), "2031-06-01", exclude=()),
        r"event_date: 2031-06-01 is outside the data",
    ),
    "baseline-event-without-observation": (
        lambda: toolkit.compare_with_baseline(_series(_BASE), "2019-01-15", exclude=()),
        r"no observation on 2019-01-15",
    ),
    "baseline-event-value-missing": (
        lambda: toolkit.compare_with_baseline(
            _series([*_BASE[:-1], np.nan]), "2020-12-21", exclude=()
        ),
        r"the value on 2020-12-21 is missing .*scene not counted",
    ),
    "baseline-no-times": (
        lambda: toolkit.compare_with_baseline(np.array(_BASE, float)),
        r"needs time stamps",
    ),
    "baseline-window-too-short": (
        lambda: toolkit.compare_with_baseline(
            _series([4, 73]), "2019-01-31", baseline_end="event", exclude=()
        ),
        r"fewer than 3|at least 3|3 observations",
    ),
    "baseline-all-nan": (
        lambda: toolkit.compare_with_baseline(_series([np.nan] * 6), exclude=()),
        r"all values are missing",
    ),
    "change-map-too-few-dates": (
        lambda: toolkit.change_map(
            __import__("xarray").DataArray(
                np.zeros((2, 3, 3)),
                dims=("time", "y", "x"),
                coords={"time": pd.date_range("2023-01-01", periods=2)},
            )
        ),
        r"needs at least 3 dates, found 2",
    ),
}


@pytest.mark.parametrize("case_id", list(SERIES_CASES))
def test_series_bad_input(case_id):
    call, pattern = SERIES_CASES[case_id]
    with pytest.raises(toolkit.SeriesError, match=pattern) as exc:
        call()
    assert "\n" not in str(exc.value)


def test_series_with_some_nan_is_analysed_with_positions_kept():
    values = [5, 6, np.nan, 5, 6, 5, np.nan, 6, 30, 31, 29, np.nan, 30, 31]
    res = toolkit.detect_changepoints(_series(values), min_size=2)
    # positions refer to the input, NaNs included: the change is at position 8
    assert list(res.positions) == [8]


# --------------------------------------------------------------------------- site catalogue


def _catalogue(tmp: Path, sites, name="sites.json") -> Path:
    p = tmp / name
    p.write_text(json.dumps(sites) if name.endswith(".json") else sites)
    return p


CATALOGUE_CASES = {
    "catalogue-missing": (lambda t: t / "nothere.json", "nothere.json", "not found"),
    "catalogue-bad-json": (
        lambda t: (t / "broken.json").write_text("[{") and t / "broken.json",
        "broken.json",
        "not valid JSON",
    ),
    "catalogue-yaml": (
        lambda t: (t / "sites.yaml").write_text("- name: a") and t / "sites.yaml",
        "sites.yaml",
        "unknown catalogue format",
    ),
    "catalogue-empty": (lambda t: _catalogue(t, []), "sites.json", "lists no sites"),
    "catalogue-missing-key": (
        lambda t: _catalogue(t, [{"name": "a", "scenes": "s"}]),
        "sites.json",
        "lacks ['tracks']",
    ),
    "catalogue-csv-missing-column": (
        lambda t: _catalogue(t, "name,scenes\na,s\n", name="sites.csv"),
        "sites.csv",
        "lacks column(s) ['tracks']",
    ),
    "catalogue-bad-name": (
        lambda t: _catalogue(t, [{"name": "a/b", "tracks": str(_good_tracks(t)), "scenes": "s"}]),
        "'a/b'",
        "expected an identifier",
    ),
    "catalogue-duplicate-names": (
        lambda t: _catalogue(
            t,
            [{"name": "a", "tracks": str(_good_tracks(t)), "scenes": "s"}] * 2,
        ),
        "'a'",
        "appears twice",
    ),
    "catalogue-tracks-missing": (
        lambda t: _catalogue(t, [{"name": "a", "tracks": "nope.geojson", "scenes": "s"}]),
        "nope.geojson",
        "not found",
    ),
}


@pytest.mark.parametrize("case_id", list(CATALOGUE_CASES))
def test_site_catalogue_bad_input(case_id, tmp_path):
    from toolkit.sites import read_catalogue

    build, needle, kind = CATALOGUE_CASES[case_id]
    path = build(tmp_path)
    with pytest.raises(toolkit.InputError) as exc:
        read_catalogue(path)
    msg = str(exc.value)
    assert "\n" not in msg and needle in msg and kind in msg, msg


def test_bad_scene_in_one_site_stops_the_whole_job_before_computing(tmp_path):
    from toolkit.sites import count_sites

    good = _scenes(tmp_path)
    bad = tmp_path / "bad_scenes"
    bad.mkdir()
    scene(bad / "nocrs_20231005.tif", crs=None)
    tracks = _good_tracks(tmp_path)
    cat = _catalogue(
        tmp_path,
        [
            {"name": "good", "tracks": str(tracks), "scenes": str(good)},
            {"name": "broken", "tracks": str(tracks), "scenes": str(bad)},
        ],
    )
    with pytest.raises(toolkit.SceneError, match=r"^site 'broken': .*nocrs_20231005\.tif.*no CRS"):
        count_sites(cat)
