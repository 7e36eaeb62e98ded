"""Acquisition schedule and calibrated railcar counts of the synthetic Tumangang-like yard.

Private module of :mod:`toolkit.synth`. The counts follow the published facts
(``reference/published_facts.md``): about 20 freight railcars at most between
2018-10 and 2023-09, near zero during the pandemic closure (2020-02 .. 2022-09),
5 cars on 2022-11-18 and 8 on 2022-11-30, then a gradual rise from 2023-09-18 to
73 cars on 2023-10-05. Everything here is synthetic.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pandas as pd

from toolkit.errors import InputError

__all__ = ["LAYOUTS", "HISTORIES", "five_year_history", "check_layout", "history_rng"]

LAYOUTS = ("tumangang", "second")
HISTORIES = ("tumangang", "dense", "empty", "random")

# Published anchors (reference/published_facts.md).
_FIRST_DAY = _dt.date(2018, 10, 2)
_BASELINE_MAX = 20
_RESUMPTION = {_dt.date(2022, 11, 18): 5, _dt.date(2022, 11, 30): 8}
_DENSE_START = _dt.date(2023, 9, 1)
_RISE_START = _dt.date(2023, 9, 18)
_LAST_DAY = _dt.date(2023, 10, 5)
_LAST_COUNT = 73
_CLOSURE = (_dt.date(2020, 2, 1), _dt.date(2022, 10, 31))


def check_layout(layout: str) -> str:
    """Return ``layout`` if known, else raise a one-line :class:`InputError`."""
    if layout not in LAYOUTS:
        raise InputError(
            f"layout={layout!r}: expected one of {', '.join(LAYOUTS)}; "
            "pass layout='tumangang' (default yard) or layout='second'"
        )
    return layout


def history_rng(seed: int, stream: int) -> np.random.Generator:
    """A generator for one named random stream derived from ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 7919, int(stream)]))


def _fill(
    start: _dt.date, end: _dt.date, lo: int, hi: int, rng: np.random.Generator
) -> list[_dt.date]:
    """Days after ``start`` up to and including ``end`` with gaps of ``lo``..``hi`` days."""
    days: list[_dt.date] = []
    t = start
    while (end - t).days > hi:
        rem = (end - t).days
        step = int(rng.integers(lo, hi + 1))
        if rem - step < lo:
            if rem - lo >= lo:
                step = rem - lo
            else:  # cannot split the rest into two valid gaps: take it whole
                break
        t = t + _dt.timedelta(days=step)
        days.append(t)
    days.append(end)
    return days


def _schedule(rng: np.random.Generator) -> list[_dt.date]:
    first = _FIRST_DAY + _dt.timedelta(days=int(rng.integers(0, 10)))
    days = [first]
    res = sorted(_RESUMPTION)
    days += _fill(first, res[0], 28, 49, rng)
    days += _fill(res[0], res[1], 12, 12, rng)
    days += _fill(res[1], _DENSE_START, 28, 49, rng)
    days += _fill(_DENSE_START, _RISE_START, 2, 4, rng)
    days += _fill(_RISE_START, _LAST_DAY, 2, 4, rng)
    return days


def _counts(days: list[_dt.date], rng: np.random.Generator) -> np.ndarray:
    n = len(days)
    counts = np.zeros(n, dtype=np.int64)
    pre = [i for i, d in enumerate(days) if d < _CLOSURE[0]]
    # Pre-closure baseline: a slowly wandering level between 4 and 19 ...
    level = 10.0
    for i in pre:
        level = float(np.clip(10.0 + 0.6 * (level - 10.0) + rng.normal(0.0, 3.0), 4.0, 17.0))
        counts[i] = int(np.clip(round(level + rng.normal(0.0, 1.5)), 4, 19))
    # ... with its maximum, exactly 20, once in 2019 (in a snow-free month, so it can be seen).
    in_2019 = [i for i in pre if days[i].year == 2019 and 4 <= days[i].month <= 10]
    counts[in_2019[int(rng.integers(0, len(in_2019)))]] = _BASELINE_MAX
    for i, d in enumerate(days):
        if _CLOSURE[0] <= d <= _CLOSURE[1]:
            counts[i] = int(rng.choice([0, 1, 2], p=[0.6, 0.25, 0.15]))
        elif d in _RESUMPTION:
            counts[i] = _RESUMPTION[d]
        elif _CLOSURE[1] < d < _RISE_START:
            # 2023 before the summit: consists come and go, 3-15 cars
            gap_days = (d - days[i - 1]).days
            step = rng.normal(0.0, 0.5 * np.sqrt(gap_days))
            counts[i] = int(np.clip(round(counts[i - 1] + step), 3, 15))
    rise = [i for i, d in enumerate(days) if d >= _RISE_START]
    start = int(rng.integers(11, 16))
    span = (_LAST_DAY - _RISE_START).days
    prev = start - 1
    for i in rise:
        frac = (days[i] - _RISE_START).days / span
        # a steady, slightly convex rise with a little jitter, strictly increasing
        value = start + (_LAST_COUNT - start) * frac**1.3 + rng.normal(0.0, 1.5)
        value = int(np.clip(round(value), prev + 1, _LAST_COUNT - (len(rise) - 1 - rise.index(i))))
        counts[i] = value
        prev = value
    counts[rise[-1]] = _LAST_COUNT
    return counts


def _locomotives(days: list[_dt.date], counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    locos = np.zeros(len(days), dtype=np.int64)
    # No locomotive on 2022-11-30 ("locomotive gone") nor on 2023-10-05.
    excluded = {_dt.date(2022, 11, 30), _LAST_DAY}
    eligible = [i for i, d in enumerate(days) if counts[i] > 0 and d not in excluded]
    k = max(1, round(0.05 * len(days)))
    for i in rng.choice(eligible, size=k, replace=False):
        locos[i] = int(rng.integers(1, 3))
    return locos


def five_year_history(*, layout: str = "tumangang", seed: int = 20231005) -> pd.DataFrame:
    """Acquisition dates and freight-railcar counts of the synthetic five-year history.

    The calibrated (synthetic) history of the Tumangang-like yard: irregular
    acquisitions from October 2018 to 2023-10-05, roughly every 4-7 weeks and
    every 2-4 days from 2023-09-01, around 02:00 UTC. Freight-car counts follow
    the published facts exactly where they are published: the pre-closure
    maximum is exactly 20 (once, in 2019), 0-2 cars during the pandemic closure
    (2020-02 .. 2022-10), 5 cars on 2022-11-18, 8 on 2022-11-30, 3-15 in 2023
    before the Kim-Putin summit, and a steady rise from 2023-09-18 to exactly
    73 cars on 2023-10-05 (the last acquisition).

    Parameters
    ----------
    layout : {"tumangang", "second"}
        Yard layout; both yards can hold the whole history.
    seed : int
        Seed of the schedule and of the unpublished counts. The published
        numbers hold for every seed.

    Returns
    -------
    pandas.DataFrame
        One row per acquisition, sorted by time: ``time`` (datetime64[ns],
        UTC, timezone-naive), ``railcars`` (freight cars in the whole yard,
        locomotives excluded), ``locomotives``.

    Raises
    ------
    InputError
        If ``layout`` is unknown.

    Examples
    --------
    >>> from toolkit.synth import five_year_history
    >>> h = five_year_history()
    >>> int(h["railcars"].iloc[-1]), str(h["time"].iloc[-1].date())
    (73, '2023-10-05')
    >>> int(h.loc[h["time"] < "2023-09-18", "railcars"].max())
    20
    """
    check_layout(layout)
    rng = history_rng(seed, 1)
    days = _schedule(rng)
    counts = _counts(days, rng)
    locos = _locomotives(days, counts, rng)
    seconds = rng.integers(-25 * 60, 25 * 60, size=len(days))
    times = [
        _dt.datetime.combine(d, _dt.time(2, 0)) + _dt.timedelta(seconds=int(s))
        for d, s in zip(days, seconds, strict=True)
    ]
    return pd.DataFrame(
        {
            "time": pd.to_datetime(times).astype("datetime64[ns]"),
            "railcars": counts.astype(np.int64),
            "locomotives": locos.astype(np.int64),
        }
    )
