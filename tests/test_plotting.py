"""The publication figures and the scene browser, on a small simulated site and the true history.

Each figure function returns a Figure with units on its axes, the synthetic
label when the data are synthetic, colours from the Okabe-Ito palette, and
draws the numbers it is given (checked against the inputs). Saved files are
300 dpi and byte-identical across saves.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from PIL import Image  # noqa: E402

import toolkit  # noqa: E402
from toolkit import plotting  # noqa: E402
from toolkit.errors import InputError  # noqa: E402

PALETTE_RGB = {mcolors.to_hex(c) for c in plotting.PALETTE.values()}
# the last six acquisitions of the calibrated schedule: the rise from 11 to 73 railcars
N_SCENES = 6


def _schedule_dates() -> list[str]:
    from toolkit.synth import five_year_history

    t = five_year_history()["time"].iloc[-N_SCENES:]
    return [str(x) for x in t.dt.strftime("%Y-%m-%dT%H:%M:%S")]


DATES = _schedule_dates()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def small_site(tmp_path_factory):
    """The simulator's second yard at 1 m on six dates of the rise, counted (SYNTHETIC)."""
    from toolkit.synth import simulate_site

    site = simulate_site(
        tmp_path_factory.mktemp("site") / "second",
        layout="second",
        resolution_m=1.0,
        dates=DATES,
        clouds=False,
        snow=False,
    )
    cube = toolkit.load_cube(site.path / "scenes")
    strips = toolkit.track_strips(cube, site.tracks_path)
    occ = toolkit.estimate_occupancy(strips).compute()
    counts = toolkit.counts_from_occupancy(occ)
    truth = pd.read_csv(site.truth_path, parse_dates=["time"], dtype={"track_id": str})
    return {
        "site": site,
        "cube": cube,
        "strips": strips,
        "occ": occ,
        "counts": counts,
        "truth": truth,
    }


@pytest.fixture(scope="module")
def history():
    """The simulator's true five-year counts as a counts-like Dataset over time."""
    from toolkit.synth import five_year_history

    h = five_year_history()
    y = h["railcars"].to_numpy(float)
    return xr.Dataset(
        {
            "railcars": ("time", y),
            "railcars_low": ("time", np.floor(0.9 * y)),
            "railcars_high": ("time", np.ceil(1.1 * y)),
        },
        coords={"time": h["time"].to_numpy()},
        attrs={"synthetic": "true"},
    )


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts]
        leg = ax.get_legend()
        if leg is not None:
            parts += [t.get_text() for t in leg.get_texts()]
    return "\n".join(parts)


def _has_synthetic_label(fig) -> bool:
    return any("SYNTHETIC" in t.get_text() for t in fig.texts)


def _line_colours(ax) -> set[str]:
    return {mcolors.to_hex(line.get_color()) for line in ax.get_lines()}


def _check_units(ax, *, x: str, y: str) -> None:
    assert x in ax.get_xlabel(), ax.get_xlabel()
    assert y in ax.get_ylabel(), ax.get_ylabel()


# --------------------------------------------------------------------------- saving


def test_save_figure_is_300_dpi_and_byte_identical(tmp_path, history):
    fig = plotting.plot_five_year_counts(history)
    a = plotting.save_figure(fig, "fig3", directory=tmp_path / "a")
    b = plotting.save_figure(fig, "fig3", directory=tmp_path / "b")
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    with Image.open(a[0]) as im:
        dpi = im.info["dpi"]
        size = im.size
    assert dpi == pytest.approx((300, 300), abs=0.5)
    w_in, h_in = fig.get_size_inches()
    assert size == (round(w_in * 300), round(h_in * 300))
    # readable at single-column width: the figure is a column wide
    assert w_in == pytest.approx(plotting.COLUMN_WIDTH_IN)
    assert a[1].read_bytes()[:5] == b"%PDF-"


def test_save_figure_rejects_paths_as_names(tmp_path, history):
    fig = plotting.plot_five_year_counts(history)
    with pytest.raises(InputError, match="plain file stem"):
        plotting.save_figure(fig, "sub/fig3", directory=tmp_path)


# --------------------------------------------------------------------------- figure 1


def test_yard_detections_outlines_every_car_with_scale_and_north(small_site):
    s = small_site
    out = toolkit.car_outlines(s["occ"], s["strips"], time=DATES[-1])
    assert len(out) > 10  # the rise ends with 73 cars in the yard
    fig = plotting.plot_yard_detections(
        s["cube"], out, time=DATES[-1], tracks=s["site"].tracks_path, synthetic=True
    )
    top, close = fig.axes
    polys = [c for c in top.collections if isinstance(c, PolyCollection)]
    assert len(polys) == 1 and len(polys[0].get_paths()) == len(out)
    assert mcolors.to_hex(polys[0].get_edgecolor()[0]) == plotting.PALETTE["orange"].lower()
    assert f"{len(out)} railcars" in top.get_title()
    for ax in (top, close):
        _check_units(ax, x="(m)", y="(m)")
        texts = [t.get_text() for t in ax.texts]
        assert "N" in texts
        assert any(t.endswith(" m") for t in texts)  # scale bar label
    # the close-up lies inside the overview
    (x0, x1), (y0, y1) = close.get_xlim(), close.get_ylim()
    (X0, X1), (Y0, _) = top.get_xlim(), top.get_ylim()
    assert X0 <= x0 < x1 <= X1 + 200 and Y0 - 200 <= y0 < y1
    assert _has_synthetic_label(fig)


def test_north_arrow_points_to_true_north_in_utm():
    # grid convergence in a transverse Mercator zone: about (lon - lon0) * sin(lat); east of
    # the central meridian (129 E) true north lies counter-clockwise (west) of grid north
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 32652, always_xy=True).transform(130.60, 42.42)
    gamma = plotting._grid_convergence_deg("EPSG:32652", x, y)
    expected = -(130.60 - 129.0) * np.sin(np.radians(42.42))
    assert gamma == pytest.approx(expected, abs=0.02)
    assert plotting._grid_convergence_deg(None, 0, 0) == 0.0


@pytest.mark.parametrize(
    ("span", "bar"), [(900.0, 100.0), (160.0, 20.0), (2400.0, 200.0), (45.0, 5.0)]
)
def test_scale_bar_length_is_round_and_about_a_fifth(span, bar):
    assert plotting._nice_length(span) == bar


# --------------------------------------------------------------------------- figure 2


def test_before_after_shares_extent_and_stretch_with_counts_in_titles(small_site):
    s = small_site
    fig = plotting.plot_before_after(
        s["cube"],
        before=DATES[0],
        after=DATES[-1],
        counts=s["counts"],
        tracks=s["site"].tracks_path,
        synthetic=True,
    )
    a, b = fig.axes
    assert a.get_xlim() == b.get_xlim() and a.get_ylim() == b.get_ylim()
    ia, ib = a.get_images()[0].get_array(), b.get_images()[0].get_array()
    assert ia.shape == ib.shape
    total = s["counts"]["railcars"].sum("track")
    for ax, d in ((a, DATES[0]), (b, DATES[-1])):
        n = float(total.sel(time=d, method="nearest"))
        assert f"{n:.0f} railcars" in ax.get_title()
        assert d[:10] in ax.get_title()
        _check_units(ax, x="", y="(m)")
    _check_units(b, x="(m)", y="(m)")
    assert _has_synthetic_label(fig)


# --------------------------------------------------------------------------- figure 3


def test_five_year_counts_draws_baseline_published_and_event(history):
    cmp = toolkit.compare_with_baseline(history, "2023-10-05")
    cp = toolkit.detect_changepoints(history["railcars"], min_size=2)
    pub = toolkit.load_published_observations()
    fig = plotting.plot_five_year_counts(
        history,
        comparison=cmp,
        changepoints=cp,
        published=pub,
        truth=history["railcars"].to_series(),
    )
    (ax,) = fig.axes
    _check_units(ax, x="(UTC)", y="(count)")
    text = _texts(fig)
    assert f"baseline maximum ({cmp.baseline_max:.0f})" in text
    assert cmp.baseline_max == 20  # the true five-year maximum
    assert "published: about 20 at most" in text
    assert "Kim-Putin summit" in text
    # published counts at the site: 5 (2022-11-18), 8 (2022-11-30), 73 (2023-10-05)
    diamonds = [ln for ln in ax.get_lines() if ln.get_marker() == "D"]
    assert sorted(diamonds[0].get_ydata().tolist()) == [5, 8, 73]
    # the event marker sits at the event count
    event = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("event")]
    assert event[0].get_ydata()[0] == 73
    assert _line_colours(ax) <= PALETTE_RGB
    assert _has_synthetic_label(fig)


def test_low_sun_estimates_are_drawn_hollow(history):
    """Where the counts carry each scene's sun elevation, the estimates of the scenes with
    the sun below LOW_SUN_DEG are drawn hollow, with their own legend entry, in both count
    figures; a scene whose sun is not placed (NaN) stays filled. Without the coordinate all
    are filled."""
    n = history.sizes["time"]
    sun = np.where(np.arange(n) % 2 == 0, 30.0, 60.0)
    sun[1] = np.nan
    low_n = int((sun < toolkit.occupancy.LOW_SUN_DEG).sum())
    with_sun = history.assign_coords(sun_elevation_deg=("time", sun))
    per_track = with_sun.expand_dims(track=["01"]).transpose("time", "track")
    for fig, label in (
        (plotting.plot_five_year_counts(with_sun), "estimated railcars"),
        (plotting.plot_count_series(per_track), "estimated"),
    ):
        ax = fig.axes[0]
        filled, hollow = _line(ax, label), _line(ax, f"{label}, sun below 45\N{DEGREE SIGN}")
        assert len(hollow.get_xdata()) == low_n and len(filled.get_xdata()) == n - low_n
        assert hollow.get_markerfacecolor() == "white"
        assert sorted(hollow.get_ydata()) == sorted(history["railcars"].values[sun < 45])
    # only low-sun dates: no filled entry in the legend
    winter = history.assign_coords(sun_elevation_deg=("time", np.full(n, 20.0)))
    labels = [str(ln.get_label()) for ln in plotting.plot_five_year_counts(winter).axes[0].lines]
    assert (
        "estimated railcars" not in labels
        and "estimated railcars, sun below 45\N{DEGREE SIGN}" in labels
    )
    plain = plotting.plot_five_year_counts(history).axes[0]
    assert len(_line(plain, "estimated railcars").get_xdata()) == n
    assert not [ln for ln in plain.get_lines() if "sun below" in str(ln.get_label())]


def test_five_year_counts_rejects_non_counts():
    with pytest.raises(InputError, match="railcars"):
        plotting.plot_five_year_counts(xr.Dataset({"x": ("time", [1.0])}))


# --------------------------------------------------------------------------- figure 4


def test_event_closeup_shows_online_probability_beneath(history):
    online = toolkit.online_changepoint_probability(history["railcars"])
    fig = plotting.plot_event_closeup(history, online, start="2023-08-15", end="2023-10-12")
    top, bottom = fig.axes
    _check_units(top, x="", y="(count)")
    _check_units(bottom, x="(UTC)", y="(0-1)")
    window = online["change_probability"].sel(time=slice("2023-08-15", "2023-10-12"))
    heights = [p.get_height() for p in bottom.patches]
    np.testing.assert_allclose(heights, np.nan_to_num(window.values), atol=1e-12)
    assert {mcolors.to_hex(p.get_facecolor()) for p in bottom.patches} == {
        plotting.PALETTE["vermillion"].lower()
    }
    assert _has_synthetic_label(fig)


def test_event_closeup_checks_its_inputs(history):
    with pytest.raises(InputError, match="online"):
        plotting.plot_event_closeup(history, history)
    online = toolkit.online_changepoint_probability(history["railcars"])
    with pytest.raises(InputError, match="start"):
        plotting.plot_event_closeup(history, online, start="2023-10-01", end="2023-09-01")


# --------------------------------------------------------------------------- figure 5


def test_yard_use_shares_known_answer():
    occ = xr.Dataset(
        {
            "occupancy": (
                ("time", "track", "along"),
                np.array([[[1, 1, 1, 0, 0, 0, -1, -1], [1, 0, 1, 0, -1, 1, 0, 0]]], "int8"),
            )
        },
        coords={
            "time": [np.datetime64("2023-10-05")],
            "track": ["01", "02"],
            "along_m": ("along", np.arange(8) * 0.5),
        },
    )
    use = plotting.yard_use(occ, bin_m=1.0)
    np.testing.assert_allclose(
        use.occupied_share.values[0],
        [[1.0, 0.5, 0.0, np.nan], [0.5, 0.5, 1.0, 0.0]],
    )
    assert use.position_m.values.tolist() == [0.5, 1.5, 2.5, 3.5]
    with pytest.raises(InputError, match="bin_m"):
        plotting.yard_use(occ, bin_m=0)


def test_yard_use_heat_map(small_site):
    fig = plotting.plot_yard_use(small_site["occ"], synthetic=True)
    ax = fig.axes[0]
    _check_units(ax, x="UTC", y="m)")
    # one column per acquisition; the last tick names the last date
    assert ax.get_xlim() == (-0.5, len(DATES) - 0.5)
    assert ax.get_xticklabels()[-1].get_text() == DATES[-1][5:10]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == [str(t) for t in small_site["occ"]["track"].values]
    assert "(0-1)" in fig.axes[1].get_xlabel()  # the colour bar
    assert _has_synthetic_label(fig)


# --------------------------------------------------------------------------- figure 6


def test_estimated_vs_true_reports_error_per_resolution():
    table = pd.DataFrame(
        {
            "true": [10, 20, 30, 10, 20, 30],
            "estimated": [11, 19, 33, 8, 16, 25],
            "resolution_m": [0.5, 0.5, 0.5, 3.0, 3.0, 3.0],
        }
    )
    fig = plotting.plot_estimated_vs_true(table)
    (ax,) = fig.axes
    _check_units(ax, x="true", y="estimated")
    text = _texts(fig)
    # 0.5 m: errors +1 -1 +3 -> MAE 1.7, bias +1.0; 3 m: -2 -4 -5 -> MAE 3.7, bias -3.7
    assert "0.5 m pixels: MAE 1.7, bias +1.0 (n=3)" in text
    assert "3 m pixels: MAE 3.7, bias -3.7 (n=3)" in text
    assert ax.get_xlim() == ax.get_ylim()
    assert _line_colours(ax) <= PALETTE_RGB
    assert _has_synthetic_label(fig)
    with pytest.raises(InputError, match="estimated"):
        plotting.plot_estimated_vs_true(table.drop(columns="estimated"))


# --------------------------------------------------------------------------- storage areas

STORAGE_DATES = np.array(
    ["2019-03-01", "2020-06-01", "2021-06-01", "2022-11-18", "2023-09-20", "2023-10-05"],
    dtype="datetime64[ns]",
)


def _storage_inputs(*, synthetic: bool):
    """Counts on two tracks and covered area on two storage areas, six dates; area 'b' was
    not visible on the fourth date, so the yard's covered area is unknown there."""
    cars = np.array([[6, 4], [0, 0], [1, 0], [3, 2], [20, 10], [40, 33]], float)
    counts = xr.Dataset(
        {
            "railcars": (("time", "track"), cars),
            "railcars_low": (("time", "track"), cars - 1),
            "railcars_high": (("time", "track"), cars + 2),
        },
        coords={"time": STORAGE_DATES, "track": ["01", "02"]},
    )
    covered = np.array(
        [[100, 50], [20, 10], [30, 0], [400, np.nan], [900, 300], [1500, 700]], float
    )
    storage = xr.Dataset(
        {
            "covered_m2": (("time", "area"), covered),
            "covered_m2_low": (("time", "area"), 0.8 * covered),
            "covered_m2_high": (("time", "area"), 1.25 * covered),
        },
        coords={"time": STORAGE_DATES, "area": ["a", "b"]},
        attrs={"synthetic": "true"} if synthetic else {},
    )
    truth = pd.DataFrame(
        {
            "time": np.repeat(STORAGE_DATES, 2),
            "area_id": ["a", "b"] * len(STORAGE_DATES),
            "covered_m2": np.nan_to_num(covered).ravel() + 10.0,
        }
    )
    return counts, storage, truth


def _line(ax, label: str):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return line


def test_storage_and_railcars_draws_both_series_and_the_event():
    counts, storage, truth = _storage_inputs(synthetic=True)
    fig = plotting.plot_storage_and_railcars(
        counts, storage, area_truth=truth, event_date="2023-10-05"
    )
    top, bottom = fig.axes
    # railcars: the yard total (both tracks) on every date, with its low-high interval
    cars = _line(top, "railcars")
    assert len(cars.get_xdata()) == len(STORAGE_DATES)
    np.testing.assert_array_equal(cars.get_ydata(), [10, 0, 1, 5, 30, 73])
    (interval,) = top.collections
    segs = interval.get_segments()
    assert len(segs) == len(STORAGE_DATES)
    assert [(s[0][1], s[1][1]) for s in segs][-1] == (71, 77)  # 73 - 2 .. 73 + 4
    # covered area: the sum of both areas, unknown where one of them was not seen
    area = _line(bottom, "covered area")
    np.testing.assert_array_equal(area.get_ydata(), [150, 30, 30, np.nan, 1200, 2200])
    (area_interval,) = bottom.collections
    assert len(area_interval.get_segments()) == len(STORAGE_DATES)
    assert area_interval.get_segments()[-1][:, 1].tolist() == pytest.approx([1760, 2750])
    true_area = _line(bottom, "true (simulator)")
    np.testing.assert_array_equal(true_area.get_ydata(), [170, 50, 50, 420, 1220, 2220])
    # the event is marked in both panels at its value
    for ax, value in ((top, 73), (bottom, 2200)):
        event = _line(ax, "event 2023-10-05")
        assert event.get_ydata().tolist() == [value]
        assert event.get_xdata()[0] == np.datetime64("2023-10-05")
        assert mcolors.to_hex(event.get_color()) == plotting.PALETTE["vermillion"].lower()
    # one time axis, with units on every axis
    assert top.get_shared_x_axes().joined(top, bottom)
    _check_units(top, x="", y="(count)")
    _check_units(bottom, x="(UTC)", y="(m$^2$)")
    assert _line_colours(top) <= PALETTE_RGB and _line_colours(bottom) <= PALETTE_RGB
    # SYNTHETIC, read from the storage Dataset when the counts do not say
    assert _has_synthetic_label(fig)


def test_storage_and_railcars_marks_closure_and_summit_as_the_five_year_figure():
    counts, storage, _ = _storage_inputs(synthetic=False)
    closure, summit = ("2020-03-01", "2021-01-01"), "2023-01-01"
    fig = plotting.plot_storage_and_railcars(counts, storage, closure=closure, summit=summit)
    five = plotting.plot_five_year_counts(counts, closure=closure, summit=summit).axes[0]
    for ax in (*fig.axes, five):
        (span,) = [p for p in ax.patches if p.get_label() == "border rail traffic suspended"]
        x0, x1 = span.get_x(), span.get_x() + span.get_width()
        assert (mdates.num2date(x0).date(), mdates.num2date(x1).date()) == (
            pd.Timestamp(closure[0]).date(),
            pd.Timestamp(closure[1]).date(),
        )
        assert _line(ax, "Kim-Putin summit").get_xdata()[0] == np.datetime64(summit)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[0] == "border rail traffic suspended" and "Kim-Putin summit" in legend
    # no SYNTHETIC label when neither input is synthetic; the chosen areas only
    assert not _has_synthetic_label(fig)
    only_a = plotting.plot_storage_and_railcars(counts, storage, areas=["a"], synthetic=True)
    np.testing.assert_array_equal(
        _line(only_a.axes[1], "covered area").get_ydata(), [100, 20, 30, 400, 900, 1500]
    )
    assert _has_synthetic_label(only_a)


def test_storage_and_railcars_saves_png_and_pdf(tmp_path):
    counts, storage, _ = _storage_inputs(synthetic=True)
    fig = plotting.plot_storage_and_railcars(counts, storage)
    png, pdf = plotting.save_figure(fig, "storage_and_railcars", directory=tmp_path)
    assert (png.name, pdf.name) == ("storage_and_railcars.png", "storage_and_railcars.pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    with Image.open(png) as im:
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.5)
        assert im.size[0] == round(plotting.DOUBLE_WIDTH_IN * 300)


def test_storage_and_railcars_rejects_other_datasets():
    counts, storage, _ = _storage_inputs(synthetic=True)
    with pytest.raises(InputError, match="covered_m2"):
        plotting.plot_storage_and_railcars(counts, storage.drop_vars("covered_m2"))
    with pytest.raises(InputError, match="railcars"):
        plotting.plot_storage_and_railcars(storage, storage)


# --------------------------------------------------------------------------- browser


def test_scene_browser_renders_the_chosen_date(small_site):
    from toolkit.widgets import scene_browser

    s = small_site
    b = scene_browser(
        s["cube"], s["occ"], s["strips"], tracks=s["site"].tracks_path, counts=s["counts"]
    )
    assert b.image_png[:8] == b"\x89PNG\r\n\x1a\n"
    last = b.image_png
    fig = b.show(DATES[0])
    assert b.image_png != last
    n = len(toolkit.car_outlines(s["occ"], s["strips"], time=DATES[0]))
    assert b.n_cars == n
    assert DATES[0][:10] in b.text and f"{n} cars outlined" in b.text
    est = float(s["counts"]["railcars"].sum("track").sel(time=DATES[0], method="nearest"))
    assert f"{est:.0f} railcars" in b.text
    assert fig is b.figure
    with pytest.raises(InputError, match="strips"):
        scene_browser(s["cube"], s["occ"], s["counts"])


def test_synthetic_label_is_stamped_once(history):
    fig = plotting.plot_five_year_counts(history)
    plotting.synthetic_label(fig)
    assert sum("SYNTHETIC" in t.get_text() for t in fig.texts) == 1
