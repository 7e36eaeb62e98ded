"""Five-year baseline comparison: the published comparison reproduced on the
simulator's truth, exact bounds and model probabilities against closed forms,
counting uncertainty, window sensitivity and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from toolkit.baseline import (
    CLOSURE,
    BaselineComparison,
    compare_with_baseline,
    load_published_observations,
)
from toolkit.errors import SeriesError


@pytest.fixture(scope="module")
def history() -> pd.Series:
    from toolkit.synth import five_year_history

    return five_year_history().set_index("time")["railcars"]


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return load_published_observations()


@pytest.fixture(scope="module")
def tumangang(history) -> BaselineComparison:
    return compare_with_baseline(history, "2023-10-05")


def test_published_observations_table(published):
    assert list(published.columns) == [
        "date_start",
        "date_end",
        "site",
        "quantity",
        "value",
        "text",
        "source",
    ]
    q = published.set_index(["site", "quantity", "date_start"])["value"]
    assert q[("Tumangang", "railcars", pd.Timestamp("2023-10-05"))] == 73
    assert q[("Tumangang", "railcars_max", pd.Timestamp("2018-10-01"))] == 20
    closure = published[published.quantity == "rail_traffic_suspended"].iloc[0]
    assert (closure.date_start, closure.date_end) == CLOSURE
    assert published.source.str.len().gt(0).all()


def test_reproduces_the_published_comparison_on_the_simulated_truth(tumangang, history, published):
    r = tumangang
    pub = published.set_index("quantity")
    pub_event = pub.loc["railcars"].set_index("date_start").loc["2023-10-05", "value"]
    pub_max = pub.loc["railcars_max", "value"]
    # event: about 73 railcars on 2023-10-05
    assert r.event_time.normalize() == pd.Timestamp("2023-10-05")
    assert r.event_value == pub_event == 73
    # baseline: the five years before the rise, closure excluded; at most about 20
    assert r.baseline_end_rule.startswith("detected onset")
    assert pd.Timestamp("2023-09-13") < r.baseline_end <= pd.Timestamp("2023-09-25")
    assert abs(r.baseline_max - pub_max) <= 5
    pre = history[(history.index >= r.baseline_start) & (history.index < r.baseline_end)]
    pre = pre[(pre.index < CLOSURE[0]) | (pre.index > CLOSURE[1])]
    assert r.baseline_max == pre.max() and r.n_baseline == pre.size
    assert r.baseline_mean == pytest.approx(pre.mean())
    assert r.baseline_p95 == pytest.approx(np.percentile(pre, 95))
    assert r.ratio_to_max == pytest.approx(73 / pre.max())
    assert 3.0 <= r.ratio_to_max <= 4.5  # "73 against at most about 20"
    # unprecedented: no baseline count reached it, the model gives it a negligible chance
    assert r.n_exceeding == 0
    assert r.exceedance_upper == pytest.approx(1 - 0.05 ** (1 / r.n_baseline))
    assert r.p_exceed < 1e-6 and r.unprecedented
    assert r.upper_prediction_bound < 40
    assert r.p_exceed_open < 1e-6  # the closure's observations left out of the model too
    assert r.verdict.startswith(
        f"73 railcars on 2023-10-05 is {73 / pre.max():.1f} times the five-year maximum of "
        f"{pre.max():g}"
    )
    assert "< 1e-6" in r.verdict
    text = r.summary()
    for needle in ("baseline maximum", "ratio to baseline maximum", "count model", "Verdict"):
        assert needle in text
    assert "Verdict" in r._repr_html_() and "<table>" in r._repr_html_()
    assert set(r.table().columns) == {"quantity", "value"}


def test_window_sensitivity_and_excluded_closure(tumangang, history):
    s = tumangang.sensitivity
    assert s.window_years.tolist() == [3.0, 5.0, 7.0]
    assert s.n_baseline.is_monotonic_increasing
    assert (s.n_exceeding == 0).all() and (s.p_exceed < 1e-6).all()
    assert s.unprecedented.all()
    assert tumangang.n_excluded == int(
        ((history.index >= CLOSURE[0]) & (history.index <= CLOSURE[1])).sum()
    )
    with_closure = compare_with_baseline(history, "2023-10-05", exclude=())
    assert with_closure.n_baseline == tumangang.n_baseline + tumangang.n_excluded
    assert with_closure.baseline_mean < tumangang.baseline_mean  # closure counts are near zero


def test_explicit_baseline_end_and_event_default(history):
    r = compare_with_baseline(history, baseline_end="2023-09-13")
    assert r.event_time == history.index[-1] and r.baseline_end_rule == "given"
    assert r.baseline_max == history[:"2023-09-12"].max()
    ev = compare_with_baseline(history, "2023-10-05", baseline_end="event")
    # the rise itself is in that window: the event is less extreme against it
    assert ev.baseline_max == 57 and ev.ratio_to_max < 2


def test_counts_dataset_carries_counting_uncertainty(history):
    t = history.index
    per_track = np.c_[np.floor(history / 2), np.ceil(history / 2)]
    ds = xr.Dataset(
        {
            "railcars": (("time", "track"), per_track),
            "railcars_low": (("time", "track"), np.maximum(per_track - 2, 0)),
            "railcars_high": (("time", "track"), per_track + 2),
        },
        coords={"time": t, "track": ["01", "02"]},
    )
    r = compare_with_baseline(ds, "2023-10-05")
    assert r.event_value == 73 and r.event_low == 69 and r.event_high == 77
    assert r.baseline_max_high == r.baseline_max + 4
    assert r.ratio_to_max_low == pytest.approx(69 / (r.baseline_max + 4))
    assert r.ratio_to_max_low < r.ratio_to_max < r.ratio_to_max_high
    assert r.p_exceed_low >= r.p_exceed
    assert r.unprecedented  # 69 still far above every upper bound of the baseline
    # dates with little of the yard visible are left out (from the counts Dataset)
    vis = xr.full_like(ds["railcars"], 1.0)
    dark = int(np.flatnonzero(t < pd.Timestamp("2019-12-01"))[-1])
    vis[dark] = [0.2, 0.5]
    dsv = ds.assign(valid_fraction=vis, visible_m=vis * 500.0)
    rv = compare_with_baseline(dsv, "2023-10-05")
    assert rv.n_baseline == r.n_baseline - 1
    assert compare_with_baseline(dsv, "2023-10-05", min_valid_fraction=None).n_baseline == (
        r.n_baseline
    )
    # a count inside the baseline's counting uncertainty is not unprecedented
    ds2 = ds.copy(deep=True)
    ds2["railcars_low"][-1] = [5, 5]
    assert not compare_with_baseline(ds2, "2023-10-05").unprecedented


def test_text_is_in_the_unit_of_the_series(history):
    # covered storage area as toolkit.area_occupancy gives it: (time, area), units m2
    t = history.index
    area = xr.DataArray(
        np.c_[25.0 * history.to_numpy(), 5.0 * history.to_numpy()],
        dims=("time", "area"),
        coords={"time": t, "area": ["apron", "warehouse"]},
        name="covered_m2",
        attrs={"units": "m2"},
    )
    covered = area.sum("area")  # 30 m2 per railcar of the history
    r = compare_with_baseline(covered, "2023-10-05")
    assert r.label == "m²"
    pre_max = compare_with_baseline(history, "2023-10-05").baseline_max
    assert r.verdict.startswith(
        f"2190 m² on 2023-10-05 is {73 / pre_max:.1f} times the five-year maximum of "
        f"{30 * pre_max:g}"
    )
    assert dict(r._rows())["event"].startswith("2190 m² on 2023-10-05")
    assert "railcars" not in r.summary() and "railcars" not in r._repr_html_()
    # the unit from the name when the attrs are gone (a pandas Series), or from the attrs
    by_name = compare_with_baseline(covered.to_series(), "2023-10-05")
    by_attrs = compare_with_baseline(covered.rename(None), "2023-10-05")
    assert by_name.verdict == by_attrs.verdict == r.verdict
    occupied = compare_with_baseline((15.0 * history).rename("occupied_m"), "2023-10-05")
    assert occupied.verdict.startswith("1095 m on 2023-10-05")
    teu = compare_with_baseline(history.rename("container_equivalents"), "2023-10-05")
    assert teu.verdict.startswith("73 container equivalents on 2023-10-05")
    # railcar counts, named or not, read as before; an explicit label wins
    assert compare_with_baseline(history.rename(None), "2023-10-05").verdict.startswith(
        "73 railcars on 2023-10-05"
    )
    assert compare_with_baseline(covered, "2023-10-05", label="m2 of cargo").verdict.startswith(
        "2190 m2 of cargo on"
    )


def test_poisson_predictive_probability_matches_the_closed_form():
    rng = np.random.default_rng(0)
    t = pd.date_range("2015-01-01", "2019-12-31", periods=400)
    y = rng.poisson(10.0, t.size).astype(float)
    y[-1] = 18
    r = compare_with_baseline(
        pd.Series(y, index=t), baseline_end="event", exclude=(), seasonal=False
    )
    assert r.model == "Poisson"
    lam = y[:-1].mean()
    assert r.expected_at_event == pytest.approx(lam, rel=1e-6)
    # parameter uncertainty widens the tail only slightly with 400 observations
    assert r.p_exceed == pytest.approx(stats.poisson.sf(17, lam), rel=0.15)
    assert r.upper_prediction_bound == stats.poisson.ppf(0.95, lam)
    assert not r.unprecedented


def test_overdispersed_counts_choose_the_negative_binomial():
    rng = np.random.default_rng(1)
    t = pd.date_range("2015-01-01", "2019-12-31", periods=300)
    mu, size = 8.0, 2.0
    y = rng.negative_binomial(size, size / (size + mu), t.size).astype(float)
    y[-1] = 40
    r = compare_with_baseline(
        pd.Series(y, index=t), baseline_end="event", exclude=(), seasonal=False
    )
    assert r.model == "negative binomial"
    assert r.dispersion_alpha == pytest.approx(1 / size, rel=0.35)
    p_true = stats.nbinom.sf(39, size, size / (size + mu))
    assert r.p_exceed == pytest.approx(p_true, rel=0.6)
    assert "over-dispersed" in r.model_choice


def test_exceedance_bound_is_clopper_pearson():
    t = pd.date_range("2019-01-01", periods=31, freq="30D")
    y = np.r_[np.arange(30) % 10, 8.0]  # values >= 8 occur 6 times among 30
    r = compare_with_baseline(pd.Series(y, index=t), baseline_end="event", exclude=())
    assert r.n_exceeding == 6
    assert r.exceedance_upper == pytest.approx(stats.beta.ppf(0.95, 7, 24))
    assert not r.unprecedented


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event_date": "2030-01-01"}, "outside the data"),
        ({"event_date": "2023-10-04"}, "no observation on"),
        ({"event_date": "not a date"}, "event_date"),
        ({"event_date": "2023-10-05", "window_years": 0.01}, "at least 3"),
        ({"event_date": "2023-10-05", "baseline_end": "2024-01-01"}, "after the event"),
    ],
)
def test_bad_input_one_line_errors(history, kwargs, match):
    with pytest.raises(SeriesError, match=match) as err:
        compare_with_baseline(history, **kwargs)
    assert "\n" not in str(err.value)


def test_negative_counts_and_missing_times_are_rejected(history):
    bad = history.copy().astype(float)
    bad.iloc[3] = -1
    with pytest.raises(SeriesError, match=">= 0"):
        compare_with_baseline(bad)
    with pytest.raises(SeriesError, match="time stamps"):
        compare_with_baseline(history.to_numpy())


def test_all_zero_or_short_baselines_use_the_exact_jeffreys_predictive():
    t = pd.date_range("2019-01-01", periods=20, freq="30D")
    y = np.zeros(20)
    y[-1] = 2
    r = compare_with_baseline(pd.Series(y, index=t), exclude=(), baseline_end="event")
    assert r.model == "Poisson (Jeffreys prior)" and "all zeros" in r.notes[0]
    # posterior predictive of a Poisson rate with prior Gamma(1/2, 0) after 19 zeros
    assert r.p_exceed == pytest.approx(stats.nbinom.sf(1, 0.5, 19 / 20))
    short = compare_with_baseline(
        pd.Series([3.0, 4, 2, 5, 9], index=t[:5]), exclude=(), baseline_end="event"
    )
    assert short.model == "Poisson (Jeffreys prior)"
    assert short.p_exceed == pytest.approx(stats.nbinom.sf(8, 14.5, 4 / 5))
