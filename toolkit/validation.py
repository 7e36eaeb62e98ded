"""Counts against ground truth: error tables and accuracy figures.

Used on the simulator's sites (whose truth is known) to measure the counting
error the toolkit reports, and by analysts who have hand counts for some scenes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from toolkit.errors import InputError

__all__ = ["compare_with_truth", "accuracy", "CountAccuracy"]


def compare_with_truth(counts: xr.Dataset, truth) -> pd.DataFrame:
    """Join estimated counts with true counts per scene and track.

    Parameters
    ----------
    counts : xarray.Dataset
        ``(time, track)`` from :func:`toolkit.count_railcars`.
    truth : path or pandas.DataFrame
        The simulator's ``truth.csv`` (columns ``time``, ``track_id``,
        ``railcars``, ``railcars_visible``, ``visible_fraction``,
        ``cloud_fraction``, ...) or hand counts (``time``, ``track_id``,
        ``railcars``).

    Returns
    -------
    pandas.DataFrame
        One row per scene and track: ``time``, ``track_id``, ``true`` (the
        truth for the visible part where known, else the whole track),
        ``estimate``, ``low``, ``high``, ``error`` (estimate - true),
        ``valid_fraction`` (estimated) and ``true_visible_fraction`` when
        known, ``cloud_fraction`` when known.
    """
    if not isinstance(truth, pd.DataFrame):
        path = os.fspath(truth)
        try:
            truth = pd.read_csv(path, dtype={"track_id": str})
        except FileNotFoundError:
            raise InputError(f"{path}: truth file not found") from None
    truth = truth.copy()
    for col in ("time", "track_id", "railcars"):
        if col not in truth.columns:
            raise InputError(f"truth table lacks the column {col!r}")
    truth["time"] = pd.to_datetime(truth["time"])
    truth["track_id"] = truth["track_id"].astype(str)
    est = counts[["railcars", "railcars_low", "railcars_high", "valid_fraction"]]
    est = est.to_dataframe().reset_index()
    est["track_id"] = est["track"].astype(str)
    # match times to the nearest scene within a minute (file names round to seconds)
    times = pd.DatetimeIndex(counts["time"].values)
    idx = times.get_indexer(pd.DatetimeIndex(truth["time"]), method="nearest")
    close = np.abs(times[idx] - pd.DatetimeIndex(truth["time"])) <= pd.Timedelta("60s")
    truth = truth[close].assign(time=times[idx[close]])
    m = truth.merge(est, on=["time", "track_id"], how="inner", suffixes=("_true", ""))
    true_col = "railcars_visible" if "railcars_visible" in m.columns else "railcars_true"
    out = pd.DataFrame(
        {
            "time": m["time"],
            "track_id": m["track_id"],
            "true": m[true_col].astype(float),
            "estimate": m["railcars"],
            "low": m["railcars_low"],
            "high": m["railcars_high"],
            "valid_fraction": m["valid_fraction"],
        }
    )
    out["error"] = out["estimate"] - out["true"]
    if "visible_fraction" in m.columns:
        out["true_visible_fraction"] = m["visible_fraction"].to_numpy()
    if "cloud_fraction" in m.columns:
        out["cloud_fraction"] = m["cloud_fraction"].to_numpy()
    return out.sort_values(["time", "track_id"]).reset_index(drop=True)


@dataclass(frozen=True, kw_only=True)
class CountAccuracy:
    """Accuracy of counts against truth (the figures the issue targets name).

    Attributes
    ----------
    scene_mare : float
        Mean absolute relative error of the per-scene yard total, over
        cloud-free scenes with at least ``min_cars`` true railcars.
    scene_bias : float
        Mean relative error (signed) over the same scenes.
    n_scenes : int
        Scenes in those two figures.
    track_mae : float
        Mean absolute error per track and scene (railcars), all visible tracks.
    coverage : float
        Share of track-scenes whose truth lies within [low, high].
    mean_interval_width : float
        Mean of high - low (railcars) per track-scene.
    valid_fraction_max_error : float
        Largest |estimated - true| visible fraction over track-scenes.
    valid_fraction_mean_error : float
        Mean |estimated - true| visible fraction over track-scenes.
    valid_fraction_within : float
        Share of track-scenes whose visible fraction is within
        ``valid_fraction_tolerance`` of the truth.
    valid_fraction_tolerance : float
        That tolerance (0.05 by default, the issue's target).
    table : pandas.DataFrame
        The per-scene totals.
    """

    scene_mare: float
    scene_bias: float
    n_scenes: int
    track_mae: float
    coverage: float
    mean_interval_width: float
    valid_fraction_max_error: float
    valid_fraction_mean_error: float
    valid_fraction_within: float
    valid_fraction_tolerance: float
    table: pd.DataFrame = field(repr=False)

    def summary(self) -> str:
        return "\n".join(
            [
                "Counting accuracy against truth",
                f"  scene totals (cloud-free, >= min cars): n={self.n_scenes}, "
                f"MARE {100 * self.scene_mare:.1f}%, bias {100 * self.scene_bias:+.1f}%",
                f"  per track and scene: MAE {self.track_mae:.2f} railcars",
                f"  intervals: coverage {100 * self.coverage:.0f}%, "
                f"mean width {self.mean_interval_width:.2f} railcars",
                f"  valid_fraction error: mean {self.valid_fraction_mean_error:.3f}, "
                f"max {self.valid_fraction_max_error:.3f}, "
                f"{100 * self.valid_fraction_within:.1f}% of track-scenes within "
                f"{self.valid_fraction_tolerance:g}",
            ]
        )

    def _repr_html_(self) -> str:
        return "<pre>" + self.summary() + "</pre>"


def accuracy(
    table: pd.DataFrame,
    *,
    min_cars: int = 20,
    max_cloud_fraction: float = 0.0,
    valid_fraction_tolerance: float = 0.05,
) -> CountAccuracy:
    """Accuracy figures from :func:`compare_with_truth`'s table.

    Parameters
    ----------
    table : pandas.DataFrame
    min_cars : int, default 20
        Scenes with fewer true railcars are left out of the relative errors.
    max_cloud_fraction : float, default 0
        A scene is cloud-free when no track has more than this cloud fraction.
    valid_fraction_tolerance : float, default 0.05
        A track-scene's visible fraction is right when within this of the truth.
    """
    tol = valid_fraction_tolerance
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 < tol < 1:
        raise InputError(f"valid_fraction_tolerance: expected a number in (0, 1), got {tol!r}")
    t = table.dropna(subset=["estimate"])
    by = t.groupby("time")
    scenes = pd.DataFrame(
        {
            "true": by["true"].sum(),
            "estimate": by["estimate"].sum(),
            "low": by["low"].sum(),
            "high": by["high"].sum(),
        }
    )
    if "cloud_fraction" in t.columns:
        scenes["cloud_fraction"] = by["cloud_fraction"].max()
        clear = scenes["cloud_fraction"] <= max_cloud_fraction
    else:
        clear = pd.Series(True, index=scenes.index)
    sel = scenes[clear & (scenes["true"] >= min_cars)]
    rel = (sel["estimate"] - sel["true"]) / sel["true"]
    inside = (t["true"] >= t["low"]) & (t["true"] <= t["high"])
    if "true_visible_fraction" in t.columns:
        vf_err = (table["valid_fraction"] - table["true_visible_fraction"]).abs().dropna()
    else:
        vf_err = pd.Series([np.nan])
    vf_within = (
        float((vf_err <= valid_fraction_tolerance).mean()) if vf_err.notna().any() else np.nan
    )
    return CountAccuracy(
        scene_mare=float(rel.abs().mean()) if len(rel) else float("nan"),
        scene_bias=float(rel.mean()) if len(rel) else float("nan"),
        n_scenes=int(len(sel)),
        track_mae=float(t["error"].abs().mean()),
        coverage=float(inside.mean()),
        mean_interval_width=float((t["high"] - t["low"]).mean()),
        valid_fraction_max_error=float(vf_err.max()),
        valid_fraction_mean_error=float(vf_err.mean()),
        valid_fraction_within=vf_within,
        valid_fraction_tolerance=float(valid_fraction_tolerance),
        table=scenes.reset_index(),
    )
