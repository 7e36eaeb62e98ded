"""Change points: toolkit PELT against ruptures and fastcpd; the per-pixel change map.

``run(quick=False)`` returns table rows (dicts with ``benchmark``, ``case``,
``ours_s``, ``reference``, ``reference_s``, ``ratio``, ``target``, ``met``,
``note``), all measured in this process on the same SYNTHETIC seeded signals.
``ratio`` is a speed-up (reference time / toolkit time; higher is better), or
for the change-map rate, the rate over its target:

- PELT, Gaussian change in mean, on 10,000 and 100,000 points with 10 and
  n/100 changes: ``toolkit.pelt`` against ``fastcpd`` (target: no slower,
  identical change points) and, at 10,000 points with 10 changes, against
  ``ruptures.Pelt`` (target: at least 100 times faster; ruptures is timed once
  at 10,000 points, or at 2,000 points in quick mode, since it takes over a
  minute there);
- the change map: pixel-dates per second on one core (target: 20 million),
  and against ``fastcpd`` called pixel by pixel on a subset of the same pixels
  (target: 10 times faster per pixel, same change dates).

Times are medians of repeats after a warm-up (numba compilation excluded);
toolkit and fastcpd runs alternate so that both see the same load on a
shared machine (two repeats for runs over a second).
``python -m benchmarks.bench_changepoints [--quick]`` prints the rows.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import numpy as np

TARGET_RUPTURES = 100.0
TARGET_FASTCPD = 1.0
TARGET_PIXEL_RATE = 20e6
TARGET_PIXEL_FASTCPD = 10.0


def _signal(n: int, k: int, seed: int = 0) -> np.ndarray:
    """SYNTHETIC piecewise-constant signal with ``k`` changes and unit Gaussian noise."""
    rng = np.random.default_rng(seed)
    bk = np.sort(rng.choice(np.arange(1, n), k, replace=False))
    levels = rng.normal(0, 3, k + 1)
    return np.repeat(levels, np.diff(np.r_[0, bk, n])) + rng.normal(size=n)


def _median_time(fn, repeat: int) -> float:
    """Median of ``repeat`` timed runs after a warm-up; 3 runs if one takes over 1 s."""
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 > 1.0:
        repeat = min(repeat, 3)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _paired_times(fn_a, fn_b, repeat: int) -> tuple[float, float]:
    """Medians of alternating runs of two functions (after one warm-up each).

    Alternating makes both see the same load on a shared machine; runs over a
    second are repeated at most twice.
    """
    t0 = time.perf_counter()
    fn_a()
    fn_b()
    if time.perf_counter() - t0 > 2.0:
        repeat = min(repeat, 2)
    ta, tb = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn_a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fn_b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _fastcpd(x: np.ndarray, pen: float) -> list[int]:
    from fastcpd.segmentation import mean

    # fastcpd's Gaussian cost with unit variance is half the sum of squares,
    # the same scale as toolkit's cost with scale=1, so the penalties are equal
    return mean(
        x, beta=pen, cost_adjustment=None, variance_estimation=np.eye(1), cp_only=True
    ).cp_set.tolist()


def _ruptures(x: np.ndarray, pen: float) -> list[int]:
    import ruptures as rpt

    # ruptures' l2 cost is the full sum of squares: twice ours, so twice the penalty
    return rpt.Pelt(model="l2", min_size=1, jump=1).fit(x).predict(pen=2 * pen)[:-1]


def _pelt_rows(quick: bool) -> list[dict]:
    from toolkit.changepoints import pelt

    rows = []
    repeat = 3 if quick else 9
    pelt(_signal(100, 2), penalty=1.0, scale=1.0)  # compile (or load) the kernels
    for n in (10_000, 100_000):
        for k in (10, n // 100):
            x = _signal(n, k, seed=n + k)
            pen = math.log(n)  # BIC for one mean and one location, unit variance

            def ours(x=x, pen=pen):
                return pelt(x, penalty=pen, scale=1.0)

            t_ours, t_ref = _paired_times(ours, lambda x=x, pen=pen: _fastcpd(x, pen), repeat)
            same = ours().tolist() == _fastcpd(x, pen)
            ratio = t_ref / t_ours
            rows.append(
                {
                    "benchmark": "pelt (normal mean)",
                    "case": f"n={n:,}, {k} changes",
                    "ours_s": t_ours,
                    "reference": "fastcpd 1.3 mean (C++)",
                    "reference_s": t_ref,
                    "ratio": ratio,
                    "target": f"speed-up (ref/ours) >= {TARGET_FASTCPD:g}, identical",
                    "met": bool(ratio >= TARGET_FASTCPD and same),
                    "note": f"identical change points: {'yes' if same else 'NO'}",
                }
            )
    # ruptures: pure Python, quadratic here
    n_r = 2_000 if quick else 10_000
    x = _signal(n_r, 10, seed=7)
    pen = math.log(n_r)
    t_ours = _median_time(lambda: pelt(x, penalty=pen, scale=1.0), repeat)
    t0 = time.perf_counter()
    ref = _ruptures(x, pen)
    t_ref = time.perf_counter() - t0
    same = pelt(x, penalty=pen, scale=1.0).tolist() == ref
    ratio = t_ref / t_ours
    rows.append(
        {
            "benchmark": "pelt (normal mean)",
            "case": f"n={n_r:,}, 10 changes",
            "ours_s": t_ours,
            "reference": "ruptures 1.1 Pelt l2 (jump 1)",
            "reference_s": t_ref,
            "ratio": ratio,
            "target": f"speed-up (ref/ours) >= {TARGET_RUPTURES:g}, identical",
            "met": bool(ratio >= TARGET_RUPTURES and same),
            "note": f"ruptures timed once; identical change points: {'yes' if same else 'NO'}",
        }
    )
    return rows


def _cube(nt: int, ny: int, nx: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """SYNTHETIC (time, y, x) float32 cube, one mean change of 4 sigma per pixel."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 1, (nt, ny, nx)).astype(np.float32)
    when = rng.integers(2, nt - 2, (ny, nx))
    mask = np.arange(nt)[:, None, None] >= when[None]
    data += 4.0 * mask
    return data, when


def _change_map_rows(quick: bool) -> list[dict]:
    import dask
    import pandas as pd
    import xarray as xr

    from toolkit.changepoints import change_map

    nt, ny, nx = (40, 250, 250) if quick else (60, 500, 500)
    data, when = _cube(nt, ny, nx)
    t = pd.date_range("2019-01-01", periods=nt, freq="12D")
    cube = xr.DataArray(data, dims=("time", "y", "x"), coords={"time": t})
    repeat = 3 if quick else 5

    def ours():
        with dask.config.set(scheduler="synchronous"):
            return change_map(cube.chunk({"time": -1, "y": 250, "x": 250})).compute()

    t_ours = _median_time(ours, repeat)
    rate = nt * ny * nx / t_ours
    rows = [
        {
            "benchmark": "change map (1 change per pixel)",
            "case": f"{nt} dates x {ny}x{nx} px, 1 core",
            "ours_s": t_ours,
            "reference": "target rate",
            "reference_s": float("nan"),
            "ratio": rate / TARGET_PIXEL_RATE,
            "target": "rate / 20 M pixel-dates/s >= 1",
            "met": bool(rate >= TARGET_PIXEL_RATE),
            "note": f"{rate / 1e6:.0f} M pixel-dates/s (dask synchronous, 250x250 blocks)",
        }
    ]
    # fastcpd pixel by pixel on a subset, with a penalty that keeps one change
    res = ours()
    rng = np.random.default_rng(3)
    n_sub = 300 if quick else 1000
    ii = rng.integers(0, ny, n_sub)
    jj = rng.integers(0, nx, n_sub)
    series = [data[:, i, j].astype(float) for i, j in zip(ii, jj, strict=True)]
    pen = 4 * math.log(nt)

    def ref():
        return [_fastcpd(y, pen) for y in series]

    t0 = time.perf_counter()
    out = ref()
    t_ref = (time.perf_counter() - t0) / n_sub  # per pixel
    one = [(k, cp[0]) for k, cp in enumerate(out) if len(cp) == 1]
    agree = sum(int(res.change_index.values[ii[k], jj[k]]) == c for k, c in one)
    t_ours_px = t_ours / (ny * nx)
    ratio = t_ref / t_ours_px
    rows.append(
        {
            "benchmark": "change map (1 change per pixel)",
            "case": f"{nt} dates, per pixel",
            "ours_s": t_ours_px,
            "reference": "fastcpd 1.3 mean, pixel by pixel",
            "reference_s": t_ref,
            "ratio": ratio,
            "target": f"speed-up (ref/ours) >= {TARGET_PIXEL_FASTCPD:g}, same dates",
            "met": bool(ratio >= TARGET_PIXEL_FASTCPD and agree == len(one)),
            "note": f"same change date on {agree}/{len(one)} pixels where fastcpd finds one change",
        }
    )
    return rows


def run(quick: bool = False) -> list[dict]:
    """All change-point benchmark rows (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _pelt_rows(quick) + _change_map_rows(quick)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_changepoints")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    for row in run(quick=args.quick):
        print(
            f"{row['benchmark']:<34} {row['case']:<34} ours {row['ours_s']:.3g}s  "
            f"{row['reference']:<34} {row['reference_s']:.3g}s  ratio {row['ratio']:.3g}  "
            f"target {row['target']:<26} met {row['met']}  {row['note']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
