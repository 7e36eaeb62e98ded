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


def _scene(
    path,
    when="2023:10:05 02:15:00",
    *,
    crs=CRS,
    cars=((40, 56), (57, 73)),
    texture=False,
    width=200,
):
    """A 200 px high RGB scene (``width`` px wide): grey ballast along y=4700050, rust-brown
    box cars at x (m); with ``texture``, the same pattern of darker 2 m squares beside the
    track in every scene (ground detail for the scenes' co-registration to hold on to)."""
    rng = np.random.default_rng(zlib.crc32(str(path.name).encode()))
    img = np.full((3, 200, width), 120, "uint8")
    if texture:
        squares = np.random.default_rng(7).random((50, width // 4)) < 0.3
        img[:, np.kron(squares, np.ones((4, 4), bool))] = 80
    img += rng.integers(0, 6, img.shape, dtype="uint8")
    row = int((Y0 - 4_700_050.0) / RES)
    img[:, row - 3 : row + 4, :] = 150  # ballast band
    for a, b in cars:
        for band, value in enumerate((95, 52, 38)):
            img[band, row - 3 : row + 4, int(a / RES) : int(b / RES)] = value
    profile = dict(
        driver="GTiff",
        width=width,
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


@pytest.fixture()
def short_car_site(tmp_path):
    """Ten scenes of one 190 m track: six empty, four with unbroken runs of 12 m cars (no
    coupler gap to see), so that the default mean length (15.2 m) counts too few. No place
    is occupied in more than two scenes: the empty track is what most scenes show."""
    scenes = tmp_path / "short_cars"
    scenes.mkdir()
    runs = {
        "a": (),
        "b": ((8, 56),),  # 4 cars
        "c": (),
        "d": ((62, 122),),  # 5 cars
        "e": (),
        "f": ((128, 188),),  # 5 cars
        "g": (),
        "h": ((8, 44), (62, 98)),  # 3 + 3 cars
        "i": (),
        "j": (),
    }
    hand = []
    for day, (name, cars) in enumerate(runs.items(), start=1):
        when = f"2023:09:{day:02d} 02:00:00"
        _scene(scenes / f"{name}.tif", when, cars=cars, texture=True, width=400)
        if cars:
            n = sum(round((b - a) / 12) for a, b in cars)
            hand.append({"time": f"2023-09-{day:02d}T02:00:00", "track_id": "01", "railcars": n})
    hand_csv = tmp_path / "hand.csv"
    pd.DataFrame(hand).to_csv(hand_csv, index=False)
    tracks = tmp_path / "short_cars.geojson"
    line = LineString([(X0 + 5, 4_700_050.0), (X0 + 195, 4_700_050.0)])
    gpd.GeoDataFrame({"track_id": ["01"]}, geometry=[line], crs=CRS).to_crs(4326).to_file(
        tracks, driver="GeoJSON"
    )
    return scenes, tracks, hand_csv


def test_count_fits_its_parameters_to_hand_counts(short_car_site, tmp_path):
    """--hand-counts: the mean car length is fitted to an analyst's counts when clearly
    better, the fit is reported on stderr, and the CSV is the counts with the fitted
    parameters; a missing or malformed hand-count file is a one-line error, no output."""
    import toolkit

    scenes, tracks, hand_csv = short_car_site
    hand = pd.read_csv(hand_csv)
    plain, fitted = tmp_path / "plain.csv", tmp_path / "fitted.csv"
    r = toolkit_cli("count", scenes, "--tracks", tracks, "--out", plain)
    assert r.returncode == 0, r.stderr
    assert "calibration" not in r.stderr
    before = pd.read_csv(plain).set_index("time")["railcars"]
    # the defaults read 12 m cars as 15.2 m ones: 3, 4, 4 and 4 railcars for 4, 5, 5 and 6
    assert (before.loc[hand["time"]].to_numpy() < hand["railcars"].to_numpy()).all()
    r = toolkit_cli(
        "count",
        scenes,
        "--tracks",
        tracks,
        "--hand-counts",
        hand_csv,
        "--out",
        fitted,
        "--progress",
    )
    assert r.returncode == 0, r.stderr
    assert "checking scenes" in r.stderr and "calibrating" in r.stderr  # the progress bars
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("calibration: ")]
    assert any(ln.startswith("calibration: adopted") for ln in notes), r.stderr
    after = pd.read_csv(fitted, dtype={"track_id": str})
    assert tuple(after.columns) == CSV_COLUMNS
    got = after.set_index("time")["railcars"]
    assert got.loc[hand["time"]].tolist() == hand["railcars"].tolist()
    assert (got.drop(hand["time"]) == 0).all()  # the empty scenes stay empty
    # the CSV is what the fitted parameters count through the Python API
    fit = toolkit.calibrate(toolkit.track_strips(toolkit.load_cube(scenes), tracks), hand_csv)
    assert fit.adopted and fit.params["car_length_m"] < 13.5
    api = toolkit.count_railcars(toolkit.load_cube(scenes), tracks, **fit.params).compute()
    assert got.tolist() == api["railcars"].values[:, 0].astype(int).tolist()
    assert any(f"car_length_m={fit.params['car_length_m']}" in ln for ln in notes)
    # bad hand counts: one line naming the file, exit 2, the previous output left alone
    broken = tmp_path / "broken.csv"
    broken.write_text("time,track_id\n2023-09-02,01\n")
    for bad, needle in ((tmp_path / "nope.csv", "nope.csv"), (broken, "broken.csv")):
        r = toolkit_cli("count", scenes, "--tracks", tracks, "--hand-counts", bad, "--out", fitted)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.stderr
    assert pd.read_csv(fitted, dtype={"track_id": str}).equals(after)


def test_count_adds_railcars_per_kind_when_asked(site, tmp_path):
    """--kinds adds the railcars per kind after the contract's columns, as toolkit.kind_counts
    gives them; the contract's columns are those of a run without it."""
    import toolkit
    from toolkit.kinds import KINDS
    from toolkit.occupancy import KIND_CSV_COLUMNS

    scenes, tracks = site
    plain, kinds = tmp_path / "plain.csv", tmp_path / "kinds.csv"
    assert toolkit_cli("count", scenes, "--tracks", tracks, "--out", plain).returncode == 0
    r = toolkit_cli("count", scenes, "--tracks", tracks, "--kinds", "--out", kinds)
    assert r.returncode == 0, r.stderr
    a = pd.read_csv(plain, dtype={"track_id": str})
    b = pd.read_csv(kinds, dtype={"track_id": str})
    assert tuple(b.columns) == CSV_COLUMNS + KIND_CSV_COLUMNS
    assert KIND_CSV_COLUMNS == tuple(f"railcars_{k}" for k in (*KINDS, "unknown", "other"))
    assert b[list(CSV_COLUMNS)].equals(a)
    strips = toolkit.track_strips(
        toolkit.load_cube(scenes),
        tracks,
        shifts_m=toolkit.coregister(toolkit.load_cube(scenes), tracks=tracks),
    ).compute()
    occ = toolkit.estimate_occupancy(strips).compute()
    per_kind = toolkit.kind_counts(toolkit.classify_railcars(strips, occ), occ)
    for c in KIND_CSV_COLUMNS:
        assert b[c].tolist() == per_kind[c].values[:, 0].astype(int).tolist(), c
    # every railcar counted is given a kind here (0, 1 and 2 box cars, clearly seen)
    kinds_sum = b[[c for c in KIND_CSV_COLUMNS if c != "railcars_other"]].sum(axis=1)
    assert kinds_sum.tolist() == b["railcars"].tolist()


def test_sites_calibrates_a_site_with_hand_counts(site, short_car_site, tmp_path):
    """A catalogue's hand_counts column calibrates that site alone (the fit on stderr, named
    by the site); a site without keeps the defaults; a missing hand-count file is a one-line
    error naming the site, and nothing is written."""
    scenes_a, tracks_a = site
    scenes_h, tracks_h, hand_csv = short_car_site
    hand = pd.read_csv(hand_csv)
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        "name,tracks,scenes,hand_counts\n"
        f"yard_a,{tracks_a},{scenes_a},\n"
        f"yard_h,{tracks_h},{scenes_h},{hand_csv}\n"
    )
    out = tmp_path / "sites"
    r = toolkit_cli("sites", catalogue, "--out", out)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "calibration: " in ln]
    assert notes and all(ln.startswith("site yard_h calibration: ") for ln in notes)
    assert any(ln.startswith("site yard_h calibration: adopted") for ln in notes), r.stderr
    h = pd.read_csv(out / "yard_h.csv").set_index("time")["railcars"]
    assert h.loc[hand["time"]].tolist() == hand["railcars"].tolist()  # 4, 5, 5, 6
    assert pd.read_csv(out / "yard_a.csv")["railcars"].tolist() == [0, 1, 2]
    both = pd.read_csv(out / "all_sites.csv")
    assert both.groupby("site")["railcars"].sum().to_dict() == {"yard_a": 3, "yard_h": 20}
    # a hand-count file that is not there
    bad = tmp_path / "bad.csv"
    bad.write_text(f"name,tracks,scenes,hand_counts\nyard_h,{tracks_h},{scenes_h},gone.csv\n")
    r = toolkit_cli("sites", bad, "--out", tmp_path / "nope")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "yard_h" in lines[0] and "gone.csv" in lines[0]
    assert not (tmp_path / "nope").exists()
    # the same key in a JSON catalogue; and not together with options for every site
    import json

    import toolkit
    from toolkit.sites import read_catalogue, site_counts

    doc = tmp_path / "catalogue.json"
    doc.write_text(
        json.dumps(
            [
                {
                    "name": "yard_h",
                    "tracks": str(tracks_h),
                    "scenes": str(scenes_h),
                    "hand_counts": hand_csv.name,
                }
            ]
        )
    )
    cat = read_catalogue(doc)
    assert cat["yard_h"].hand_counts == hand_csv and "hand counts" in cat.summary()
    assert f"<td>{hand_csv}</td>" in cat._repr_html_()
    with pytest.raises(toolkit.InputError, match="cannot go with hand counts"):
        site_counts(cat, count_options={"threshold": 4.0})
