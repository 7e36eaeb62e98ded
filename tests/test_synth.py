"""Tests of the synthetic yard simulator (toolkit.synth).

The sites generated here are small (a few dates, 1 m or 3 m pixels) so that the
whole module runs in well under a minute. Ground truth comes from the published
facts (five-year history) and from the simulator's own truth tables, which the
rendered pixels are checked against.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import synth
from toolkit.errors import DataIntegrityError, InputError
from toolkit.synth import (
    DEFAULT_SAMPLE,
    SiteInfo,
    five_year_history,
    simulate_site,
    update_manifest,
    write_default_sample,
)

KIND_RANGES = {
    "box": (15.0, 17.0),
    "tank": (12.0, 18.0),
    "ore": (13.0, 14.0),
    "flat": (13.0, 19.0),
    "locomotive": (18.0, 20.0),
}


def _read_truth(site: SiteInfo) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    kw = {"dtype": {"track_id": str}}
    return (
        pd.read_csv(site.truth_path, **kw),
        pd.read_csv(site.cars_path, **kw),
        pd.read_csv(site.areas_truth_path),
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def history() -> pd.DataFrame:
    return five_year_history()


@pytest.fixture(scope="session")
def site_1m(tmp_path_factory, history) -> SiteInfo:
    """Calibrated history, 1 m: the two published dates plus three closure-era dates."""
    times = history["time"]
    closure = history[(times > "2020-03-01") & (times < "2022-09-01")]["time"].iloc[:3]
    dates = [pd.Timestamp("2023-10-05"), pd.Timestamp("2022-11-18"), *closure]
    out = tmp_path_factory.mktemp("synth") / "site_1m"
    return simulate_site(out, resolution_m=1.0, dates=dates)


@pytest.fixture(scope="session")
def site_3m(tmp_path_factory) -> SiteInfo:
    out = tmp_path_factory.mktemp("synth") / "site_3m"
    dates = [dt.datetime(2021, 7, 3, 2, 5), dt.datetime(2021, 12, 20, 1, 55)]
    return simulate_site(out, resolution_m=3.0, history="random", dates=dates, seed=7)


# --------------------------------------------------------------------------- history


@pytest.mark.parametrize("seed", [20231005, 1, 2, 3])
def test_five_year_history_reproduces_published_facts(seed):
    h = five_year_history(seed=seed)
    assert list(h.columns) == ["time", "railcars", "locomotives"]
    assert h["time"].dtype == np.dtype("datetime64[ns]")
    assert h["time"].is_monotonic_increasing
    assert 55 <= len(h) <= 65
    assert h["time"].iloc[0] >= pd.Timestamp("2018-10-01")
    assert h["time"].iloc[0] < pd.Timestamp("2018-11-01")
    day = h.set_index(h["time"].dt.normalize())["railcars"]
    # the published numbers, exactly
    assert day[pd.Timestamp("2023-10-05")] == 73
    assert h["time"].iloc[-1].normalize() == pd.Timestamp("2023-10-05")
    assert day[pd.Timestamp("2022-11-18")] == 5
    assert day[pd.Timestamp("2022-11-30")] == 8
    before = h[h["time"] < "2023-09-18"]
    assert before["railcars"].max() == 20
    assert (before["railcars"] == 20).sum() == 1
    assert before.loc[before["railcars"].idxmax(), "time"].year == 2019
    assert before["railcars"].min() >= 0
    # near zero during the closure
    closure = h[(h["time"] >= "2020-02-01") & (h["time"] < "2022-10-01")]
    assert len(closure) >= 20 and closure["railcars"].max() <= 2
    # pre-closure baseline between 4 and 20
    pre = h[h["time"] < "2020-02-01"]
    assert pre["railcars"].between(4, 20).all()
    # 2023 before the summit: 3-15
    y23 = h[(h["time"] >= "2023-01-01") & (h["time"] < "2023-09-18")]
    assert y23["railcars"].between(3, 15).all()
    # a steady rise from 2023-09-18 to 73
    rise = h[h["time"] >= "2023-09-18"]["railcars"].to_numpy()
    assert len(rise) >= 4 and (np.diff(rise) > 0).all()
    # denser acquisitions in September 2023 (every 2-4 days)
    sept = h[h["time"] >= "2023-09-01"]["time"]
    gaps = sept.dt.normalize().diff().dropna().dt.days
    assert len(sept) >= 9 and gaps.between(2, 4).all()
    early = h[h["time"] < "2023-09-01"]["time"].diff().dropna().dt.days
    assert early.median() >= 21
    # locomotives: a few scenes, never on 2023-10-05
    locos = h.set_index(h["time"].dt.normalize())["locomotives"]
    assert 1 <= (locos > 0).sum() <= 5
    assert locos[pd.Timestamp("2023-10-05")] == 0
    # acquisition times around 02:00 UTC
    hours = h["time"].dt.hour + h["time"].dt.minute / 60
    assert hours.between(1.5, 2.5).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_five_year_history_published_numbers_hold_for_any_seed(seed):
    h = five_year_history(seed=seed)
    day = h.set_index(h["time"].dt.normalize())["railcars"]
    assert day[pd.Timestamp("2023-10-05")] == 73 == h["railcars"].iloc[-1]
    assert day[pd.Timestamp("2022-11-18")] == 5
    assert day[pd.Timestamp("2022-11-30")] == 8
    before = h[h["time"] < "2023-09-18"]["railcars"]
    assert before.max() == 20 and (before == 20).sum() == 1
    assert 55 <= len(h) <= 65 and h["time"].is_unique


def test_five_year_history_is_deterministic_and_seeded():
    pd.testing.assert_frame_equal(five_year_history(), five_year_history())
    assert not five_year_history(seed=1).equals(five_year_history(seed=2))


def test_five_year_history_rejects_unknown_layout():
    with pytest.raises(InputError, match="layout"):
        five_year_history(layout="nowhere")


# --------------------------------------------------------------------------- files


def test_site_folder_contents(site_1m):
    p = site_1m.path
    for name in (
        "README.md",
        "site.json",
        "tracks.geojson",
        "areas.geojson",
        "truth.csv",
        "truth_cars.csv",
        "truth_areas.csv",
    ):
        assert (p / name).is_file(), name
    meta = json.loads((p / "site.json").read_text())
    assert meta["synthetic"] is True
    assert meta["layout"] == "tumangang" and meta["resolution_m"] == 1.0
    assert meta["crs"] == "EPSG:32652" and meta["seed"] == 20231005
    assert "toolkit_version" in meta and "params" in meta
    assert "SYNTHETIC" in (p / "README.md").read_text()
    assert len(site_1m.scenes) == 5
    for scene, mask in zip(site_1m.scenes, site_1m.masks, strict=True):
        assert scene.is_file() and mask.is_file()
        assert re.fullmatch(r"\d{8}T\d{6}_tumangang_synthetic_1m\.tif", scene.name)
    assert "SYNTHETIC" in site_1m.summary()
    assert "SYNTHETIC" in site_1m._repr_html_()


def test_scene_geotiffs(site_1m, site_3m):
    for site, dtype, count, names in (
        (site_1m, "uint8", 3, ("red", "green", "blue")),
        (site_3m, "uint16", 4, ("blue", "green", "red", "nir")),
    ):
        for scene in site.scenes:
            with rasterio.open(scene) as ds:
                assert ds.crs.to_epsg() == 32652
                stamp = ds.tags()["TIFFTAG_DATETIME"]
                when = dt.datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S")
                assert scene.name.startswith(when.strftime("%Y%m%dT%H%M%S"))
                assert ds.tags()["SYNTHETIC"] == "true"
                assert ds.count == count and ds.dtypes == (dtype,) * count
                assert ds.descriptions == names
                assert ds.nodata == 0
                assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
                assert ds.compression.name.lower() == "deflate"
                assert ds.res == (site.resolution_m, site.resolution_m)
            with rasterio.open(scene.with_name(scene.stem + ".mask.tif")) as m:
                assert m.dtypes == ("uint8",) and m.count == 1
                assert m.transform == ds.transform and m.crs == ds.crs
                assert (m.width, m.height) == (ds.width, ds.height)


def _curves_and_turnouts(utm) -> tuple[list, list]:
    """Tracks whose heading turns for good (arcs), and tracks that start on another track."""
    curves, turnouts = [], []
    for tid, line in utm.items():
        xy = np.asarray(line.coords)
        heading = np.degrees(np.arctan2(*np.diff(xy, axis=0)[:, ::-1].T))
        if abs(heading[0] - heading[-1]) > 10:
            curves.append(tid)
        longest = np.argmax(np.hypot(*np.diff(xy, axis=0).T))
        # not parallel to the pixel grid (north-up UTM scenes)
        assert 5 < heading[longest] % 90 < 85, (tid, heading[longest])
        start = gpd.points_from_xy([xy[0, 0]], [xy[0, 1]])[0]
        others = [o for o in utm.index if o != tid and utm[o].distance(start) < 0.05]
        if others:
            turnouts.append((tid, others[0]))
    return curves, turnouts


def test_tracks_geometry(site_1m):
    tracks = gpd.read_file(site_1m.tracks_path)
    assert tracks.crs.to_epsg() == 4326
    ids = tracks["track_id"].tolist()
    assert ids == [f"{i:02d}" for i in range(1, 11)]
    assert all(isinstance(i, str) for i in ids)
    assert tracks["synthetic"].all()
    lon, lat = tracks.geometry.iloc[0].coords[0]
    assert 130.5 < lon < 130.7 and 42.3 < lat < 42.5
    utm = tracks.to_crs(32652).set_index("track_id").geometry
    lengths = utm.length
    assert lengths.between(400, 1000).all(), lengths
    curves, turnouts = _curves_and_turnouts(utm)
    assert curves == ["10"]
    assert turnouts == [("07", "06")]
    # centre-to-centre spacing of neighbouring tracks, measured in UTM
    for a, b in zip(ids[:-1], ids[1:], strict=True):
        line = utm[a]
        pts = [line.interpolate(f, normalized=True) for f in np.linspace(0.3, 0.7, 9)]
        spacing = np.median([utm[b].distance(p) for p in pts])
        assert 4.5 <= spacing <= 5.5, (a, b, spacing)


def test_areas_geojson(site_1m):
    areas = gpd.read_file(site_1m.areas_path)
    assert areas.crs.to_epsg() == 4326
    assert set(areas["area_id"]) == {"warehouse_apron", "container_yard"}
    tracks = gpd.read_file(site_1m.tracks_path).to_crs(32652)
    for poly in areas.to_crs(32652).geometry:
        assert poly.area > 3000
        assert tracks.distance(poly).min() > 10  # beside the tracks, not on them


# --------------------------------------------------------------------------- truth


def test_truth_matches_history_and_is_consistent(site_1m, history):
    truth, cars, areas = _read_truth(site_1m)
    assert truth["track_id"].map(type).eq(str).all()
    per_scene = truth.groupby("time")[["railcars", "locomotives"]].sum()
    by_time = history.set_index(history["time"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    for t, row in per_scene.iterrows():
        assert row["railcars"] == by_time.loc[t, "railcars"]
        assert row["locomotives"] == by_time.loc[t, "locomotives"]
    assert per_scene.loc[per_scene.index.str.startswith("2023-10-05"), "railcars"].item() == 73
    assert per_scene.loc[per_scene.index.str.startswith("2022-11-18"), "railcars"].item() == 5
    assert (truth[["box", "tank", "ore", "flat"]].sum(axis=1) == truth["railcars"]).all()
    assert (truth["tarped"] <= truth["flat"]).all()
    assert (truth["railcars_visible"] <= truth["railcars"]).all()
    assert truth["visible_fraction"].between(0, 1).all()
    # occupied length equals the summed vehicle lengths
    occ = cars.groupby(["scene", "track_id"])["length_m"].sum()
    merged = truth.set_index(["scene", "track_id"])["occupied_m"]
    both = pd.concat([merged, occ], axis=1).fillna(0.0)
    np.testing.assert_allclose(both["occupied_m"], both["length_m"], atol=0.01)
    # lengths within the published ranges, and end - start = length
    for kind, (lo, hi) in KIND_RANGES.items():
        sub = cars[cars["kind"] == kind]
        assert sub["length_m"].between(lo - 1e-6, hi + 1e-6).all(), kind
    np.testing.assert_allclose(cars["end_m"] - cars["start_m"], cars["length_m"], atol=2e-3)
    # no two vehicles overlap on a track, and all lie on their track
    lengths = gpd.read_file(site_1m.tracks_path).to_crs(32652).set_index("track_id").length
    for (_, tid), grp in cars.groupby(["scene", "track_id"]):
        grp = grp.sort_values("start_m")
        assert (grp["start_m"].to_numpy()[1:] >= grp["end_m"].to_numpy()[:-1] - 1e-6).all()
        assert grp["start_m"].min() >= 0 and grp["end_m"].max() <= lengths[tid]
    # visibility of cars agrees with the per-track counts
    vis = cars[cars["kind"] != "locomotive"].groupby(["scene", "track_id"])["visible"].sum()
    tv = truth.set_index(["scene", "track_id"])["railcars_visible"]
    assert (tv.reindex(vis.index) == vis).all()
    # storage areas: busier on 2023-10-05 than during the closure
    cont = areas.groupby("time")["containers"].sum()
    assert cont.iloc[-1] > 2 * cont.iloc[0]
    assert (areas["covered_fraction"].between(0, 1)).all()


def test_key_dates_are_clear_and_some_scene_is_clouded(site_1m):
    truth, _, _ = _read_truth(site_1m)
    scene = truth.groupby("time").first()
    for day in ("2023-10-05", "2022-11-18"):
        row = scene[scene.index.str.startswith(day)].iloc[0]
        assert row["cloud_fraction"] == 0 and row["nodata_fraction"] == 0
    assert (scene["cloud_fraction"] > 0).sum() >= 1
    assert (scene["nodata_fraction"] > 0).sum() >= 1
    shift = np.hypot(scene["shift_x_m"], scene["shift_y_m"])
    assert (shift <= 2.0 + 1e-9).all()  # 2 px at 1 m


# --------------------------------------------------------------------------- pixels


def _centreline_values(site, scene_name, tid, s_m, shift):
    tracks = gpd.read_file(site.tracks_path).to_crs(32652).set_index("track_id")
    line = tracks.geometry[tid]
    pts = [line.interpolate(s) for s in s_m]
    xs = np.array([p.x for p in pts]) + shift[0]
    ys = np.array([p.y for p in pts]) + shift[1]
    with rasterio.open(site.path / "scenes" / scene_name) as ds:
        rows, cols = rasterio.transform.rowcol(ds.transform, xs, ys)
        img = ds.read()
    return img[:, np.asarray(rows), np.asarray(cols)].T.astype(float)


def test_rendered_cars_differ_from_free_track(site_1m):
    truth, cars, _ = _read_truth(site_1m)
    last = truth[truth["time"].str.startswith("2023-10-05")]
    scene_name = last["scene"].iloc[0]
    shift = (last["shift_x_m"].iloc[0], last["shift_y_m"].iloc[0])
    lengths = gpd.read_file(site_1m.tracks_path).to_crs(32652).set_index("track_id").length
    occupied, free = [], []
    for tid in last["track_id"]:
        veh = cars[(cars["scene"] == scene_name) & (cars["track_id"] == tid)]
        s = np.arange(30.0, lengths[tid] - 30.0, 1.0)
        inside = np.zeros(s.size, bool)
        near = np.zeros(s.size, bool)
        for a, b in zip(veh["start_m"], veh["end_m"], strict=True):
            inside |= (s > a + 1.5) & (s < b - 1.5)
            near |= (s > a - 4.0) & (s < b + 4.0)
        if tid in ("06", "07"):  # skip the turnout, where two centrelines meet
            inside &= s > 200
            near |= s < 200
        vals = _centreline_values(site_1m, scene_name, tid, s, shift)
        occupied.append(vals[inside])
        free.append(vals[~near])
    occ = np.concatenate(occupied)
    fre = np.concatenate(free)
    assert len(occ) > 500 and len(fre) > 500
    # brightness differs (dark tanks and gondolas, car shadows on ballast are not on the centreline)
    assert abs(occ.mean() - fre.mean()) > 8
    # and colour differs much more from the free-track median than free track does
    ref = np.median(fre, axis=0)
    d_occ = np.abs(occ - ref).sum(axis=1).mean()
    d_free = np.abs(fre - ref).sum(axis=1).mean()
    assert d_occ > 2.0 * d_free


def test_masks_mark_clouds_and_nodata(site_1m):
    truth, _, _ = _read_truth(site_1m)
    scene = truth.groupby("scene").first()
    seen_cloud = False
    for name, row in scene.iterrows():
        path = site_1m.path / "scenes" / name
        with rasterio.open(path) as ds:
            img = ds.read()
        with rasterio.open(path.with_name(path.stem + ".mask.tif")) as m:
            mask = m.read(1)
        nodata = mask == 255
        # nodata: all bands 0 exactly there; valid pixels are never 0
        assert ((img == 0).all(axis=0) == nodata).all()
        assert ((img == 0).any(axis=0) == nodata).all()
        assert nodata.mean() == pytest.approx(row["nodata_fraction"], abs=1e-3)
        cloudy = np.isin(mask, (1, 3))
        if row["cloud_fraction"] == 0:
            assert not cloudy.any() and not (mask == 2).any()
            continue
        seen_cloud = True
        # the mask follows the true opacity within its 1-3 px edge error
        assert cloudy.mean() == pytest.approx(row["cloud_fraction"], abs=0.05)
        clear = (mask == 0) & ~nodata
        core = mask == 1
        if core.sum() > 100:
            assert img[:, core].mean() > img[:, clear].mean() + 30  # clouds are bright
    assert seen_cloud


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    kw = {
        "resolution_m": 3.0,
        "history": "tumangang",
        "dates": [dt.datetime(2023, 10, 5), dt.datetime(2021, 1, 31)],
    }
    a = simulate_site(tmp_path / "a", seed=20231005, **kw)
    b = simulate_site(tmp_path / "b", seed=20231005, **kw)
    da, db = _digests(a.path), _digests(b.path)
    assert len(da) == 11 and da == db
    h = five_year_history(seed=5)
    day = h[h["time"].dt.year == 2021]["time"].iloc[0]
    c = simulate_site(tmp_path / "c", seed=5, resolution_m=3.0, dates=[h["time"].iloc[-1], day])
    dc = _digests(c.path)
    scenes_a = sorted(v for k, v in da.items() if k.startswith("scenes/"))
    scenes_c = sorted(v for k, v in dc.items() if k.startswith("scenes/"))
    assert not set(scenes_a) & set(scenes_c)


def test_three_metre_scenes_have_nir_and_reflectance(site_3m):
    with rasterio.open(site_3m.scenes[0]) as ds:  # July: green vegetation
        img = ds.read().astype(float)
    blue, green, red, nir = img
    valid = img[0] > 0
    # reflectance x 10000 in a plausible range, NIR brighter than red where vegetated
    assert 200 < np.median(red[valid]) < 4000
    ndvi = (nir - red) / (nir + red)
    assert np.percentile(ndvi[valid], 75) > 0.3


def test_mixed_grids_second_layout_and_dense_history(tmp_path):
    dates = [dt.datetime(2022, 5, d, 2, 0) for d in (1, 9, 17, 25, 28)]
    site = simulate_site(
        tmp_path / "mixed",
        layout="second",
        resolution_m=3.0,
        history="dense",
        dates=dates,
        mixed_grids=True,
        seed=11,
    )
    crs = set()
    for scene in site.scenes:
        with rasterio.open(scene) as ds:
            crs.add(ds.crs.to_epsg())
            assert ds.tags()["TIFFTAG_DATETIME"]
    assert len(crs) >= 2 and crs <= {32652, 3857, 32651}
    tracks = gpd.read_file(site.tracks_path)
    assert len(tracks) == 8
    utm = tracks.to_crs(32652).set_index("track_id").geometry
    assert utm.length.between(400, 1000).all()
    assert _curves_and_turnouts(utm) == (["01"], [("05", "04")])
    ids = list(utm.index)
    for a, b in zip(ids[:-1], ids[1:], strict=True):
        pts = [utm[a].interpolate(f, normalized=True) for f in np.linspace(0.3, 0.6, 7)]
        assert np.median([utm[b].distance(p) for p in pts]) == pytest.approx(4.6, abs=0.05)
    truth, cars, _ = _read_truth(site)
    cap = json.loads((site.path / "site.json").read_text())["capacity_railcars"]
    fill = truth.groupby("time")["railcars"].sum() / cap
    assert fill.between(0.6, 0.9).all()
    for (_, _tid), grp in cars.groupby(["scene", "track_id"]):
        grp = grp.sort_values("start_m")
        assert (grp["start_m"].to_numpy()[1:] >= grp["end_m"].to_numpy()[:-1] - 1e-6).all()


def test_empty_history_and_half_metre_scene(tmp_path):
    site = simulate_site(
        tmp_path / "empty", history="empty", dates=["2023-06-01T02:00:00"], clouds=False
    )
    truth, cars, _ = _read_truth(site)
    assert truth["railcars"].sum() == 0 and len(cars) == 0
    with rasterio.open(site.scenes[0]) as ds:
        assert ds.res == (0.5, 0.5) and ds.count == 3 and ds.dtypes[0] == "uint8"
        assert "0.5m" in site.scenes[0].name


def test_bad_arguments_raise_input_errors(tmp_path, site_3m):
    with pytest.raises(InputError, match="layout"):
        simulate_site(tmp_path / "x", layout="nowhere")
    with pytest.raises(InputError, match="history"):
        simulate_site(tmp_path / "x", history="busy")
    with pytest.raises(InputError, match="resolution_m"):
        simulate_site(tmp_path / "x", resolution_m=0)
    with pytest.raises(InputError, match="not an acquisition day"):
        simulate_site(tmp_path / "x", dates=[dt.datetime(2020, 1, 1)])
    with pytest.raises(InputError, match="given twice"):
        simulate_site(tmp_path / "x", dates=["2023-10-05T01:00", "2023-10-05T03:00"])
    with pytest.raises(InputError, match="overwrite=True"):
        simulate_site(site_3m.path)
    assert not (tmp_path / "x").exists()


def test_manifest_verification(tmp_path, monkeypatch, site_3m):
    manifest = tmp_path / "sample_manifest.json"
    monkeypatch.setattr(synth, "SAMPLE_MANIFEST", manifest)
    with pytest.raises(DataIntegrityError, match="manifest"):
        write_default_sample(site_3m.path)
    assert update_manifest(site_3m.path) == manifest
    data = json.loads(manifest.read_text())
    assert data["synthetic"] is True and data["params"] == DEFAULT_SAMPLE
    assert data["files"] == _digests(site_3m.path)
    # a folder that verifies is returned as it is (fast path, nothing regenerated)
    before = site_3m.scenes[0].stat().st_mtime_ns
    info = write_default_sample(site_3m.path)
    assert info.scenes == site_3m.scenes and site_3m.scenes[0].stat().st_mtime_ns == before
    # a changed file is named in a one-line error
    bad = tmp_path / "copy"
    bad.mkdir()
    for rel in data["files"]:
        (bad / rel).parent.mkdir(parents=True, exist_ok=True)
        (bad / rel).write_bytes((site_3m.path / rel).read_bytes())
    (bad / "truth.csv").write_text((bad / "truth.csv").read_text() + "\n")
    with pytest.raises(DataIntegrityError, match=r"truth\.csv") as err:
        write_default_sample(bad)
    assert "\n" not in str(err.value)


def test_committed_manifest_describes_the_default_sample():
    data = json.loads(synth.SAMPLE_MANIFEST.read_text())
    assert data["synthetic"] is True and data["params"] == DEFAULT_SAMPLE
    n_scenes = len(five_year_history())
    scenes = [k for k in data["files"] if k.startswith("scenes/") and not k.endswith(".mask.tif")]
    assert len(scenes) == n_scenes
    assert all(len(v) == 64 for v in data["files"].values())
    sample = synth.SAMPLE_MANIFEST.parent / "sample"
    if (sample / "site.json").is_file():  # generated by `make sample`: it must verify
        assert write_default_sample(sample).layout == "tumangang"


def test_georeferencing_error_in_truth_is_the_shift_of_the_content(tmp_path):
    # the same scene rendered with and without misregistration: everything but the shift
    # is drawn from the same random stream, so the truth shift must align the two images
    kw = {"resolution_m": 1.0, "dates": [dt.datetime(2023, 10, 5)], "clouds": False}
    ref = simulate_site(tmp_path / "ref", misregistration_px=0, **kw)
    mov = simulate_site(tmp_path / "mov", misregistration_px=6, **kw)
    truth, _, _ = _read_truth(mov)
    sx, sy = truth["shift_x_m"].iloc[0], truth["shift_y_m"].iloc[0]
    assert 0.5 < np.hypot(sx, sy) <= 6.0
    assert _read_truth(ref)[0]["shift_x_m"].eq(0).all()
    with rasterio.open(ref.scenes[0]) as a, rasterio.open(mov.scenes[0]) as b:
        img_a = a.read().astype(float).mean(axis=0)
        img_b = b.read().astype(float).mean(axis=0)
    from scipy import ndimage

    inner = (slice(20, -20), slice(20, -20))

    def misfit(dx, dy):  # content moved by (dx, dy) metres east/north, 1 m pixels
        moved = ndimage.shift(img_a, (-dy, dx), order=1, mode="nearest")
        return np.abs(moved - img_b)[inner].mean()

    best = misfit(sx, sy)
    assert best < 0.5 * misfit(0.0, 0.0)
    assert best < 0.5 * misfit(-sx, -sy)
    assert best < misfit(sx + 0.5, sy) and best < misfit(sx, sy - 0.5)


def test_read_truth_tables(site_1m):
    tracks = site_1m.read_truth()
    cars = site_1m.read_truth("cars")
    areas = site_1m.read_truth("areas")
    for df in (tracks, cars, areas):
        assert df["time"].dtype == np.dtype("datetime64[ns]")
    assert tracks["track_id"].iloc[0] == "01" and cars["track_id"].map(type).eq(str).all()
    totals = tracks.groupby("time")["railcars"].sum()
    assert totals[totals.index.normalize() == pd.Timestamp("2023-10-05")].item() == 73
    assert set(areas["area_id"]) == {"warehouse_apron", "container_yard"}
    with pytest.raises(InputError, match="table"):
        site_1m.read_truth("vehicles")


def test_worker_processes_write_the_same_bytes(tmp_path, monkeypatch):
    dates = [dt.datetime(2021, m, 10, 2, 0) for m in range(2, 11)]
    kw = {"resolution_m": 3.0, "history": "random", "dates": dates, "seed": 3}
    if synth._workers(len(dates)) < 2:
        pytest.skip("single core or threaded test process: scenes are rendered in-process")
    pooled = simulate_site(tmp_path / "pooled", **kw)
    monkeypatch.setattr(synth, "_workers", lambda n: 1)
    serial = simulate_site(tmp_path / "serial", **kw)
    assert _digests(pooled.path) == _digests(serial.path)


def test_railcar_shadows_fall_away_from_the_sun(site_1m):
    truth, cars, _ = _read_truth(site_1m)
    last = truth[truth["time"].str.startswith("2023-10-05")].iloc[0]
    az = np.radians(last["sun_azimuth_deg"])
    away = -np.array([np.sin(az), np.cos(az)])  # shadows point away from the sun
    shift = np.array([last["shift_x_m"], last["shift_y_m"]])
    tracks = gpd.read_file(site_1m.tracks_path).to_crs(32652).set_index("track_id").geometry
    veh = cars[(cars["scene"] == last["scene"]) & (cars["kind"] != "flat")]
    with rasterio.open(site_1m.path / "scenes" / last["scene"]) as ds:
        img = ds.read().astype(float).mean(axis=0)
        shadow_side, sun_side = [], []
        for tid, a, b in zip(veh["track_id"], veh["start_m"], veh["end_m"], strict=True):
            line = tracks[tid]
            for s in np.linspace(a + 3.0, b - 3.0, 4):
                p0, p1 = line.interpolate(s - 0.5), line.interpolate(s + 0.5)
                t = np.array([p1.x - p0.x, p1.y - p0.y])
                n = np.array([-t[1], t[0]]) / np.hypot(*t)
                side = np.sign(n @ away)
                c = np.array([line.interpolate(s).x, line.interpolate(s).y]) + shift
                for lst, sign in ((shadow_side, side), (sun_side, -side)):
                    x, y = c + sign * 2.4 * n
                    r, col = ds.index(x, y)
                    lst.append(img[r, col])
    assert len(shadow_side) > 100
    # ground right beside a car is much darker on the side away from the sun
    assert np.mean(shadow_side) < np.mean(sun_side) - 15


def test_rotation_override_aligns_the_yard(tmp_path):
    site = simulate_site(
        tmp_path / "rot", resolution_m=3.0, history="empty", rotation_deg=0.0,
        dates=[dt.datetime(2022, 8, 1, 2, 0)],
    )  # fmt: skip
    utm = gpd.read_file(site.tracks_path).to_crs(32652).set_index("track_id").geometry
    xy = np.asarray(utm["01"].coords)
    assert abs(np.degrees(np.arctan2(xy[-1, 1] - xy[0, 1], xy[-1, 0] - xy[0, 0]))) < 1e-4
    assert json.loads((site.path / "site.json").read_text())["params"]["rotation_deg"] == 0.0


def test_seasons_snow_in_winter_green_in_summer(tmp_path):
    winter = [dt.datetime(2022, 1, d, 2, 0) for d in (5, 15, 25)]
    summer = [dt.datetime(2022, 7, d, 2, 0) for d in (5, 15, 25)]
    site = simulate_site(
        tmp_path / "seasons", resolution_m=3.0, history="empty", clouds=False,
        dates=winter + summer, misregistration_px=0,
    )  # fmt: skip
    scene = site.read_truth().groupby("time").first()
    assert scene.loc[scene.index.month == 1, "snow"].any()
    assert not scene.loc[scene.index.month == 7, "snow"].any()
    # winter sun is low: longer shadows
    assert scene.loc[scene.index.month == 1, "sun_elevation_deg"].max() < 35
    assert scene.loc[scene.index.month == 7, "sun_elevation_deg"].min() > 55
    for path, (_, row) in zip(site.scenes, scene.iterrows(), strict=True):
        with rasterio.open(path) as ds:
            blue, green, red, nir = ds.read().astype(float)
        valid = blue > 0
        ndvi = np.median((nir[valid] - red[valid]) / (nir[valid] + red[valid]))
        if row["snow"]:
            assert np.median(blue[valid]) > 5000  # snow is bright
        if path.name.startswith("202207"):
            assert ndvi > 0.25  # green fields
