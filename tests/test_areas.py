"""Storage-area occupancy against the simulator's ground truth.

Held-out variants, never used while the method was tuned (tuning used the
default sample, seed 20231005, and seed 7 at 1 m and 3 m): seed 101 at 0.5 m,
seed 202 at 1 m and seed 303 at 3 m, each the last acquisitions of its
five-year history (the build-up of September-October 2023 with its container
stacks and tarped cargo). Those three were checked again after the grey-tarp
rules and the edge shares were tuned (on seeds 7-45). Fresh seeds never used
to choose a rule or a number: 606 at 0.5 m and 707 at 1 m (first run once the
grey-tarp rules were settled) and 808 at 1 m (first run once the 1 m edge
shares were settled). Every scene here is SYNTHETIC.

The targets of the storage-area issue are asserted (all are met on these
seeds), and regression bounds a little above the measured figures hold what
the method achieves today. Measured figures are printed with ``-s``.
"""

from __future__ import annotations

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from shapely.geometry import LineString, box

import toolkit
from toolkit.areas import AREA_CSV_COLUMNS, TEU_FOOTPRINT_M2, read_areas
from toolkit.cli import main as cli_main
from toolkit.errors import InputError

HELD_OUT = {0.5: (101, 6), 1.0: (202, 8), 3.0: (303, 8)}  # resolution: (seed, last n scenes)
FRESH = {(0.5, 606): 6, (1.0, 707): 8, (1.0, 808): 8}  # (resolution, seed): last n scenes


def _site(root, res, seed=None):
    seed, n = HELD_OUT[res] if seed is None else (seed, FRESH[res, seed])
    history = toolkit.five_year_history(seed=seed)
    return toolkit.simulate_site(
        root / f"held_out_{seed}_{res:g}m",
        resolution_m=res,
        seed=seed,
        dates=list(history["time"].iloc[-n:]),
    )


def _compare(site):
    cube = toolkit.load_cube(site.path / "scenes")
    occ = toolkit.area_occupancy(cube, site.areas_path).compute()
    est = (
        occ.reset_coords(drop=True).to_dataframe().reset_index().rename(columns={"area": "area_id"})
    )
    est["time"] = est["time"].dt.floor("s")
    truth = site.read_truth("areas")
    scene = site.read_truth("tracks").groupby("time")["cloud_fraction"].first()
    table = est.merge(truth, on=["time", "area_id"], suffixes=("", "_true"))
    table["cloud_fraction"] = table["time"].map(scene)
    table["err"] = table["covered_fraction"] - table["covered_fraction_true"]
    # container equivalents of the truth: covered footprint in 20-foot footprints
    # (containers and tarped cargo; a stack counts once)
    table["teu_true"] = table["covered_m2_true"] / TEU_FOOTPRINT_M2
    table["inside"] = (table["covered_m2_low"] <= table["covered_m2_true"]) & (
        table["covered_m2_true"] <= table["covered_m2_high"]
    )
    return occ, table


def _clear(table):
    return table[(table["cloud_fraction"] == 0) & (table["visible_fraction"] >= 0.999)]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("areas")
    out = {}
    for res in HELD_OUT:
        site = _site(root, res)
        out[res] = (site, *_compare(site))
    return out


def _report(res, table):
    clear = _clear(table)
    err = clear["err"].abs()
    print(
        f"\n{res:g} m: covered-fraction error over {len(clear)} cloud-free area-scenes: "
        f"mean {err.mean():.4f}, max {err.max():.4f}; interval coverage "
        f"{table['inside'][table['covered_m2'].notna()].mean():.2f}"
    )
    return clear, err


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("res", [0.5, 1.0, 3.0])
def test_covered_fraction_regression(held_out, res):
    _, _, table = held_out[res]
    clear, err = _report(res, table)
    assert len(clear) >= 6
    # measured on the held-out seeds: mean 0.0036 / 0.0070 / 0.0264, max 0.0086 / 0.0215 /
    # 0.052 (before grey tarps were found by their hue against the area's own ground
    # noise and the blur of narrow patches was counted whole at 1 m: mean 0.0099 / 0.0246
    # / 0.0264, max 0.017 / 0.053 / 0.052; before the stricter
    # shadow rule, the texture of wrinkled tarps and the linear share of blurred rims:
    # mean 0.027 / 0.027 / 0.044, max 0.059 / 0.095 / 0.106)
    assert err.mean() <= {0.5: 0.005, 1.0: 0.009, 3.0: 0.03}[res]
    assert err.max() <= {0.5: 0.012, 1.0: 0.025, 3.0: 0.056}[res]


@pytest.mark.parametrize("res, limit", [(0.5, 0.03), (1.0, 0.03), (3.0, 0.08)])
def test_covered_fraction_target(held_out, res, limit):
    # measured max 0.0086 at 0.5 m, 0.0215 at 1 m, 0.052 at 3 m
    _, _, table = held_out[res]
    assert _clear(table)["err"].abs().max() <= limit


def test_container_equivalents_at_half_a_metre_regression(held_out):
    _, _, table = held_out[0.5]
    big = _clear(table)
    big = big[big["teu_true"] >= 20]
    rel = (big["container_equivalents"] - big["teu_true"]) / big["teu_true"]
    print(f"\ncontainer equivalents (>= 20), 0.5 m: relative errors {rel.round(3).tolist()}")
    assert len(big) >= 4
    # measured: mean |relative error| 0.024, max 0.058 (0.061 and 0.112 before grey tarps
    # were found by their hue against the area's own ground noise; 0.155 and 0.25 before)
    assert rel.abs().mean() <= 0.03
    assert rel.abs().max() <= 0.07


def test_container_equivalents_target(held_out):
    _, _, table = held_out[0.5]
    big = _clear(table)
    big = big[big["teu_true"] >= 20]
    rel = (big["container_equivalents"] - big["teu_true"]) / big["teu_true"]
    assert rel.abs().max() <= 0.10


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    root = tmp_path_factory.mktemp("areas_fresh")
    return {key: _compare(_site(root, *key))[1] for key in FRESH}


def test_fresh_seed_meets_the_targets_at_half_a_metre(fresh):
    # seed 606: measured max covered-fraction error 0.011 (mean 0.0058), container
    # equivalents (>= 20) max 0.065 (mean 0.049)
    clear, err = _report(0.5, fresh[0.5, 606])
    assert len(clear) >= 6
    assert err.max() <= 0.03
    big = clear[clear["teu_true"] >= 20]
    rel = (big["container_equivalents"] - big["teu_true"]) / big["teu_true"]
    assert len(big) >= 4
    assert rel.abs().max() <= 0.10


@pytest.mark.parametrize("seed", [707, 808])
def test_fresh_seeds_meet_the_target_at_1m(fresh, seed):
    # measured mean 0.0077 / 0.0071, max 0.0135 / 0.0248 (seeds 707 / 808); on the tuning
    # seeds the largest error is still 0.045 (a noisy scene of the densest apron), so the
    # target holds on these seeds, not on every seed
    clear, err = _report(1.0, fresh[1.0, seed])
    assert len(clear) >= 6
    assert err.mean() <= 0.009
    assert err.max() <= 0.03


def test_fresh_seeds_interval_coverage_where_the_area_is_seen_whole(fresh):
    # the interval bounds the covered area of the visible part; where all of the area is
    # visible that is the truth's whole-area figure
    inside = []
    for table in fresh.values():
        whole = table[(table["visible_fraction"] >= 0.999) & table["covered_m2"].notna()]
        inside.append(whole["inside"].to_numpy())
    inside = np.concatenate(inside)
    print(f"\nfresh seeds, areas seen whole: interval coverage {inside.mean():.3f} ({inside.size})")
    assert inside.size >= 20
    assert inside.mean() >= 0.9


def test_fresh_seeds_cloudy_scenes(fresh):
    # measured max |covered-fraction error| 0.046 (606, 0.5 m), 0.009 (707), 0.013 (808);
    # the interval is not checked here: in the fresh series' mostly clouded scenes (10-30 %
    # visible) the estimate covers the visible part while the truth counts the whole area
    for key, table in fresh.items():
        cloudy = table[(table["cloud_fraction"] > 0) | (table["visible_fraction"] < 0.999)]
        cloudy = cloudy[cloudy["covered_m2"].notna()]
        assert len(cloudy) >= 1, key
        assert cloudy["err"].abs().max() <= 0.05, key


def test_interval_coverage(held_out):
    inside, width = [], []
    for res in HELD_OUT:
        _, _, table = held_out[res]
        seen = table[table["covered_m2"].notna()]
        inside.append(seen["inside"].to_numpy())
        width.append((seen["covered_m2_high"] - seen["covered_m2_low"]).to_numpy())
    inside = np.concatenate(inside)
    print(
        f"\ninterval coverage {inside.mean():.3f}, mean width {np.concatenate(width).mean():.0f} m2"
    )
    # measured: 0.5 m 1.00, 1 m 1.00, 3 m 1.00 (mean widths 1183, 1486, 2518 m2; 1225,
    # 1177, 2518 before grey tarps were found by their hue); it was 1.00, 0.75, 0.94
    # before the interval took in one pixel of edge blur around each patch
    assert inside.mean() >= 0.9
    assert held_out[0.5][2].pipe(lambda t: t[t["covered_m2"].notna()])["inside"].mean() >= 0.9


def test_interval_coverage_target_at_every_resolution(held_out):
    # measured: 1.00 at 0.5 m, 1 m and 3 m
    for res in HELD_OUT:
        seen = held_out[res][2].pipe(lambda t: t[t["covered_m2"].notna()])
        assert seen["inside"].mean() >= 0.9, res


def test_cloudy_scenes_do_not_read_as_cargo(held_out):
    # scenes with clouds, cloud shadows or nodata in the held-out series: measured max
    # |covered-fraction error| 0.038 (0.5 m), 0.005 (1 m), 0.057 (3 m)
    for res, limit in ((0.5, 0.05), (1.0, 0.05), (3.0, 0.08)):
        table = held_out[res][2]
        cloudy = table[(table["cloud_fraction"] > 0) | (table["visible_fraction"] < 0.999)]
        cloudy = cloudy[cloudy["covered_m2"].notna()]
        assert len(cloudy) >= 1, res
        assert cloudy["err"].abs().max() <= limit, res


# the default sample's hardest scenes (SYNTHETIC; it was used while tuning, so these guard
# against regressions): partly cloudy scenes with haze the usable-data mask misses, and
# snow scenes with patchy snow on the container yard
_SAMPLE_CLOUDY = ("2018-10-07", "2019-07-06", "2022-03-14", "2022-07-07")
_SAMPLE_SNOW = ("2019-01-06", "2019-12-19", "2022-02-03")


@pytest.fixture(scope="module")
def sample_hard(default_sample):
    # the sample is generated (and checked against its manifest) on a fresh checkout
    root = default_sample.path
    cube = toolkit.load_cube(root / "scenes")
    times = [t for t in cube["time"].values if str(t)[:10] in _SAMPLE_CLOUDY + _SAMPLE_SNOW]
    occ = toolkit.area_occupancy(cube.sel(time=times), root / "areas.geojson").compute()
    est = occ.reset_coords(drop=True).to_dataframe().reset_index()
    est = est.rename(columns={"area": "area_id"})
    est["time"] = est["time"].dt.floor("s")
    truth = pd.read_csv(root / "truth_areas.csv", dtype={"area_id": str}, parse_dates=["time"])
    table = est.merge(truth, on=["time", "area_id"], suffixes=("", "_true"))
    table["err"] = table["covered_fraction"] - table["covered_fraction_true"]
    table["day"] = table["time"].dt.strftime("%Y-%m-%d")
    return table


def test_partly_cloudy_sample_scenes_do_not_read_as_cargo(sample_hard):
    t = sample_hard[sample_hard["day"].isin(_SAMPLE_CLOUDY)].dropna(subset=["covered_fraction"])
    print(f"\npartly cloudy sample scenes: errors {t['err'].round(3).tolist()}")
    assert len(t) == 2 * len(_SAMPLE_CLOUDY)
    # measured max 0.010 (it was 0.60 on 2022-07-07 and 0.29 on 2019-07-06)
    assert t["err"].abs().max() <= 0.03
    summed = t.groupby("day")[["covered_m2", "covered_m2_true"]].sum()
    assert (summed["covered_m2"] - summed["covered_m2_true"]).abs().max() <= 150


def test_snow_does_not_read_as_cargo(sample_hard):
    t = sample_hard[sample_hard["day"].isin(_SAMPLE_SNOW)].dropna(subset=["covered_fraction"])
    print(f"\nsnow sample scenes: errors {t['err'].round(3).tolist()}")
    assert len(t) == 2 * len(_SAMPLE_SNOW)
    # measured max |error| 0.019 (it was +0.19 on 2022-02-03, and +0.37 on 2019-01-06 with
    # a first haze rule); snow-covered stacks are partly missed (-0.018 on 2019-12-19)
    assert t["err"].abs().max() <= 0.03


def test_valid_fraction_follows_the_masks(held_out):
    errs = []
    for res in HELD_OUT:
        _, _, table = held_out[res]
        errs.append((table["valid_fraction"] - table["visible_fraction"]).abs().to_numpy())
    errs = np.concatenate(errs)
    print(f"\nvalid_fraction error: mean {errs.mean():.4f}, max {errs.max():.4f}")
    assert errs.max() <= 0.05
    cloudy = pd.concat([held_out[r][2] for r in HELD_OUT])
    cloudy = cloudy[cloudy["visible_fraction"] < 0.999]
    assert len(cloudy) >= 1  # the held-out series hold cloudy or nodata scenes
    assert (cloudy["valid_fraction"] - cloudy["visible_fraction"]).abs().max() <= 0.05


def test_the_event_shows_many_more_containers_than_before(held_out):
    _, occ, _ = held_out[0.5]
    total = occ["container_equivalents"].sum("area", min_count=2)
    event = total.sel(time="2023-10-05").item()
    first = total.dropna("time").isel(time=0).item()
    assert event > 100 and event > 5 * first


# --------------------------------------------------------------------------- contract


def test_dataset_contract(held_out):
    site, occ, _ = held_out[3.0]
    assert occ["covered_fraction"].dims == ("time", "area")
    assert list(occ["area"].values) == ["warehouse_apron", "container_yard"]
    assert occ["area_m2"].dims == ("area",)
    np.testing.assert_allclose(occ["area_m2"].values, [6800.0, 7200.0], rtol=1e-3)
    for v in AREA_CSV_COLUMNS[2:-1]:
        assert "units" in occ[v].attrs, v
    assert occ.attrs["method"] and occ.attrs["toolkit_version"]
    assert float(occ["covered_fraction"].min()) >= 0 and float(occ["covered_fraction"].max()) <= 1
    ok = occ["covered_m2"].notnull()
    assert bool((occ["covered_m2_low"] <= occ["covered_m2"]).where(ok, True).all())
    assert bool((occ["covered_m2"] <= occ["covered_m2_high"]).where(ok, True).all())
    xr.testing.assert_allclose(occ["container_equivalents"], occ["covered_m2"] / TEU_FOOTPRINT_M2)


def test_building_the_result_computes_nothing(held_out):
    site = held_out[3.0][0]
    cube = toolkit.load_cube(site.path / "scenes")

    def refuse(*args, **kwargs):
        raise AssertionError("computed while building the graph")

    with dask.config.set(scheduler=refuse):
        occ = toolkit.area_occupancy(cube, site.areas_path)
    assert occ["covered_fraction"].chunks is not None


def test_cli_writes_the_areas_csv(held_out, tmp_path, capsys):
    site = held_out[3.0][0]
    out = tmp_path / "areas.csv"
    status = cli_main(
        ["areas", str(site.path / "scenes"), "--areas", str(site.areas_path), "--out", str(out)]
    )
    assert status == 0, capsys.readouterr().err
    df = pd.read_csv(out, dtype={"area_id": str})
    assert tuple(df.columns) == AREA_CSV_COLUMNS
    assert len(df) == 2 * HELD_OUT[3.0][1]
    ref = toolkit.areas_to_dataframe(held_out[3.0][1]).reset_index(drop=True)
    np.testing.assert_allclose(df["covered_m2"], ref["covered_m2"], atol=0.1)


def test_area_off_the_image_is_an_error(held_out):
    site = held_out[3.0][0]
    cube = toolkit.load_cube(site.path / "scenes")
    far = gpd.GeoDataFrame({"area_id": ["far"]}, geometry=[box(0, 0, 50, 50)], crs=cube.rio.crs)
    with pytest.raises(InputError, match="outside every scene"):
        toolkit.area_occupancy(cube, far)


# --------------------------------------------------------------------------- read_areas


def test_read_areas_keeps_ids_as_text(tmp_path):
    p = tmp_path / "a.geojson"
    p.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
        '{"area_id": "07"}, "geometry": {"type": "Polygon", "coordinates": '
        "[[[130.6, 42.4], [130.601, 42.4], [130.601, 42.401], [130.6, 42.4]]]}}]}"
    )
    a = read_areas(p, crs="EPSG:32652")
    assert a.index.tolist() == ["07"]
    assert a["area_m2"].iloc[0] > 0


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda t: t / "none.geojson", "not found"),
        (lambda t: _gdf(t, ids=["a", "a"]), "duplicate area_id"),
        (lambda t: _gdf(t, props={"name": ["a"]}), "no 'area_id'"),
        (lambda t: _gdf(t, geoms=[LineString([(0, 0), (10, 0)])]), "expected a Polygon"),
    ],
)
def test_read_areas_errors(tmp_path, make, needle):
    with pytest.raises(InputError, match=needle) as info:
        read_areas(make(tmp_path))
    assert "\n" not in str(info.value)


def _gdf(tmp, *, ids=("a",), props=None, geoms=None):
    geoms = geoms or [box(500_000, 4_700_000, 500_050, 4_700_020)] * len(ids)
    data = {"area_id": list(ids)} if props is None else props
    p = tmp / "areas.geojson"
    gpd.GeoDataFrame(data, geometry=geoms, crs="EPSG:32652").to_crs(4326).to_file(p)
    return p
