"""The five-year baseline comparison: how extreme is the latest count?

The published analysis of the Tumangang rail yard said "about 20 railcars at
most in five years, about 73 now". :func:`compare_with_baseline` turns such a
sentence into statistics a reviewer can check: descriptive statistics of the
baseline window, the empirical exceedance frequency with an exact upper
bound, a count model (Poisson or negative binomial, with season and closure
terms) giving the predictive probability of the event value, the effect of
the counting uncertainty and of the window length, and a plain-language
verdict.
"""

from __future__ import annotations

import dataclasses
import html
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from toolkit.changepoints import _fmt_time, _to_series, _version, detect_changepoints
from toolkit.errors import InputError, SeriesError

__all__ = [
    "BaselineComparison",
    "compare_with_baseline",
    "load_published_observations",
    "CLOSURE",
    "SUMMIT",
]

#: Rail traffic with Russia suspended for the pandemic (38 North, Dec 2022).
CLOSURE = (pd.Timestamp("2020-02-01"), pd.Timestamp("2022-09-30"))
#: Kim-Putin summit at the Vostochny cosmodrome (AP).
SUMMIT = pd.Timestamp("2023-09-13")

_DATA = Path(__file__).resolve().parents[1] / "data" / "published_observations.csv"
_MAD_TO_SD = 1.0 / stats.norm.ppf(0.75)
_N_DRAWS = 4000


def load_published_observations(path: str | Path | None = None) -> pd.DataFrame:
    """The published facts about the Tumangang/Khasan rail crossing, as a table.

    Parameters
    ----------
    path : str or Path, optional
        The CSV (default: ``data/published_observations.csv`` of the project).

    Returns
    -------
    pandas.DataFrame
        Columns ``date_start``, ``date_end`` (Timestamps), ``site``,
        ``quantity``, ``value`` (float, NaN for events without a number),
        ``text`` and ``source``.

    Examples
    --------
    >>> obs = load_published_observations()
    >>> row = obs[(obs.quantity == "railcars") & (obs.date_start == "2023-10-05")]
    >>> float(row.value.iloc[0])
    73.0
    """
    p = Path(path) if path is not None else _DATA
    if not p.is_file():
        raise InputError(
            f"{p}: expected the published observations CSV, found no file; pass path= or "
            "restore data/published_observations.csv"
        )
    df = pd.read_csv(p, dtype={"site": str, "quantity": str, "text": str, "source": str})
    need = ["date_start", "date_end", "site", "quantity", "value", "text", "source"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{p}: expected columns {need}, missing {missing}; fix the CSV header")
    df["date_start"] = pd.to_datetime(df["date_start"])
    df["date_end"] = pd.to_datetime(df["date_end"])
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df[need]


# ----------------------------------------------------------------------------
# result object
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineComparison:
    """An event count compared with a baseline window of past counts.

    Attributes
    ----------
    event_time : pandas.Timestamp
    event_value, event_low, event_high : float
        The event count and its counting bounds (equal to the count when no
        bounds were given).
    baseline_start, baseline_end : pandas.Timestamp
        The window ``[start, end)``.
    baseline_end_rule : str
        How the end was chosen (given, event date, or detected onset).
    excluded : tuple of (Timestamp, Timestamp)
        Periods left out of the descriptive statistics (modelled by a term).
    n_baseline, n_excluded : int
    baseline_mean, baseline_median, baseline_p95, baseline_max : float
    baseline_max_time : pandas.Timestamp
    baseline_max_high : float
        Largest upper counting bound in the window.
    ratio_to_max, ratio_to_mean : float
    ratio_to_max_low, ratio_to_max_high : float
        The ratio to the baseline maximum with the counting bounds: lower
        event bound over the largest upper baseline bound, and upper event
        bound over the largest lower baseline bound.
    robust_z : float
        ``(event - median) / (1.4826 * MAD)`` of the baseline.
    n_exceeding : int
        Baseline observations at or above the event value.
    exceedance_upper : float
        Exact (Clopper-Pearson) one-sided upper confidence bound on the
        frequency of such observations.
    model : str
        'negative binomial' or 'Poisson', with the reason in ``model_choice``.
    model_choice : str
    dispersion_alpha : float
        NB2 ``alpha`` (``var = mu + alpha mu^2``), 0 for Poisson.
    expected_at_event : float
        Model mean at the event date (closure term off).
    p_exceed : float
        Predictive probability of a count at or above the event value
        (parameter uncertainty integrated over).
    p_exceed_low : float
        The same for the lower counting bound of the event.
    p_exceed_open : float
        The same from a model fitted without the excluded periods' observations
        (no closure term), NaN if none were in the window: a check on the
        assumption that the closure shares the dispersion of open periods.
    upper_prediction_bound : float
        ``confidence`` upper prediction bound of the count at the event date.
    sensitivity : pandas.DataFrame
        The key numbers for other window lengths.
    unprecedented : bool
        The event exceeds every baseline count (lower event bound against
        upper baseline bounds) and ``p_exceed < alpha``.
    verdict : str
    confidence, alpha : float
    label : str
        What the values measure, as the text writes it ('railcars', 'm²').
    notes : tuple of str
        Model-fitting notes (warnings raised by the fit, fallbacks).
    toolkit_version : str
    """

    event_time: pd.Timestamp
    event_value: float
    event_low: float
    event_high: float
    baseline_start: pd.Timestamp
    baseline_end: pd.Timestamp
    baseline_end_rule: str
    window_years: float
    excluded: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]
    n_baseline: int
    n_excluded: int
    baseline_mean: float
    baseline_median: float
    baseline_p95: float
    baseline_max: float
    baseline_max_time: pd.Timestamp
    baseline_max_high: float
    ratio_to_max: float
    ratio_to_max_low: float
    ratio_to_max_high: float
    ratio_to_mean: float
    robust_z: float
    n_exceeding: int
    exceedance_upper: float
    model: str
    model_choice: str
    dispersion_alpha: float
    expected_at_event: float
    p_exceed: float
    p_exceed_low: float
    p_exceed_open: float
    upper_prediction_bound: float
    sensitivity: pd.DataFrame
    unprecedented: bool
    verdict: str
    confidence: float
    alpha: float
    label: str
    notes: tuple[str, ...] = ()
    toolkit_version: str = ""

    def table(self) -> pd.DataFrame:
        """The comparison as a two-column table (quantity, value as text)."""
        return pd.DataFrame(self._rows(), columns=["quantity", "value"])

    def _rows(self) -> list[tuple[str, str]]:
        pct = int(round(self.confidence * 100))
        excl = ", ".join(f"{_fmt_time(a)}..{_fmt_time(b)}" for a, b in self.excluded) or "none"
        return [
            ("event", f"{self.event_value:g} {self.label} on {_fmt_time(self.event_time)}"),
            ("event counting bounds", f"{self.event_low:g} .. {self.event_high:g}"),
            (
                "baseline window",
                f"{_fmt_time(self.baseline_start)} .. {_fmt_time(self.baseline_end)} "
                f"({self.window_years:g} years; end: {self.baseline_end_rule})",
            ),
            ("excluded periods", f"{excl} ({self.n_excluded} observations)"),
            ("baseline observations", str(self.n_baseline)),
            ("baseline mean", f"{self.baseline_mean:.3g}"),
            ("baseline median", f"{self.baseline_median:.3g}"),
            ("baseline 95th percentile", f"{self.baseline_p95:.3g}"),
            (
                "baseline maximum",
                f"{self.baseline_max:g} on {_fmt_time(self.baseline_max_time)} "
                f"(upper counting bound in window {self.baseline_max_high:g})",
            ),
            (
                "ratio to baseline maximum",
                f"{self.ratio_to_max:.2f} ({self.ratio_to_max_low:.2f} .. "
                f"{self.ratio_to_max_high:.2f} with counting bounds)",
            ),
            ("ratio to baseline mean", f"{self.ratio_to_mean:.2f}"),
            ("robust z-score", f"{self.robust_z:.1f}"),
            (
                "baseline observations >= event",
                f"{self.n_exceeding} of {self.n_baseline} "
                f"(exact {pct}% upper bound on the frequency {self.exceedance_upper:.3g})",
            ),
            ("count model", f"{self.model} ({self.model_choice})"),
            ("expected count at event date", f"{self.expected_at_event:.3g}"),
            (f"{pct}% upper prediction bound", f"{self.upper_prediction_bound:g}"),
            ("P(count >= event) under the model", _fmt_p(self.p_exceed)),
            ("same, for the lower counting bound", _fmt_p(self.p_exceed_low)),
            ("same, model without the excluded periods", _fmt_p(self.p_exceed_open)),
            ("unprecedented", "yes" if self.unprecedented else "no"),
        ]

    def _sens_rows(self) -> tuple[list[list[str]], list[str]]:
        head = [
            "window",
            "n",
            "maximum",
            "ratio to max",
            "n >= event",
            "P(count >= event)",
            "unprecedented",
        ]
        rows = []
        for r in self.sensitivity.itertuples():
            rows.append(
                [
                    f"{r.window_years:g} years",
                    str(r.n_baseline),
                    f"{r.baseline_max:g}" if math.isfinite(r.baseline_max) else "-",
                    f"{r.ratio_to_max:.2f}" if math.isfinite(r.ratio_to_max) else "-",
                    str(r.n_exceeding),
                    _fmt_p(r.p_exceed),
                    "yes" if r.unprecedented else "no",
                ]
            )
        return rows, head

    def summary(self) -> str:
        """Plain-text table: statistics, model, window sensitivity and the verdict."""
        rows = self._rows()
        w = max(len(k) for k, _ in rows)
        lines = ["Baseline comparison", "=" * 19]
        lines += [f"{k.ljust(w)} : {v}" for k, v in rows]
        srows, head = self._sens_rows()
        widths = [max(len(h), *(len(r[i]) for r in srows)) for i, h in enumerate(head)]
        lines += ["", "Sensitivity to the window length"]
        lines.append("  ".join(h.ljust(c) for h, c in zip(head, widths, strict=True)))
        lines.append("  ".join("-" * c for c in widths))
        lines += ["  ".join(x.ljust(c) for x, c in zip(r, widths, strict=True)) for r in srows]
        if self.notes:
            lines += ["", "Notes"] + [f"- {n}" for n in self.notes]
        lines += ["", "Verdict: " + self.verdict]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        srows, head = self._sens_rows()
        sh = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        sb = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in srows
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            "<div><strong>Baseline comparison</strong>"
            f"<table>{body}</table><p>Sensitivity to the window length</p>"
            f"<table><thead><tr>{sh}</tr></thead><tbody>{sb}</tbody></table>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + f"<p><strong>Verdict:</strong> {html.escape(self.verdict)}</p></div>"
        )


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    if p < 1e-6:
        return "< 1e-6"
    return f"{p:.2g}"


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _parse_time(value, name: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise SeriesError(f"{name}: expected a date such as '2023-10-05', found {value!r}") from exc
    if t is pd.NaT or pd.isna(t):
        raise SeriesError(f"{name}: expected a date, found {value!r}")
    if t.tz is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


#: Spellings of square metres in ``units`` attrs (CF, pint, plain text), lower case.
_SQUARE_METRES = {"m2", "m^2", "m**2", "m²", "square metres", "square meters", "sq m"}
#: ``units`` that say nothing beyond "a number of things".
_COUNT_UNITS = {"", "1", "count", "counts", "railcars"}


def _label_from(values) -> str:
    """What ``values`` measure, for the text: from the ``units`` attr, else the name.

    ``covered_m2`` (or ``units='m2'``) reads 'm²', ``occupied_m`` reads 'm',
    ``container_equivalents`` reads 'container equivalents'; railcar counts,
    and series that say nothing, read 'railcars'.
    """
    if isinstance(values, xr.Dataset):
        return "railcars"  # the counts Dataset: its 'railcars' variable is compared
    attrs = getattr(values, "attrs", None) or {}
    units = str(attrs.get("units", "")).strip()
    if units.lower() in _SQUARE_METRES:
        return "m²"
    if units.lower() not in _COUNT_UNITS:
        return units
    name = str(getattr(values, "name", None) or "").lower()
    if name.endswith("_m2"):
        return "m²"
    if name.endswith("_m"):
        return "m"
    if name.startswith("container_equivalents"):
        return "container equivalents"
    return "railcars"


def _bounds_from(values, low, high, times, n):
    """Counting bounds: from the counts Dataset, from arguments, or none."""

    def conv(b, nm):
        if b is None:
            return None
        s = _to_series(b, times, name=nm)
        if s.values.size != n:
            raise SeriesError(
                f"{nm}: expected {n} values (one per observation), found {s.values.size}"
            )
        return s.values

    if isinstance(values, xr.Dataset):
        lo = values["railcars_low"] if low is None and "railcars_low" in values else low
        hi = values["railcars_high"] if high is None and "railcars_high" in values else high
        return conv(lo, "railcars_low"), conv(hi, "railcars_high")
    return conv(low, "low"), conv(high, "high")


def _design(times: pd.DatetimeIndex, excluded, seasonal: bool) -> tuple[np.ndarray, list[str]]:
    cols = [np.ones(len(times))]
    names = ["const"]
    if seasonal:
        doy = 2 * np.pi * (times.day_of_year.to_numpy() - 1) / 365.25
        cols += [np.sin(doy), np.cos(doy)]
        names += ["season_sin", "season_cos"]
    for i, (a, b) in enumerate(excluded):
        cols.append(((times >= a) & (times <= b)).astype(float))
        names.append(f"closure_{i}")
    return np.column_stack(cols), names


def _fit_count_model(y, X, names, notes):
    """Poisson GLM, or NB2 if over-dispersed (LR test of alpha = 0, 5 %)."""
    import statsmodels.api as sm

    # drop closure columns with no observation (nothing to estimate)
    keep = [j for j in range(X.shape[1]) if not names[j].startswith("closure") or X[:, j].any()]
    X = X[:, keep]
    names = [names[j] for j in keep]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pois = sm.GLM(y, X, family=sm.families.Poisson()).fit()
        nb = None
        alpha = 0.0
        lr_p = 1.0
        if np.var(y) > np.mean(y) and len(y) > X.shape[1] + 2:
            try:
                nbm = sm.NegativeBinomial(y, X, loglike_method="nb2")
                start = np.r_[pois.params, 0.1]
                nb = nbm.fit(start_params=start, disp=0, maxiter=300, method="bfgs")
                alpha = float(nb.params[-1])
                lr = 2 * (nb.llf - pois.llf)
                lr_p = 0.5 * stats.chi2.sf(max(lr, 0.0), 1) if alpha > 0 else 1.0
            except (np.linalg.LinAlgError, ValueError) as exc:  # pragma: no cover
                notes.append(f"negative binomial fit failed ({exc}); Poisson used")
                nb = None
    for w in caught:
        notes.append(f"model fit: {type(w.message).__name__}: {str(w.message).splitlines()[0]}")
    pearson = float(pois.pearson_chi2 / max(pois.df_resid, 1))
    if nb is not None and lr_p < 0.05 and alpha > 1e-8:
        choice = (
            f"over-dispersed: Pearson chi2/df {pearson:.2f}, LR test of alpha = 0 p = "
            f"{_fmt_p(lr_p)}"
        )
        params = np.asarray(nb.params[:-1])
        cov = np.asarray(nb.cov_params())[:-1, :-1]
        return "negative binomial", choice, alpha, params, cov, names, keep
    choice = f"not over-dispersed: Pearson chi2/df {pearson:.2f}" + (
        f", LR test of alpha = 0 p = {_fmt_p(lr_p)}" if nb is not None else ""
    )
    return (
        "Poisson",
        choice,
        0.0,
        np.asarray(pois.params),
        np.asarray(pois.cov_params()),
        names,
        keep,
    )


def _predictive(params, cov, x_event, alpha, values, conf, rng):
    """P(Y >= v) for each v and the upper prediction bound, over parameter draws."""
    eta0 = float(x_event @ params)
    sd = float(np.sqrt(max(x_event @ cov @ x_event, 0.0)))
    if not np.isfinite(sd):
        sd = 0.0
    eta = eta0 + sd * rng.standard_normal(_N_DRAWS)
    mu = np.exp(np.clip(eta, -50, 50))
    if alpha > 0:
        n_size = 1.0 / alpha
        p = n_size / (n_size + mu)

        def sf(k):
            return stats.nbinom.sf(k - 1, n_size, p)

        def cdf(k):
            return stats.nbinom.cdf(k, n_size, p)
    else:

        def sf(k):
            return stats.poisson.sf(k - 1, mu)

        def cdf(k):
            return stats.poisson.cdf(k, mu)

    probs = [float(np.mean(sf(math.ceil(v)))) if np.isfinite(v) else math.nan for v in values]
    # smallest k with mixture cdf >= conf
    k = int(max(np.floor(np.exp(eta0)), 0))
    while np.mean(cdf(k)) < conf and k < 10**7:
        k = k + max(1, k // 20)
    while k > 0 and np.mean(cdf(k - 1)) >= conf:
        k -= 1
    return probs, float(k), float(np.exp(eta0))


def _gamma_poisson(y, values, conf, notes):
    """Fallback model: Poisson with a Jeffreys prior, exact predictive (NB).

    Used when the baseline has too few observations for the GLM (fewer than
    8) or is all zeros (the GLM's rate estimate is then 0 and every positive
    event "impossible"). With ``S`` counts in ``n`` observations the
    predictive is negative binomial with size ``S + 1/2`` and success
    probability ``n / (n + 1)``.
    """
    n, total = y.size, float(y.sum())
    size, p = total + 0.5, n / (n + 1.0)
    probs = [float(stats.nbinom.sf(math.ceil(v) - 1, size, p)) for v in values]
    upb = float(stats.nbinom.ppf(conf, size, p))
    notes.append(
        "Poisson rate with a Jeffreys prior (exact predictive) used: the baseline is "
        + ("all zeros" if total == 0 else f"short ({n} observations)")
    )
    return (
        "Poisson (Jeffreys prior)",
        f"fallback for a {'zero' if total == 0 else 'short'} baseline",
        0.0,
        probs,
        upb,
        total / n,
    )


def _onset(series: pd.Series, event_time: pd.Timestamp, ramp: pd.Timedelta):
    """Start of the rise that ends at the event: the earliest change point from
    which segment levels increase up to the event's segment, within ``ramp``."""
    hist = series[series.index <= event_time].dropna()
    if hist.size < 6:
        return None
    res = detect_changepoints(hist)
    if not res.positions:
        return None
    lev = res.level
    j = len(lev) - 1
    onset = None
    while j >= 1 and lev[j] > lev[j - 1]:
        start = res.segment_time_start[j]
        if event_time - start > ramp:
            break
        onset = start
        j -= 1
    return onset


def _window_stats(y, t, event_value):
    if y.size == 0:
        return dict(n=0, max=math.nan, tmax=pd.NaT, n_exc=0)
    i = int(np.argmax(y))
    return dict(n=int(y.size), max=float(y[i]), tmax=t[i], n_exc=int((y >= event_value).sum()))


# ----------------------------------------------------------------------------
# public function
# ----------------------------------------------------------------------------


def compare_with_baseline(
    values,
    event_date=None,
    *,
    times=None,
    window_years: float = 5,
    baseline_end="onset",
    exclude: Sequence = (CLOSURE,),
    low=None,
    high=None,
    seasonal: bool = True,
    sensitivity_years: Sequence[float] = (3, 5, 7),
    confidence: float = 0.95,
    alpha: float = 0.001,
    onset_ramp="90D",
    label: str | None = None,
    seed: int = 0,
    min_valid_fraction: float | None = 0.9,
) -> BaselineComparison:
    """Compare the count at an event date with a multi-year baseline window.

    Parameters
    ----------
    values : pandas.Series, xarray.DataArray, xarray.Dataset or array-like
        Counts over time (>= 0; NaN = no observation). The counts Dataset
        ``(time, track)`` is summed over tracks, and its ``railcars_low`` /
        ``railcars_high`` supply the counting bounds.
    event_date : date-like, optional
        The date whose count is examined (the observation on that day, or at
        that exact time); default: the last observation.
    times : array-like of datetime, optional
        Times when ``values`` carries none.
    window_years : float
        Length of the baseline window before ``baseline_end``.
    baseline_end : 'onset', 'event' or date-like
        End of the window (exclusive). ``'onset'`` (default): the start of the
        rise that leads to the event, found by :func:`detect_changepoints`
        (earliest change from which segment levels increase up to the event,
        within ``onset_ramp`` of it), or the event date if there is no rise;
        ``'event'``: the event date; a date: as given.
    exclude : sequence of (start, end)
        Periods left out of the descriptive statistics and given their own
        term in the count model; default the 2020-02-01..2022-09-30 closure.
    low, high : array-like, optional
        Counting bounds per observation (from occupancy), when ``values`` is
        not the counts Dataset.
    seasonal : bool
        Include an annual harmonic (sin/cos of day of year) in the model.
    sensitivity_years : sequence of float
        Window lengths for the sensitivity table.
    confidence : float
        Level of the exceedance bound and of the prediction bound.
    alpha : float
        Predictive probability below which the event counts as unprecedented.
    onset_ramp : duration
        Longest rise considered when ``baseline_end='onset'``.
    label : str, optional
        What the values measure, for the summary and the verdict. Default:
        from the series, its ``units`` attr or else its name (``covered_m2``
        from :func:`toolkit.area_occupancy` reads 'm²', ``occupied_m`` 'm');
        'railcars' for the counts Dataset, railcar counts and unnamed series.
    seed : int
        Seed of the parameter draws for the predictive probability.
    min_valid_fraction : float or None
        With the counts Dataset: dates on which less than this share of the
        track length was visible are treated as missing (None keeps all).

    Returns
    -------
    BaselineComparison
        Statistics, model, sensitivity, verdict; ``summary()`` and HTML.

    Raises
    ------
    SeriesError
        Negative counts, an event date outside the data or without an
        observation, a baseline window with fewer than 3 observations.

    Notes
    -----
    The count model is a GLM with log link: Poisson, or negative binomial
    (NB2, statsmodels) when a likelihood-ratio test rejects ``alpha = 0`` at
    5 % (the statistic's null is a 50:50 chi2 mixture). The predictive
    probability integrates over the estimated coefficients (normal
    approximation, ``seed``-ed draws). The empirical bound is Clopper-Pearson.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2018-10-01", "2023-09-01", freq="45D")
    >>> base = pd.Series([4, 7, 5, 9, 6, 12, 8, 5] * 5, index=t[:40], dtype=float)
    >>> s = pd.concat([base, pd.Series([73.0], index=[pd.Timestamp("2023-10-05")])])
    >>> cmp = compare_with_baseline(s, "2023-10-05", exclude=())
    >>> cmp.baseline_max, cmp.unprecedented
    (12.0, True)
    >>> cmp.verdict.split(" is ")[0]
    '73 railcars on 2023-10-05'

    A covered-area series (say, from :func:`toolkit.area_occupancy`) is
    written in its own unit:

    >>> area = compare_with_baseline((25 * s).rename("covered_m2"), "2023-10-05", exclude=())
    >>> area.verdict.split(" is ")[0]
    '1825 m² on 2023-10-05'
    """
    if not 0 < confidence < 1:
        raise SeriesError(f"confidence: expected a level in (0, 1), found {confidence!r}")
    label = _label_from(values) if label is None else str(label)
    ser = _to_series(values, times, name="values", min_valid_fraction=min_valid_fraction)
    if ser.times is None:
        raise SeriesError(
            "values: a baseline comparison needs time stamps; pass a Series with a "
            "DatetimeIndex, a DataArray with a time coordinate, or times="
        )
    y_all = ser.values
    t_all = ser.times
    ok = ~np.isnan(y_all)
    if (y_all[ok] < 0).any():
        i = int(np.flatnonzero(ok & (y_all < 0))[0])
        raise SeriesError(
            f"{ser.name}: counts must be >= 0, found {y_all[i]:g} on {_fmt_time(t_all[i])}; "
            "fix the count series"
        )
    lo_all, hi_all = _bounds_from(values, low, high, times, y_all.size)
    if lo_all is not None:
        lo_all = np.where(np.isnan(y_all), np.nan, lo_all)
    if hi_all is not None:
        hi_all = np.where(np.isnan(y_all), np.nan, hi_all)
    lo_all = y_all if lo_all is None else lo_all
    hi_all = y_all if hi_all is None else hi_all

    # event
    if event_date is None:
        ev_i = int(np.flatnonzero(ok)[-1]) if ok.any() else -1
    else:
        ev = _parse_time(event_date, "event_date")
        if ev < t_all[0].normalize() or ev > t_all[-1]:
            raise SeriesError(
                f"event_date: {_fmt_time(ev)} is outside the data "
                f"({_fmt_time(t_all[0])} .. {_fmt_time(t_all[-1])}); pass a date with an "
                "observation"
            )
        exact = np.flatnonzero((t_all == ev) & ok)
        same_day = np.flatnonzero((t_all.normalize() == ev.normalize()) & ok)
        cand = exact if exact.size else same_day
        if cand.size == 0:
            if (t_all.normalize() == ev.normalize()).any():
                raise SeriesError(
                    f"event_date: the value on {_fmt_time(ev)} is missing (too little of the "
                    "yard visible, or a scene not counted, such as a lone snow scene); pass "
                    "the date of an acquisition with a value"
                )
            raise SeriesError(
                f"event_date: no observation on {_fmt_time(ev)}; pass the date of an acquisition"
            )
        ev_i = int(cand[-1])
    if ev_i < 0:
        raise SeriesError(f"{ser.name}: all values are missing")
    ev_t = t_all[ev_i]
    ev_v = float(y_all[ev_i])
    ev_lo = float(lo_all[ev_i]) if np.isfinite(lo_all[ev_i]) else ev_v
    ev_hi = float(hi_all[ev_i]) if np.isfinite(hi_all[ev_i]) else ev_v

    excluded = tuple((_parse_time(a, "exclude"), _parse_time(b, "exclude")) for a, b in exclude)

    # window end
    if isinstance(baseline_end, str) and baseline_end == "onset":
        s = pd.Series(y_all, index=t_all)
        onset = _onset(s, ev_t, pd.Timedelta(onset_ramp))
        if onset is not None and onset < ev_t:
            b_end, rule = onset, "detected onset of the rise"
        else:
            b_end, rule = ev_t, "event date (no rise detected)"
    elif isinstance(baseline_end, str) and baseline_end == "event":
        b_end, rule = ev_t, "event date"
    else:
        b_end, rule = _parse_time(baseline_end, "baseline_end"), "given"
        if b_end > ev_t:
            raise SeriesError(
                f"baseline_end: {_fmt_time(b_end)} is after the event {_fmt_time(ev_t)}; "
                "the baseline must precede the event"
            )

    def window(years: float):
        start = b_end - pd.DateOffset(days=int(round(365.25 * years)))
        inw = ok & (t_all >= start) & (t_all < b_end)
        inx = np.zeros_like(inw)
        for a, b in excluded:
            inx |= (t_all >= a) & (t_all <= b)
        return start, inw, inw & ~inx

    rng = np.random.default_rng(seed)
    notes: list[str] = []

    def analyse(years: float, record_notes: bool, model_excluded: bool = True):
        start, inw, desc = window(years)
        out = {"start": start, "inw": inw, "desc": desc}
        if not model_excluded:
            inw = desc
        y_w, t_w = y_all[inw], t_all[inw]
        if desc.sum() < 3:
            out["fit"] = None
            return out
        local = [] if not record_notes else notes
        y_d = y_all[desc]
        if y_d.sum() == 0 or y_w.size < 8:
            out["fit"] = _gamma_poisson(y_d, [ev_v, ev_lo], confidence, local)
            return out
        X, names = _design(t_w, excluded if model_excluded else (), seasonal)
        try:
            model, choice, disp, params, cov, names2, keep = _fit_count_model(y_w, X, names, local)
        except (ValueError, np.linalg.LinAlgError) as exc:
            local.append(f"count model fit failed ({str(exc).splitlines()[0]})")
            out["fit"] = _gamma_poisson(y_d, [ev_v, ev_lo], confidence, local)
            return out
        Xe, _ = _design(pd.DatetimeIndex([ev_t]), (), seasonal)
        xe = np.zeros(len(names2))
        for j, nm in enumerate(names2):
            if nm in ("const", "season_sin", "season_cos"):
                xe[j] = Xe[0, ["const", "season_sin", "season_cos"].index(nm)]
        probs, upb, mu = _predictive(params, cov, xe, disp, [ev_v, ev_lo], confidence, rng)
        out["fit"] = (model, choice, disp, probs, upb, mu)
        return out

    main = analyse(window_years, True)
    desc = main["desc"]
    if excluded and main["inw"].sum() > desc.sum() >= 3:
        open_fit = analyse(window_years, False, model_excluded=False)["fit"]
        p_open = open_fit[3][0] if open_fit is not None else math.nan
    else:
        p_open = math.nan
    if desc.sum() < 3:
        raise SeriesError(
            f"{ser.name}: the baseline window {_fmt_time(main['start'])} .. {_fmt_time(b_end)} "
            f"holds {int(desc.sum())} usable observations, at least 3 are needed; use a longer "
            "window_years or fewer excluded periods"
        )
    yb, tb = y_all[desc], t_all[desc]
    hb = np.where(np.isfinite(hi_all[desc]), hi_all[desc], yb)
    st = _window_stats(yb, tb, ev_v)
    med = float(np.median(yb))
    mad = float(np.median(np.abs(yb - med))) * _MAD_TO_SD
    if mad == 0:
        mad = float(np.mean(np.abs(yb - med))) * math.sqrt(math.pi / 2) or 1.0
    n_exc = st["n_exc"]
    n_b = st["n"]
    exc_up = float(stats.beta.ppf(confidence, n_exc + 1, n_b - n_exc)) if n_exc < n_b else 1.0
    model, choice, disp, probs, upb, mu = main["fit"]
    mean_b = float(yb.mean())

    sens_rows = []
    for yrs in sensitivity_years:
        a = analyse(float(yrs), False) if float(yrs) != float(window_years) else main
        d = a["desc"]
        s_ = _window_stats(y_all[d], t_all[d], ev_v)
        p_ = a["fit"][3][0] if a["fit"] is not None else math.nan
        sens_rows.append(
            {
                "window_years": float(yrs),
                "start": a["start"],
                "n_baseline": s_["n"],
                "baseline_max": s_["max"],
                "ratio_to_max": ev_v / s_["max"] if s_["n"] and s_["max"] > 0 else math.inf,
                "n_exceeding": s_["n_exc"],
                "p_exceed": p_,
                "unprecedented": bool(
                    s_["n"] > 0
                    and ev_lo > float(np.nanmax(np.where(np.isfinite(hi_all), hi_all, y_all)[d]))
                    and p_ < alpha
                ),
            }
        )
    sens = pd.DataFrame(sens_rows)

    base_max_high = float(hb.max())
    lb = np.where(np.isfinite(lo_all[desc]), lo_all[desc], yb)
    base_max_low = float(lb.max())
    ratio_low = ev_lo / base_max_high if base_max_high > 0 else math.inf
    ratio_high = ev_hi / base_max_low if base_max_low > 0 else math.inf
    unprecedented = bool(ev_lo > base_max_high and probs[0] < alpha)
    ratio_max = ev_v / st["max"] if st["max"] > 0 else math.inf
    words = {3: "three", 5: "five", 7: "seven", 10: "ten"}
    wy = float(window_years)
    period = f"{words[int(wy)]}-year" if wy.is_integer() and int(wy) in words else f"{wy:g}-year"
    ratio_txt = f"{ratio_max:.1f} times" if math.isfinite(ratio_max) else "far above"
    verdict = (
        f"{ev_v:g} {label} on {_fmt_time(ev_t.normalize())} is {ratio_txt} the {period} maximum "
        f"of {st['max']:g} ({_fmt_time(st['tmax'].normalize())}); probability under the "
        f"baseline model {_fmt_p(probs[0]) if probs[0] < 1e-6 else '= ' + _fmt_p(probs[0])}"
    )
    verdict += (
        "; unprecedented." if unprecedented else "; not unprecedented at this level of evidence."
    )
    return BaselineComparison(
        event_time=ev_t,
        event_value=ev_v,
        event_low=ev_lo,
        event_high=ev_hi,
        baseline_start=main["start"],
        baseline_end=b_end,
        baseline_end_rule=rule,
        window_years=float(window_years),
        excluded=excluded,
        n_baseline=n_b,
        n_excluded=int(main["inw"].sum() - n_b),
        baseline_mean=mean_b,
        baseline_median=med,
        baseline_p95=float(np.percentile(yb, 95)),
        baseline_max=st["max"],
        baseline_max_time=st["tmax"],
        baseline_max_high=base_max_high,
        ratio_to_max=ratio_max,
        ratio_to_max_low=ratio_low,
        ratio_to_max_high=ratio_high,
        ratio_to_mean=ev_v / mean_b if mean_b > 0 else math.inf,
        robust_z=(ev_v - med) / mad,
        n_exceeding=n_exc,
        exceedance_upper=exc_up,
        model=model,
        model_choice=choice,
        dispersion_alpha=disp,
        expected_at_event=mu,
        p_exceed=probs[0],
        p_exceed_low=probs[1],
        p_exceed_open=p_open,
        upper_prediction_bound=upb,
        sensitivity=sens,
        unprecedented=unprecedented,
        verdict=verdict,
        confidence=float(confidence),
        alpha=float(alpha),
        label=label,
        notes=tuple(dict.fromkeys(notes)),
        toolkit_version=_version(),
    )
