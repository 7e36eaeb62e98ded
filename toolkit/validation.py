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

__all__ = [
    "compare_with_truth",
    "accuracy",
    "CountAccuracy",
    "mask_visible_fraction",
    "HELD_OUT_SITES",
    "TUNING_SITES",
    "simulate_evaluation_site",
    "evaluation_accuracy",
    "accuracy_markdown",
    "accuracy_by_sun_markdown",
]

#: The SYNTHETIC sites the README's accuracy table is measured on, never used while
#: tuning the occupancy step (``tests/test_occupancy.py`` asserts their figures): name ->
#: the :func:`toolkit.simulate_site` recipe. ``last``: the last so many acquisitions of
#: the seed's five-year schedule; ``spread``: that many dates spread over the five years.
HELD_OUT_SITES: dict[str, dict] = {
    "seed 13": {"seed": 13, "resolution_m": 0.5, "last": 20},
    "seed 31": {"seed": 31, "resolution_m": 0.5, "last": 20},
    "seed 11": {"seed": 11, "resolution_m": 1.0, "last": 14},
    "seed 36": {"seed": 36, "resolution_m": 3.0, "last": 14},
    "seed 113, yard 60-90 % full": {
        "seed": 113,
        "resolution_m": 0.5,
        "history": "dense",
        "spread": 12,
    },
    "seed 112, random traffic": {
        "seed": 112,
        "resolution_m": 0.5,
        "history": "random",
        "spread": 12,
    },
    "seed 117, yard 60-90 % full": {
        "seed": 117,
        "resolution_m": 3.0,
        "history": "dense",
        "spread": 12,
    },
    "seed 118, random traffic": {
        "seed": 118,
        "resolution_m": 3.0,
        "history": "random",
        "spread": 12,
    },
}
#: The SYNTHETIC sites the occupancy step was tuned on (and further sites looked at while
#: tuning): their figures say how well it fits what it was tuned on, not how well it
#: generalises (that is :data:`HELD_OUT_SITES`). No seed is in both.
TUNING_SITES: dict[str, dict] = {
    "seed 101": {"seed": 101, "resolution_m": 0.5, "last": 20},
    "seed 12": {"seed": 12, "resolution_m": 0.5, "last": 20},
    "seed 72": {"seed": 72, "resolution_m": 0.5, "spread": 12},
    "seed 41": {"seed": 41, "resolution_m": 1.0, "last": 14},
    "seed 42": {"seed": 42, "resolution_m": 1.0, "last": 14},
    "seed 107": {"seed": 107, "resolution_m": 1.0, "last": 14},
    "seed 74": {"seed": 74, "resolution_m": 1.0, "spread": 12},
    "seed 43": {"seed": 43, "resolution_m": 3.0, "last": 14},
    "seed 141": {"seed": 141, "resolution_m": 3.0, "last": 14},
    "seed 142": {"seed": 142, "resolution_m": 3.0, "last": 14},
    "seed 143": {"seed": 143, "resolution_m": 3.0, "spread": 12},
    "seed 151": {"seed": 151, "resolution_m": 3.0, "last": 14},
    "seed 152": {"seed": 152, "resolution_m": 3.0, "last": 14},
    "seed 153": {"seed": 153, "resolution_m": 3.0, "last": 14},
    "seed 155": {"seed": 155, "resolution_m": 3.0, "spread": 12},
    "seed 102, random traffic": {
        "seed": 102,
        "resolution_m": 0.5,
        "history": "random",
        "spread": 12,
    },
    "seed 161, random traffic": {
        "seed": 161,
        "resolution_m": 0.5,
        "history": "random",
        "spread": 12,
    },
    "seed 162, random traffic": {
        "seed": 162,
        "resolution_m": 0.5,
        "history": "random",
        "spread": 12,
    },
    "seed 163, random traffic": {
        "seed": 163,
        "resolution_m": 0.5,
        "history": "random",
        "spread": 12,
    },
    "seed 104, random traffic": {
        "seed": 104,
        "resolution_m": 1.0,
        "history": "random",
        "spread": 12,
    },
    "seed 124, random traffic": {
        "seed": 124,
        "resolution_m": 1.0,
        "history": "random",
        "spread": 12,
    },
    "seed 154, random traffic": {
        "seed": 154,
        "resolution_m": 3.0,
        "history": "random",
        "spread": 12,
    },
    "seed 103, yard 60-90 % full": {
        "seed": 103,
        "resolution_m": 0.5,
        "history": "dense",
        "spread": 12,
    },
    "seed 122, yard 60-90 % full": {
        "seed": 122,
        "resolution_m": 0.5,
        "history": "dense",
        "spread": 12,
    },
    "seed 125, yard 60-90 % full": {
        "seed": 125,
        "resolution_m": 0.5,
        "history": "dense",
        "spread": 12,
    },
    "seed 105, yard 60-90 % full": {
        "seed": 105,
        "resolution_m": 1.0,
        "history": "dense",
        "spread": 12,
    },
    "seed 121, yard 60-90 % full": {
        "seed": 121,
        "resolution_m": 1.0,
        "history": "dense",
        "spread": 12,
    },
    "seed 123, yard 60-90 % full": {
        "seed": 123,
        "resolution_m": 1.0,
        "history": "dense",
        "spread": 12,
    },
    "seed 126, yard 60-90 % full": {
        "seed": 126,
        "resolution_m": 3.0,
        "history": "dense",
        "spread": 12,
    },
}


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
        known, ``cloud_fraction`` when known, ``sun_elevation_deg`` (degrees)
        from the counts' coordinate, else from the truth, when either has it.
    """
    truth = _read_truth(truth)
    for col in ("time", "track_id", "railcars"):
        if col not in truth.columns:
            raise InputError(f"truth table lacks the column {col!r}")
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
    # the counts' own sun elevation (a coordinate) wins over the truth's column of that name
    if "sun_elevation_deg" in m.columns:
        out["sun_elevation_deg"] = m["sun_elevation_deg"].to_numpy(dtype=float)
    return out.sort_values(["time", "track_id"]).reset_index(drop=True)


def mask_visible_fraction(scenes, tracks, truth, *, step_m: float = 0.5) -> pd.DataFrame:
    """The usable-data mask's own visible share of each track, read at the true track.

    The best ``valid_fraction`` a count that trusts the mask can report: each
    track's centreline, sampled every ``step_m`` metres and moved by the
    scene's true georeferencing shift (the truth's ``shift_x_m`` and
    ``shift_y_m``), is looked up in the scene's ``<stem>.mask.tif`` (0 =
    clear). Where this share is itself far from the true visible share, the
    mask (blurred, noisy and offset, like a PlanetScope UDM) is what is wrong.
    For the simulator's sites, whose truth holds the shifts.

    Parameters
    ----------
    scenes : path
        The folder of scenes and their ``.mask.tif`` sidecars.
    tracks : path or GeoDataFrame
        Track centrelines with ``track_id``.
    truth : path or pandas.DataFrame
        The simulator's ``truth.csv`` (``time``, ``scene``, ``track_id``,
        ``shift_x_m``, ``shift_y_m``).
    step_m : float, default 0.5
        Spacing of the centreline samples (the truth's own is 0.5 m).

    Returns
    -------
    pandas.DataFrame
        ``time``, ``track_id``, ``mask_visible_fraction``, one row per row of
        the truth.

    Examples
    --------
    >>> import toolkit
    >>> from toolkit.validation import mask_visible_fraction
    >>> site = toolkit.simulate_site("/tmp/site", dates=["2023-09-04"])  # doctest: +SKIP
    >>> own = mask_visible_fraction(site.path / "scenes", site.tracks_path, site.truth_path)  # doctest: +SKIP
    >>> own["mask_visible_fraction"].between(0, 1).all()  # doctest: +SKIP
    True
    """
    import rasterio
    import shapely

    from toolkit.tracks import _name, read_tracks

    if not (isinstance(step_m, (int, float)) and not isinstance(step_m, bool) and step_m > 0):
        raise InputError(f"step_m: expected a positive number of metres, got {step_m!r}")
    truth = _read_truth(truth)
    need = {"time", "scene", "track_id", "shift_x_m", "shift_y_m"} - set(truth.columns)
    if need:
        raise InputError(f"truth table lacks the columns {sorted(need)} (a simulator's truth.csv)")
    folder = os.fspath(scenes)
    lines = read_tracks(tracks)
    samples_by_crs: dict = {}  # the centreline samples, once per CRS the masks use
    rows = []
    for scene, group in truth.groupby("scene", sort=False):
        stem = str(scene).rsplit(".", 1)[0]
        path = os.path.join(folder, stem + ".mask.tif")
        try:
            with rasterio.open(path) as src:
                mask, to_px, crs = src.read(1), ~src.transform, src.crs
        except rasterio.errors.RasterioIOError as err:
            raise InputError(f"{path}: cannot read the usable-data mask ({err})") from None
        if crs not in samples_by_crs:
            samples_by_crs[crs] = {
                tid: shapely.line_interpolate_point(line, np.arange(0.0, line.length, step_m))
                for tid, line in lines.to_crs(crs).geometry.items()  # indexed by track_id
            }
        samples = samples_by_crs[crs]
        for rec in group.itertuples():
            if rec.track_id not in samples:
                raise InputError(f"{_name(tracks)}: no track {rec.track_id!r} (in the truth)")
            pts = samples[rec.track_id]
            col, row = to_px * (
                shapely.get_x(pts) + rec.shift_x_m,
                shapely.get_y(pts) + rec.shift_y_m,
            )
            col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
            inside = (col >= 0) & (col < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
            clear = inside.copy()
            clear[inside] = mask[row[inside], col[inside]] == 0
            rows.append((rec.time, rec.track_id, float(clear.mean()) if clear.size else np.nan))
    return pd.DataFrame(rows, columns=["time", "track_id", "mask_visible_fraction"])


def _read_truth(truth) -> pd.DataFrame:
    if isinstance(truth, pd.DataFrame):
        out = truth.copy()
    else:
        path = os.fspath(truth)
        try:
            out = pd.read_csv(path, dtype={"track_id": str})
        except FileNotFoundError:
            raise InputError(f"{path}: truth file not found") from None
    if "time" in out.columns:
        out["time"] = pd.to_datetime(out["time"])
    if "track_id" in out.columns:
        out["track_id"] = out["track_id"].astype(str)
    return out


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
    mask_valid_fraction_within : float
        The same share for the usable-data mask's own visible fraction at the
        true tracks, where the table has :func:`mask_visible_fraction`'s
        column (NaN otherwise): how far trusting the mask can get.
    unread_scenes : int
        Scenes left out of the scene figures although cloud-free with at least
        ``min_cars`` true railcars, because their tracks were seen but not
        counted (``scene_readable`` False: a lone snow scene).
    unread_track_scenes : int
        Track-scenes seen (``valid_fraction`` above 0) but not counted, all
        scenes; left out of every figure above.
    track_mae_low_sun, track_mae_high_sun : float
        ``track_mae`` over the scenes with the sun below
        :data:`toolkit.occupancy.LOW_SUN_DEG` (45 degrees), and at or above it,
        where the table has ``sun_elevation_deg`` (NaN otherwise, or where no
        scene is on that side): railcars' shadows reach across the
        neighbouring track below it, and the counts are less sure.
    scene_mare_low_sun, scene_mare_high_sun : float
        ``scene_mare`` over the same two sets of scenes.
    scenes_low_sun, scenes_high_sun : int
        Scenes on each side, of those counted (0 without ``sun_elevation_deg``).
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
    mask_valid_fraction_within: float = float("nan")
    unread_scenes: int = 0
    unread_track_scenes: int = 0
    track_mae_low_sun: float = float("nan")
    track_mae_high_sun: float = float("nan")
    scene_mare_low_sun: float = float("nan")
    scene_mare_high_sun: float = float("nan")
    scenes_low_sun: int = 0
    scenes_high_sun: int = 0
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
                f"{self.valid_fraction_tolerance:g}"
                + (
                    f" (the usable-data mask itself, at the true tracks: "
                    f"{100 * self.mask_valid_fraction_within:.1f}%)"
                    if np.isfinite(self.mask_valid_fraction_within)
                    else ""
                ),
            ]
            + (
                [
                    f"  by sun elevation (below / at or above {_low_sun_deg():g} degrees): "
                    f"per track and scene MAE {self.track_mae_low_sun:.2f} / "
                    f"{self.track_mae_high_sun:.2f} railcars, scene MARE "
                    f"{_pct(self.scene_mare_low_sun)} / {_pct(self.scene_mare_high_sun)} "
                    f"({self.scenes_low_sun} / {self.scenes_high_sun} scenes)"
                ]
                if self.scenes_low_sun + self.scenes_high_sun
                else []
            )
            + (
                [
                    f"  seen but not counted (no empty-track reference fits, as in a lone "
                    f"snow scene): {self.unread_track_scenes} track-scenes; "
                    f"{self.unread_scenes} scene(s) left out of the scene totals above"
                ]
                if self.unread_track_scenes
                else []
            )
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
        With a ``mask_visible_fraction`` column (:func:`mask_visible_fraction`
        merged on ``time`` and ``track_id``), the mask's own share within it is
        reported too.
    """
    tol = valid_fraction_tolerance
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 < tol < 1:
        raise InputError(f"valid_fraction_tolerance: expected a number in (0, 1), got {tol!r}")
    t = table.dropna(subset=["estimate"])
    # seen but not counted: a scene no empty-track reference fits (scene_readable False)
    unread = table["estimate"].isna() & (table["valid_fraction"] > 0)
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
    missed = table[unread].groupby("time")
    missed_scenes = 0
    if unread.any():
        whole = table.groupby("time")
        true_all = whole["true"].sum()
        cloud_all = (
            whole["cloud_fraction"].max()
            if "cloud_fraction" in table.columns
            else pd.Series(0.0, index=true_all.index)
        )
        keys = list(missed.groups)
        missed_scenes = int(
            ((cloud_all[keys] <= max_cloud_fraction) & (true_all[keys] >= min_cars)).sum()
        )
    inside = (t["true"] >= t["low"]) & (t["true"] <= t["high"])
    by_sun = _by_sun(t, sel, rel)
    if "true_visible_fraction" in t.columns:
        vf_err = (table["valid_fraction"] - table["true_visible_fraction"]).abs().dropna()
    else:
        vf_err = pd.Series([np.nan])
    vf_within = (
        float((vf_err <= valid_fraction_tolerance).mean()) if vf_err.notna().any() else np.nan
    )
    mask_within = float("nan")
    if {"mask_visible_fraction", "true_visible_fraction"} <= set(table.columns):
        own = (table["mask_visible_fraction"] - table["true_visible_fraction"]).abs().dropna()
        if len(own):
            mask_within = float((own <= tol).mean())
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
        mask_valid_fraction_within=mask_within,
        unread_scenes=missed_scenes,
        unread_track_scenes=int(unread.sum()),
        **by_sun,
        table=scenes.reset_index(),
    )


def _low_sun_deg() -> float:
    from toolkit.occupancy import LOW_SUN_DEG

    return LOW_SUN_DEG


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if np.isfinite(x) else "n/a"


def _by_sun(t: pd.DataFrame, sel: pd.DataFrame, rel: pd.Series) -> dict:
    """:class:`CountAccuracy`'s figures below and at or above the low-sun elevation, from the
    counted track-scenes ``t``, the scored scenes ``sel`` and their relative errors ``rel``."""
    if "sun_elevation_deg" not in t.columns:
        return {}
    sun = t.groupby("time")["sun_elevation_deg"].first()
    out = {}
    for side, on_side in (("low", sun < _low_sun_deg()), ("high", sun >= _low_sun_deg())):
        times = sun.index[on_side.to_numpy()]
        err = t.loc[t["time"].isin(times), "error"].abs()
        scored = rel[sel.index.isin(times)]
        out[f"track_mae_{side}_sun"] = float(err.mean()) if len(err) else float("nan")
        out[f"scene_mare_{side}_sun"] = float(scored.abs().mean()) if len(scored) else float("nan")
        out[f"scenes_{side}_sun"] = int(len(times))
    return out


def simulate_evaluation_site(recipe, out_dir, *, overwrite: bool = False):
    """Simulate one evaluation site from its recipe (see :data:`HELD_OUT_SITES`).

    Parameters
    ----------
    recipe : str or mapping
        A name in :data:`HELD_OUT_SITES` or :data:`TUNING_SITES`, or a recipe:
        ``seed``, ``resolution_m``, optional ``history`` (default "tumangang"),
        and either ``last`` (the last so many acquisitions of the seed's
        five-year schedule) or ``spread`` (that many dates spread evenly over it).
    out_dir : path-like
        Folder the site is written to (see :func:`toolkit.simulate_site`).
    overwrite : bool, default False
        Replace an existing site there.

    Returns
    -------
    toolkit.synth.SiteInfo

    Examples
    --------
    >>> from toolkit.validation import simulate_evaluation_site
    >>> site = simulate_evaluation_site("seed 36", "work/seed36")  # doctest: +SKIP
    """
    from toolkit.synth import five_year_history, simulate_site

    rec = _recipe(recipe)
    times = list(five_year_history(seed=rec["seed"])["time"])
    if "last" in rec:
        dates = times[-int(rec["last"]) :]
    else:
        n = int(rec["spread"])
        dates = times[:: len(times) // n][:n]
    options = {"history": rec["history"]} if "history" in rec else {}
    return simulate_site(
        out_dir,
        resolution_m=float(rec["resolution_m"]),
        seed=int(rec["seed"]),
        dates=dates,
        overwrite=overwrite,
        **options,
    )


def evaluation_accuracy(
    sites=None, *, workdir, min_cars: int = 20, progress: bool = False
) -> pd.DataFrame:
    """Simulate evaluation sites, count them with the defaults and measure the accuracy.

    Each site is simulated afresh into ``workdir`` (the simulator is
    deterministic: the same recipe gives the same files), counted with
    :func:`toolkit.count_railcars` and its defaults, and compared
    with its truth (:func:`compare_with_truth`, :func:`accuracy`, with the
    usable-data mask's own visible share for comparison).

    Parameters
    ----------
    sites : mapping or sequence, optional
        Names in :data:`HELD_OUT_SITES` (default: all of them), or a mapping of
        name to recipe (see :func:`simulate_evaluation_site`; a recipe with
        ``path`` and ``resolution_m`` reads an existing site folder with
        ``scenes/``, ``tracks.geojson`` and ``truth.csv``, e.g. the sample).
    workdir : path-like
        Folder for the simulated sites (one sub-folder each).
    min_cars : int, default 20
        See :func:`accuracy`.
    progress : bool, default False
        Print one line per site as it is done.

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site``, ``pixel_m``, ``scenes``, ``scenes_scored``,
        ``scenes_unread``, ``scene_mare``, ``scene_bias``, ``track_mae``,
        ``coverage``, ``mean_interval_width``, ``valid_fraction_within``,
        ``mask_valid_fraction_within``, ``valid_fraction_mean_error``,
        ``valid_fraction_max_error``, then the same figures by sun elevation
        (``track_mae_low_sun``, ``track_mae_high_sun``, ``scene_mare_low_sun``,
        ``scene_mare_high_sun``, ``scenes_low_sun``, ``scenes_high_sun``; see
        :class:`CountAccuracy`); ``attrs["synthetic"]`` is True.

    Examples
    --------
    >>> from toolkit.validation import evaluation_accuracy, accuracy_markdown
    >>> table = evaluation_accuracy(workdir="work/eval")  # doctest: +SKIP
    >>> print(accuracy_markdown(table))  # doctest: +SKIP
    """
    from pathlib import Path

    from toolkit.cube import load_cube
    from toolkit.occupancy import count_railcars

    if sites is None:
        sites = dict(HELD_OUT_SITES)
    elif not isinstance(sites, dict):
        sites = {str(name): name for name in sites}  # each name is read as a recipe below
    rows = []
    for name, recipe in sites.items():
        rec = _recipe(recipe)
        if "path" in rec:  # an existing site folder (e.g. the default sample)
            folder = Path(rec["path"])
        else:
            folder = simulate_evaluation_site(
                rec, Path(workdir) / _folder_name(name), overwrite=True
            ).path
        scenes, tracks, truth = folder / "scenes", folder / "tracks.geojson", folder / "truth.csv"
        for need in (scenes, tracks, truth):
            if not need.exists():
                raise InputError(f"site {name!r}: {need} does not exist")
        counts = count_railcars(load_cube(scenes), tracks).compute()
        table = compare_with_truth(counts, truth)
        own = mask_visible_fraction(scenes, tracks, truth)
        table = table.merge(own, on=["time", "track_id"], how="left")
        acc = accuracy(table, min_cars=min_cars)
        rows.append(
            {
                "site": name,
                "pixel_m": float(rec["resolution_m"]),
                "scenes": int(counts.sizes["time"]),
                "scenes_scored": acc.n_scenes,
                "scenes_unread": int(
                    (~counts["scene_readable"].values).sum() if "scene_readable" in counts else 0
                ),
                **{fig: getattr(acc, fig) for fig in (*_FIGURES, *_SUN_FIGURES)},
            }
        )
        if progress:
            print(f"{name}: {acc.summary().splitlines()[1].strip()}", flush=True)
    out = pd.DataFrame(rows)
    out.attrs["synthetic"] = True
    out.attrs["min_cars"] = int(min_cars)
    return out


def accuracy_markdown(table: pd.DataFrame) -> str:
    """:func:`evaluation_accuracy`'s table as a Markdown table, labelled SYNTHETIC.

    Examples
    --------
    >>> import pandas as pd
    >>> row = dict(site="seed 36", pixel_m=3.0, scenes=14, scenes_scored=4, scenes_unread=0,
    ...            scene_mare=0.032, scene_bias=0.023, track_mae=0.35, coverage=0.957,
    ...            mean_interval_width=1.74, valid_fraction_within=0.943,
    ...            mask_valid_fraction_within=0.95, valid_fraction_mean_error=0.009,
    ...            valid_fraction_max_error=0.096)
    >>> last = accuracy_markdown(pd.DataFrame([row])).splitlines()[-1]
    >>> print(last.replace(" | ", " |\\n"))
    | seed 36 (SYNTHETIC) |
    3 m |
    14 (4 scored) |
    3.2 % |
    +2.3 % |
    0.350 |
    95.7 % |
    1.74 |
    94.3 % (mask 95.0 %) |
    0.009 / 0.096 |
    """
    need = {"site", "pixel_m", "scenes", "scenes_scored", "scenes_unread", *_FIGURES}
    _check_table(table, need)

    lines = [
        "| site | pixel | scenes | scene error (MARE) | bias | error per track and scene "
        "| truth within low/high | mean interval width | valid_fraction within 0.05 "
        "| valid_fraction error mean / max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples(index=False):
        scenes = f"{r.scenes} ({r.scenes_scored} scored"
        scenes += f", {r.scenes_unread} not counted)" if r.scenes_unread else ")"
        mask = (
            f" (mask {_md_pct(r.mask_valid_fraction_within)})"
            if np.isfinite(r.mask_valid_fraction_within)
            else ""
        )
        lines.append(
            f"| {r.site} (SYNTHETIC) | {r.pixel_m:g} m | {scenes} | {_md_pct(r.scene_mare)} "
            f"| {_md_pct(r.scene_bias, True)} | {r.track_mae:.3f} | {_md_pct(r.coverage)} "
            f"| {r.mean_interval_width:.2f} | {_md_pct(r.valid_fraction_within)}{mask} "
            f"| {r.valid_fraction_mean_error:.3f} / {r.valid_fraction_max_error:.3f} |"
        )
    return "\n".join(lines)


def accuracy_by_sun_markdown(table: pd.DataFrame) -> str:
    """:func:`evaluation_accuracy`'s figures below and at or above the low-sun elevation
    (:data:`toolkit.occupancy.LOW_SUN_DEG`) as a Markdown table, labelled SYNTHETIC.

    Examples
    --------
    >>> import pandas as pd
    >>> row = dict(site="seed 113", pixel_m=0.5, scenes=12, scenes_low_sun=5,
    ...            scenes_high_sun=7, track_mae_low_sun=2.1, track_mae_high_sun=0.52,
    ...            scene_mare_low_sun=0.031, scene_mare_high_sun=float("nan"))
    >>> print(accuracy_by_sun_markdown(pd.DataFrame([row])).splitlines()[-1])
    | seed 113 (SYNTHETIC) | 0.5 m | 5 / 7 | 2.100 / 0.520 | 3.1 % /  |
    """
    need = {"site", "pixel_m", *_SUN_FIGURES}
    _check_table(table, need)

    def num(x):
        return f"{x:.3f}" if np.isfinite(x) else ""

    lines = [
        f"| site | pixel | scenes, sun below / at or above {_low_sun_deg():g} degrees "
        "| error per track and scene | scene error (MARE) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.site} (SYNTHETIC) | {r.pixel_m:g} m | {r.scenes_low_sun} / {r.scenes_high_sun} "
            f"| {num(r.track_mae_low_sun)} / {num(r.track_mae_high_sun)} "
            f"| {_md_pct(r.scene_mare_low_sun)} / {_md_pct(r.scene_mare_high_sun)} |"
        )
    return "\n".join(lines)


def _check_table(table: pd.DataFrame, need: set) -> None:
    missing = sorted(need - set(table.columns))
    if missing:
        raise InputError(
            f"table: lacks the columns {missing}; expected toolkit.validation.evaluation_accuracy's"
        )


def _md_pct(x: float, signed: bool = False) -> str:
    """A share as a percentage for the Markdown tables; blank where it is not a number."""
    if not np.isfinite(x):
        return ""
    return f"{100 * x:+.1f} %" if signed else f"{100 * x:.1f} %"


#: The CountAccuracy figures evaluation_accuracy reports per site, in its columns' order.
_FIGURES = (
    "scene_mare",
    "scene_bias",
    "track_mae",
    "coverage",
    "mean_interval_width",
    "valid_fraction_within",
    "mask_valid_fraction_within",
    "valid_fraction_mean_error",
    "valid_fraction_max_error",
)
#: ... and by sun elevation, after them.
_SUN_FIGURES = (
    "track_mae_low_sun",
    "track_mae_high_sun",
    "scene_mare_low_sun",
    "scene_mare_high_sun",
    "scenes_low_sun",
    "scenes_high_sun",
)


def _recipe(recipe) -> dict:
    """A recipe mapping from a name in HELD_OUT_SITES or a mapping (checked)."""
    if isinstance(recipe, str):
        known = {**HELD_OUT_SITES, **TUNING_SITES}
        if recipe not in known:
            raise InputError(
                f"site {recipe!r}: not an evaluation site; expected one of HELD_OUT_SITES "
                f"{sorted(HELD_OUT_SITES)} or TUNING_SITES"
            )
        return dict(known[recipe])
    if not hasattr(recipe, "keys"):
        raise InputError(f"site recipe: expected a name or a mapping, got {type(recipe).__name__}")
    rec = dict(recipe)
    if "path" in rec and "resolution_m" in rec:
        return rec
    missing = [k for k in ("seed", "resolution_m") if k not in rec]
    if missing or ("last" in rec) == ("spread" in rec):
        raise InputError(
            f"site recipe {rec!r}: expected seed, resolution_m and one of last or spread"
        )
    return rec


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(name)).strip("_") or "site"
