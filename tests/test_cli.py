"""The ``toolkit`` command line: the count contract, help, and bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zlib

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import LineString

from toolkit.occupancy import CSV_COLUMNS

CRS = "EPSG:32652"
X0, Y0, RES = 500_000.0, 4_700_100.0, 0.5


def toolkit_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _scene(path, when="2023:10:05 02:15:00", *, crs=CRS, cars=((40, 56), (57, 73))):
    """A 200 x 200 px RGB scene: grey ballast along y=4700050, rust-brown box cars at x (m)."""
    rng = np.random.default_rng(zlib.crc32(str(path.name).encode()))
    img = np.full((3, 200, 200), 120, "uint8")
    img += rng.integers(0, 6, img.shape, dtype="uint8")
    row = int((Y0 - 4_700_050.0) / RES)
    img[:, row - 3 : row + 4, :] = 150  # ballast band
    for a, b in cars:
        for band, value in enumerate((95, 52, 38)):
            img[band, row - 3 : row + 4, int(a / RES) : int(b / RES)] = value
    profile = dict(
        driver="GTiff",
        width=200,
        height=200,
        count=3,
        dtype="uint8",
        nodata=0,
        transform=from_origin(X0, Y0, RES, RES),
        tiled=True,
        blockxsize=128,
        blockysize=128,
        compress="deflate",
    )
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
        if when:
            dst.update_tags(TIFFTAG_DATETIME=when)
    return path


def _tracks(path, ids=("01",), *, offset=0.0):
    geoms = [LineString([(X0 + 5 + offset, 4_700_050.0), (X0 + 95 + offset, 4_700_050.0)])]
    geoms = geoms * len(ids)
    gpd.GeoDataFrame({"track_id": list(ids)}, geometry=geoms, crs=CRS).to_crs(4326).to_file(
        path, driver="GeoJSON"
    )
    return path


@pytest.fixture()
def site(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    _scene(scenes / "a.tif", "2023:09:20 02:00:00", cars=())
    _scene(scenes / "b.tif", "2023:09:28 02:00:00", cars=((20, 35),))
    _scene(scenes / "c.tif", "2023:10:05 02:15:00")
    tracks = _tracks(tmp_path / "tracks.geojson")
    return scenes, tracks


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_help_for_every_subcommand():
    top = toolkit_cli("--help")
    assert top.returncode == 0 and "count" in top.stdout and "synth" in top.stdout
    for sub in ("count", "synth"):
        r = toolkit_cli(sub, "--help")
        assert r.returncode == 0, r.stderr
        assert "usage: toolkit " + sub in r.stdout


def test_count_writes_the_contract_csv(site, tmp_path):
    scenes, tracks = site
    before = {p: _digest(p) for p in scenes.iterdir()}
    out = tmp_path / "counts.csv"
    r = toolkit_cli("count", scenes, "--tracks", tracks, "--out", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, dtype={"track_id": str})
    assert tuple(df.columns) == CSV_COLUMNS
    assert list(df["time"]) == ["2023-09-20T02:00:00", "2023-09-28T02:00:00", "2023-10-05T02:15:00"]
    assert list(df["track_id"]) == ["01"] * 3
    # 0, 1 and 2 cars of 15-16 m; occupied length within two pixels per car end
    assert list(df["railcars"]) == [0, 1, 2]
    assert df["occupied_m"].tolist() == pytest.approx([0, 15, 32], abs=2.5)
    assert (df["valid_fraction"] == 1).all()
    assert ((df["railcars_low"] <= df["railcars"]) & (df["railcars"] <= df["railcars_high"])).all()
    assert "not counted" not in r.stderr
    # inputs are never modified
    assert before == {p: _digest(p) for p in scenes.iterdir()}


def test_count_names_the_scenes_it_saw_but_did_not_count(capsys):
    """A lone snow scene's rows are written with empty railcars, and one line on stderr
    names its date."""
    import xarray as xr

    from toolkit.cli import _note_unreadable

    times = pd.to_datetime(["2022-12-01", "2023-01-02", "2023-02-01"])
    counts = xr.Dataset({"scene_readable": ("time", [True, False, True])}, coords={"time": times})
    _note_unreadable(counts)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("note: 1 scene(s) not counted")
    assert "2023-01-02" in err[0] and "2022-12-01" not in err[0]
    _note_unreadable(counts.assign(scene_readable=("time", [True] * 3)))
    _note_unreadable(counts.drop_vars("scene_readable"))
    assert capsys.readouterr().err == ""


def test_count_names_the_tracks_whose_high_bound_is_what_fits(capsys):
    """At pixels coarser than 2 m, one line on stderr names the tracks whose empty-track
    reference few scenes show (their railcars can be far too low); none at finer pixels,
    with a supported reference, or for counts without the support."""
    import xarray as xr

    from toolkit.cli import _note_unsupported

    counts = xr.Dataset(
        {"reference_support": ("track", np.array([0.1, 0.8, 0.3], "float32"))},
        coords={"track": ["01", "02", "03"]},
        attrs={"pixel_size_m": 3.0},
    )
    _note_unsupported(counts)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("note: 2 track(s) seldom seen empty at 3 m")
    assert "(01, 03)" in err[0] and "railcars_high" in err[0]
    _note_unsupported(counts.assign_attrs(pixel_size_m=0.5))
    _note_unsupported(counts.assign(reference_support=("track", np.full(3, 0.9, "float32"))))
    _note_unsupported(counts.drop_vars("reference_support"))
    assert capsys.readouterr().err == ""


def test_count_to_stdout_and_string_ids(site, tmp_path):
    scenes, _ = site
    tracks = _tracks(tmp_path / "t.geojson", ids=("07",))
    r = toolkit_cli("count", scenes / "c.tif", "--tracks", tracks)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split(",")[1] == "07"


def _bad_cases(tmp_path, site):
    scenes, tracks = site
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(np.random.default_rng(1).integers(0, 256, 5000)))
    good = scenes / "c.tif"
    truncated = tmp_path / "20231005_truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    nocrs = _scene(tmp_path / "nocrs.tif", crs=None)
    nodate = _scene(tmp_path / "nodate.tif", when=None)
    dup = tmp_path / "dup.geojson"
    _tracks(dup, ids=("01", "01"))
    off = _tracks(tmp_path / "off.geojson", offset=5000.0)
    return [
        ([tmp_path / "missing.tif"], tracks, "missing.tif"),
        ([corrupt], tracks, "corrupt.tif"),
        ([truncated], tracks, "20231005_truncated.tif"),
        ([nocrs], tracks, "nocrs.tif"),
        ([nodate], tracks, "nodate.tif"),
        ([scenes], dup, "duplicate track_id"),
        ([scenes], off, "outside every scene"),
        ([scenes], tmp_path / "none.geojson", "none.geojson"),
    ]


def test_bad_input_gives_one_line_exit_2_and_no_output(site, tmp_path):
    for scene_args, tracks, needle in _bad_cases(tmp_path, site):
        out = tmp_path / "counts.csv"
        out.write_text("previous run\n")
        r = toolkit_cli("count", *scene_args, "--tracks", tracks, "--out", out)
        assert r.returncode == 2, (needle, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, (needle, r.stderr)
        assert needle in lines[0], (needle, lines[0])
        assert "Traceback" not in r.stderr
        assert out.read_text() == "previous run\n", needle


def test_sites_counts_a_catalogue_in_one_run(site, tmp_path):
    scenes, tracks = site
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        f"name,tracks,scenes\nyard_a,{tracks},{scenes}\nyard_b,{tracks},{scenes}\n"
    )
    out = tmp_path / "sites"
    r = toolkit_cli("sites", catalogue, "--out", out)
    assert r.returncode == 0, r.stderr
    both = pd.read_csv(out / "all_sites.csv", dtype={"track_id": str})
    assert sorted(both["site"].unique()) == ["yard_a", "yard_b"]
    a = pd.read_csv(out / "yard_a.csv", dtype={"track_id": str})
    assert a["railcars"].tolist() == [0, 1, 2]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"name,tracks,scenes\nyard_c,{tmp_path / 'none.geojson'},{scenes}\n")
    r = toolkit_cli("sites", bad, "--out", tmp_path / "nope")
    assert r.returncode == 2 and "yard_c" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nope").exists()
