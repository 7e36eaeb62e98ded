"""Railcar occupancy along tracks, and counts per track and date.

Method (see ``Notes`` of :func:`estimate_occupancy`):

1. Every sample of every track's strip (along by across the track) is
   compared with the *empty-track appearance* at its place, after a per-scene
   gain that is estimated from the positions judged free.
2. The empty-track appearance is the temporal median of free, lit samples in
   scenes of the same kind (snow scenes form their own group); where a place
   was rarely free, ballast read beside the track in the strip's margins is
   used instead, or the scenes that show the track's typical look there.
3. A sample that looks like ballast in a shadow (the scene's shadow factor,
   per band), or, in cloudy scenes, like ballast under thin haze or at a
   cloud shadow's edge, is not evidence of a car; in a busy scene, only where
   a car on the neighbouring track can shade this track's core.
4. The two halves of the strip's core (where a car body stands) are judged
   separately, the less deviant one counts, the result is smoothed along the
   track and compared with the scene's noise: occupied, free, or unknown
   (nodata, cloud, cloud shadow). Short gaps are closed, short runs dropped.
5. Occupied runs are split into cars at visible coupler gaps (strips sampled
   every 1 m or finer) and by length; low/high bounds from the shortest and
   longest plausible car lengths.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from toolkit._fast import (
    NANMEAN_AT_MAX,
    ballast_like_mode,
    ballast_share,
    band_mean_ratio,
    brighter_margin,
    car_cuts,
    divide_by_gains,
    masked_float32,
    masked_median_over_time,
    masked_median_per_offset,
    masked_ratio_median,
    masked_ratio_mode,
    nanmean_at,
    nanmedian_axis0,
    nanmedian_flat,
    running_median_rows,
    scene_distances,
    scene_medians_at,
    shadow_candidates,
    within_worker_threads,
)
from toolkit.errors import InputError

__all__ = [
    "estimate_occupancy",
    "counts_from_occupancy",
    "count_railcars",
    "counts_to_dataframe",
    "write_counts_csv",
    "car_outlines",
    "calibrate",
    "CalibrationResult",
    "CSV_COLUMNS",
    "KIND_CSV_COLUMNS",
    "FREE",
    "OCCUPIED",
    "UNKNOWN",
    "READINGS",
    "HIGH_ONLY_READINGS",
    "LOW_SUN_DEG",
    "save_counts_cache",
    "load_counts_cache",
    "source_fingerprint",
    "unsupported_tracks",
]

FREE, OCCUPIED, UNKNOWN = 0, 1, -1

#: The alternative readings of the evidence that :func:`estimate_occupancy` records
#: (``occupancy_readings``) and :func:`counts_from_occupancy` bounds the count with.
READINGS = (
    "strict",
    "lenient",
    "ballast_reference",
    "temporal_reference",
    "busy_noise",
    "shadows",
    "no_shadow",
)
#: The readings that only raise the count's high bound (the others bound it both ways,
#: except ``strict``, which only lowers the low bound).
HIGH_ONLY_READINGS = ("lenient", "busy_noise", "no_shadow")

#: Sun elevation (degrees) below which a 4 m railcar's shadow can reach 4 m or more beyond
#: its side, across the neighbouring track's centreline (4.5 m away): there dark cars and
#: ballast in a neighbour's shadow look alike, and the counts are less sure. On the
#: SYNTHETIC tuning sites' busy yards at 0.5-1 m pixels, in cloud-free scenes, the error
#: per track and scene is 1.85 (full yards) and 2.19 (random traffic) railcars below it,
#: 0.73 and 0.60 at or above it (1.90, 2.21, 1.15 and 0.64 before a busy scene kept the
#: shadow explanation beside a lit far margin, see _FAR_LIT).
LOW_SUN_DEG = 45.0

_SUN_ELEVATION_ATTRS = {
    "long_name": "sun elevation at acquisition",
    "units": "degree",
    "description": "computed from the acquisition time and the tracks' place (NaN where "
    "it cannot be placed, or 5 degrees or lower); below toolkit.occupancy.LOW_SUN_DEG "
    f"({LOW_SUN_DEG:g}) a railcar's shadow can reach across the neighbouring track and "
    "the counts are less sure",
}

#: Columns of the ``toolkit count`` CSV, in order (the contract in DESIGN.md).
CSV_COLUMNS = (
    "time",
    "track_id",
    "railcars",
    "railcars_low",
    "railcars_high",
    "occupied_m",
    "occupancy",
    "valid_fraction",
)
#: Railcars per kind, after the contract's columns when the counts hold them (``toolkit
#: count --kinds``): the kinds of ``toolkit.kinds.KINDS``, then "unknown" (kind not told)
#: and "other" (detections the kind model reads as no railcar, not in the per-kind sum).
KIND_CSV_COLUMNS = tuple(
    f"railcars_{k}" for k in ("box", "tank", "ore", "flat", "locomotive", "unknown", "other")
)


def estimate_occupancy(
    strips: xr.Dataset,
    *,
    core_half_width_m: float = 1.1,
    threshold: float = 5.0,
    smooth_m: float = 1.5,
    min_run_m: float = 6.0,
    max_gap_m: float = 2.5,
    shadows: bool = True,
    own_shadows: bool = True,
    light_changes: bool = True,
    cloud_margin_m: float = 25.0,
    ballast_like_mode: bool | None = None,
    neighbour_bleed: bool | None = None,
) -> xr.Dataset:
    """Classify every position along every track and date as occupied, free or unknown.

    Parameters
    ----------
    strips : xarray.Dataset
        From :func:`toolkit.track_strips`.
    core_half_width_m : float, default 1.1
        Half-width of the band around the centreline where a car body is
        looked for; car bodies are 3.2-3.4 m wide. Its two halves are judged
        separately and the less deviant one counts, so a shadow edge or glint
        on one side is not a car.
    threshold : float, default 5.0
        A position is occupied when its colour distance to the empty-track
        reference exceeds ``threshold`` times the scene's noise (sigma).
    smooth_m : float, default 1.5
        Length of the running median applied along the track to the colour
        distance before thresholding: ballast texture and rail glints are
        shorter, car bodies (12-20 m) much longer.
    min_run_m : float, default 6.0
        Occupied runs shorter than this are dropped (no railcar is shorter
        than 12 m; half of one may be visible at a cloud edge).
    max_gap_m : float, default 2.5
        Free gaps shorter than this between occupied runs are closed (coupler
        gaps are about 1 m).
    shadows : bool, default True
        Explain dark, colour-neutral pixels as ballast in a shadow (a railcar on
        the neighbouring track casts one across this track when the sun is low)
        rather than as a railcar. Not in a busy scene where a railcar's shadow
        reaches less than 3.95 m across the track beyond its side, less half
        a pixel for the blur of its edge: there no car on the nearest
        neighbouring track (4.5 m away) can shade the whole core, and the dark
        samples are dark cars (empty ore wagons, tank cars), which in a busy
        yard are many. Nor in a busy scene where the neighbouring track towards
        the sun is seen free where a car on it would cast the shadow. In both,
        the explanation stays where the sun is low enough for a railcar here to
        shade the strip margin away from it (a 4 m car's shadow reaching 2 m
        or more beyond its side) and that margin reads at least 0.95 of the
        empty track's light within 4 m either way along: nothing tall stands
        there. A scene
        is busy where at least 30 % of its known track is occupied in a first
        reading, with the shadow explanation everywhere or with it only where a
        neighbour's car can shade the core. The sun is placed from the
        scene's time and the tracks' place, with or without ``own_shadows``;
        where it cannot be (no time, no sample coordinates or CRS), the
        explanation applies everywhere.
    own_shadows : bool, default True
        Use the shadow a railcar casts beside itself as evidence: where the
        strip margin away from the sun is in shadow while the margin towards
        the sun is lit, or while the sun stands too high for a railcar on the
        neighbouring track to shade it (its shadow reaches less than 5.35 m
        across), something stands on the track (in shadow: under 0.75 of the
        empty track's light, under 0.85 at pixels of 0.6-1.5 m, which see a
        low car's 1-2 m wide shadow only in part), so a position that
        differs from the empty track by at least 1.5 noise units (2 at
        pixels coarser than 1.5 m) counts as
        occupied even below ``threshold`` (grey cars, tarps and open wagons
        can look like ballast from above). The same cue finds railcars parked
        in most scenes, which enter the temporal reference with their shadow:
        where, over at least a railcar's length (11 m), a scene's margin away
        from the sun is more than 1/0.75 times as bright as the reference's
        while the margin towards the sun matches it, and at least half of
        that stretch deviates, the scene shows the empty track, and the
        median of such scenes becomes the reference there. With this option
        the blurred edge of a neighbour's shadow crossing the core (the
        margin towards the sun shaded, the one away from it not) is
        explained as a blend of the shaded and the lit empty track. The sun's
        position is computed from each scene's time and the site's location;
        scenes with the sun too high or along the track are judged without
        it.
    light_changes : bool, default True
        Explain a core that is brighter or darker than the empty track by
        the same factor as both strip margins (each 0.85-1.5 times the empty
        track, the factor interpolated across the strip) as the empty track
        under a smooth change of light: thin haze or the soft edge of a
        cloud's shadow that the usable-data mask misses, or, at coarse
        pixels, a car on the neighbouring track blurred into the strip. A car
        on this track changes the core and shades at most one margin. At
        pixels coarser than 2 m, also where the margin towards the sun is the
        darker one and at least half as bright as the empty track (a
        neighbouring track's cars and their shadow), in scenes less than 30 %
        busy without this part. The noise level is measured without this
        explanation.
    cloud_margin_m : float, default 25.0
        Within this distance along the track of masked pixels (cloud, cloud
        shadow, nodata), the threshold is tripled: usable-data masks miss the
        thin haze at cloud edges, which brightens the ballast. Not in a scene
        at least 30 % occupied away from such pixels (but in its readings other
        than ``lenient``, which bound the count): the haze dims the railcars
        there as well, and most read free.
    ballast_like_mode : bool, optional
        Where a place's appearance over the scenes falls into two modes (empty
        and a car parked in most of them), take the empty track from the mode
        nearer the ballast beside the track, not from the majority, when that
        mode holds at least three scenes and its centre is less than half as
        far from the ballast as the temporal median is, and where the last
        pass judged at least half of the scenes that show the place free (the
        few left where most were judged occupied may share a car's look). The
        same option
        handles a car parked in every scene: where the temporal median is far
        from the track's typical look (its median along the track), and the
        ballast beside the track is less than half as far from it, the
        ballast is the empty track. And where the reference's core is far
        from the track's typical look (more than 12 % off in a band: the median
        over time took a car's colour, in a yard seldom empty), it is taken from
        the scenes that show the typical look there, if any. None of these is
        looked for among snow scenes,
        where snow on roofs and on the bed makes a parked car and the empty
        track look alike and patchy snow splits a place's looks into modes.
        At pixels coarser than 1 m, where the strip mixes in the neighbouring
        tracks and one scene's odd light can look like the empty bed, the
        other mode or look is taken only where its scenes are one stretch of
        time (a cut that came and left: at most two changes between the looks
        in time order), and the typical look only from two scenes or more.
        Default: on.
    neighbour_bleed : bool, optional
        At coarse pixels a car on the neighbouring track (4.5-5.5 m away)
        blurs into this track's strip. With this option a position whose
        deviation is under twice the threshold, while the nearest position on
        another track within 6.5 m deviates more than twice as much, is judged
        free (the neighbour's car seen through the blur). The lenient reading
        of the interval keeps such positions, so the high bound still counts
        them. Default: on at pixels coarser than 2 m, where it lowered the
        error per track and scene on every synthetic 3 m site tried.

    Returns
    -------
    xarray.Dataset
        In time order, whatever the order of ``strips`` (the rules for cars
        parked over a stretch of time read the scenes in that order).
        ``occupancy (time, track, along)`` int8: 1 occupied, 0 free, -1
        unknown (or past the track's end); ``deviation (time, track, along)``
        float32, the distance to the reference in noise units;
        ``reference (track, along, across, band)`` the empty-track appearance
        used (for the largest group of similar scenes);
        ``occupancy_readings (reading, time, track, along)`` the occupancy
        under alternative readings of the same evidence (:data:`READINGS`):
        ``strict`` asks for 1.4 times the threshold, ``lenient`` for 0.8
        times (neither it nor the estimate's is raised near a mask's edge in a
        scene at least 30 % occupied away from such edges),
        ``ballast_reference`` compares with the ballast beside the
        track instead of the temporal reference (a car parked in most scenes
        enters the temporal reference), ``temporal_reference`` with the plain
        temporal median, as if no rule for parked cars had replaced it,
        ``busy_noise`` with half the noise sigma in a busy scene (where the
        positions judged free may still hold cars, see below; elsewhere the
        same as the estimate), ``shadows`` with the shadow explanation
        everywhere (where a busy scene's estimate does without it, see
        ``shadows``), ``no_shadow`` without it anywhere in a busy scene (dark
        cars there look like ballast in the shadows of the cars beside them;
        elsewhere the same as the estimate). Their counts bound the count in
        :func:`counts_from_occupancy`. ``ballast_share (time, track, along)``
        float32, the share of the empty track's look in each position's colour
        against the colours of the cars beside it (about 0 on a car body, up to
        1 in a coupler gap; :func:`toolkit._fast.ballast_share`), where
        :func:`counts_from_occupancy` cuts runs into cars.
        ``margin_brightness_ratio (time)`` float32, each scene's brightness
        beside the tracks (the 90th percentile of its known samples in the
        strip margins, away from masked positions) over the median of the
        scenes that look like it (its appearance group, or all scenes where
        that group has fewer than five), and ``scene_readable (time)`` bool,
        False where that ratio exceeds 1.4, or 1.25 in a scene with nothing
        masked along its tracks (no haze beyond a cloud mask's edge to
        brighten the ballast; so in every scene of a cube loaded without
        usable-data masks, where a hazy scene that bright is not counted
        either): a lone snow scene, whose empty track under snow looks like
        no other scene's, so no reference can be learned for it (on the
        synthetic tuning sites two busy ones read 114 of 219 and 69 of 267
        railcars, a quiet one 24 of 9; cloud-free ones at 1.27-1.34 read
        35-66 % of their railcars in busy yards). Its occupancy is kept for
        inspection; :func:`counts_from_occupancy` leaves its counts out.
        A group of five or more snow scenes has a reference of its own.
        ``snow_scene (time)`` bool: the scenes read with the snow scenes (set
        apart as brighter by the scenes' medians and by the ballast beside the
        tracks; twice the threshold). ``reference_support (track)`` float32:
        per track, the median over its places of the share of the scenes that
        show a place whose core colour is within 5 % of the empty-track
        reference's there (every band). Low where the track is seldom seen
        empty and the reference may be a car's look: at pixels coarser than
        2 m, under 0.5, :func:`counts_from_occupancy` raises the high bound to
        every railcar that fits (synthetic 3 m yards of that kind read 48-89 %
        under). Coordinate ``sun_elevation_deg (time)``: the sun's elevation
        at acquisition (degrees), computed from the time and the tracks' place
        (NaN where it cannot be placed, or 5 degrees or lower). Below
        ``LOW_SUN_DEG`` (45) a 4 m railcar's shadow can reach across the
        neighbouring track, dark cars and shaded ballast look alike, and the
        counts are less sure (see :data:`LOW_SUN_DEG`).
        attrs record the method and parameters (and ``pixel_size_m``).

    Notes
    -----
    Temporal-median background per appearance group (snow scenes apart: set
    apart by the scenes' medians and by the ballast beside the track), with
    ballast from the strip margins where a place is rarely free and, at 1 m or
    finer, the ballast-like one of two appearance modes where a car stood in
    most scenes, the scenes that show the track's typical look where the
    median took a car's colour, and the scenes whose own-shadow margin has
    lifted where a car stood in all others; shadow (in a busy scene, none where
    no neighbour's car can shade the core, and none in the own-shadow test where
    a car's own shadow lies beside the track), haze, cloud-shadow and smooth
    light-change explanations; per-scene gains and noise from the free positions,
    re-estimated twice (in a busy scene, where the positions judged free still
    hold cars, the noise from the lowest tenth of all positions, see
    ``_core_deviation``, and the gains from the most common brightness of all
    known samples against the empty track where the free positions' median
    disagrees with it by more than 4 %, with a third pass where that moved a
    gain in use). The error against the
    simulator's truth is asserted in ``tests/test_occupancy.py``; the method
    needs a series of scenes (the reference comes from them) and is weakest
    for yards that are full on every date, at 3 m pixels and in snow.

    Examples
    --------
    >>> import toolkit
    >>> occ = toolkit.estimate_occupancy(strips)  # doctest: +SKIP
    """
    _check_strips(strips)
    if np.issubdtype(strips["time"].dtype, np.datetime64) and not bool(
        strips.indexes["time"].is_monotonic_increasing
    ):
        strips = strips.sortby("time")
    step = float(strips.attrs["step_m"])
    core = np.abs(strips["across_m"]) <= core_half_width_m
    if not bool(core.any()):
        raise InputError(
            f"core_half_width_m={core_half_width_m} selects no across-track samples "
            f"(strip half-width {strips.attrs.get('half_width_m')} m, step {step} m)"
        )
    dims = ["time", "track", "along"]
    pixel_m = float(strips.attrs.get("pixel_size_m", step))
    if ballast_like_mode is None:
        modes = True
    elif isinstance(ballast_like_mode, (bool, np.bool_)):
        modes = bool(ballast_like_mode)
    else:
        raise InputError(
            f"ballast_like_mode: expected True, False or None, got {ballast_like_mode!r}"
        )
    if neighbour_bleed is None:
        bleed = pixel_m > 2.0
    elif isinstance(neighbour_bleed, (bool, np.bool_)):
        bleed = bool(neighbour_bleed)
    else:
        raise InputError(f"neighbour_bleed: expected True, False or None, got {neighbour_bleed!r}")
    sun = _sun_reach(strips)
    side = _shadow_sides(strips, enabled=False) if sun is None or not own_shadows else sun[0]
    # where no car on a neighbouring track can shade the core (a busy scene explains no
    # sample as a shadow there); nowhere in a scene whose sun cannot be placed
    if sun is None:
        unshadeable = xr.zeros_like(side, dtype=bool)
    else:
        cover_m = _NEIGHBOUR_COVER_M - _COVER_BLUR_PX * pixel_m
        unshadeable = (np.abs(sun[0]) < cover_m) & sun[1]
    raw, dev, ref, raw_readings, share, brightness, snow, lone, support = xr.apply_ufunc(
        _classify,
        strips["value"],
        strips["valid"] & strips["on_track"],
        strips["on_track"],
        side,
        unshadeable,
        input_core_dims=[
            [*dims, "across", "band"],
            [*dims, "across"],
            ["track", "along"],
            dims,
            dims,
        ],
        output_core_dims=[
            dims,
            dims,
            ["track", "along", "across", "band"],
            ["reading", *dims],
            dims,
            ["time"],
            ["time"],
            ["time"],
            ["track"],
        ],
        kwargs={
            "threshold": float(threshold),
            "smooth": max(int(round(smooth_m / step)) | 1, 1),
            "core": np.asarray(core.values, bool),
            "margin": np.asarray(
                np.abs(strips["across_m"].values) >= max(core_half_width_m + 0.5, 1.9), bool
            ),
            "shadows": bool(shadows),
            "own_shadows": bool(own_shadows),
            "light_changes": bool(light_changes),
            "margin_px": int(round(cloud_margin_m / step)),
            "modes": modes,
            "coarse_modes": pixel_m > _COARSE_MODES_PIXEL_M,
            "neighbours": _neighbour_positions(strips) if bleed else None,
            "sun_side_light": _SUN_SIDE_LIGHT_LO if bleed else None,
            "shortest_car_samples": max(int(round(_SHORTEST_CAR_M / step)), 1),
            "own_dark": _own_shadow_dark(pixel_m),
            "own_min_dev": _own_shadow_min_dev(pixel_m),
            "haze_light": _HAZE_LIGHT if pixel_m <= _HAZE_LIGHT_MAX_PIXEL_M else None,
            "share_window": max(int(round(_GAP_CAR_WINDOW_M / step)), 2),
            "clean_gap": int(round(max_gap_m / step)),
            "clean_run": int(round(min_run_m / step)),
            "along_step_m": float(step),
            "casters": _caster_geometry(strips, sun),
        },
        dask="parallelized",
        output_dtypes=[
            "int8",
            "float32",
            "float32",
            "int8",
            "float32",
            "float32",
            "bool",
            "bool",
            "float32",
        ],
        dask_gufunc_kwargs={"allow_rechunk": True, "output_sizes": {"reading": len(READINGS)}},
    )

    def clean(o):
        return _cleaned(
            o, max_gap=int(round(max_gap_m / step)), min_run=int(round(min_run_m / step))
        )

    out = xr.Dataset(
        {
            "occupancy": clean(raw),
            "deviation": dev,
            "reference": ref.astype("float32"),
            "occupancy_readings": clean(raw_readings).assign_coords(reading=list(READINGS)),
            "ballast_share": share,
            "margin_brightness_ratio": brightness,
            # a lone snow scene (see _lone_snow): its counts are left out
            "scene_readable": ~lone,
            "snow_scene": snow,
            "reference_support": support,
        },
        coords={k: strips.coords[k] for k in ("on_track", "length_m") if k in strips.coords},
    )
    elevation = np.full(strips.sizes["time"], np.nan) if sun is None else sun[2][1]
    out = out.assign_coords(sun_elevation_deg=("time", np.round(elevation, 2)))
    out["sun_elevation_deg"].attrs.update(_SUN_ELEVATION_ATTRS)
    out["occupancy"].attrs.update(
        {
            "long_name": "track occupancy",
            "flag_values": [-1, 0, 1],
            "flag_meanings": "unknown free occupied",
        }
    )
    out["deviation"].attrs.update(
        {"long_name": "colour distance to the empty-track reference", "units": "noise units"}
    )
    out["occupancy_readings"].attrs.update(
        {
            "long_name": "track occupancy under alternative readings of the evidence",
            "flag_values": [-1, 0, 1],
            "flag_meanings": "unknown free occupied",
            "description": f"strict: threshold x {_STRICT_FACTOR}; lenient: threshold x "
            f"{_LENIENT_FACTOR}, not raised near masked positions in a scene at least "
            f"{_BUSY_SHARE:.0%} occupied away from them (nor is the estimate's); "
            "ballast_reference: the ballast beside the track as the empty track; "
            "temporal_reference: the plain temporal median as the empty track; "
            f"busy_noise: a busy scene's noise sigma x {_BUSY_NOISE_FACTOR}; "
            "shadows: the shadow explanation everywhere; no_shadow: no sample explained "
            f"as ballast in a shadow, in scenes with at least {_BUSY_SHARE:.0%} of the known "
            "positions occupied. They bound the count (counts_from_occupancy).",
        }
    )
    out["ballast_share"].attrs.update(
        {
            "long_name": "share of the empty track's look against the cars' colours beside it",
            "units": "1",
            "description": "about 0 on a car body, up to 1 where the ballast shows through "
            "a coupler gap; counts_from_occupancy cuts runs into cars with it",
        }
    )
    out["margin_brightness_ratio"].attrs.update(
        {
            "long_name": "brightness beside the tracks against the scene's appearance group",
            "units": "1",
            "description": "90th percentile of the known samples in the strip margins, "
            "away from masked positions, over the median of the scenes that look alike; "
            "NaN where too few samples or scenes tell",
        }
    )
    out["scene_readable"].attrs.update(
        {
            "long_name": "scene can be read against an empty-track reference",
            "description": "False for a scene more than "
            f"{_LONE_BRIGHT_RATIO} times as bright beside the tracks as the other scenes "
            f"that look like it (margin_brightness_ratio), or {_LONE_BRIGHT_RATIO_CLEAR} "
            "times with nothing masked along its tracks: a lone snow scene, whose empty "
            "track looks like no other scene's. Its occupancy is kept for inspection; "
            "counts_from_occupancy leaves its counts out (NaN).",
        }
    )
    out["reference_support"].attrs.update(
        {
            "long_name": "share of the scenes showing the empty-track reference",
            "units": "1",
            "description": "per track, the median over its places of the share of the "
            "scenes showing a place (lone snow scenes left out) whose core colour is "
            f"within {_SUPPORT_TOL:.0%} of the empty-track reference there, in every band "
            f"(places shown in fewer than {_SUPPORT_MIN_SCENES} scenes left out). Low on a "
            "track that is seldom seen empty: its reference may be a car's look. Where "
            f"it is under {_SUPPORT_MIN} at pixels coarser than {_SUPPORT_PIXEL_M:g} m, "
            "counts_from_occupancy raises the high bound to the railcars that fit on "
            "the visible track",
        }
    )
    out["snow_scene"].attrs.update(
        {
            "long_name": "scene read with the snow scenes",
            "description": "the scenes' medians and the ballast beside the tracks both set "
            "it apart as brighter (_snow_groups): read against the snow scenes' own "
            "empty-track reference (the ballast beside the track where they are fewer "
            "than five) with twice the threshold",
        }
    )
    out.attrs.update(
        {
            "method": "temporal-median background, robust per-scene noise, run cleaning",
            "core_half_width_m": core_half_width_m,
            "threshold": threshold,
            "smooth_m": smooth_m,
            "min_run_m": min_run_m,
            "max_gap_m": max_gap_m,
            "cloud_margin_m": float(cloud_margin_m),
            "own_shadows": int(bool(own_shadows)),
            "light_changes": int(bool(light_changes)),
            "ballast_like_mode": int(modes),
            "neighbour_bleed": int(bleed),
            "step_m": step,
            "pixel_size_m": pixel_m,
            "toolkit_version": _version(),
        }
    )
    return out


def unsupported_tracks(counts: xr.Dataset) -> list[str]:
    """The tracks whose count's high bound is every railcar that fits on them.

    At pixels coarser than 2 m, a track whose empty-track reference few scenes
    show (``reference_support`` under 0.5: seldom seen empty) can be counted far
    too low, and :func:`counts_from_occupancy` says so with its high bound.

    Parameters
    ----------
    counts : xarray.Dataset
        From :func:`count_railcars` or :func:`counts_from_occupancy` (or the
        occupancy itself).

    Returns
    -------
    list of str
        Their ``track`` ids, in the order of the counts; empty where none, at
        2 m or finer pixels, or for counts made before the support was kept.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> counts = xr.Dataset(
    ...     {"reference_support": ("track", np.array([0.1, 0.8], "float32"))},
    ...     coords={"track": ["01", "02"]},
    ...     attrs={"pixel_size_m": 3.0},
    ... )
    >>> unsupported_tracks(counts)
    ['01']
    """
    weak = _unsupported_tracks(counts)
    if weak is None:
        return []
    return [str(k) for k in counts["track"].values[np.asarray(weak.values, bool)]]


def _unsupported_tracks(occupancy: xr.Dataset) -> xr.DataArray | None:
    """The tracks whose empty-track reference has too little support to bound their count
    from above (``reference_support`` under ``_SUPPORT_MIN``, at pixels coarser than
    ``_SUPPORT_PIXEL_M``), bool (track); None where the occupancy cannot tell (finer pixels,
    or saved before either was kept)."""
    pixel_m = occupancy.attrs.get("pixel_size_m")
    if "reference_support" not in occupancy or pixel_m is None:
        return None
    if not float(pixel_m) > _SUPPORT_PIXEL_M:
        return None
    return occupancy["reference_support"] < _SUPPORT_MIN


def counts_from_occupancy(
    occupancy: xr.Dataset,
    *,
    car_length_m: float = 15.2,
    car_length_range_m: tuple[float, float] = (12.5, 19.5),
) -> xr.Dataset:
    """Railcar counts per track and date from occupied runs.

    Parameters
    ----------
    occupancy : xarray.Dataset
        From :func:`estimate_occupancy`.
    car_length_m : float, default 15.2
        Mean over-coupler length of a railcar, metres (mixed freight: box
        15-17 m, tank 12-18 m, ore 13-14 m, flat 13-19 m).
    car_length_range_m : (float, float), default (12.5, 19.5)
        Shortest and longest plausible mean car length within one run; they
        give the low/high bounds, which are widened to hold the counts under
        the alternative readings of the evidence when the occupancy has them
        (``occupancy_readings`` of :func:`estimate_occupancy`): a stricter
        threshold (low), a more lenient one, half the noise and, in a busy
        scene, no shadow explanation (high), the ballast beside the track, the
        plain temporal median as the empty track and the shadow explanation
        everywhere (either way).
        The low bound also leaves out occupied runs shorter than any railcar
        (11 m): a car cut by a cloud edge, a glint or a shadow. At pixels
        coarser than 2 m, on a track whose ``reference_support`` is under 0.5
        (seldom seen empty: the count can be far too low), the high bound is
        ``ceil(visible_m / car_length_range_m[0])``, every railcar that fits.
        In a busy scene (30 % or more of the visible track occupied), each edge
        of a hidden stretch (unknown samples on the track: cloud, cloud shadow,
        nodata) adds one railcar to the high bound, one for both edges of a
        stretch shorter than ``car_length_range_m[0]``: a railcar the edge cuts
        counts when its centre is visible, and near the edge it is mostly read
        as free. The high bound also counts the railcars of
        ``car_length_range_m[1]`` that would fill the visible positions read
        free within the occupancy's ``cloud_margin_m`` of such a stretch (thin
        haze there dims the cars as the raised threshold asks for more).
        Occupancies without the ``on_track`` coordinate skip this.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, track)``: ``railcars`` (best estimate for the visible
        part; NaN where nothing of the track is visible), ``railcars_low``,
        ``railcars_high``, ``occupied_m`` (m), ``occupancy`` (0-1, share of the
        visible length that is occupied), ``valid_fraction`` (0-1, share of
        the track that is visible), ``visible_m`` (m), and ``scene_readable``
        (time) when the occupancy has it: in a scene the occupancy could not
        read (a lone snow scene, see :func:`estimate_occupancy`) the counts,
        bounds, occupied length and occupancy are NaN while ``valid_fraction``
        still says how much of the track was visible. ``snow_scene (time)`` is
        carried over from the occupancy when it has it, and so are
        ``reference_support (track)`` and the coordinate ``sun_elevation_deg
        (time)``.

    Notes
    -----
    Runs are split into railcars at coupler gaps where the strips resolve them
    (sampled at 1 m or finer). A run with free track on both sides and at
    least two cars long is cut where the occupancy's ``ballast_share`` shows
    the ballast through the gaps, every piece one car of 11.5-21.5 m and the
    pieces' lengths near ``car_length_m`` (the most likely split, by dynamic
    programming); other runs at narrow dips of the deviation, then by length.
    An occupancy without ``ballast_share`` (saved before it was kept) is cut
    the second way throughout.

    In strips sampled at 1 m or finer, on a track that shows no railcar-long
    run in a scene (a quiet track), an occupied run shorter than any railcar,
    with free track on both sides and a deviation peaking above twice the
    occupancy threshold, is left out of the estimate (it stays inside the
    interval): on the tuning sites such runs were false in most cases, a
    strong short stretch recurring in empty scenes where a parked car's look
    entered part of the empty-track reference. On busy tracks they are mostly
    cars seen in part and are counted.
    """
    lo_len, hi_len = car_length_range_m
    if not (0 < lo_len <= car_length_m <= hi_len):
        raise InputError(
            f"car lengths must satisfy 0 < low <= car_length_m <= high; got {car_length_range_m} "
            f"and {car_length_m}"
        )
    step = float(occupancy.attrs["step_m"])
    occ = occupancy["occupancy"]

    evidence = [occupancy["deviation"]]
    if "ballast_share" in occupancy:  # occupancies saved before it was kept lack it
        evidence.append(occupancy["ballast_share"])

    def count(o, doubt_dev=None):
        return xr.apply_ufunc(
            _count_runs,
            o,
            *evidence,
            input_core_dims=[["along"]] * (1 + len(evidence)),
            output_core_dims=[["stat"]],
            kwargs={
                **_run_counting(occupancy, car_length_m, car_length_range_m),
                "doubt_dev": doubt_dev,
            },
            dask="parallelized",
            output_dtypes=["float64"],
            dask_gufunc_kwargs={"output_sizes": {"stat": 6}},
        )

    res = count(occ, _doubt_dev(occupancy))
    low, high = res.isel(stat=1), res.isel(stat=2)
    # a run shorter than any railcar (a partial car at a cloud edge, a glint, a shadow) is a
    # doubtful car: the low bound leaves such runs out
    whole = _cleaned(occ, max_gap=0, min_run=int(round(_SHORTEST_CAR_M / step)))
    low = np.fmin(low, count(whole).isel(stat=0))
    if "occupancy_readings" in occupancy:
        # the count under the alternative readings of the evidence widens the bounds
        # (each read with both ways of cutting runs into cars: at the most likely gaps
        # and at the dips of the deviation alone)
        alt = count(occupancy["occupancy_readings"])
        for r in alt["reading"].values:  # strict: fewer cars only; HIGH_ONLY_READINGS: more
            n_r = alt.sel(reading=r, drop=True)
            n_r = [n_r.isel(stat=0), n_r.isel(stat=5)]
            if r not in HIGH_ONLY_READINGS:
                low = np.fmin(low, np.fmin(*n_r))
            if r != "strict":
                high = np.fmax(high, np.fmax(*n_r))
    edge_rule = "on_track" in occupancy.coords
    if edge_rule:
        # in a busy scene, railcars cut by the edges of hidden stretches, read as free near
        # them (see _edge_cars)
        busy_scene = (occ == OCCUPIED).sum(("track", "along")) >= _BUSY_SHARE * (
            occ != UNKNOWN
        ).sum(("track", "along"))
        edges = xr.apply_ufunc(
            _edge_cars,
            occ,
            occupancy["on_track"],
            input_core_dims=[["along"], ["along"]],
            kwargs={"short": int(round(lo_len / step))},
            dask="parallelized",
            output_dtypes=["float64"],
        )
        high = high + edges.where(busy_scene, 0)
        if "cloud_margin_m" in occupancy.attrs:
            # ... and the railcars that would fill the stretches read free near those edges
            # (see _near_edge_free)
            near_free = xr.apply_ufunc(
                _near_edge_free,
                occ,
                occupancy["on_track"],
                input_core_dims=[["along"], ["along"]],
                kwargs={"margin": int(round(float(occupancy.attrs["cloud_margin_m"]) / step))},
                dask="parallelized",
                output_dtypes=["float64"],
            )
            high = high + np.floor(near_free * step / hi_len).where(busy_scene, 0)
    length = occupancy["length_m"] if "length_m" in occupancy.coords else None
    visible_m = res.isel(stat=4)
    unsupported = _unsupported_tracks(occupancy)
    if unsupported is not None:
        # a track seldom seen empty, at pixels too coarse for shadows and coupler gaps: its
        # reference may be a car's look, and the count can be far too low (see
        # _SUPPORT_MIN); the high bound is every railcar that fits on the visible track
        fits = np.ceil(visible_m / lo_len)
        high = high.where(~((visible_m > 0) & unsupported), np.fmax(high, fits))
    if length is None:
        length = occupancy["on_track"].sum("along") * step
    valid_fraction = (visible_m / length).clip(0, 1)
    seen = visible_m > 0
    # a scene no empty-track reference fits (a lone snow scene) is seen but not counted
    readable = occupancy["scene_readable"] if "scene_readable" in occupancy else None
    counted = seen if readable is None else seen & readable
    ds = xr.Dataset(
        {
            "railcars": res.isel(stat=0).where(counted),
            "railcars_low": low.where(counted),
            "railcars_high": high.where(counted),
            "occupied_m": res.isel(stat=3).where(counted),
            "occupancy": (res.isel(stat=3) / visible_m.where(counted)).clip(0, 1),
            "valid_fraction": valid_fraction,
            "visible_m": visible_m,
        }
    ).drop_vars("stat", errors="ignore")
    if readable is not None:
        ds["scene_readable"] = readable
    if "snow_scene" in occupancy:
        ds["snow_scene"] = occupancy["snow_scene"]
    if "sun_elevation_deg" in occupancy.coords:
        ds = ds.assign_coords(sun_elevation_deg=occupancy["sun_elevation_deg"])
    if "reference_support" in occupancy:
        # a copy, not the occupancy's array itself: dask (2026.8) dropped that array's
        # task from the graph of ``dask.compute(counts)`` while the high bound above read
        # it ("Missing dependency transpose-..."); counts.compute() was not affected
        ds["reference_support"] = occupancy["reference_support"] * np.float32(1)
    units = {
        "railcars": ("railcars on the visible part of the track", "1"),
        "railcars_low": ("lower bound of railcars", "1"),
        "railcars_high": ("upper bound of railcars", "1"),
        "occupied_m": ("occupied track length", "m"),
        "occupancy": ("occupied share of the visible track", "1"),
        "valid_fraction": ("visible share of the track (not nodata, cloud)", "1"),
        "visible_m": ("visible track length", "m"),
    }
    for k, (long_name, unit) in units.items():
        ds[k].attrs.update({"long_name": long_name, "units": unit})
    ds.attrs.update(occupancy.attrs)
    ds.attrs.update(
        {
            "car_length_m": car_length_m,
            "car_length_range_m": list(car_length_range_m),
            "count_method": "occupied run length / mean car length, cut at coupler gaps "
            "where the pixels resolve them; short strong runs on a quiet track left out",
            "bounds_method": "car-length range and runs shorter than a railcar left out of "
            "the low bound"
            + (
                ", widened to the counts under the strict, lenient, ballast-reference, "
                "temporal-reference, busy-noise, shadows and no-shadow readings"
                if "occupancy_readings" in occupancy
                else ""
            )
            + (
                f"; in a scene at least {_BUSY_SHARE:.0%} occupied, one more railcar in the "
                f"high bound at each edge of a hidden stretch, and the railcars of "
                f"{hi_len:g} m that fill the positions read free near it"
                if edge_rule
                else ""
            )
            + (
                f"; at pixels coarser than {_SUPPORT_PIXEL_M:g} m, on a track whose "
                f"reference_support is under {_SUPPORT_MIN}, the high bound is the railcars "
                f"of {lo_len:g} m that fit on the visible track"
                if unsupported is not None
                else ""
            ),
        }
    )
    return ds


def count_railcars(
    cube: xr.DataArray,
    tracks,
    *,
    half_width_m: float = 2.5,
    core_half_width_m: float = 1.1,
    threshold: float = 5.0,
    smooth_m: float = 1.5,
    min_run_m: float = 6.0,
    max_gap_m: float = 2.5,
    shadows: bool = True,
    own_shadows: bool = True,
    light_changes: bool = True,
    cloud_margin_m: float = 25.0,
    ballast_like_mode: bool | None = None,
    neighbour_bleed: bool | None = None,
    coregister: bool = True,
    car_length_m: float = 15.2,
    car_length_range_m: tuple[float, float] = (12.5, 19.5),
) -> xr.Dataset:
    """Count railcars per track and date: strips, occupancy, counts in one call.

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)`` from :func:`toolkit.load_cube`.
    tracks : path or GeoDataFrame
        Track centrelines with ``track_id``.
    half_width_m, core_half_width_m, threshold, smooth_m, min_run_m, max_gap_m, shadows,
        own_shadows, light_changes, cloud_margin_m, ballast_like_mode, neighbour_bleed
        See :func:`track_strips` and :func:`estimate_occupancy`.
    coregister : bool, default True
        Measure each scene's georeferencing shift against the stack
        (:func:`toolkit.coregister`, over the tracks' extent plus 40 m) and
        sample the strips where each scene put the tracks, so that every
        scene is compared with the empty track at the right place (a pixel
        of misregistration is a large share of a car's 3.3 m width). Needs
        two or more scenes. On the synthetic held-out sites it lowered the
        error per track and scene at every pixel size (0.5 m: 0.36 -> 0.33
        and 0.47 -> 0.29 railcars; 1 m: 1.28 -> 0.78; 3 m: 95 % -> 17 %
        per-scene error together with the half-pixel strips).
    car_length_m, car_length_range_m
        See :func:`counts_from_occupancy`.

    Returns
    -------
    xarray.Dataset
        ``(time, track)`` counts as in :func:`counts_from_occupancy`. Lazy
        when the cube is.

    Examples
    --------
    >>> import toolkit
    >>> cube = toolkit.load_cube("data/sample/scenes")  # doctest: +SKIP
    >>> counts = toolkit.count_railcars(cube, "data/sample/tracks.geojson")  # doctest: +SKIP
    >>> counts.railcars.sum("track", min_count=1).sel(time="2023-10-05")  # doctest: +SKIP
    """
    strips = _site_strips(cube, tracks, half_width_m=half_width_m, coregister=coregister)
    occ = estimate_occupancy(
        strips,
        core_half_width_m=core_half_width_m,
        threshold=threshold,
        smooth_m=smooth_m,
        min_run_m=min_run_m,
        max_gap_m=max_gap_m,
        shadows=shadows,
        own_shadows=own_shadows,
        light_changes=light_changes,
        cloud_margin_m=cloud_margin_m,
        ballast_like_mode=ballast_like_mode,
        neighbour_bleed=neighbour_bleed,
    )
    counts = counts_from_occupancy(
        occ, car_length_m=car_length_m, car_length_range_m=car_length_range_m
    )
    return _with_site_coords(counts, strips)


def _fitted_counts(strips: xr.Dataset, hand_counts=None, *, progress: bool = False):
    """``(fit, occupancy, counts)`` of the strips as :func:`count_railcars` counts them, with
    the threshold and mean car length of :func:`calibrate` when ``hand_counts`` are given
    (``fit`` its :class:`CalibrationResult`, else None; a progress bar with ``progress``).
    The strips should be computed: calibrating reads them once per threshold tried."""
    fit = None if hand_counts is None else calibrate(strips, hand_counts, progress=progress)
    params = {} if fit is None else dict(fit.params)
    threshold = {"threshold": params.pop("threshold")} if "threshold" in params else {}
    occupancy = estimate_occupancy(strips, **threshold)
    counts = _with_site_coords(counts_from_occupancy(occupancy, **params), strips)
    return fit, occupancy, counts


def _with_site_coords(counts: xr.Dataset, strips: xr.Dataset) -> xr.Dataset:
    """The counts with the strips' track source (attrs) and scene names (``scene (time)``),
    as :func:`count_railcars` returns them."""
    counts.attrs["tracks"] = strips.attrs.get("tracks", "")
    if "scene" in strips.coords:
        counts = counts.assign_coords(scene=("time", strips["scene"].values))
    return counts


def _site_strips(cube, tracks, *, half_width_m: float = 2.5, coregister: bool = True):
    """The (lazy) strips of ``tracks`` in ``cube`` as :func:`count_railcars` reads them: the
    scenes co-registered first (:func:`toolkit.coregister`) when ``coregister`` and there are
    at least two of them."""
    from toolkit.tracks import read_tracks, track_strips

    if not isinstance(coregister, (bool, np.bool_)):
        raise InputError(f"coregister: expected True or False, got {coregister!r}")
    shifts = None
    if coregister and cube.sizes.get("time", 0) >= 2:
        from toolkit.registration import coregister as _coregister

        tracks = read_tracks(tracks)  # read once, for both steps
        shifts = _coregister(cube, tracks=tracks)
    return track_strips(cube, tracks, half_width_m=half_width_m, shifts_m=shifts)


def counts_to_dataframe(counts: xr.Dataset) -> pd.DataFrame:
    """The counts as a table with the ``toolkit count`` CSV columns, one row per scene and track.

    Counts that also hold railcars per kind (the ``railcars_<kind>`` variables of
    :func:`toolkit.kind_counts`, as ``toolkit count --kinds`` adds them) get those as
    further columns after the contract's, in the order of :data:`KIND_CSV_COLUMNS`.
    """
    missing = [c for c in CSV_COLUMNS[2:] if c not in counts]
    if missing:
        raise InputError(f"counts Dataset lacks {missing}; make it with toolkit.count_railcars")
    kinds = [c for c in KIND_CSV_COLUMNS if c in counts]
    df = counts[[*CSV_COLUMNS[2:], *kinds]].to_dataframe().reset_index()
    df = df.rename(columns={"track": "track_id"})
    df["time"] = pd.to_datetime(df["time"]).dt.strftime("%Y-%m-%dT%H:%M:%S")
    df["track_id"] = df["track_id"].astype(str)
    for c in ("railcars", "railcars_low", "railcars_high", *kinds):
        df[c] = df[c].round().astype("Int64")
    for c in ("occupied_m",):
        df[c] = df[c].round(1)
    for c in ("occupancy", "valid_fraction"):
        df[c] = df[c].round(4)
    return df[[*CSV_COLUMNS, *kinds]].sort_values(["time", "track_id"], kind="stable")


def write_counts_csv(counts: xr.Dataset, path: str | os.PathLike) -> str:
    """Write the contract CSV atomically (complete or absent, never half-written)."""
    from toolkit._io import atomic_path

    df = counts_to_dataframe(counts)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, na_rep="")
    return os.fspath(path)


def source_fingerprint() -> str:
    """A short hash of the toolkit's own source files: which code made a result.

    Two checkouts that differ in any ``toolkit/*.py`` file give different
    fingerprints; a cache stamped with one is not reused by the other.
    """
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def save_counts_cache(
    directory: str | os.PathLike, counts: xr.Dataset, occupancy: xr.Dataset | None = None
) -> Path:
    """Cache counts (and occupancy) as netCDF, stamped with the scenes and the code.

    Each file is written atomically (complete or absent). Read back with
    :func:`load_counts_cache`, which reuses them only for the same scenes and
    the same toolkit source (:func:`source_fingerprint`).

    Examples
    --------
    >>> save_counts_cache("../data/cache", counts, occupancy)  # doctest: +SKIP
    """
    from toolkit._io import atomic_path

    directory = Path(directory)
    stamp = {"toolkit_source": source_fingerprint()}
    for name, ds in (("counts.nc", counts), ("occupancy.nc", occupancy)):
        if ds is None:
            continue
        with atomic_path(directory / name) as tmp:
            ds.assign_attrs(stamp).to_netcdf(tmp)
    return directory


def load_counts_cache(
    directory: str | os.PathLike, cube: xr.DataArray, *, occupancy: bool = False
) -> xr.Dataset | tuple[xr.Dataset, xr.Dataset] | None:
    """Counts (and occupancy) cached by :func:`save_counts_cache`, if still current.

    Returns None when a file is missing, unreadable, made from other scenes
    than the cube's, or made by other toolkit code (another checkout or
    version): the caller then counts afresh. Never returns stale numbers.

    Examples
    --------
    >>> counts = load_counts_cache("../data/cache", cube)  # doctest: +SKIP
    """
    names = ["counts.nc", "occupancy.nc"] if occupancy else ["counts.nc"]
    current = source_fingerprint()
    out = []
    for name in names:
        path = Path(directory) / name
        if not path.exists():
            return None
        try:
            ds = xr.load_dataset(path)
        except Exception:  # a damaged cache is not an error: it is recomputed
            return None
        if ds.attrs.get("toolkit_source") != current:
            return None
        if "scene" in ds.coords and "scene" in cube.coords:
            if not np.array_equal(ds["scene"].values, cube["scene"].values):
                return None
        elif ds.sizes.get("time") != cube.sizes.get("time"):
            return None
        out.append(ds)
    return (out[0], out[1]) if occupancy else out[0]


def car_outlines(
    occupancy: xr.Dataset,
    strips: xr.Dataset,
    *,
    time,
    car_width_m: float = 3.3,
    car_length_m: float | None = None,
):
    """One polygon per detected railcar on one date, for maps and figures.

    Each occupied run is split into cars by the same rules as the counts'
    estimate (coupler gaps where resolved, else ``round(run length /
    car_length_m)`` equal cars; doubtful short runs on a quiet track left
    out), and each car is drawn as a band of ``car_width_m`` along the
    centreline, so curved tracks give curved cars.

    Parameters
    ----------
    occupancy : xarray.Dataset
        From :func:`estimate_occupancy` (computed or lazy).
    strips : xarray.Dataset
        The strips the occupancy was estimated from (for the geometry).
    time : str or datetime-like
        The date (nearest acquisition).
    car_width_m : float, default 3.3
    car_length_m : float, optional
        Defaults to the value recorded in the occupancy attrs, else 15.2 m.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``track_id``, ``car`` (index along the track), ``start_m``,
        ``end_m``, ``length_m``; geometry in the cube's CRS.
    """
    import geopandas as gpd
    from shapely.geometry import Polygon

    mean_len = car_length_m or float(occupancy.attrs.get("car_length_m", 15.2))
    step = float(occupancy.attrs["step_m"])
    t = np.datetime64(str(np.datetime64(time, "ns")))
    occ = occupancy["occupancy"].sel(time=t, method="nearest").values
    dev = occupancy["deviation"].sel(time=t, method="nearest").values
    share = _share(occupancy.sel(time=t, method="nearest"))
    centre = strips.sizes["across"] // 2
    xs = strips["x_sample"].values
    ys = strips["y_sample"].values
    half = float(np.abs(strips["across_m"].values).max())
    rows = []
    doubt = _doubt_dev(occupancy)
    for k, tid in enumerate(strips["track"].values):
        cx, cy = xs[k, :, centre], ys[k, :, centre]
        nx = (xs[k, :, -1] - xs[k, :, 0]) / (2 * half)
        ny = (ys[k, :, -1] - ys[k, :, 0]) / (2 * half)
        cars = _car_segments(
            occ[k],
            dev[k],
            step=step,
            doubt_dev=doubt,
            mean_len=mean_len,
            lo_len=12.5,
            hi_len=19.5,
            share=None if share is None else share[k],
        )
        for s0, s1, *_ in cars:
            i0, i1 = int(round(s0 / step)), min(int(round(s1 / step)), cx.size - 1)
            idx = np.arange(i0, i1 + 1)
            idx = idx[np.isfinite(cx[idx])]
            if idx.size < 2:
                continue
            w = car_width_m / 2
            left = np.c_[cx[idx] + w * nx[idx], cy[idx] + w * ny[idx]]
            right = np.c_[cx[idx] - w * nx[idx], cy[idx] - w * ny[idx]][::-1]
            rows.append(
                {
                    "track_id": str(tid),
                    "car": len([r for r in rows if r["track_id"] == str(tid)]),
                    "start_m": s0,
                    "end_m": s1,
                    "length_m": s1 - s0,
                    "geometry": Polygon(np.vstack([left, right])),
                }
            )
    crs = strips.attrs.get("crs")
    cols = ["track_id", "car", "start_m", "end_m", "length_m", "geometry"]
    return gpd.GeoDataFrame(rows, columns=cols, geometry="geometry", crs=crs)


@dataclass(frozen=True, kw_only=True)
class CalibrationResult:
    """Parameters fitted to hand counts, with the fit before and after.

    Attributes
    ----------
    params : dict
        Keyword arguments for :func:`count_railcars` (``threshold``,
        ``car_length_m``, ``car_length_range_m``): the fitted ones when
        ``adopted``, else the defaults.
    n_counts : int
        Hand-counted (scene, track) pairs used.
    n_unused : int
        Hand counts not used: the track was not seen in that scene (cloud,
        nodata), or the scene is not counted (a lone snow scene, see
        :func:`estimate_occupancy`'s ``scene_readable``). The table lists
        them with NaN estimates.
    mae_before, mae_after : float
        Mean absolute error (railcars per track and scene) with the default
        and the adopted parameters.
    bias_before, bias_after : float
        Mean signed error (estimate - hand count).
    table : pandas.DataFrame
        Per hand count: time, track_id, hand, estimate_before, estimate_after.
    n_scenes : int
        Hand-counted scenes used.
    adopted : bool
        Whether the best fit passed the checks of :func:`calibrate`.
    best_params, mae_best
        The best fit to the hand counts (threshold, mean car length) and its
        error, adopted or not.
    cv_mae_before, cv_mae_fitted : float
        Each hand-counted scene counted with the defaults, and with the pair
        fitted to the other scenes (mean absolute error per track; NaN with a
        single scene).
    reason : str
        Why the fit was adopted or the defaults kept.
    """

    params: dict
    n_counts: int
    mae_before: float
    mae_after: float
    bias_before: float
    bias_after: float
    table: pd.DataFrame = field(repr=False)
    n_scenes: int = 0
    n_unused: int = 0
    adopted: bool = False
    best_params: dict = field(default_factory=dict)
    mae_best: float = float("nan")
    cv_mae_before: float = float("nan")
    cv_mae_fitted: float = float("nan")
    reason: str = ""

    def summary(self) -> str:
        lines = [
            "Calibration from hand counts",
            f"  hand-counted track-scenes : {self.n_counts} in {self.n_scenes} scenes"
            + (
                f" ({self.n_unused} more not used: track not seen, or scene not counted)"
                if self.n_unused
                else ""
            ),
            f"  mean abs error  default   : {self.mae_before:.2f} railcars",
            f"  mean abs error  adopted   : {self.mae_after:.2f} railcars",
            f"  bias default / adopted    : {self.bias_before:+.2f} / {self.bias_after:+.2f}",
            "  best fit                  : "
            + ", ".join(f"{k}={v}" for k, v in self.best_params.items())
            + f" ({self.mae_best:.2f} railcars)",
            f"  scene left out, default / fitted : {self.cv_mae_before:.2f} / "
            f"{self.cv_mae_fitted:.2f} railcars",
            f"  {'adopted' if self.adopted else 'defaults kept'}: {self.reason}",
            "  parameters                : "
            + ", ".join(f"{k}={v}" for k, v in self.params.items()),
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>"
            for k, v in [
                ("hand-counted track-scenes", self.n_counts),
                ("MAE default (railcars)", f"{self.mae_before:.2f}"),
                ("MAE adopted (railcars)", f"{self.mae_after:.2f}"),
                ("bias default / adopted", f"{self.bias_before:+.2f} / {self.bias_after:+.2f}"),
                ("adopted" if self.adopted else "defaults kept", self.reason),
                *[(k, v) for k, v in self.params.items()],
            ]
        )
        return f"<table><caption>Calibration from hand counts</caption>{rows}</table>"


def calibrate(
    strips: xr.Dataset,
    hand_counts,
    *,
    thresholds=(2.0, 2.5, 3.0, 4.0, 5.0, 6.5, 8.0),
    car_lengths_m=None,
    progress: bool = False,
) -> CalibrationResult:
    """Fit the occupancy threshold and mean car length to a handful of hand counts.

    Every pair of a threshold and a mean car length is tried; the pair that
    reproduces the hand counts best (mean absolute error per track and scene)
    is adopted only where it is clearly better than the defaults, so that a
    few hand counts cannot talk a site that the defaults count well into
    worse parameters. The fit must lower the error on the hand counts by at
    least ``_CAL_GAIN`` (10 %), by more than twice the standard error of the
    paired differences, and also when judged scene by scene: with each
    hand-counted scene left out in turn, the pair fitted to the others must
    count it better, by the same 10 % over all scenes (so at least two scenes
    must be hand-counted). Otherwise the defaults are kept, and
    :attr:`CalibrationResult.reason` says which check failed.

    Parameters
    ----------
    strips : xarray.Dataset
        From :func:`track_strips` over the scenes of the new site.
    hand_counts : path or pandas.DataFrame
        Columns ``time``, ``track_id``, ``railcars`` (an analyst's counts of
        some scenes; times are matched to the nearest acquisition within 1 day).
        Count scenes that represent the series: a fit to busy scenes only
        over-counts the quiet ones where the site's traffic varies. Counts of
        a track not seen, or of a scene the toolkit does not count (a lone
        snow scene, see :func:`estimate_occupancy`'s ``scene_readable``), are
        not used (``n_unused``).
    thresholds : sequence of float
        Occupancy thresholds tried (noise units). The default (5) is always
        tried as well.
    car_lengths_m : sequence of float, optional
        Mean car lengths tried, default 12.0-19.0 m in 0.2 m steps. In a yard
        that is full on every date the fit can choose a short mean length with
        a low threshold: effective parameters that make up for occupied track
        the occupancy step misses, not a measurement of the cars.
    progress : bool, default False
        Show a progress bar over the thresholds tried (each reads the whole
        series once).

    Returns
    -------
    CalibrationResult
        ``params`` can be passed to :func:`count_railcars` as keywords: the
        fitted pair when adopted, else the defaults.

    Raises
    ------
    InputError
        The table lacks columns, has negative or missing counts, or no hand
        count matches a scene and track.

    Notes
    -----
    On the synthetic tuning sites (three hand-counted scenes, the other scenes
    scored, with the defaults of before a busy scene's gains came from its most
    common brightness): yards that are full on every date at 1 m and 3 m
    pixels went from 45 % and 92 % under-counted to about 25 % and 28 %, while
    the Tumangang-like sites kept their defaults in most draws. With traffic
    that varies from empty to full, three hand-counted scenes can still mislead
    the fit (20 % to about 30 % scene error at 1 m in some draws); five did
    not. On held-out sites (README) the checks kept the defaults on six of
    seven, including two where the fit alone would have counted worse and two
    where it would have counted better; a full yard at 1 m adopted a fit from
    its three evenly spread scenes that raised its other scenes' error from
    20 % to 24 % (bias -20 % to +20 %). Over all 84 triples of that yard's
    cloud-free scenes the fit was adopted for 38 and lowered the other scenes'
    error on average (23.9 % to 19.1 %), but raised it for 8 (by at most 4.8
    points): which scenes are counted by hand matters. With today's defaults
    the 1 m full tuning yard keeps them for all five triples tried (its other
    scenes' mean error 14-22 %), and a full yard at 3 m not used while tuning
    (seed 126) adopts a fit for all five, its other scenes' mean error falling
    from 82-86 % to 19-31 %.

    Examples
    --------
    >>> import toolkit
    >>> result = toolkit.calibrate(strips, "hand_counts.csv")  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    >>> counts = toolkit.count_railcars(cube, tracks, **result.params)  # doctest: +SKIP
    """
    hand = _read_hand_counts(hand_counts)
    times = pd.DatetimeIndex(strips["time"].values)
    idx = times.get_indexer(pd.DatetimeIndex(hand["time"]), method="nearest")
    near = np.abs(times[idx] - pd.DatetimeIndex(hand["time"])) <= pd.Timedelta("1D")
    tracks = [str(t) for t in strips["track"].values]
    known_track = hand["track_id"].isin(tracks).to_numpy()
    use = near & known_track
    if not use.any():
        raise InputError(
            "hand counts: no row matches a scene (within 1 day) and a track id of the strips; "
            f"tracks are {tracks[:5]}..., scenes {times.min().date()}..{times.max().date()}"
        )
    hand = hand[use].assign(t_index=idx[use])
    lengths = np.round(np.arange(12.0, 19.01, 0.2), 2) if car_lengths_m is None else car_lengths_m
    rows = (hand["t_index"].to_numpy(), [tracks.index(t) for t in hand["track_id"]])
    truth = hand["railcars"].to_numpy(float)
    default = (5.0, 15.2, (12.5, 19.5))
    found = {}  # (threshold, mean length, range) -> estimates at the hand-counted rows
    tried = sorted({float(t) for t in thresholds} | {5.0})
    if progress:
        from tqdm.auto import tqdm

        tried = tqdm(tried, desc="calibrating", unit="threshold")
    for thr in tried:
        occ = estimate_occupancy(strips, threshold=thr).compute()
        keys = [(thr, float(n), (float(min(12.5, n)), float(max(19.5, n)))) for n in lengths]
        for key in keys + ([default] if thr == 5.0 else []):
            if key not in found:
                found[key] = _railcars_at(occ, rows, *key[1:])
    cands = [default, *(k for k in found if k != default)]
    est_all = np.asarray([found[k] for k in cands])  # (candidate, hand row)
    # a hand count of a track not seen, or of a scene not counted (a lone snow scene), has
    # no estimate under any candidate: it is listed but not used
    usable = np.isfinite(est_all).all(axis=0)
    if not usable.any():
        raise InputError(
            "hand counts: none of the hand-counted tracks is counted in its scene (all "
            "clouded, or lone snow scenes: see estimate_occupancy's scene_readable)"
        )
    est = est_all[:, usable]
    err = est - truth[usable]
    scenes = hand["t_index"].to_numpy()[usable]
    best = _best_fit(err, cands)
    adopted, reason, cv = _judge_fit(err, cands, best, scenes)
    chosen = best if adopted else 0
    thr, mean_len, rng = cands[chosen]
    table = pd.DataFrame(
        {
            "time": hand["time"].to_numpy(),
            "track_id": hand["track_id"].to_numpy(),
            "hand": truth,
            "estimate_before": est_all[0],
            "estimate_after": est_all[chosen],
        }
    )
    return CalibrationResult(
        params={"threshold": thr, "car_length_m": mean_len, "car_length_range_m": rng},
        n_counts=int(usable.sum()),
        n_unused=int((~usable).sum()),
        n_scenes=int(np.unique(scenes).size),
        mae_before=float(np.nanmean(np.abs(err[0]))),
        mae_after=float(np.nanmean(np.abs(err[chosen]))),
        bias_before=float(np.nanmean(err[0])),
        bias_after=float(np.nanmean(err[chosen])),
        adopted=bool(adopted),
        best_params={"threshold": cands[best][0], "car_length_m": cands[best][1]},
        mae_best=float(np.nanmean(np.abs(err[best]))),
        cv_mae_before=cv[0],
        cv_mae_fitted=cv[1],
        reason=reason,
        table=table,
    )


def _railcars_at(occupancy, rows, car_length_m, car_length_range_m) -> np.ndarray:
    """``counts_from_occupancy(...)["railcars"].values[rows]``, counting only those
    (time, track) rows (no bounds)."""
    res = _count_runs(
        np.asarray(occupancy["occupancy"].values)[rows],
        np.asarray(occupancy["deviation"].values)[rows],
        _share(occupancy, rows),
        **_run_counting(occupancy, car_length_m, car_length_range_m),
        doubt_dev=_doubt_dev(occupancy),
    )
    out = np.where(res[:, 4] > 0, res[:, 0], np.nan)
    if "scene_readable" in occupancy:  # a lone snow scene is not counted
        return np.where(np.asarray(occupancy["scene_readable"].values, bool)[rows[0]], out, np.nan)
    return out


def _share(occupancy, index=()):
    """The occupancy's ``ballast_share`` at ``index`` as an array; None when it lacks it."""
    if "ballast_share" not in occupancy:
        return None
    return np.asarray(occupancy["ballast_share"].values)[index]


def _run_counting(occupancy, car_length_m, car_length_range_m) -> dict:
    """How :func:`_count_runs` splits an occupancy's runs into cars (its keywords
    but the doubt): step, mean and range of car lengths, coupler gaps where resolved."""
    step = float(occupancy.attrs["step_m"])
    lo_len, hi_len = car_length_range_m
    return {
        "step": step,
        "mean_len": car_length_m,
        "lo_len": lo_len,
        "hi_len": hi_len,
        "gaps": step <= _GAP_MAX_STEP_M,
    }


#: The share by which a fit to hand counts must lower their error to be adopted.
_CAL_GAIN = 0.1


def _best_fit(err: np.ndarray, cands, rows=None) -> int:
    """The candidate with the smallest mean absolute error over ``rows`` (all by
    default); ties go to the smaller bias, then the parameters nearer the defaults."""
    e = err if rows is None else err[:, rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mae = np.nanmean(np.abs(e), axis=1)
        bias = np.abs(np.nanmean(e, axis=1))
    keys = [
        (
            m if np.isfinite(m) else np.inf,
            b if np.isfinite(b) else np.inf,
            abs(t - 5.0),
            abs(n - 15.2),
        )
        for m, b, (t, n, _) in zip(mae, bias, cands, strict=True)
    ]
    return min(range(len(cands)), key=keys.__getitem__)


def _judge_fit(err, cands, best, scenes):
    """Whether the best fit (index ``best``; 0 is the defaults) is adopted, why, and the
    leave-one-scene-out errors (defaults, fitted; NaN with one scene)."""
    ok = np.isfinite(err[0]) & np.isfinite(err[best])
    gain = np.abs(err[0][ok]) - np.abs(err[best][ok])
    cv = (np.nan, np.nan)
    if np.unique(scenes).size >= 2:
        held = np.full(err.shape[1], np.nan)
        for s in np.unique(scenes):
            mine = scenes == s
            pick = _best_fit(err, cands, ~mine)
            held[mine] = np.abs(err[pick][mine])
        both = np.isfinite(held) & np.isfinite(err[0])
        cv = (float(np.abs(err[0][both]).mean()), float(held[both].mean()))
    if best == 0:
        return False, "the defaults fit the hand counts best", cv
    if ok.sum() < 2:
        return False, "too few hand counts with an estimate to judge a fit", cv
    mae0, mae1 = np.abs(err[0][ok]).mean(), np.abs(err[best][ok]).mean()
    se = gain.std(ddof=1) / np.sqrt(gain.size)
    if mae1 > (1 - _CAL_GAIN) * mae0 or not gain.mean() > 2 * se:
        return (
            False,
            (
                f"the best fit lowers the error only from {mae0:.2f} to {mae1:.2f} railcars "
                f"(needs {_CAL_GAIN * 100:g} % and twice its standard error)"
            ),
            cv,
        )
    if not np.isfinite(cv[0]):
        return False, "one hand-counted scene: the fit cannot be checked scene by scene", cv
    if cv[1] > (1 - _CAL_GAIN) * cv[0]:
        return (
            False,
            (
                "no better scene by scene: fitted without each scene in turn, it counts "
                f"that scene with {cv[1]:.2f} railcars of error against {cv[0]:.2f} with "
                "the defaults"
            ),
            cv,
        )
    return (
        True,
        (
            f"lowers the error from {mae0:.2f} to {mae1:.2f} railcars, and scene by scene "
            f"from {cv[0]:.2f} to {cv[1]:.2f}"
        ),
        cv,
    )


def _read_hand_counts(hand_counts) -> pd.DataFrame:
    name = hand_counts if not isinstance(hand_counts, pd.DataFrame) else "hand counts"
    if isinstance(hand_counts, pd.DataFrame):
        df = hand_counts.copy()
    else:
        try:
            df = pd.read_csv(hand_counts, dtype={"track_id": str})
        except FileNotFoundError:
            raise InputError(f"{name}: hand-count file not found") from None
        except (ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{name}: not a readable CSV ({exc})") from None
    missing = {"time", "track_id", "railcars"} - set(df.columns)
    if missing:
        raise InputError(
            f"{name}: missing column(s) {sorted(missing)}; expected time, track_id, railcars"
        )
    df["track_id"] = df["track_id"].astype(str)
    try:
        df["time"] = pd.to_datetime(df["time"])
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name}: unreadable time values ({exc})") from None
    rc = pd.to_numeric(df["railcars"], errors="coerce")
    if rc.isna().any():
        raise InputError(f"{name}: {int(rc.isna().sum())} railcars value(s) missing or not numbers")
    if (rc < 0).any():
        raise InputError(f"{name}: negative railcar counts; counts must be >= 0")
    df["railcars"] = rc
    return df


# --------------------------------------------------------------------------- kernels


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of True runs in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], mask.astype("int8"), [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


@within_worker_threads  # the compiled kernels and _per_scene's pool: the worker's threads
def _classify(
    val: np.ndarray,
    valid: np.ndarray,
    on_track: np.ndarray,
    shadow_side: np.ndarray,
    unshadeable: np.ndarray | None = None,
    *,
    threshold: float,
    smooth: int,
    core: np.ndarray,
    shadows: bool,
    margin: np.ndarray,
    margin_px: int,
    own_shadows: bool = True,
    light_changes: bool = True,
    modes: bool = False,
    coarse_modes: bool = False,
    neighbours: np.ndarray | None = None,
    sun_side_light: float | None = None,
    shortest_car_samples: int = 1,
    snow_factor: float = 2.0,
    own_dark: float | None = None,
    own_min_dev: float = 2.0,
    haze_light: float | None = None,
    n_iter: int = 2,
    max_passes: int = 3,
    share_window: int = 6,
    clean_gap: int = 5,
    clean_run: int = 12,
    along_step_m: float = 0.5,
    casters=None,
):
    """Occupied/free/unknown for a whole (time, track, along, across, band) strip stack.

    Every sample is compared with the empty-track reference at its place,
    both as lit ballast and as ballast in a shadow (the reference scaled by the
    scene's shadow factor); the smaller of the two distances counts. The core
    of the strip (where a car body is) is averaged, smoothed along the track
    and compared with the scene's noise level. The reference, the per-scene
    gains and the noise are re-estimated from the positions judged free,
    ``n_iter`` times, so that a full yard does not bias them. Where the last
    pass still moved a scene's gains by more than ``_GAIN_MODE_TOL`` (taking
    its most common brightness, see ``_GAIN_MODE_WIDTH``), every scene is read
    once more, up to ``max_passes`` passes in all. A busy scene (at least
    ``_BUSY_SHARE`` of its known positions occupied once short gaps are closed
    with ``clean_gap`` and runs under ``clean_run`` dropped, with the shadow
    explanation everywhere or only where ``unshadeable`` is False) is then read
    without the shadow explanation where no neighbour's car can shade the core
    (``unshadeable``, see ``_NEIGHBOUR_COVER_M``) or where the neighbouring track
    towards the sun is seen free where its car would cast the shadow (``casters``,
    from :func:`_caster_geometry`; ``along_step_m`` is the strips' step), and where
    the own-shadow cue holds, its test also reads the deviation without it. Where both
    margins are ``haze_light`` times as bright as the empty track or more, the core may be
    read as hazy ballast (see :func:`_hazy`). A place where some scenes lift the shade of a
    car parked in the others (:func:`_lifted_shadow`, also where only the reference's shaded
    margin shows the car; not in a lone snow scene) takes its reference from those scenes;
    where one scene alone does, its samples there take no part in its noise level.
    """
    n_t, n_k, n_a, n_c, n_b = val.shape
    v = masked_float32(val, valid)
    known = valid[..., core].mean(axis=-1) >= 0.5
    # positions near masked pixels (cloud edges) need stronger evidence
    masked = ~known & on_track[None]
    haze_scene = masked.reshape(masked.shape[0], -1).any(axis=1)
    near = masked  # positions within margin_px of a masked one along the track
    raised = margin_px > 0 and masked.any()
    if raised:
        size = 2 * margin_px + 1
        near = ndimage.maximum_filter1d(masked.astype("uint8"), size=size, axis=-1) > 0
    # thr_plain: the threshold (times snow_factor in snow scenes, below); thr: three times
    # that near masked positions. In a busy scene the estimate and the lenient reading ask no stronger evidence near a
    # mask's edge (see _near_edge_free); the scene is judged busy away from those edges, as
    # near them its cars read free
    thr_plain = np.full(known.shape, threshold)
    away_from_edges = known & on_track[None] & ~near
    chi_med = {1: 0.6745, 2: 1.18}.get(n_b, 1.54)  # median of a chi with n_b dof
    across_i = np.flatnonzero(core)
    mid = (across_i.size - 1) / 2.0
    left, right = across_i[np.arange(across_i.size) < mid], across_i[np.arange(across_i.size) > mid]
    halves_idx = [left, right] if left.size and right.size else [across_i]
    with np.errstate(all="ignore"):
        # (time, band), read in place; the snow groups read the margins the same way
        scene_med = scene_medians_at(v, np.arange(n_c))
        groups = _snow_groups(v, scene_med, margin)
        if groups.max() > 0:  # snow: patchy cover reads as texture, ask for stronger evidence
            thr_plain = np.where((groups == 1)[:, None, None], snow_factor * thr_plain, thr_plain)
        thr = np.where(near, 3.0 * thr_plain, thr_plain) if raised else thr_plain
        # a lone snow scene (see _LONE_BRIGHT_RATIO) is not counted. It still takes part in
        # its group's reference: read apart, the tuning site with two of them gained (scene
        # error 3.4 -> 0.8 %), but two of four held-out sites with them lost (seed 13: 1.2
        # -> 2.6 %, seed 113: 4.7 -> 5.4 %)
        brightness = _margin_brightness_ratio(v, near, margin, groups)
        lone = _lone_snow(brightness, haze_scene)
        scene_med = np.where(np.isfinite(scene_med) & (scene_med > 0), scene_med, 1.0)
        gain = scene_med.astype("float32")  # float32 throughout: the stack can be large
        n = None
        free = known.copy()
        lit = np.ones(valid.shape, bool)
        lifted = None  # scenes showing the empty track under a parked car (from the last pass)
        own_ref = None  # ... where a scene is the only one of its group to show it
        passes = n_iter
        # scenes where a neighbour's cars darkening the strip from the sun's side are read
        # as a light change (sun_side_light): all in the first pass, then those the last
        # pass found quiet without that explanation
        quiet = np.ones(n_t, bool)
        busy_plain = np.zeros(n_t)
        moved = np.zeros(n_t, bool)  # scenes whose gains the mode moved in this pass
        it = -1
        while it < passes - 1:
            it += 1
            moved[:] = False
            n = divide_by_gains(v, gain, out=n)
            # snow on roofs and on the bed makes a parked car and the empty track look
            # alike, and patchy snow splits a place's looks into modes: among snow scenes
            # (group 1) the appearance modes say nothing about parked cars
            pairs = {
                g: _reference(
                    n,
                    free,
                    lit,
                    core,
                    margin,
                    scenes=groups == g,
                    modes=modes and g == 0,
                    lifted=lifted,
                    coarse=coarse_modes,
                )
                for g in np.unique(groups)
            }
            refs = {g: pair[0] for g, pair in pairs.items()}
            dev = np.full((n_t, n_k, n_a), np.nan, "float32")
            dev_raw = np.full((n_t, n_k, n_a), np.nan, "float32")
            sigma = np.ones(n_t)
            sigma_busy = np.ones(n_t)
            # margin brightness against the empty track, per scene, for the shadow cues
            # (kept from the last pass: the own-shadow test below reads the same values)
            margin_ratios = {}
            explain = {}  # per scene: the explanations' arguments, for the alternative reading

            # one scene against the reference: its distances, noise, deviation and gains
            # (the arrays this pass fills are bound here; each scene writes its own rows)
            def judge(
                t,
                n=n,
                refs=refs,
                free=free,
                own_ref=own_ref,
                quiet=quiet,
                out=(dev, dev_raw, sigma, sigma_busy, margin_ratios, explain),
            ):
                dev, dev_raw, sigma, sigma_busy, margin_ratios, explain = out
                r = refs[groups[t]]
                k_sh = _shadow_factor(n[t], r) if shadows else np.full(n_b, np.nan)
                use_shadow = bool(np.isfinite(k_sh).all())
                reached = np.zeros((n_k, n_a), bool)
                ratios = None
                if (use_shadow and own_shadows) or light_changes:
                    ratios = margin_ratios[t] = _margin_ratios(n[t], r, margin, smooth)
                if use_shadow and own_shadows:
                    # where a neighbour's shadow reaches this track (its margin towards
                    # the sun is dark), let the shadow's depth vary a little: penumbra
                    # and blur change its depth, not its colour. At 0.6-1.5 m pixels the
                    # margin's pixels also take in the neighbour's car body, 0.6 m
                    # beyond it at the closest track spacing: in its shadow the margin
                    # reads up to 0.85 of the light (as the far margin in a railcar's
                    # own shadow, see _own_shadow_dark). On the 1 m tuning sites the
                    # strict 0.75 read such shadows with a coupler gap's light in them
                    # as cars (seed 42: 5 on an empty track)
                    reached = _sun_side_dark(ratios, shadow_side[t], n[t], dark=own_dark)
                light = _light_factors(
                    ratios if light_changes else None,
                    (n_k, n_a, n_c),
                    side=shadow_side[t],
                    sun_lo=sun_side_light if quiet[t] else None,
                )
                explain[t] = (
                    np.nan_to_num(k_sh),
                    use_shadow,
                    reached,
                    *(_NEIGHBOUR_SHADOW_SCALE if own_shadows else (1.0, 1.0)),
                    _hazy(haze_scene[t], ratios, (n_k, n_a), haze_light),
                    *light,
                    _penumbra(reached, ratios, shadow_side[t]),
                )
                d, d_plain, lit_t = scene_distances(n[t], r, *explain[t])
                if use_shadow:
                    lit[t] = lit_t
                # the noise level comes from the distances without the light explanation,
                # which would otherwise lower it and make every other place look deviant
                dc, dc_raw, s_t, sigma_busy[t], plain = _core_deviation(
                    d,
                    known[t],
                    free[t],
                    halves_idx,
                    smooth,
                    chi_med,
                    d_noise=d_plain,
                    margin=margin,
                    own_ref=None if own_ref is None else own_ref[t],
                )
                sigma[t] = s_t
                if sun_side_light is not None:
                    # the scene's share of positions deviating without the light changes
                    # explained: in a busy scene a car beside a neighbour's is not read as
                    # the neighbour's shade (on a full 3 m yard, seed 126, calibrated from
                    # three hand-counted scenes, the worst of five draws read the other
                    # scenes 34 % under; 27 % before the explanation, 29 % with this)
                    with np.errstate(invalid="ignore"):
                        busy_plain[t] = np.sum(plain > thr[t]) / max(int(known[t].sum()), 1)
                dev[t] = dc
                dev_raw[t] = dc_raw
                # gains from free, lit samples against the reference; in a busy scene
                # the positions judged free still hold many cars and their median is
                # pulled towards the cars' colours, while the empty track is still the
                # most common brightness among all known, lit samples
                g_new = masked_ratio_median(v[t], r, free[t][..., None] & lit[t])
                seen = known[t][..., None] & lit[t]
                g_mode, _ = masked_ratio_mode(v[t], r, seen, _GAIN_MODE_WIDTH)
                if _gain_off(g_mode, g_new):
                    moved[t] = _gain_off(g_mode, gain[t])
                    g_new = g_mode
                ok = np.isfinite(g_new) & (g_new > 0)
                gain[t] = np.where(ok, g_new, gain[t]).astype("float32")

            _per_scene(judge, n_t)
            free = known & (dev <= thr)
            quiet = busy_plain < _BUSY_SHARE
            if it == passes - 1 and moved.any() and passes < max_passes:
                passes += 1  # a busy scene's gains moved: read every scene again with them
            if own_shadows and it < passes - 1 and (shadow_side != 0).any():
                # a lone snow scene (not counted, see _lone_snow) shows nothing of
                # the empty track's look: its bright margins read as a lifted shade (on the
                # 0.5 m site of seed 31 two such scenes lifted 460 places never parked on)
                lifted = _lifted_shadow(
                    {t: r for t, r in margin_ratios.items() if not lone[t]},
                    shadow_side,
                    known & ~free,
                    shortest_car_samples,
                    # not among snow scenes: patchy snow beside the track shades nothing
                    shaded_ref={0: _shaded_margins(refs[0], margin)} if 0 in refs else None,
                    groups=groups,
                    max_gap=int(round(_LIFT_GAP_M / along_step_m)),
                )
                own_ref = np.zeros_like(lifted)
                for g in np.unique(groups):
                    one = lifted[groups == g].sum(axis=0) == 1
                    own_ref[groups == g] = lifted[groups == g] & one[None]
    own = np.zeros(dev.shape, bool)
    if own_shadows and (shadow_side != 0).any():
        # grey cars, tarps and open wagons can look like ballast from above, but anything
        # standing on the track casts a shadow beside it
        for t in range(n_t):
            if t not in margin_ratios:
                margin_ratios[t] = _margin_ratios(n[t], refs[groups[t]], margin, smooth)
        own = _own_shadow(margin_ratios, shadow_side, dark=own_dark)
    # in a busy scene, where a car's own shadow lies beside the track, no neighbour's shadow
    # falls on the core (the margin towards the sun is lit, or beyond a neighbour's reach):
    # there the deviation without the shadow explanation also decides (see judge_unshaded)
    dev_own = np.zeros_like(dev)

    bled = np.zeros(dev.shape, bool)
    if neighbours is not None and (neighbours >= 0).any():
        # a neighbour's car blurred into this strip: this position deviates much less
        # than the nearest position on the other track
        has = neighbours >= 0
        flat = dev_raw.reshape(n_t, -1)
        near = flat[:, np.where(has, neighbours, 0).ravel()].reshape(dev_raw.shape)
        with np.errstate(invalid="ignore"):
            bled = has[None] & (near > _BLEED_RATIO * dev_raw) & (dev_raw < _BLEED_MAX_DEV * thr)

    def decide(deviation, factor=1.0, *, judged_bleed=True, plain_in=None):
        # plain_in (time,): scenes whose threshold is not raised near masked positions
        th = thr if plain_in is None else np.where(plain_in[:, None, None], thr_plain, thr)
        occupied = (deviation > factor * th) | (
            own & (np.maximum(deviation, dev_own) > own_min_dev)
        )
        if judged_bleed:
            occupied &= ~bled
        return np.where(known, np.where(occupied, OCCUPIED, FREE), UNKNOWN).astype("int8")

    # alternative readings of the same evidence, for the count's interval: stronger and
    # weaker evidence asked for; the ballast beside the track as the empty track (a car
    # parked in most scenes enters the temporal reference; a track that is seldom seen
    # empty gives a poor one); and the plain temporal median, whatever the rules for
    # parked cars made of it
    dev_alt = {1: np.full_like(dev, np.nan), 2: np.full_like(dev, np.nan)}

    def judge_on(t, which):
        d_b, d_b_plain, _ = scene_distances(n[t], pairs[groups[t]][which], *explain[t])
        # in the noise units of this reading: the ballast beside the track lacks the
        # rails and the bed's texture, so its distances are larger everywhere
        dev_alt[which][t] = _core_deviation(
            d_b, known[t], free[t], halves_idx, smooth, chi_med, d_noise=d_b_plain
        )[0]

    # coupler gaps: the share of the empty track's look against the colours of the cars
    # beside each position (see toolkit._fast.ballast_share), for splitting runs into cars
    share = np.full((n_t, n_k, n_a), np.nan, "float32")
    core_refs = {g: r[..., core, :].mean(axis=2) for g, r in refs.items()}

    # how often each place shows its empty-track reference (see _reference_support)
    shows_ref = np.zeros((n_t, n_k, n_a), bool)
    shown = np.zeros((n_t, n_k, n_a), bool)

    def share_of(t):
        colour = _nanmean(n[t][..., core, :], axis=2)
        share[t] = ballast_share(colour, core_refs[groups[t]], share_window)
        if not lone[t]:
            shown[t], shows_ref[t] = _shows_reference(colour, core_refs[groups[t]], known[t])

    _per_scene(lambda t: (judge_on(t, 1), judge_on(t, 2), share_of(t)), n_t)
    # a busy scene: most of its track lies in the shadows of cars, and dark cars (empty
    # ore wagons, tank cars) look like ballast in a shadow. Where no railcar on a
    # neighbouring track can shade the whole core (the sun too high, or shining along the
    # track), no sample is explained as a shadow there; the readings with the shadow
    # explanation everywhere and nowhere bound the count
    # the shadow explanation everywhere (the shadows reading), read before judge_unshaded
    # fills dev_own: the own-shadow test here keeps the explanation too
    shaded = decide(dev)
    runs = _clean_runs(shaded, max_gap=clean_gap, min_run=clean_run)
    busy = (runs == OCCUPIED).sum(axis=(1, 2)) >= _BUSY_SHARE * np.maximum(
        (runs != UNKNOWN).sum(axis=(1, 2)), 1
    )
    dev_main = dev.copy()
    dev_unshaded = dev.copy()
    dev_u = np.full_like(dev, np.nan)  # without the shadow explanation, where it was used

    def judge_unshaded(t):
        if (busy[t] or (unshadeable is not None and unshadeable[t].any())) and explain[t][1]:
            unshaded = (explain[t][0], False, *explain[t][2:])
            d_u = scene_distances(n[t], refs[groups[t]], *unshaded)[0]
            # in the scene's own noise units (a busy scene's is read low, see
            # _core_deviation)
            dev_u[t] = _core_profiles(d_u, known[t], halves_idx, smooth)[1] / sigma[t]

    _per_scene(judge_unshaded, n_t)
    if unshadeable is not None:
        # busy also where the scene is, once no sample is explained as a shadow where no
        # neighbour's car can shade the core: the dark cars that the shadow explanation took
        # for shaded ballast made the first reading's share too low (on the 1 m full tuning
        # yard, seed 105, a scene read 23 % occupied, about 46 % in truth: 103 railcars of
        # 191, 206 with this). Not where the margin towards the sun is dark too: a shadow
        # wider than the strip (a cloud's or a building's) is not a car. Dark here is
        # _DARK at any pixel size: with the blurred margin's 0.85 that scene read 105
        reached = np.stack(
            [
                _sun_side_dark(margin_ratios.get(t), shadow_side[t], n[t])
                if explain[t][1] and own_shadows
                else np.zeros((n_k, n_a), bool)
                for t in range(n_t)
            ]
        )
        first = decide(np.where(unshadeable & ~reached & np.isfinite(dev_u), dev_u, dev))
        runs = _clean_runs(first, max_gap=clean_gap, min_run=clean_run)
        busy |= (runs == OCCUPIED).sum(axis=(1, 2)) >= _BUSY_SHARE * np.maximum(
            (runs != UNKNOWN).sum(axis=(1, 2)), 1
        )
    # in a busy scene, a railcar on the neighbouring track towards the sun can shade this
    # core only where that track holds one: where it is seen free (in both first
    # readings) within _CASTER_WINDOW_M of the place the ray towards the sun crosses it,
    # no railcar's shadow falls here, and the shadow explanation is not used
    no_caster = np.zeros(dev.shape, bool)
    if casters is not None and busy.any():
        if unshadeable is None:
            first = shaded
        w = max(int(round(_CASTER_WINDOW_M / along_step_m)), 0)
        for t in np.flatnonzero(busy):
            occ_t = (shaded[t] == OCCUPIED) | (first[t] == OCCUPIED) | (shaded[t] == UNKNOWN)
            flat = occ_t.reshape(-1)
            c_t = _casters(casters, t)
            has = c_t >= 0
            row, at = np.divmod(np.maximum(c_t, 0), n_a)  # the caster's track and place
            blocked = np.zeros(c_t.shape, bool)
            for off in range(-w, w + 1):
                blocked |= flat[row * n_a + np.clip(at + off, 0, n_a - 1)]
            no_caster[t] = has & ~blocked
    for t in np.flatnonzero(busy & np.isfinite(dev_u).any(axis=(1, 2))):
        dev_unshaded[t] = dev_u[t]
        dev_own[t] = np.where(own[t], dev_unshaded[t], 0.0)
        free_t = no_caster[t] if unshadeable is None else (unshadeable[t] | no_caster[t])
        # ... but not where a railcar here would shade the margin away from the sun, and
        # that margin is lit: nothing tall stands on the track (see _far_lit)
        free_t = free_t & ~_far_lit(margin_ratios.get(t), shadow_side[t], along_step_m)
        dev_main[t] = np.where(free_t, dev_unshaded[t], dev[t])
    estimate = decide(dev_main)
    busy_away = ((estimate == OCCUPIED) & away_from_edges).sum(axis=(1, 2)) >= _BUSY_SHARE * (
        np.maximum(away_from_edges.sum(axis=(1, 2)), 1)
    )
    # in such a scene the estimate does not raise the threshold near a mask's edge either: the
    # positions read free there were mostly railcars dimmed by thin haze (see _near_edge_free)
    estimate = decide(dev_main, plain_in=busy_away)
    readings = np.stack(
        [
            decide(dev_main, _STRICT_FACTOR),
            decide(dev_main, _LENIENT_FACTOR, judged_bleed=False, plain_in=busy_away),
            decide(dev_alt[1]),
            decide(dev_alt[2]),
            decide(dev_main * (sigma / sigma_busy)[:, None, None]),
            shaded,
            decide(dev_unshaded),
        ]
    )
    biggest = np.bincount(groups).argmax()
    return (
        estimate,
        dev_raw.astype("float32"),
        refs[biggest].astype("float32"),
        readings,
        share,
        brightness.astype("float32"),
        groups == 1,
        lone,
        _reference_support(shown, shows_ref),
    )


def _shows_reference(colour: np.ndarray, ref_colour: np.ndarray, known: np.ndarray):
    """Where one scene shows a place (``known``, colour finite), and where its core colour is
    within ``_SUPPORT_TOL`` of the empty-track reference's (log ratio, in every band):
    both (track, along) bool. ``colour`` and ``ref_colour`` are (track, along, band)."""
    floor = np.float32(1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.abs(np.log(np.maximum(colour, floor) / np.maximum(ref_colour, floor)))
        worst = off.max(axis=-1)
    seen = known & np.isfinite(worst)
    return seen, seen & (worst <= _SUPPORT_TOL)


def _reference_support(shown: np.ndarray, shows_ref: np.ndarray) -> np.ndarray:
    """Per track, the median over its places of the share of the scenes showing a place
    whose core looks like the empty-track reference there (:func:`_shows_reference`);
    places shown in fewer than ``_SUPPORT_MIN_SCENES`` scenes left out, NaN for a track
    without such places. ``shown`` and ``shows_ref`` are (time, track, along) bool."""
    n_shown = shown.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(
            n_shown >= _SUPPORT_MIN_SCENES, shows_ref.sum(axis=0) / np.maximum(n_shown, 1), np.nan
        )
    out = np.full(share.shape[0], np.nan, "float32")
    for k, row in enumerate(share):
        if np.isfinite(row).any():
            out[k] = np.nanmedian(row)
    return out


def _lone_snow(brightness: np.ndarray, masked_scene: np.ndarray) -> np.ndarray:
    """Lone snow scenes: ``brightness`` (:func:`_margin_brightness_ratio`, per scene) above
    ``_LONE_BRIGHT_RATIO``, or above ``_LONE_BRIGHT_RATIO_CLEAR`` in a scene with nothing
    masked along its tracks (``masked_scene`` False). False where the ratio is NaN."""
    limit = np.where(masked_scene, _LONE_BRIGHT_RATIO, _LONE_BRIGHT_RATIO_CLEAR)
    with np.errstate(invalid="ignore"):
        return np.asarray(brightness > limit, bool)


def _margin_brightness_ratio(
    v: np.ndarray, near: np.ndarray, margin: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """Each scene's brightness beside the tracks against the rest of its appearance group.

    ``v`` (time, track, along, across, band) with NaN where not usable, ``near``
    (time, track, along) the positions at or near a masked one along the track
    (``_classify``'s cloud margin). Per scene, the 90th percentile of the band-mean
    of the samples in the strip margins (where no car body stands; the brighter
    part, as most margins in a busy scene lie in shadows) at positions not
    ``near`` (thin haze beyond a cloud mask's edge brightens the ballast), divided by the
    median of that value over the scenes of its group (see
    :func:`_appearance_groups`), or over all scenes where the group has no temporal
    reference of its own (fewer than ``_TEMPORAL_MIN_SCENES`` scenes, see
    :func:`_reference`) or fewer than ``_LONE_MIN_SCENES`` with enough samples.
    NaN where the scene has too few such samples, or the series too few scenes
    with enough.
    """
    n_t = v.shape[0]
    mi = np.flatnonzero(margin)
    if mi.size == 0:  # no margin samples: nothing to tell by
        return np.full(n_t, np.nan)
    p90 = np.full(n_t, np.nan)
    count = np.zeros(n_t, np.int64)
    with np.errstate(all="ignore"):
        for t in range(n_t):
            b = v[t][:, :, mi, :].mean(axis=-1)[~near[t]]
            b = b[np.isfinite(b)]
            count[t] = b.size
            if b.size:
                p90[t] = np.percentile(b, 90)
    seen = count[count > 0]
    least = max(_LONE_MIN_SAMPLES, 0.25 * float(np.median(seen))) if seen.size else np.inf
    enough = (count >= least) & (p90 > 0)
    ratio = np.full(n_t, np.nan)
    if enough.sum() < _LONE_MIN_SCENES:
        return ratio
    overall = float(np.median(p90[enough]))
    for g in np.unique(groups):
        sel = (groups == g) & enough
        # a group with no temporal reference of its own, or too few scenes to tell, is
        # judged against all the scenes
        own = (groups == g).sum() >= _TEMPORAL_MIN_SCENES and sel.sum() >= _LONE_MIN_SCENES
        base = float(np.median(p90[sel])) if own else overall
        ratio[sel] = p90[sel] / base
    return ratio


def _gain_off(g: np.ndarray, ref: np.ndarray) -> bool:
    """Whether gains ``g`` differ from ``ref`` by more than _GAIN_MODE_TOL (log) in a band.

    Not where either is missing or not positive in some band.
    """
    g = np.asarray(g, float)
    ref = np.asarray(ref, float)
    if not (np.isfinite(g).all() and np.isfinite(ref).all() and (g > 0).all() and (ref > 0).all()):
        return False
    return bool(np.abs(np.log(g / ref)).max() > _GAIN_MODE_TOL)


def _neighbour_positions(strips) -> np.ndarray | None:
    """For each (track, along) position, the flat index of the nearest centreline position
    on another track within ``_BLEED_RADIUS_M`` (and beyond 2 m: a turnout), else -1.

    None when the strips carry no sample coordinates.
    """
    from scipy.spatial import cKDTree

    if "x_sample" not in strips.coords or strips.sizes["track"] < 2:
        return None
    mid = strips.sizes["across"] // 2
    xs = np.asarray(strips["x_sample"].values[..., mid], "float64")
    ys = np.asarray(strips["y_sample"].values[..., mid], "float64")
    n_k, n_a = xs.shape
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    track = np.repeat(np.arange(n_k), n_a)
    good = np.flatnonzero(np.isfinite(pts).all(axis=1))
    out = np.full(n_k * n_a, -1, np.int64)
    if good.size < 2:
        return out.reshape(n_k, n_a)
    tree = cKDTree(pts[good])
    # enough neighbours to get past this track's own samples within reach (2R / step of
    # them), with room for turnouts and crossings
    step = float(strips.attrs.get("step_m", 0.5))
    k = min(good.size, 4 * int(np.ceil(_BLEED_RADIUS_M / step)) + 8)
    dist, idx = tree.query(pts[good], k=k, distance_upper_bound=_BLEED_RADIUS_M)
    found = np.isfinite(dist)
    other = np.where(found, good[np.minimum(idx, good.size - 1)], -1)
    usable = found & (dist > 2.0) & (track[np.maximum(other, 0)] != track[good][:, None])
    first = np.where(usable.any(axis=1), usable.argmax(axis=1), -1)
    rows = np.flatnonzero(first >= 0)
    out[good[rows]] = other[rows, first[rows]]
    return out.reshape(n_k, n_a)


def _per_scene(fn, n_t: int) -> None:
    """Call ``fn(t)`` for every scene, on as many threads as numba uses (its kernels
    called here are serial and release the GIL); the first error is raised."""
    import numba

    workers = min(int(numba.get_num_threads()), n_t)
    if workers <= 1:
        for t in range(n_t):
            fn(t)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="occupancy") as pool:
        for fut in [pool.submit(fn, t) for t in range(n_t)]:
            fut.result()


def _light_factors(margin_ratios, shape, *, lo=0.85, hi=1.5, side=None, sun_lo=None):
    """Light factors of the two strip margins where both lie in [lo, hi], and across weights.

    Thin haze, the soft edge of a cloud's shadow and, at coarse pixels, a car
    on the neighbouring track blurred into the strip change the brightness of
    the whole strip smoothly, margins and core alike; a car on this track
    changes the core and shades at most one margin. Where both margins are
    changed by a factor between ``lo`` and ``hi``, the core may be explained
    as the reference times the factor interpolated across the strip between
    them. With ``side`` (the scene's signed shadow reach, K, A) and
    ``sun_lo``, also where the margin towards the sun is the darker one and
    at least ``sun_lo`` of the light: at coarse pixels a neighbouring track's
    cars and their shadow darken the strip from the sun's side, while a car
    on this track darkens the far margin with its own shadow.
    ``margin_ratios`` is :func:`_margin_ratios` of the scene (None: no
    explanation); ``shape`` is (K, A, C). Returns the factors of the low and
    high margin (K, A), NaN where not applicable, and the across weights (C,)
    from 0 to 1.
    """
    n_k, n_a, n_c = shape
    w = np.linspace(0.0, 1.0, n_c) if n_c > 1 else np.zeros(1)
    if margin_ratios is None:
        none = np.full((n_k, n_a), np.nan)
        return none, none, w
    m_lo, m_hi = margin_ratios
    ok = (m_lo >= lo) & (m_lo <= hi) & (m_hi >= lo) & (m_hi <= hi)
    if side is not None and sun_lo is not None:
        far, near = _far_near(margin_ratios, side)
        ok |= (side != 0) & (near <= far) & (near >= sun_lo) & (far <= hi)
    return np.where(ok, m_lo, np.nan), np.where(ok, m_hi, np.nan), w


def _hazy(scene_masked, ratios, shape, light=None):
    """Where the haze explanation applies (K, A) int8, the code of
    :func:`toolkit._fast.scene_distances`: 1 everywhere in a scene with masked pixels on its
    tracks (the noise read with it too); else 2 where both margins are at least ``light``
    times as bright as the empty track (None: nowhere), 0 elsewhere. Thin haze brightens the
    whole strip; a car changes the core and shades at most one margin. ``ratios`` is
    :func:`_margin_ratios` of the scene or None."""
    out = np.full(shape, 1 if scene_masked else 0, np.int8)
    if light is not None and ratios is not None and not scene_masked:
        lo, hi = ratios
        out[(lo >= light) & (hi >= light)] = 2
    return out


def _margin_sides(margin):
    """The indices of the margin's samples across the strip, on its low and its high side."""
    mi = np.flatnonzero(margin)
    mid = (np.size(margin) - 1) / 2.0
    return mi[mi < mid], mi[mi > mid]


def _margin_ratios(nt, r, margin, smooth):
    """Brightness of each strip margin relative to the empty track, smoothed along: (lo, hi)."""
    lo_i, hi_i = _margin_sides(margin)
    if not lo_i.size or not hi_i.size:
        return None
    ratio = band_mean_ratio(nt, r, 1e-6)  # (K, A, C)
    size = max(3 * smooth, 3)
    out = []
    for idx in (lo_i, hi_i):
        m = _nanmean_at(ratio, idx)
        m = np.where(np.isfinite(m), m, 1.0)
        out.append(running_median_rows(np.ascontiguousarray(m, dtype="float64"), size))
    return out


def _lifted_shadow(
    margin_ratios, shadow_side, deviant, min_run, *, shaded_ref=None, groups=None, max_gap=0
):
    """Where a scene shows the empty track under a railcar parked in most scenes.

    A car parked in most scenes enters the temporal reference with its own
    shadow. A scene without it then deviates in the core, and its margin away
    from the sun is much brighter than the reference's (more than 1 / _DARK
    times) while the margin towards the sun matches (within _NEAR_SAME): the
    reference's shade has lifted. Kept over runs of the lifted margin at least
    ``min_run`` positions long (a railcar's length, as a parked car makes
    them) of which at least _LIFT_DEVIANT_SHARE deviate: the core may match a
    car that looks like ballast in places, and noise breaks the deviation
    into pieces. ``deviant`` is (time, track, along) bool; returns the same
    shape. With ``shaded_ref`` (for some appearance groups, the (lo, hi) margins of
    :func:`_shaded_margins`) and ``groups`` (the group of each scene), a run
    is also kept where the reference's own margin on that side is shaded over
    at least half of it: the parked car is then seen by its shadow alone (a
    grey tarp or a white tank looks like the ballast from above). Runs apart by at
    most ``max_gap`` positions are judged as one (the shade of a parked cut breaks
    at its coupler gaps and at its cars' ends); the positions between them are not
    marked.
    """
    out = np.zeros(deviant.shape, bool)
    ref_shade = np.zeros(deviant.shape, bool)
    lo_near, hi_near = _NEAR_SAME
    for t, s, far, near in _far_and_near(margin_ratios, shadow_side):
        out[t] = (s != 0) & (far > 1.0 / _DARK) & (near > lo_near) & (near < hi_near)
        if shaded_ref is not None and groups[t] in shaded_ref:
            lo, hi = shaded_ref[groups[t]]
            ref_shade[t] = np.where(s > 0, hi, lo)
    rows = zip(
        out.reshape(-1, out.shape[-1]),
        deviant.reshape(-1, out.shape[-1]),
        ref_shade.reshape(-1, out.shape[-1]),
        strict=True,
    )
    for row, deviant_row, shade_row in rows:
        joined = row.copy()
        if max_gap > 0:
            gap_starts, gap_ends = _runs(~row)
            for a, b in zip(gap_starts, gap_ends, strict=True):
                if 0 < a and b < row.size and b - a <= max_gap:
                    joined[a:b] = True
        starts, ends = _runs(joined)
        for a, b in zip(starts, ends, strict=True):
            part = row[a:b]
            seen = (
                deviant_row[a:b][part].mean() >= _LIFT_DEVIANT_SHARE
                or shade_row[a:b][part].mean() >= 0.5
            )
            if b - a < min_run or not seen:
                row[a:b] = False
    return out


def _shaded_margins(ref, margin):
    """Where the empty-track reference's margins lie in a shadow (lo, hi), (K, A) bool each.

    A margin is shaded where its brightness (mean over its samples and bands)
    is under _REF_SHADED times the track's typical (its median along the
    track) and the other margin's is over _LIT times its own: a railcar
    parked in most scenes leaves its own shadow in the temporal median on one
    side only, where a neighbour's shade or a dark bed darkens both.
    """
    lo_i, hi_i = _margin_sides(margin)
    shape = ref.shape[:2]
    if not lo_i.size or not hi_i.size:
        return np.zeros(shape, bool), np.zeros(shape, bool)
    rel = []
    for idx in (lo_i, hi_i):
        m = _nanmean(ref[..., idx, :], axis=(-2, -1))  # (K, A)
        typical = _nanmedian(m, axis=1)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            rel.append(m / typical)
    lo, hi = rel
    with np.errstate(invalid="ignore"):
        return (lo < _REF_SHADED) & (hi > _LIT), (hi < _REF_SHADED) & (lo > _LIT)


def _sun_side_dark(ratios, side, nt, *, dark=None):
    """The margin towards the sun is in shadow: a neighbour's shadow reaches this track."""
    dark = _DARK if dark is None else dark
    if ratios is None:
        return np.zeros(nt.shape[:2], bool)
    lo, hi = ratios
    _, near = _far_near(ratios, side)
    return np.where(side != 0, near < dark, (lo < dark) & (hi < dark))


def _penumbra(reached, ratios, side):
    """Where a neighbour's shadow ends inside this strip: its edge may cross the core.

    The margin towards the sun is in a neighbour's shadow (``reached``, see
    :func:`_sun_side_dark`) and the margin away from it is not dark: the
    shadow's edge, blurred over a pixel or two, lies between them, and core
    samples there are a blend of the shaded and the lit empty track (see
    :func:`toolkit._fast.scene_distances`). Where the whole strip is shaded
    the plain shadow explanation holds. ``ratios`` is :func:`_margin_ratios`
    of the scene, ``side`` its signed shadow reach (K, A); returns (K, A) bool.
    """
    if ratios is None:
        return np.zeros(reached.shape, bool)
    far, _ = _far_near(ratios, side)
    return reached & (side != 0) & (far > _DARK)


def _own_shadow_min_dev(pixel_m: float) -> float:
    """The deviation (noise units) a position needs for its own shadow to decide it, for a
    pixel size (see _OWN_SHADOW_MIN_DEV)."""
    fine, coarse = _OWN_SHADOW_MIN_DEV
    return fine if pixel_m <= _OWN_SHADOW_FINE_PIXEL_M else coarse


def _own_shadow_dark(pixel_m: float) -> float:
    """The far margin's brightness (share of the empty track's) under which a railcar's
    own shadow is seen, for a pixel size: _DARK, or _DARK_BLURRED at pixels of 0.6-1.5 m.

    A railcar's shadow beside it is 1-2 m wide. At such pixels it fills only part
    of the far margin's pixels and reads 0.75-0.85 of the light; finer pixels see
    it whole, and coarser ones mix the neighbouring track into the margin.
    """
    return _DARK_BLURRED if 0.6 < pixel_m <= 1.5 else _DARK


def _own_shadow(margin_ratios, shadow_side, *, dark=None):
    """Where the track casts its own shadow: the margin away from the sun dark, and either the
    sunny one lit or the far margin beyond the reach of a neighbour's shadow.

    A shadow on the far margin that does not cross the near one must come from
    something standing on the track itself; so must one that a railcar on the
    nearest neighbouring track could not cast (its shadow reaches less than
    _NEIGHBOUR_REACH_M across). ``margin_ratios`` maps each scene to its
    :func:`_margin_ratios`; ``shadow_side`` is the signed reach of
    :func:`_shadow_sides`; ``dark`` the far margin's threshold (default _DARK,
    see :func:`_own_shadow_dark`).
    """
    dark = _DARK if dark is None else dark
    out = np.zeros(shadow_side.shape, bool)
    for t, s, far, near in _far_and_near(margin_ratios, shadow_side):
        out[t] = (s != 0) & (far < dark) & ((near > _LIT) | (np.abs(s) < _NEIGHBOUR_REACH_M))
    return out


def _far_lit(ratios, side, step_m: float) -> np.ndarray:
    """Where a railcar on the track would shade the margin away from the sun, yet that
    margin is lit: nothing tall stands there.

    ``ratios`` is a scene's :func:`_margin_ratios` (None: nowhere), ``side`` its signed
    shadow reach (:func:`_shadow_sides`), ``step_m`` the strips' step along the track.
    True where the reach is at least ``_FAR_LIT_REACH_M`` and the far margin reads at
    least ``_FAR_LIT`` of the empty track's light at every position within
    ``_FAR_LIT_WINDOW_M`` along (an unknown one is not lit).
    """
    side = np.asarray(side)
    if ratios is None:
        return np.zeros(side.shape, bool)
    far, _ = _far_near(ratios, side)
    far = np.where(np.isfinite(far), far, -1.0)
    size = 2 * max(int(round(_FAR_LIT_WINDOW_M / step_m)), 0) + 1
    lit = ndimage.minimum_filter1d(far, size, axis=-1) >= _FAR_LIT
    return lit & (np.abs(side) >= _FAR_LIT_REACH_M)


def _far_and_near(margin_ratios, shadow_side):
    """Per scene with margin ratios: the scene, its signed shadow reach and the ratios of
    the margin away from the sun (far) and towards it (near)."""
    for t, ratios in margin_ratios.items():
        if ratios is not None:
            yield t, shadow_side[t], *_far_near(ratios, shadow_side[t])


def _far_near(ratios, side):
    """The ratios of the margin away from the sun and of the one towards it, given the
    signed shadow reach ``side`` (shadows fall towards +across where it is positive)."""
    lo, hi = ratios
    return np.where(side > 0, hi, lo), np.where(side > 0, lo, hi)


# a margin is in shadow below this share of its empty-track brightness (shadows keep
# 0.3-0.55 of the light), and lit above the second (the near margin may take some blur)
_DARK = 0.75
# ... and the far margin's threshold for a railcar's own shadow at 0.6-1.5 m pixels
_DARK_BLURRED = 0.85
_LIT = 0.7
# at pixels coarser than 2 m a neighbouring track's cars darken the strip from the sun's
# side: a light change across the strip explains it where the margin towards the sun is
# the darker one and at least this share of the light (deeper is a full shadow, which the
# shadow explanation reads); 0.4 and 0.6 read the same within 0.02 railcars per track and
# scene on the 3 m tuning sites
_SUN_SIDE_LIGHT_LO = 0.5
# thin haze that the usable-data mask leaves unflagged (a cloud's veil beside it) brightens
# the whole strip, margins too, and its light adds to the colours rather than scaling them:
# where both margins read this much above the empty track, the core may be explained as
# hazy ballast (toolkit._fast.scene_distances, haze code 2; the noise is read without it).
# Tuning seed 42 at 1 m: a hazy empty track beside a cloud read 8 railcars. Not at coarser
# pixels, whose margins take in the neighbouring tracks' cars (bright cars on both sides
# read as haze: calibrating the 3 m full yard, seed 126, lost 19-31 % -> 43 %)
_HAZE_LIGHT = 1.08
_HAZE_LIGHT_MAX_PIXEL_M = 1.5
# a railcar's shadow (4 m high) on the sunward neighbouring track, 4.5 m away at the
# closest, starts 4.5 - 1.65 m from this centreline: reaching this strip's far margin
# (2.5 m beyond it) takes this much reach across
_NEIGHBOUR_REACH_M = 4.5 - 1.65 + 2.5
# the margin towards the sun matches the reference's within this range when only the far
# margin's shade has lifted (a parked car left in this scene: see _lifted_shadow)
_NEAR_SAME = (0.85, 1.18)
# ... and the core deviates over at least this share of the lifted run
_LIFT_DEVIANT_SHARE = 0.5
# ... or the reference's own margin on that side is under this share of the track's typical
# brightness there (see _shaded_margins)
_REF_SHADED = _DARK_BLURRED
# ... judged over runs of lifted shade apart by at most this much (m)
_LIFT_GAP_M = 3.0
# coupler gaps (about 1 m between car bodies) are looked for in strips sampled this
# finely: at 1 m a gap is one blurred sample, still a narrow dip of the deviation
_GAP_MAX_STEP_M = 1.0
# ... and seen sharp (over two samples or more) at this step or finer
_GAP_SHARP_STEP_M = 0.6
# positions need at least this deviation (noise units) for their own shadow to decide: the
# first at pixels up to _OWN_SHADOW_FINE_PIXEL_M, the second at coarser ones. On the busy
# tuning yards at 0.5-1 m, once a busy scene keeps the shadow explanation beside a lit far
# margin (_FAR_LIT), 1.5 found some of the missed cars the false ones had offset (seed 105,
# 2023-09-03: 538 -> 505 missed positions):
# full yards 4.2 -> 3.9 % scene error, 0.82 -> 0.73 railcars per track and scene with the sun at
# or above 45 degrees and 1.93 -> 1.85 below; random traffic 0.60 and 2.20 -> 0.60 and 2.19
# (1.0: full yards better, random traffic 5.2 -> 5.7 %). At 3 m, 1.5 helped seven of eight
# tuning sites but read the held-out seed 36 worse (see the README), so 2 stays there
_OWN_SHADOW_MIN_DEV = (1.5, 2.0)
_OWN_SHADOW_FINE_PIXEL_M = 1.5
# depth range of a neighbour's shadow on this track, relative to the scene's shadow factor
_NEIGHBOUR_SHADOW_SCALE = (0.9, 1.15)
# a position is a neighbour's car seen through the blur when the nearest position on
# another track (within _BLEED_RADIUS_M) deviates this many times more, and it deviates
# less than this many thresholds itself
_BLEED_RATIO = 2.0
_BLEED_MAX_DEV = 2.0
_BLEED_RADIUS_M = 6.5
# the ballast-like appearance mode replaces the temporal median when it holds this many
# scenes and lies less than this share of the median's distance from the ballast
_MODE_MIN_SCENES = 3
_MODE_GAIN = 0.5
# ... and is looked for where the last pass judged at least this share of the scenes that
# show a place free
_MODE_MIN_SHARE = 0.5
# at pixels coarser than this the modes and the typical look are taken only where the
# scenes of the other look are one stretch of time: at most this many changes between
# the two looks in time order (a cut that came and left), and the typical look only from
# this many scenes or more. On a 3 m site spread over five years (seed 155) a lone snow
# scene alone, or scenes of one season, gave the typical look: 0.95 -> 1.54 railcars per
# track and scene without these, 0.91 with them
_COARSE_MODES_PIXEL_M = 1.0
_COARSE_MAX_CHANGES = 2
_COARSE_MIN_LIKE = 2
# a place whose empty-track reference departs from the track's typical look by more than
# this (log colour ratio, in any band) is taken from the scenes that show the typical look
# there: 0.12 lowered the error per track and scene on the synthetic tuning sites at 0.5
# and 1 m (full yard 2.88 -> 2.37, quiet yards e.g. 0.34 -> 0.24); 0.10 put a false car on
# the default sample, 0.15 and 0.20 helped less
_TYPICAL_TOL = 0.12
# the noise sigma is at most the _NOISE_LOW_Q quantile of the distances of all known
# positions over this share of the median: on the tuning sites the lowest tenth of the
# free positions' distances lies at 0.53-0.68 of their median (1 m and 0.5 m), so only a
# scene whose positions judged free hold many cars is read with the lower sigma
_NOISE_LOW_Q = 0.1
# no scene's noise sigma is taken lower than this (distance units of the gain-normalised
# bands): a noise-free background gets it, not the no-information default
_NOISE_FLOOR = 0.01
_NOISE_LOW_RATIO = 0.45
# ... where the core's distances spread (upper quartile over median at least this; mostly
# 1.2-1.4 in the tuning sites' scenes) and the margins fit better than the core (their
# sigma under this times the core's; mostly 1.2-2.3 in the tuning sites' scenes, 0.45-1.0
# in a yard full on every date)
_NOISE_BUSY_SPREAD = 1.5
_NOISE_MARGIN_FIT = 1.1
# the busy_noise reading: a busy scene's sigma times this (no lower than the floor), as the
# lowest tenth may still hold cars (a yard 60-90 % full)
_BUSY_NOISE_FACTOR = 0.5
# a busy scene: at least this share of the known positions occupied (after closing short
# gaps and dropping short runs; on the quiet tuning sites at most 0.19 in the 10-track
# layout and 0.28 in the smaller 8-track one, 0.17 on the default sample's 73-car scene;
# 0.19-0.57 in a yard 60-90 % full on every date). The estimate
# explains no sample there as a shadow where no neighbour's car can shade the core, and the
# no_shadow reading nowhere
_BUSY_SHARE = 0.3
# reference support (_reference_support): a scene shows the empty-track reference at a place
# where its core colour is within this log ratio of the reference's in every band. On the
# eight 3 m tuning sites with Tumangang-like traffic each track's support was 0.64-0.92; in
# the 3 m random-traffic and full yards (seeds 154 and 126, read 54 % and 84 % under)
# 0.00-0.33: few scenes look like the reference there, which took a car's look
_SUPPORT_TOL = 0.05
_SUPPORT_MIN_SCENES = 3
# ... below this support, at pixels coarser than _SUPPORT_PIXEL_M (where the shadows and the
# coupler gaps that tell cars in a full yard at 0.5-1 m are not resolved), the count's high
# bound is the railcars that fit on the visible track (0.5: about midway, 0.33 to 0.64)
_SUPPORT_MIN = 0.5
_SUPPORT_PIXEL_M = 2.0
# ... where a railcar's shadow (4 m high) reaches less than this across the track beyond its
# side, a car on the nearest neighbouring track (4.5 m away, 1.65 m half-width) cannot shade
# the far half of this track's core (1.1 m): no sample there is explained as a shadow
_NEIGHBOUR_COVER_M = 4.5 - 1.65 + 1.1
# ... less this many pixels: a shadow's edge is blurred over the pixel that holds it, and
# one ending within half a pixel of the far side of the core still dims it. On the 1 m
# full tuning yard (seed 105) two scenes whose reach was 3.73-3.75 m (box cars are 4.2 m
# high in the simulator) read 345 and 1090 m of free track in the neighbours' shadows as
# cars without it (23 and 176 m with it)
_COVER_BLUR_PX = 0.5
# a busy scene's shadow explanation needs a car on the neighbouring track towards the sun
# (see _casters): the ray from the core towards the sun is followed to these distances
# across (a neighbouring track's centre, 4.5-5.5 m away in the simulator's yards, nearest
# first), and the neighbour must be seen free within this many metres along of where the
# ray crosses it (a railcar's shadow is cast by its whole body; its corners blur). On the
# full tuning yards (seeds 103 at 0.5 m and 105 at 1 m) the scene error went from 3.9 to
# 2.9 % and from 9.0 to 8.1 % (6 m: 3.4 and 7.5 %)
_CASTER_ACROSS_M = (4.5, 4.0, 5.0, 5.5, 6.0)
_CASTER_WINDOW_M = 3.0
# ... and not where a 4 m car's shadow reaches so far that a car two tracks away (9 m)
# could shade the core: there the nearest neighbour's being free says nothing (tuning seed
# 104 at 1 m, random traffic: a scene with the sun 29 degrees high read 148 railcars of 132
# without this, 141 with it)
_SECOND_NEIGHBOUR_M = 9.0 - 1.65 - 1.1
# in a busy scene neither the rule for places no neighbour's car can shade nor the casters'
# rule drops the explanation where a railcar on this track would cast its own shadow over the
# margin away from the sun (a 4 m car's shadow reaching at least _FAR_LIT_REACH_M across
# beyond its side, so a 3.4 m ore car's reaches 1.7 m, past the margin's outer samples 0.85 m
# beyond its side), yet that margin reads at least _FAR_LIT of the empty track's light over
# _FAR_LIT_WINDOW_M either way along the track (the shadow of a car's end falls a few metres
# along it: judged at the same place only, 823 true positions of cloud-free scenes were lost,
# against 248 with the window). On the tuning sites
# the two rules had read 28,702 true and 12,205 false occupied positions in busy scenes; this
# keeps 3,949 of the false ones free and loses 249 true ones. The error per track and scene of
# the full yards at 0.5-1 m with the sun at or above 45 degrees went from 1.15 to 0.82 (random
# traffic 0.64 to 0.60; below 45 degrees, where false cars had made up for missed ones, 1.90
# to 1.93 and 2.21 to 2.20)
_FAR_LIT = 0.95
_FAR_LIT_REACH_M = 2.0
_FAR_LIT_WINDOW_M = 4.0
# a scene's gains: where the most common brightness of its known, lit samples against the
# empty track (within +-_GAIN_MODE_WIDTH in log units, about 5 %) differs from the median
# over the positions judged free by more than _GAIN_MODE_TOL in some band, the positions
# judged free hold many cars (a busy scene: on the tuning sites the median was 5-25 % off
# there), and the mode is taken; if that moved a gain in use by as much, one more pass
# (at most three in all, _classify's max_passes) re-reads every scene with it
_GAIN_MODE_WIDTH = 0.05
_GAIN_MODE_TOL = 0.04
# a run shorter than a railcar on a quiet track, deviating more than this many times the
# occupancy threshold, is left out of the count's estimate (see _counted_row)
_DOUBT_FACTOR = 2.0
# no railcar is shorter than the first over its couplers (m), none longer than the second
_SHORTEST_CAR_M = 11.0
_LONGEST_CAR_M = 21.0
# splitting a run into whole cars (_best_cuts): segment lengths, their spread about the
# mean car length, the cars' colour windows beside a position, and a gap's score per unit
# of ballast share above the share that is no evidence either way
_DP_SHORTEST_M = 11.5
_DP_LONGEST_M = 21.5
_CAR_LENGTH_SD_M = 2.0
_GAP_CAR_WINDOW_M = 3.0
_GAP_SCORE = 8.0
_GAP_SHARE_MIN = 0.2
# the threshold's multiples for the stricter and the more lenient reading (the interval)
_STRICT_FACTOR = 1.4
_LENIENT_FACTOR = 0.8
# a scene far brighter beside the tracks than the other scenes of its appearance group (the
# 90th percentile of its known samples in the strip margins, away from masked positions,
# against the group's median) is a lone snow scene: its empty track looks like no other
# scene's, and no reference can be learned for it. Its counts are left out (NaN). On the
# tuning sites the brightest scene without snow read 1.28 (thin haze beyond a cloud mask's
# edge), the dimmest snow scene outside a snow group 1.50; the limit lies midway between
# them in log units. Scenes with at least _LONE_MIN_SAMPLES margin samples and a quarter of the
# scenes' median number are judged, within their group where it has a temporal reference of
# its own (_TEMPORAL_MIN_SCENES scenes; a smaller one uses the ballast beside the track
# everywhere) and _LONE_MIN_SCENES of them, else against all of them
_TEMPORAL_MIN_SCENES = 5
_LONE_BRIGHT_RATIO = 1.4
# ... and in a scene with nothing masked along its tracks, where no thin haze beyond a
# cloud mask's edge can brighten the ballast, a lower limit. On 29 synthetic tuning and
# further sites (0.5-3 m) the brightest such scene without snow read 1.17, and every such
# snow scene 1.27 or more except the default sample's, whose snow scenes form a group with
# a reference of its own (up to 1.23, read right); midway in log units between 1.17 and
# 1.27 is 1.22, and the limit is set above the sample's 1.23. Counted, the 1.27-1.34 snow
# scenes of busy yards read 35-66 % of their railcars, none with the truth within its
# interval (seeds 161, 162, 163 twice and 124: 75 of 221, 165 of 265, 63 of 137, 62 of 117,
# 83 of 170); the one of a quiet yard (seed 72) read 12 of 9
_LONE_BRIGHT_RATIO_CLEAR = 1.25
_LONE_MIN_SCENES = 4
_LONE_MIN_SAMPLES = 200


def _shadow_sides(strips, *, enabled: bool = True):
    """Which side of each track its railcars' shadows fall on, and how far, per scene.

    From the sun's position at the acquisition time (computed, not read) and
    the track's direction: the reach across the track (m) of a 4 m high car's
    shadow beyond its side, signed by the side (+ towards +across); 0 where
    the sun is too high or too nearly along the track for it to reach 1 m, and
    everywhere when not ``enabled`` or the sun cannot be placed (see
    :func:`_sun_reach`).
    """
    placed = _sun_reach(strips) if enabled else None
    if placed is None:
        shape = (strips.sizes["time"], strips.sizes["track"], strips.sizes["along"])
        return xr.DataArray(np.zeros(shape, "float32"), dims=("time", "track", "along"))
    return placed[0]


def _sun_reach(strips):
    """:func:`_shadow_sides`' signed reach and, per scene, whether the sun was placed
    (a time, and the sun more than 5 degrees high) and its azimuth and elevation
    (degrees, NaN where not placed); None where it cannot be placed in any scene: no
    acquisition times, no sample coordinates or CRS, or a CRS pyproj cannot place."""
    import pandas as pd
    from pyproj import Transformer

    from toolkit._sun import sun_position

    shape = (strips.sizes["time"], strips.sizes["track"], strips.sizes["along"])
    if not np.issubdtype(strips["time"].dtype, np.datetime64):
        return None
    times = pd.DatetimeIndex(strips["time"].values)
    if "x_sample" not in strips.coords or not strips.attrs.get("crs") or strips.sizes["across"] < 2:
        return None  # no geometry to place the sun against
    xm, ym, nx, ny = _track_frame(strips)
    cx, cy = np.nanmean(xm), np.nanmean(ym)
    try:
        to_lonlat = Transformer.from_crs(strips.attrs["crs"], "EPSG:4326", always_xy=True)
        lon, lat = to_lonlat.transform(cx, cy)
    except Exception:  # a CRS pyproj cannot place
        return None
    if not (np.isfinite(lon) and np.isfinite(lat)):
        return None
    out = np.zeros(shape, "float32")
    placed = np.zeros(shape[0], bool)
    azimuth = np.full(shape[0], np.nan)
    elevation = np.full(shape[0], np.nan)
    for i, t in enumerate(times):
        if pd.isna(t):
            continue
        elev, az = sun_position(t.to_pydatetime().replace(tzinfo=None), lat, lon)
        if elev <= 5:
            continue
        placed[i] = True
        azimuth[i], elevation[i] = az, elev
        _, _, c, reach = _shadow_vector(az, elev, nx, ny)
        out[i] = np.where(np.isfinite(c) & (reach >= 1.0), np.sign(c) * reach, 0.0)
    reach = xr.DataArray(out, dims=("time", "track", "along"))
    return reach, xr.DataArray(placed, dims="time"), (azimuth, elevation)


def _caster_geometry(strips, sun):
    """What :func:`_casters` needs: the tracks' centrelines and across directions and
    the sun's azimuth and elevation per scene (``sun`` from :func:`_sun_reach`), small
    enough to travel with the task; None where the sun cannot be placed or there is no
    other track."""
    if sun is None or "x_sample" not in strips.coords or strips.sizes["track"] < 2:
        return None
    return (*_track_frame(strips), *sun[2])


def _track_frame(strips):
    """The centreline's x and y and the unit vector towards +across, per (track, along),
    from the strips' sample coordinates (float64)."""
    n_c = strips.sizes["across"]
    xs = np.asarray(strips["x_sample"].values, "float64")
    ys = np.asarray(strips["y_sample"].values, "float64")
    width = float(strips["across_m"].values[-1] - strips["across_m"].values[0])
    nx = (xs[..., -1] - xs[..., 0]) / width
    ny = (ys[..., -1] - ys[..., 0]) / width
    return xs[..., n_c // 2], ys[..., n_c // 2], nx, ny


def _shadow_vector(azimuth, elevation, nx, ny):
    """The horizontal unit vector away from the sun (sx, sy), its component along the
    across direction (nx, ny) (signed: shadows fall towards +across where positive), and
    the reach of a 4 m car's shadow across the track beyond its side (m)."""
    sx, sy = -np.sin(np.radians(azimuth)), -np.cos(np.radians(azimuth))
    c = sx * nx + sy * ny
    return sx, sy, c, 4.0 / np.tan(np.radians(elevation)) * np.abs(c)


def _casters(geometry, t: int) -> np.ndarray:
    """Per position of scene ``t``, the flat (track, along) index of the position on
    another track whose railcar would shade this core: the centreline position nearest
    the ray from this core towards the sun where the ray is _CASTER_ACROSS_M across (a
    neighbouring track's centre), within 0.5 m of it. -1 where there is none, where no
    shadow reaches 1 m, and where a shadow reaches so far (_SECOND_NEIGHBOUR_M) that a car
    two tracks away could shade the core too. (track, along) int64."""
    from scipy.spatial import cKDTree

    xm, ym, nx, ny, azimuth, elevation = geometry
    n_k, n_a = xm.shape
    best = np.full(n_k * n_a, -1, np.int64)
    if not np.isfinite(azimuth[t]):
        return best.reshape(n_k, n_a)
    pts = np.stack([xm.ravel(), ym.ravel()], axis=1)
    track = np.repeat(np.arange(n_k), n_a)
    good = np.flatnonzero(np.isfinite(pts).all(axis=1))
    if good.size < 2:
        return best.reshape(n_k, n_a)
    tree = cKDTree(pts[good])
    sx, sy, c, reach = _shadow_vector(azimuth[t], elevation[t], nx, ny)
    c = np.abs(c)
    for across_m in _CASTER_ACROSS_M:
        with np.errstate(divide="ignore", invalid="ignore"):
            run = across_m / c  # ground distance towards the sun to that across
        q = np.stack([(xm - sx * run).ravel(), (ym - sy * run).ravel()], axis=1)
        ok = np.isfinite(q).all(axis=1) & (best < 0)
        if not ok.any():
            continue
        dist, idx = tree.query(q[ok], distance_upper_bound=0.5)
        cand = np.where(np.isfinite(dist), good[np.minimum(idx, good.size - 1)], -1)
        other = (cand >= 0) & (track[np.maximum(cand, 0)] != track[ok])
        best[np.flatnonzero(ok)[other]] = cand[other]
    r = reach.ravel()
    best[~(r >= 1.0) | (r >= _SECOND_NEIGHBOUR_M)] = -1
    return best.reshape(n_k, n_a)


def _core_deviation(
    d, known, free, halves_idx, smooth, chi_med, *, d_noise=None, margin=None, own_ref=None
):
    """Per-position deviation in noise units from per-sample distances (track, along, across).

    A car covers both halves of the core; a neighbour's shadow edge or a glint
    covers one: the less deviant half counts. Positions where ``own_ref``
    (track, along) holds, whose reference is this scene's own samples (the only
    scene that lifts a parked car's shade, see :func:`_lifted_shadow`), deviate
    by nothing and take no part in the noise level. Returns the smoothed and the raw
    deviation, the noise sigma (from the positions judged free, measured on
    ``d_noise`` when given, else on ``d``), the sigma of the ``busy_noise``
    reading (``_BUSY_NOISE_FACTOR`` times the sigma in a busy scene, no lower
    than the floor; the sigma itself elsewhere) and the smoothed deviation of
    ``d_noise`` (``d`` when not given) in the same noise units.

    With ``margin`` (bool over ``across``: the strip's margins, beside any car
    body), a busy scene is read with a lower sigma. Where most of the track is
    occupied, the positions judged free hold many cars, whose distances inflate
    the noise and hide the cars (a yard that is full on every date). Such a
    scene shows it in two ways: the ballast beside the track fits its reference
    better than the track's core does (by ``_NOISE_MARGIN_FIT``; in a scene
    whose empty track fits, the margins fit worse than the core, which has
    the rails), and the core's distances spread widely (upper quartile at least
    ``_NOISE_BUSY_SPREAD`` times the median). There the sigma is at most the one
    read from the lowest tenth of all known positions (see
    ``_NOISE_LOW_RATIO``). A scene that fits poorly everywhere (patchy snow on
    a lone snow date, haze) keeps its larger sigma: its margins fit as poorly.
    """
    dc_raw, dc = _core_profiles(d, known, halves_idx, smooth)
    noise = dc if d_noise is None else _core_profiles(d_noise, known, halves_idx, smooth)[1]
    if own_ref is not None:
        known, free = known & ~own_ref, free & ~own_ref
    s = nanmedian_flat(np.where(free, noise, np.nan)) / chi_med
    busy = False
    if margin is not None and margin.any() and np.isfinite(s):
        low = noise[known]
        low = low[np.isfinite(low)]
        beside = (d if d_noise is None else d_noise)[..., margin]
        s_beside = nanmedian_flat(np.where(known[..., None], beside, np.nan)) / chi_med
        if low.size >= 50 and s_beside < _NOISE_MARGIN_FIT * s:
            q_low, q_mid, q_high = np.quantile(low, [_NOISE_LOW_Q, 0.5, 0.75])
            if q_high >= _NOISE_BUSY_SPREAD * q_mid:
                busy = True
                s = min(s, q_low / (_NOISE_LOW_RATIO * chi_med))
    # a noise-free background (s == 0) gets the floor, not the no-information default
    sigma = max(s, _NOISE_FLOOR) if np.isfinite(s) else 1.0
    return (
        dc / sigma,
        dc_raw / sigma,
        sigma,
        (max(_BUSY_NOISE_FACTOR * sigma, _NOISE_FLOOR) if busy else sigma),
        noise / sigma,
    )


def _core_profiles(dist, known, halves_idx, smooth):
    """Raw and smoothed core distance per position (track, along); NaN where unknown.

    A car covers both halves of the core; a neighbour's shadow edge or a glint
    covers one: the less deviant half counts.
    """
    halves = [_nanmean_at(dist, h) for h in halves_idx]
    raw = np.fmin(*halves) if len(halves) == 2 else halves[0]
    out = raw
    if smooth > 1:  # running median along the track: texture spikes out, cars in
        out = running_median_rows(np.where(np.isfinite(raw), raw, 0.0).astype("float64"), smooth)
    return np.where(known, raw, np.nan), np.where(known, out, np.nan)


def _snow_groups(v: np.ndarray, scene_med: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Snow scenes (1) and the others (0): the :func:`_appearance_groups` of the scenes'
    medians ``scene_med`` (time, band) over the strips ``v`` (time, track, along, across,
    band), kept only where the median beside the track (``margin``, bool over across)
    splits too.

    Snow lies on the bed as well as on the cars, so the ballast beside the track, where
    no car body stands, is brighter in a snow scene. In a yard full on every date the
    strip's median is the cars' colours, and low autumn sun alone split off its darkest
    scenes: tuning seed 105 at 1 m read 9 of its 12 scenes as snow, with twice the
    threshold and no parked-car rules (scene error 30 %, 16.5 % with one group).
    """
    groups = _appearance_groups(np.where(scene_med > 0, scene_med, np.nan))
    if groups.max() > 0 and margin.any():
        beside_med = scene_medians_at(v, np.flatnonzero(margin))
        if _appearance_groups(np.where(beside_med > 0, beside_med, np.nan)).max() == 0:
            groups[:] = 0
    return groups


def _appearance_groups(scene_med: np.ndarray, *, min_ratio: float = 1.08) -> np.ndarray:
    """Split scenes into snow-like and ordinary ones by their overall brightness.

    Returns a group label per scene (0 or 1): one group unless the sorted log
    brightness splits into two sides of at least three scenes each that are
    well separated (difference of means at least 3.5 pooled standard
    deviations, the split chosen to maximise it) with a gap of at least
    ``min_ratio`` between them: two distinct appearances, not a continuum of
    illumination.
    """
    bright = np.log(_nanmean(scene_med, axis=1))
    labels = np.zeros(bright.size, int)
    seen = np.isfinite(bright)  # scenes with nothing visible join group 0
    if seen.sum() < 6:
        return labels
    order = np.sort(bright[seen])
    # the split that separates the two sides best (Otsu's criterion on log brightness)
    best, i = -np.inf, -1
    for j in range(3, order.size - 2):
        low, high = order[:j], order[j:]
        pooled = np.sqrt((low.var() * low.size + high.var() * high.size) / order.size)
        sep = (high.mean() - low.mean()) / max(pooled, 1e-6)
        if sep > best:
            best, i = sep, j - 1
    if i < 0 or order[i + 1] - order[i] < np.log(min_ratio) or best < 3.5:
        return labels
    labels[seen] = (bright[seen] > order[i]).astype(int)
    return labels


def _reference(
    n: np.ndarray,
    free: np.ndarray,
    lit: np.ndarray,
    core: np.ndarray,
    margin: np.ndarray,
    *,
    scenes: np.ndarray | None = None,
    modes: bool = False,
    odd_k: float = 3.0,
    window: int = 61,
    lifted: np.ndarray | None = None,
    coarse: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty-track appearance (track, along, across, band) from one group of similar scenes.

    Two estimates are combined. The *temporal* one is the median over time of
    the free, lit samples at each place: exact where the track is often empty.
    The *ballast* one is read beside the track, in the strip's margins, where
    no car body stands (car bodies are 3.4 m wide, tracks 4.5-5.5 m apart):
    per scene the brighter margin (the other may lie in a car's shadow), then
    the median over time and a running median along the track. Where the
    temporal estimate is far from the ballast one (a car parked in most
    scenes, a yard that is never empty) the ballast estimate is used, unless
    the temporal one is nearer the track's typical look (its median along the
    track): a neighbour's parked cars shade and blur into the margins the
    ballast estimate comes from. Groups of fewer than five scenes use the
    ballast estimate everywhere. The ballast estimate is scaled across the
    track by the yard-wide profile of free samples (a ballast bed may be
    narrower than the strip). Returns the combined reference, the ballast
    estimate alone (the temporal one where the margins were found misleading)
    and the plain temporal median (the ballast estimate where no free sample
    was seen). ``scenes`` (bool per scene, default all) selects the group's
    scenes without copying the stack. With ``modes``, a place whose scenes
    fall into two appearance modes takes the temporal estimate from the mode
    nearer the ballast (see :func:`toolkit._fast.ballast_like_mode`), not from
    the majority, where at least _MODE_MIN_SHARE of the scenes showing it are
    ``free``, and a place whose temporal estimate is far from the track's
    typical look (a car parked in every scene) takes the ballast estimate when
    that is less than half as far from the typical look. With ``lifted``
    (time, track, along), the places where some of the group's scenes show the
    empty track under a car parked in the others (see :func:`_lifted_shadow`)
    take the median of those scenes. Last, with ``modes``, a place whose
    reference is still far from the track's typical look takes it from the
    scenes that show that look (see :func:`_typical_look`).
    """
    _, n_k, n_a, _, n_b = n.shape
    scenes = np.ones(n.shape[0], bool) if scenes is None else np.asarray(scenes, bool)
    n_t = int(scenes.sum())
    mi = np.flatnonzero(margin)
    sides = [sd for sd in _margin_sides(margin) if sd.size]
    if len(sides) == 2:
        ball = nanmedian_axis0(brighter_margin(n, *sides, scenes=scenes))  # (K, A, B)
    elif sides:
        ball = nanmedian_axis0(_nanmean(n[scenes][..., sides[0], :], axis=-2))
    else:
        ball = nanmedian_axis0(n[scenes].mean(axis=3))
    # running median along the track, NaNs filled with the track's median first
    for k in range(n_k):
        for b in range(n_b):
            row = ball[k, :, b]
            ok = np.isfinite(row)
            if not ok.any():
                continue
            filled = np.where(ok, row, np.median(row[ok]))
            ball[k, :, b] = ndimage.median_filter(filled, size=window, mode="nearest")
    ball = np.where(np.isfinite(ball), ball, nanmedian_axis0(ball.reshape(-1, n_b)))
    # the yard-wide profile across the track (free, lit samples), e.g. a ballast bed
    # narrower than the strip, scales the margin ballast to every offset
    use = free[..., None] & lit & scenes[:, None, None, None]
    profile = masked_median_per_offset(n, use)  # (C, B)
    profile_m = _nanmean(profile[mi], axis=0) if mi.size else _nanmean(profile, axis=0)
    shape = profile / np.maximum(profile_m, 1e-6)
    shape = np.where(np.isfinite(shape), shape, 1.0)
    ballast = ball[:, :, None, :] * shape[None, None]
    if n_t < _TEMPORAL_MIN_SCENES:
        return ballast, ballast, ballast
    ref = masked_median_over_time(n, use, np.ones((n_k, n_a), bool))  # (K, A, C, B)
    temporal = np.where(np.isfinite(ref), ref, ballast)
    d = np.sqrt(np.sum((ref[..., core, :] - ballast[..., core, :]) ** 2, axis=-1)).mean(axis=-1)
    spread = 1.4826 * _nanmedian(d)
    odd = ~np.isfinite(d) | (d > odd_k * spread + 0.02)
    # ... unless the temporal estimate is the one that looks like the rest of the track
    # (a neighbour's parked cars shade and blur into the margins the ballast comes from)
    ref_c = ref[..., core, :].mean(axis=2)  # (K, A, B)
    ball_c = ballast[..., core, :].mean(axis=2)
    typical = nanmedian_axis0(np.moveaxis(ref_c, 1, 0))[:, None, :]  # (K, 1, B)
    d_ref = np.sqrt(np.sum((ref_c - typical) ** 2, axis=-1))
    d_ball = np.sqrt(np.sum((ball_c - typical) ** 2, axis=-1))
    kept = odd & (d_ref < d_ball)
    odd &= ~kept
    if modes:
        # a car parked in every scene: the temporal estimate is far from the track's
        # typical look (in its own spread along the track), the ballast is much nearer
        far = d_ref > odd_k * 1.4826 * _nanmedian(d_ref) + 0.02
        odd |= far & (d_ball < _MODE_GAIN * d_ref)
    ref[odd] = ballast[odd]
    bad = ~np.isfinite(ref)
    ref[bad] = ballast[bad]
    if modes:
        # a car parked in most scenes is the majority at its place; the empty track is
        # then the mode like the ballast beside it
        members, better = ballast_like_mode(
            n,
            use,
            np.flatnonzero(core),
            ballast[..., core, :].mean(axis=2),
            ref[..., core, :].mean(axis=2),
            _MODE_MIN_SCENES,
            _MODE_GAIN,
        )
        if better.any():
            # ... judged from most of the scenes that show the place: where the last pass
            # found most of them occupied, the few left may share a car's look
            ci = np.flatnonzero(core)
            judged = use[..., ci].any(axis=-1).sum(axis=0)
            shown = (np.isfinite(n[..., ci, 0]).any(axis=-1) & scenes[:, None, None]).sum(axis=0)
            better &= judged >= _MODE_MIN_SHARE * shown
        if better.any() and coarse:
            # ... at coarse pixels where the other mode's scenes are one stretch of time
            seen_m = use.any(axis=-1)  # use holds the group's scenes only
            better &= _changes_in_time(seen_m & ~members, seen_m) <= _COARSE_MAX_CHANGES
        if better.any():
            alt = masked_median_over_time(n, members[..., None] & use, better)
            ref[better] = np.where(np.isfinite(alt[better]), alt[better], ref[better])
    if lifted is not None:
        # where some scenes show the empty track under a car parked in the others (see
        # _lifted_shadow), the empty track is their median
        shown = lifted & scenes[:, None, None]
        places = shown.any(axis=0)
        if places.any():
            alt = masked_median_over_time(n, np.broadcast_to(shown[..., None], use.shape), places)
            ref[places] = np.where(np.isfinite(alt[places]), alt[places], ref[places])
    # where the margins were found misleading, the ballast reading keeps the temporal one too
    ballast[kept] = ref[kept]
    if modes:
        _typical_look(n, ref, lit, core, scenes, coarse=coarse)
    return ref, ballast, temporal


def _changes_in_time(other: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Per place, how often ``other`` changes between consecutive ``shown`` scenes in time
    order (both (time, ...) bool, the scenes in time order, as a cube's are)."""
    prev = np.zeros(other.shape[1:], bool)
    seen = np.zeros(other.shape[1:], bool)
    changes = np.zeros(other.shape[1:], np.int64)
    for t in range(other.shape[0]):
        o_t = other[t] & shown[t]
        changes += shown[t] & seen & (o_t != prev)
        prev = np.where(shown[t], o_t, prev)
        seen |= shown[t]
    return changes


def _typical_look(n, ref, lit, core, scenes, *, coarse: bool = False) -> None:
    """Where the reference is far from the track's typical look, take it from the scenes
    that show that look there (``ref`` is changed in place).

    A track's empty bed looks alike along its length; the cars of a yard that
    is seldom empty do not. Where the reference's core colour departs from the
    track's typical look (its median along the track) by more than
    ``_TYPICAL_TOL`` (log ratio, in any band), the median over time has taken a
    car's colour: cars stood there in most scenes, and those judged free by
    the last pass may share that colour. The place then takes the median of
    the lit samples of the scenes whose core looks like the typical bed
    (within the same tolerance in every band). A place no scene shows so keeps
    its reference: its bed may really differ (a crossing, another ballast).
    With ``coarse``, only from ``_COARSE_MIN_LIKE`` scenes or more, and only
    where the others are one stretch of time (see ``_COARSE_MAX_CHANGES``).
    """
    ci = np.flatnonzero(core)
    ref_c = _nanmean(ref[..., ci, :], axis=2)  # (K, A, B)
    typical = nanmedian_axis0(np.moveaxis(ref_c, 1, 0))[:, None, :]  # (K, 1, B)
    floor = np.float32(1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.abs(np.log(np.maximum(ref_c, floor) / np.maximum(typical, floor)))
        suspect = (off > _TYPICAL_TOL).any(axis=-1) & np.isfinite(off).all(axis=-1)
    ks, As = np.nonzero(suspect)  # read the scenes at these places only
    stack = n[:, ks, As]  # (T, P, C, B)
    colour = _nanmean(stack[:, :, ci], axis=2)  # (T, P, B)
    seen = lit[:, ks, As]  # (T, P, C)
    shown = seen[..., ci].any(axis=-1) & scenes[:, None] & np.isfinite(colour).all(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.abs(np.log(np.maximum(colour, floor) / np.maximum(typical[ks, 0][None], floor)))
        like = shown & (dist <= _TYPICAL_TOL).all(axis=-1)  # (T, P)
    better = like.any(axis=0)
    if coarse:
        better &= like.sum(axis=0) >= _COARSE_MIN_LIKE
        better &= _changes_in_time(shown & ~like, shown) <= _COARSE_MAX_CHANGES
    if better.any():
        use = (like[..., None] & seen)[:, better]  # (T, Q, C)
        picked = np.where(use[..., None], stack[:, better].astype("float64"), np.nan)
        alt = nanmedian_axis0(picked.reshape(picked.shape[0], -1)).reshape(picked.shape[1:])
        ref[ks[better], As[better]] = np.where(np.isfinite(alt), alt, ref[ks[better], As[better]])


def _shadow_factor(n: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The scene's shadow darkening per band: the typical ratio of dark, near-neutral samples.

    Shadows dim every band by about the share of diffuse light (0.25-0.55);
    haze added on top makes the ratio slightly larger in the blue, so the
    factor is estimated per band. Returns NaNs when the scene shows too few
    shadowed samples to tell.
    """
    cand = shadow_candidates(n, ref)
    if cand.sum() < 50:
        return np.full(n.shape[-1], np.nan)
    return masked_ratio_median(n, ref, cand)


def _nanmean(a, axis=None, keepdims=False):
    """NaN-skipping mean without warnings (all-NaN slices give NaN), thread-safe."""
    a = np.asarray(a)
    a = a.astype(np.result_type(a.dtype, np.float32), copy=False)
    ok = np.isfinite(a)
    total = np.where(ok, a, 0.0).sum(axis=axis, keepdims=keepdims, dtype="float64")
    count = ok.sum(axis=axis, keepdims=keepdims)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.where(count > 0, count, np.nan)


def _nanmean_at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``_nanmean(a[..., idx], axis=-1)`` of a 3-D float64 array, bit for bit; compiled
    (:func:`toolkit._fast.nanmean_at`) for up to ``NANMEAN_AT_MAX`` offsets."""
    if a.dtype == np.float64 and a.ndim == 3 and idx.size <= NANMEAN_AT_MAX:
        return nanmean_at(a, np.asarray(idx, np.int64))
    return _nanmean(a[..., idx], axis=-1)


def _nanmedian(a, axis=None):
    """NaN-skipping median without warnings (all-NaN slices give NaN), thread-safe."""
    a = np.asarray(a, dtype="float64")
    if axis is None:
        a = a.reshape(-1)
        axis = 0
    return nanmedian_axis0(np.moveaxis(a, axis, 0))


def _cleaned(occ: xr.DataArray, *, max_gap: int, min_run: int) -> xr.DataArray:
    """:func:`_clean_runs` along ``along`` of an occupancy array (lazy when it is)."""
    return xr.apply_ufunc(
        _clean_runs,
        occ,
        input_core_dims=[["along"]],
        output_core_dims=[["along"]],
        kwargs={"max_gap": max_gap, "min_run": min_run},
        dask="parallelized",
        output_dtypes=["int8"],
    )


def _clean_runs(occ: np.ndarray, *, max_gap: int, min_run: int) -> np.ndarray:
    out = occ.copy()
    flat = out.reshape(-1, out.shape[-1])
    for i in np.flatnonzero((flat == OCCUPIED).any(axis=1)):  # rows with none stay as they are
        row = flat[i]
        # close short free gaps bounded by occupied on both sides
        starts, ends = _runs(row == FREE)
        for s, e in zip(starts, ends, strict=True):
            if e - s <= max_gap and s > 0 and e < row.size:
                if row[s - 1] == OCCUPIED and row[e] == OCCUPIED:
                    row[s:e] = OCCUPIED
        starts, ends = _runs(row == OCCUPIED)
        for s, e in zip(starts, ends, strict=True):
            if e - s < min_run:
                row[s:e] = FREE
    return out


def _count_runs(
    occ, dev, share=None, *, step, mean_len, lo_len, hi_len, gaps, doubt_dev=None
) -> np.ndarray:
    """Per occupancy profile (the last axis): the railcars, their low and high bounds,
    the occupied and the visible length (m), and the railcars cut at the deviation's
    dips alone (:func:`_segment_row`); ``dev`` and ``share`` broadcast against ``occ``."""
    flat = occ.reshape(-1, occ.shape[-1])
    dflat = np.broadcast_to(dev, occ.shape).reshape(-1, dev.shape[-1])
    sflat = None if share is None else np.broadcast_to(share, occ.shape).reshape(flat.shape)
    out = np.zeros((flat.shape[0], 6))
    kw = {"step": step, "mean_len": mean_len, "lo_len": lo_len, "hi_len": hi_len, "gaps": gaps}
    # a row with no occupied run counts nothing; repeated rows (the readings of a quiet
    # scene mostly agree) are counted once
    empty = ~(flat == OCCUPIED).any(axis=1)
    out[empty, 4] = (flat[empty] != UNKNOWN).sum(axis=1) * step
    done = {}
    for i in np.flatnonzero(~empty):
        row = flat[i]
        key = (row.tobytes(), dflat[i].tobytes(), None if sflat is None else sflat[i].tobytes())
        if key in done:
            out[i] = out[done[key]]
            continue
        done[key] = i
        kw["share"] = None if sflat is None else sflat[i]
        cars = _segment_row(row, dflat[i], **kw)
        # whole numbers: each segment's bounds are shared out over its cars as fractions,
        # whose float sum can fall a hair short (2.9999999999999996 would exclude 3)
        lo = float(np.round(sum(c[3] for c in cars)))
        hi = float(np.round(sum(c[4] for c in cars)))
        counted = _counted_row(row, dflat[i], step=step, doubt_dev=doubt_dev)
        if counted is not row:
            # doubtful short runs on a quiet track are left out of the estimate only
            cars = _segment_row(counted, dflat[i], **kw)
        n = sum(c[2] for c in cars)
        lo = min(lo, float(n))
        occupied = float((row == OCCUPIED).sum()) * step
        n_dips = float(np.round(sum(c[5] for c in cars)))
        out[i] = [n, lo, hi, occupied, (row != UNKNOWN).sum() * step, n_dips]
    return out.reshape(*occ.shape[:-1], 6)


# a railcar cut by the edge of a hidden stretch (cloud, its shadow, nodata) counts in the
# truth when its centre is visible, but near the edge the threshold is raised
# (cloud_margin_m) and the visible part is mostly read as free. In a busy scene (_BUSY_SHARE,
# here from the occupancy of all its tracks) each such edge adds one railcar to the high
# bound (_edge_cars). On the 0.5-1 m tuning sites, three quarters of the track-scenes whose
# truth lay above the high bound had such an edge; the rule raised coverage from 89.0 to
# 92.7 % (yards 60-90 % full) and 91.4 to 93.1 % (random traffic) for 5.1 and 4.0 % more
# mean width, and changed no bound on the quiet sites, at any pixel size. Gated by track
# (30 % of its visible length occupied) instead, the quiet sites' widths grew 0.7 %.
def _edge_cars(occ, on_track, *, short: int) -> np.ndarray:
    """Per occupancy profile (the last axis): the railcars that edges of hidden stretches
    (unknown samples on the track) may cut, one per edge next to a visible sample, one for
    both edges of a stretch shorter than ``short`` samples (a railcar may span it). See
    ``_BUSY_SHARE`` and counts_from_occupancy."""
    flat = occ.reshape(-1, occ.shape[-1])
    on = np.broadcast_to(on_track, occ.shape).reshape(flat.shape)
    out = np.zeros(flat.shape[0])
    known = flat != UNKNOWN
    hidden = ~known & on
    for i in np.flatnonzero(hidden.any(axis=1) & known.any(axis=1)):
        starts, ends = _runs(hidden[i])
        for s0, e0 in zip(starts, ends, strict=True):
            edges = int(s0 > 0 and known[i, s0 - 1]) + int(e0 < flat.shape[1] and known[i, e0])
            out[i] += min(edges, 1) if e0 - s0 < short else edges
    return out.reshape(occ.shape[:-1])


# Near a hidden stretch's edge the threshold is tripled (cloud_margin_m: thin haze beyond
# a mask's edge brightens the ballast), and thin haze also dims the cars under it: in
# busy scenes most railcars there read free. In a busy scene the high bound counts the
# railcars of the longest kind (car_length_range_m[1]) that would fill the visible
# positions read free within cloud_margin_m of such an edge (_near_edge_free), and in a
# scene busy away from those edges the estimate and the lenient reading ask no stronger
# evidence there (_classify's busy_away; the other readings keep the raised threshold).
# On the 0.5-1 m tuning sites, the bounds alone: truth within low-high 92.8 -> 94.3 %
# (yards 60-90 % full) and 92.9 -> 93.7 % (random traffic), for 3.4 and 3.1 % more mean
# width; on their cloudy track-scenes 88.0 -> 94.0 % (sun at or above 45 degrees) and
# 76.2 -> 81.2 % (below). The estimate then: error per track and scene on the cloudy
# track-scenes 2.17 -> 1.90 (full yards, bias -1.76 -> -1.33) and 1.03 -> 1.04 (random
# traffic, bias -0.45 -> -0.07); over all track-scenes 1.46 -> 1.40 and 1.16 -> 1.16;
# truth within low-high 94.2 and 94.0 %. Nothing changed on the quiet sites. With the
# lenient reading's rule in every scene, the quiet held-out sites' widths grew 10-21 %
# (seed 13: 0.52 -> 0.63) where 96-98 % of their track-scenes were already covered.
def _near_edge_free(occ, on_track, *, margin: int) -> np.ndarray:
    """Per occupancy profile (the last axis): the visible positions read free within
    ``margin`` positions of a hidden one on the track (unknown samples: cloud, cloud shadow,
    nodata). See counts_from_occupancy."""
    hidden = (occ == UNKNOWN) & np.broadcast_to(on_track, occ.shape)
    if margin <= 0 or not hidden.any():
        return np.zeros(occ.shape[:-1])
    near = ndimage.maximum_filter1d(hidden.astype("uint8"), size=2 * margin + 1, axis=-1) > 0
    return ((occ == FREE) & near).sum(axis=-1).astype("float64")


def _doubt_dev(occupancy: xr.Dataset) -> float | None:
    """The deviation above which a short run on a quiet track is doubted (see
    :func:`_counted_row`): ``_DOUBT_FACTOR`` times the occupancy's threshold, in strips
    sampled at ``_GAP_MAX_STEP_M`` or finer (None, no doubt, in coarser ones: at 3 m
    pixels a car is a few samples long and such runs are as often cars)."""
    if float(occupancy.attrs["step_m"]) > _GAP_MAX_STEP_M:
        return None
    return _DOUBT_FACTOR * float(occupancy.attrs.get("threshold", 5.0))


def _counted_row(row, dev, *, step, doubt_dev):
    """The occupancy profile the estimate counts: ``row`` itself, or a copy without the
    doubtful short runs of a quiet track.

    A run shorter than any railcar (11 m), with free track on both sides, on a
    track that shows no railcar-long run in that scene, whose deviation peaks
    above ``doubt_dev`` noise units, is most often not a car: a strong, short
    stretch that recurs in empty scenes where a parked car's look entered part of
    the empty-track reference. On a busy track such runs are mostly real cars
    seen in part (at a cloud edge, beside a cut), so they stay. ``doubt_dev=None``
    keeps every run. Returns ``row`` itself (not a copy) when nothing is left out.
    """
    if doubt_dev is None:
        return row
    starts, ends = _runs(row == OCCUPIED)
    shortest = _SHORTEST_CAR_M / step
    if starts.size == 0 or ((ends - starts) >= shortest).any():
        return row
    out = row
    for s, e in zip(starts, ends, strict=True):
        if s == 0 or e >= row.size or row[s - 1] != FREE or row[e] != FREE:
            continue  # a run at an edge or beside unknown track may be a car cut short
        if not np.nanmax(dev[s:e], initial=-np.inf) > doubt_dev:
            continue
        if out is row:
            out = row.copy()
        out[s:e] = FREE
    return out


def _car_segments(row, dev, *, step, doubt_dev, mean_len, lo_len, hi_len, share=None):
    """The cars the count's estimate holds on one profile: :func:`_segment_row` of
    :func:`_counted_row`, cut at coupler gaps where the strips resolve them
    (``_GAP_MAX_STEP_M``). :func:`car_outlines` and :mod:`toolkit.kinds` read their cars
    here, so that they hold the same cars as ``railcars``."""
    return _segment_row(
        _counted_row(row, dev, step=step, doubt_dev=doubt_dev),
        dev,
        step=step,
        mean_len=mean_len,
        lo_len=lo_len,
        hi_len=hi_len,
        gaps=step <= _GAP_MAX_STEP_M,
        share=share,
    )


def _segment_row(row, dev, *, step, mean_len, lo_len, hi_len, gaps, share=None):
    """Split the occupied runs of one profile into cars.

    Returns ``(start_m, end_m, n, low, high, dips)`` per car: ``n`` is 1, and
    ``low``, ``high`` and ``dips`` (the count cut at the dips alone, see below)
    are the run's shared out over its cars. Where ``gaps`` is
    true (pixels fine enough to see a 1 m coupler gap), runs are first cut at
    coupler gaps: narrow dips of the colour deviation, to less than half of
    its highest value within 2 m on either side, at least 11 m apart (no car
    is shorter than 12 m). Each segment then holds ``round(length /
    mean_len)`` cars, with bounds from the shortest and longest plausible mean
    car length; a segment 11-21 m long between two seen gaps is exactly one
    car, and a longer one at least two. A run's bounds also hold its count
    with the gaps found the broader way (dips to less than half the run's
    median deviation), which reads a car's own dimmer stretches as gaps more
    often. Where a gap spans a single sample (strips sampled more coarsely than
    ``_GAP_SHARP_STEP_M``), the bounds also hold those of the run read by its
    length alone.

    With ``share`` (the :func:`toolkit._fast.ballast_share` profile), a run with
    free track on both sides and at least two shortest cars long is split by
    :func:`toolkit._fast.car_cuts` instead: every segment one car of 11.5-21.5 m,
    the cuts where the ballast shows through (score ``_GAP_SCORE`` times the
    share above ``_GAP_SHARE_MIN``) and the lengths near ``mean_len`` (spread
    ``_CAR_LENGTH_SD_M``). Weak gaps count together along the run, and a car's
    own features (a flat car's deck, a tarp's folds) do not cut it where no car
    length fits. The bounds are widened to hold its count.
    """
    starts, ends = _runs(row == OCCUPIED)
    out = []
    min_sep = max(int(round(_SHORTEST_CAR_M / step)), 1)
    for s, e in zip(starts, ends, strict=True):
        cuts = [s, e]
        n_alt = None
        if gaps and e - s > 2 * min_sep:
            d = np.nan_to_num(dev[s:e], nan=0.0)
            dips = (d[1:-1] < d[:-2]) & (d[1:-1] <= d[2:])
            # a coupler gap is a narrow dip: the car bodies on both sides, within 2 m,
            # deviate at least twice as much (a car's own dimmer stretches are broader)
            w = max(int(round(2.0 / step)), 1)
            padded = np.concatenate([np.full(w, np.inf), d, np.full(w, np.inf)])
            peak = np.lib.stride_tricks.sliding_window_view(padded, w).max(axis=-1)
            left, right = peak[1 : d.size - 1], peak[w + 2 : w + d.size]
            narrow = dips & (d[1:-1] < 0.5 * left) & (d[1:-1] < 0.5 * right)
            broad = dips & (d[1:-1] < 0.5 * np.median(d))
            cuts = _cuts_at(np.flatnonzero(narrow) + 1, d, s, e, min_sep)
            alt = _cuts_at(np.flatnonzero(broad) + 1, d, s, e, min_sep)
            n_alt = sum(seg[0] for seg in _segments(alt, step, mean_len, lo_len, hi_len, gaps))
        segs = _segments(cuts, step, mean_len, lo_len, hi_len, gaps)
        n_run = sum(seg[0] for seg in segs)
        lo_run, hi_run = sum(seg[1] for seg in segs), sum(seg[2] for seg in segs)
        if n_alt is not None:
            lo_run, hi_run = min(lo_run, n_alt), max(hi_run, n_alt)
        if gaps and step > _GAP_SHARP_STEP_M and len(cuts) > 2:
            # a gap seen in one blurred sample may be a car's own feature: the bounds
            # also hold those of the run read by its length alone
            ((_, lo_whole, hi_whole),) = _segments([s, e], step, mean_len, lo_len, hi_len, False)
            lo_run, hi_run = min(lo_run, lo_whole), max(hi_run, hi_whole)
        n_dips = n_run  # the run's count cut at dips of the deviation, then by length
        best = _best_cuts(row, share, s, e, step, mean_len) if gaps and share is not None else None
        if best is not None:
            # whole cars between the most likely coupler gaps
            cuts, segs = best, [(1, 1, 1)] * (len(best) - 1)
            n_run = len(segs)
            lo_run, hi_run = min(lo_run, n_run), max(hi_run, n_run)
        for (n, _, _), a, length in zip(segs, cuts[:-1], np.diff(cuts) * step, strict=True):
            edges = a * step + np.linspace(0.0, length, n + 1)
            for k in range(n):
                out.append(
                    (edges[k], edges[k + 1], 1, lo_run / n_run, hi_run / n_run, n_dips / n_run)
                )
    return out


def _best_cuts(row, share, s, e, step, mean_len) -> list[int] | None:
    """Cuts of the run [s, e) into whole cars by :func:`toolkit._fast.car_cuts`, or None.

    None unless the run has free track on both sides and is at least two
    shortest cars long, or where no split into car-long segments exists.
    """
    lmin = int(np.ceil(_DP_SHORTEST_M / step - 1e-9))
    lmax = int(np.floor(_DP_LONGEST_M / step + 1e-9))
    if s == 0 or e >= row.size or row[s - 1] != FREE or row[e] != FREE or e - s < 2 * lmin:
        return None
    sh = np.nan_to_num(np.asarray(share[s:e], "float64"), nan=0.0)
    score = _GAP_SCORE * (np.clip(sh, -0.5, 1.0) - _GAP_SHARE_MIN)
    cuts = car_cuts(score, lmin, lmax, float(step), float(mean_len), _CAR_LENGTH_SD_M)
    return None if cuts.size < 2 else [s + int(c) for c in cuts]


def _cuts_at(cand, d, s, e, min_sep):
    """Cut positions of a run [s, e) at the candidate gaps ``cand`` (offsets into ``d``),
    deepest first, at least ``min_sep`` apart and from the run's ends."""
    inner = []
    for c in sorted(cand, key=lambda j: d[j]):
        pos = s + c
        if pos - s < min_sep * 0.9 or e - pos < min_sep * 0.9:
            continue
        if all(abs(pos - q) >= min_sep for q in inner):
            inner.append(pos)
    return [s, *sorted(inner), e]


def _segments(cuts, step, mean_len, lo_len, hi_len, gaps):
    """``(n, low, high)`` railcars of each segment between consecutive cuts."""
    out = []
    between_gaps = gaps and len(cuts) > 2
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        length = (b - a) * step
        if between_gaps and _SHORTEST_CAR_M <= length <= _LONGEST_CAR_M:
            out.append((1, 1, 1))
            continue
        n = max(int(np.round(length / mean_len)), 1)
        if between_gaps and length > _LONGEST_CAR_M:
            n = max(n, 2)  # longer than any railcar: a gap between two was not seen
        lo = max(int(np.floor(length / hi_len + 0.5)), 1)
        hi = max(int(np.ceil(length / lo_len - 0.5)), 1)
        out.append((n, min(lo, n), max(hi, n)))  # the bounds always hold the estimate
    return out


def _check_strips(strips) -> None:
    if not isinstance(strips, xr.Dataset) or "value" not in strips or "valid" not in strips:
        raise InputError("expected strips from toolkit.track_strips (a Dataset with value, valid)")
    if strips.sizes.get("time", 0) == 0:
        raise InputError("strips have no time steps; the cube holds no scenes")


def _version() -> str:
    from toolkit import __version__

    return __version__
