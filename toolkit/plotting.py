"""Figures: functions that take results and return a matplotlib Figure.

Plot functions never show or save; :func:`save_figure` writes PNG (300 dpi) and
PDF into ``figures/`` with fixed metadata, so re-runs give identical files.
Colours come from the Okabe-Ito colour-blind-safe palette. A figure built from
synthetic scenes says so in its corner.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"), force=False)

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from toolkit.errors import InputError  # noqa: E402

__all__ = [
    "PALETTE",
    "save_figure",
    "synthetic_label",
    "plot_scene",
    "plot_count_series",
    "plot_yard_detections",
    "plot_before_after",
    "plot_five_year_counts",
    "plot_event_closeup",
    "plot_yard_use",
    "plot_estimated_vs_true",
    "plot_change_map",
    "plot_storage_and_railcars",
    "yard_use",
]

#: Okabe-Ito palette (colour-blind safe).
PALETTE = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
}

#: Single-column width of a report, inches.
COLUMN_WIDTH_IN = 3.5
DOUBLE_WIDTH_IN = 7.2

_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "svg.hashsalt": "toolkit",
}


def _styled(func):
    """Run a plot function inside the house style (fonts sized for print at column width)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with plt.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def _figure(width_in: float, height_in: float, **kw):
    with plt.rc_context(_STYLE):
        fig = plt.figure(figsize=(width_in, height_in), layout="constrained", **kw)
    return fig


def save_figure(fig, name: str, *, directory: str | os.PathLike = "figures") -> list[Path]:
    """Write ``fig`` as ``<directory>/<name>.png`` (300 dpi) and ``.pdf``, atomically.

    Metadata that would change between runs (creation dates, software
    versions) is left out, so re-running a notebook gives identical files.

    Returns
    -------
    list of Path
        The files written.
    """
    from toolkit._io import atomic_path

    if not name or any(c in name for c in "/\\"):
        raise InputError(f"figure name {name!r} must be a plain file stem such as 'fig3_counts'")
    _settle_layout(fig)
    out = []
    directory = Path(directory)
    for ext, meta in (
        ("png", {"Software": None}),
        ("pdf", {"Creator": None, "Producer": None, "CreationDate": None}),
    ):
        path = directory / f"{name}.{ext}"
        with atomic_path(path) as tmp, plt.rc_context(_STYLE):
            fig.savefig(tmp, format=ext, dpi=300, metadata=meta)
        out.append(path)
    return out


def _settle_layout(fig, *, max_draws: int = 8) -> None:
    """Run the layout engine until the axes stop moving, then freeze the layout.

    A constrained layout takes a few draws to converge; without this, two
    saves of the same figure differ in the last digits of the axes positions
    (and so in their bytes).
    """
    engine = fig.get_layout_engine()
    if engine is None:
        return
    with plt.rc_context(_STYLE):
        last = None
        for _ in range(max_draws):
            fig.canvas.draw()
            pos = [tuple(ax.get_position().bounds) for ax in fig.axes]
            if pos == last:
                break
            last = pos
    fig.set_layout_engine("none")


def synthetic_label(fig, *, text: str = "SYNTHETIC DATA (simulated scenes)") -> None:
    """Stamp the bottom-right corner of ``fig`` with a synthetic-data label.

    With a constrained layout, a strip is kept free at the bottom for the label
    so that it never covers axis labels or legends.
    """
    if any(t.get_text() == text for t in fig.texts):
        return  # already labelled
    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set") and "rect" in engine.get():
        engine.set(rect=(0, 0.03, 1, 0.97))
    fig.text(
        0.995,
        0.005,
        text,
        ha="right",
        va="bottom",
        fontsize=6,
        color=PALETTE["vermillion"],
        alpha=0.9,
        fontweight="bold",
    )


def _is_synthetic(obj) -> bool:
    attrs = getattr(obj, "attrs", {}) or {}
    if str(attrs.get("synthetic", "")).lower() in ("true", "1", "yes"):
        return True
    if "scene" in getattr(obj, "coords", {}):
        names = np.asarray(obj["scene"].values).astype(str)
        return bool(np.char.find(np.char.lower(names), "synthetic").max(initial=-1) >= 0)
    return False


def _rgb(img: xr.DataArray, *, stretch: tuple[float, float] | None = None):
    """An (y, x, 3) float image in 0-1 with a percentile stretch; returns (rgb, stretch)."""
    bands = [str(b).lower() for b in img["band"].values]
    order = [bands.index(c) for c in ("red", "green", "blue") if c in bands]
    if len(order) < 3:
        order = list(range(min(3, len(bands))))
    arr = np.asarray(img.isel(band=order).transpose("y", "x", "band").values, dtype="float64")
    valid = np.ones(arr.shape[:2], bool)
    if "valid" in img.coords:
        valid = np.asarray(img["valid"].values, bool)
    if stretch is None:
        good = arr[valid]
        lo, hi = np.percentile(good, [2, 98]) if good.size else (0.0, 1.0)
        stretch = (float(lo), float(max(hi, lo + 1e-9)))
    lo, hi = stretch
    rgb = np.clip((arr - lo) / (hi - lo), 0, 1)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    rgba = np.concatenate([rgb, valid[..., None].astype(float)], axis=2)
    return rgba, stretch


@_styled
def plot_scene(
    cube: xr.DataArray,
    time,
    *,
    tracks=None,
    ax=None,
    stretch: tuple[float, float] | None = None,
    title: str | None = None,
):
    """Show one scene of a cube in true colour, with track centrelines.

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)``.
    time : str or datetime-like
        The scene to show (nearest acquisition).
    tracks : path or GeoDataFrame, optional
        Track centrelines drawn on top, labelled with their ``track_id``.
    ax : matplotlib Axes, optional
    stretch : (low, high), optional
        Fixed value stretch so that several scenes compare; default the
        scene's 2-98 percentiles.

    Returns
    -------
    matplotlib.figure.Figure
    """
    img = cube.sel(time=np.datetime64(str(np.datetime64(time, "ns"))), method="nearest")
    rgba, _ = _rgb(img, stretch=stretch)
    if ax is None:
        fig = _figure(DOUBLE_WIDTH_IN, DOUBLE_WIDTH_IN * img.sizes["y"] / img.sizes["x"] + 0.6)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    x, y = img["x"].values, img["y"].values
    dx, dy = abs(x[1] - x[0]), abs(y[1] - y[0])
    extent = (x.min() - dx / 2, x.max() + dx / 2, y.min() - dy / 2, y.max() + dy / 2)
    ax.imshow(rgba, extent=extent, origin="upper", interpolation="nearest")
    if tracks is not None:
        from toolkit.tracks import read_tracks

        t = read_tracks(tracks, crs=cube.rio.crs)
        for tid, geom in t.geometry.items():
            xs, ys = geom.xy
            ax.plot(xs, ys, color=PALETTE["yellow"], lw=0.6, alpha=0.8)
            ax.annotate(tid, (xs[0], ys[0]), fontsize=5, color=PALETTE["yellow"])
    when = np.datetime_as_string(img["time"].values, unit="m").replace("T", " ")
    ax.set_title(title or f"Scene {when} UTC")
    ax.set_xlabel("easting (m)")
    ax.set_ylabel("northing (m)")
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")
    if _is_synthetic(cube):
        synthetic_label(fig)
    return fig


@_styled
def plot_count_series(
    counts: xr.Dataset,
    *,
    truth=None,
    ax=None,
    title: str = "Railcars in the yard",
):
    """Yard total railcars per date with their low/high interval.

    Parameters
    ----------
    counts : xarray.Dataset
        ``(time, track)`` from :func:`toolkit.count_railcars`. Scenes whose
        ``sun_elevation_deg`` is below :data:`toolkit.occupancy.LOW_SUN_DEG`
        are drawn hollow: their counts are less sure.
    truth : pandas.DataFrame or Series, optional
        True yard totals indexed by time (from the simulator), drawn for
        comparison.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    for v in ("railcars", "railcars_low", "railcars_high"):
        if v not in counts:
            raise InputError(f"counts lack {v!r}; make them with toolkit.count_railcars")
    total = counts[["railcars", "railcars_low", "railcars_high"]].sum("track", min_count=1)
    if ax is None:
        fig = _figure(DOUBLE_WIDTH_IN, 2.6)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    t = total["time"].values
    lo, hi = total["railcars_low"].values, total["railcars_high"].values
    ax.vlines(t, lo, hi, color=PALETTE["sky"], lw=1.2, label="low-high interval")
    _plot_estimates(ax, total, ms=2.5, label="estimated")
    if truth is not None:
        tr = truth
        if hasattr(tr, "columns"):
            tr = tr.set_index("time")["railcars"] if "time" in tr.columns else tr["railcars"]
        ax.plot(tr.index.values, tr.values, "x", ms=3, color=PALETTE["vermillion"], label="true")
    ax.set_ylabel("railcars (count)")
    ax.set_xlabel("acquisition date (UTC)")
    ax.set_title(title)
    ax.xaxis.set_major_locator(mdates.YearLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, loc="upper left")
    if _is_synthetic(counts):
        synthetic_label(fig)
    return fig


# --------------------------------------------------------------------------- publication figures


def _synthetic(obj, synthetic: bool | None) -> bool:
    return _is_synthetic(obj) if synthetic is None else bool(synthetic)


def _mark_changepoint(ax, changepoints, i, label):
    """Change point ``i``: a dashed line at its date over its date interval, shaded."""
    if changepoints.time_low and changepoints.time_high:
        ax.axvspan(
            _as_time(changepoints.time_low[i]),
            _as_time(changepoints.time_high[i]),
            color=PALETTE["purple"],
            alpha=0.25,
            lw=0,
        )
    ax.axvline(
        _as_time(changepoints.times[i]), color=PALETTE["purple"], lw=0.7, ls="--", label=label
    )


def _as_time(value) -> np.datetime64:
    import pandas as pd

    try:
        return np.datetime64(pd.Timestamp(value).tz_localize(None).to_datetime64(), "ns")
    except (ValueError, TypeError) as exc:
        raise InputError(f"time {value!r}: expected a date such as '2023-10-05' ({exc})") from None


def _day(t) -> str:
    return str(np.datetime64(_as_time(t), "D"))


def _check_cube(cube) -> None:
    if not isinstance(cube, xr.DataArray) or not {"time", "band", "y", "x"} <= set(cube.dims):
        raise InputError(
            f"cube: expected a DataArray with dims (time, band, y, x), found "
            f"{getattr(cube, 'dims', type(cube).__name__)}; load it with toolkit.load_cube"
        )


def _plot_estimates(ax, total, *, ms: float, label: str) -> None:
    """The yard totals as dots; where the counts carry each scene's sun elevation, the
    scenes with the sun below :data:`toolkit.occupancy.LOW_SUN_DEG` hollow: their counts
    are less sure (railcars' shadows reach across the neighbouring track)."""
    from toolkit.occupancy import LOW_SUN_DEG

    t, est = total["time"].values, total["railcars"].values
    low = np.zeros(t.shape, bool)
    if "sun_elevation_deg" in total.coords:
        with np.errstate(invalid="ignore"):
            low = np.asarray(total["sun_elevation_deg"].values, float) < LOW_SUN_DEG
    if not (low.size and low.all()):  # no filled entry where every date has the sun low
        ax.plot(t[~low], est[~low], "o", ms=ms, color=PALETTE["blue"], label=label)
    if low.any():
        ax.plot(
            t[low],
            est[low],
            "o",
            ms=ms,
            mfc="white",
            mec=PALETTE["blue"],
            mew=0.6,
            label=f"{label}, sun below {LOW_SUN_DEG:g}\N{DEGREE SIGN}",
        )


def _yard_total(counts) -> xr.Dataset:
    """Yard totals over time of railcars and their bounds (NaN where nothing was visible)."""
    if not isinstance(counts, xr.Dataset) or "railcars" not in counts:
        raise InputError(
            "counts: expected the Dataset from toolkit.count_railcars with a 'railcars' "
            f"variable, found {type(counts).__name__}"
        )
    names = [v for v in ("railcars", "railcars_low", "railcars_high") if v in counts]
    total = counts[names]
    if "track" in total.dims:
        total = total.sum("track", min_count=1)
    for v in ("railcars_low", "railcars_high"):
        if v not in total:
            total[v] = total["railcars"]
    return total.compute()


def _true_series(truth):
    """Yard totals of the simulator's truth as a pandas Series indexed by time."""
    import pandas as pd

    if truth is None:
        return None
    if isinstance(truth, pd.Series):
        return truth.sort_index()
    if isinstance(truth, pd.DataFrame):
        if "time" in truth.columns:
            return truth.groupby(pd.to_datetime(truth["time"]))["railcars"].sum().sort_index()
        return truth["railcars"].sort_index()
    raise InputError(
        f"truth: expected a DataFrame (time, railcars) or a Series, found {type(truth).__name__}"
    )


def _extent(img: xr.DataArray) -> tuple[float, float, float, float]:
    x, y = img["x"].values, img["y"].values
    dx, dy = abs(x[1] - x[0]), abs(y[1] - y[0])
    return (x.min() - dx / 2, x.max() + dx / 2, y.min() - dy / 2, y.max() + dy / 2)


def _scene(cube: xr.DataArray, time) -> xr.DataArray:
    return cube.sel(time=_as_time(time), method="nearest")


def _joint_stretch(images: list[xr.DataArray]) -> tuple[float, float]:
    """One 2-98 percentile stretch for several scenes, so that they compare."""
    vals = []
    for img in images:
        arr = np.asarray(img.values, dtype="float64")
        ok = np.ones(arr.shape[-2:], bool)
        if "valid" in img.coords:
            ok = np.asarray(img["valid"].values, bool)
        vals.append(arr[..., ok].ravel())
    v = np.concatenate(vals) if vals else np.array([0.0, 1.0])
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(v, [2, 98])
    return float(lo), float(max(hi, lo + 1e-9))


def _nice_length(span_m: float) -> float:
    """A round scale-bar length near a fifth of ``span_m`` (1, 2 or 5 times a power of ten)."""
    target = max(span_m / 5.0, 1e-9)
    p = 10 ** np.floor(np.log10(target))
    for m in (5, 2, 1):
        if m * p <= target:
            return float(m * p)
    return float(p)


def _halo(colour: str) -> list:
    """A thin outline in the opposite shade, so map furniture reads on snow and on shadow."""
    from matplotlib import patheffects

    edge = "black" if colour in ("white", "#FFFFFF", "#ffffff") else "white"
    return [patheffects.withStroke(linewidth=1.5, foreground=edge)]


def _scale_bar(ax, *, length_m: float | None = None, colour: str = "white") -> float:
    """Draw a scale bar in the lower left of a map in metres; returns its length (m)."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    length_m = length_m or _nice_length(abs(x1 - x0))
    bx = x0 + 0.04 * (x1 - x0)
    by = y0 + 0.07 * (y1 - y0)
    ax.plot([bx, bx + length_m], [by, by], color=colour, lw=2.5, solid_capstyle="butt")
    ax.plot([bx, bx + length_m], [by, by], color=PALETTE["black"], lw=0.8, solid_capstyle="butt")
    label = f"{length_m:g} m" if length_m < 1000 else f"{length_m / 1000:g} km"
    ax.text(
        bx + length_m / 2,
        by + 0.025 * (y1 - y0),
        label,
        ha="center",
        va="bottom",
        fontsize=6,
        color=colour,
        fontweight="bold",
        path_effects=_halo(colour),
    )
    return length_m


def _grid_convergence_deg(crs, x: float, y: float) -> float:
    """Angle (degrees, clockwise) from grid north to true north at (x, y)."""
    if crs is None:
        return 0.0
    try:
        from pyproj import CRS, Transformer

        crs = CRS.from_user_input(crs)
        if not crs.is_projected:
            return 0.0
        to_geo = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        to_map = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        lon, lat = to_geo.transform(x, y)
        x2, y2 = to_map.transform(lon, lat + 0.001)
        return float(np.degrees(np.arctan2(x2 - x, y2 - y)))
    except Exception:  # noqa: BLE001 - an unusual CRS gives grid north
        return 0.0


def _north_arrow(ax, *, crs=None, colour: str = "white") -> float:
    """Draw a north arrow (true north, from the CRS) in the upper right; returns its angle."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    angle = _grid_convergence_deg(crs, (x0 + x1) / 2, (y0 + y1) / 2)
    cx, cy = 0.94, 0.80
    d = 0.11
    a = np.radians(angle)
    dx, dy = d * np.sin(a), d * np.cos(a)
    ax.annotate(
        "",
        xy=(cx + dx / 2, cy + dy / 2),
        xytext=(cx - dx / 2, cy - dy / 2),
        xycoords="axes fraction",
        arrowprops={
            "arrowstyle": "-|>",
            "color": colour,
            "lw": 1.2,
            "mutation_scale": 8,
            "path_effects": _halo(colour),
        },
    )
    ax.text(
        cx + dx / 2,
        cy + dy / 2 + 0.02,
        "N",
        transform=ax.transAxes,
        ha="center",
        va="bottom",
        fontsize=7,
        color=colour,
        fontweight="bold",
        path_effects=_halo(colour),
    )
    return angle


def _draw_image(ax, img: xr.DataArray, stretch) -> tuple[float, float, float, float]:
    rgba, _ = _rgb(img, stretch=stretch)
    extent = _extent(img)
    ax.imshow(rgba, extent=extent, origin="upper", interpolation="nearest")
    ax.set_aspect("equal")
    return extent


def _draw_tracks(ax, tracks, crs, *, labels: bool = True) -> None:
    from toolkit.tracks import read_tracks

    t = read_tracks(tracks, crs=crs)
    for tid, geom in t.geometry.items():
        xs, ys = geom.xy
        ax.plot(xs, ys, color=PALETTE["sky"], lw=0.3, alpha=0.6, zorder=2)
        if labels:
            ax.annotate(
                str(tid),
                (xs[0], ys[0]),
                fontsize=4.5,
                color=PALETTE["sky"],
                ha="right",
                va="center",
                xytext=(-1, 0),
                textcoords="offset points",
                zorder=4,
            )


def _draw_outlines(ax, outlines, *, lw: float = 0.5) -> int:
    if outlines is None:
        return 0
    from matplotlib.collections import PolyCollection

    polys = [np.asarray(g.exterior.coords) for g in outlines.geometry if g is not None]
    if polys:
        ax.add_collection(
            PolyCollection(
                polys,
                facecolors="none",
                edgecolors=PALETTE["orange"],
                linewidths=lw,
                zorder=3,
            )
        )
    return len(polys)


def _map_axes(ax, extent) -> None:
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("easting (m)")
    ax.set_ylabel("northing (m)")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(2))  # long northings, rotated: two fit
    ax.tick_params(labelsize=5.5)
    plt.setp(ax.get_yticklabels(), rotation=90, va="center")


def _bounds_of(geoms, *, pad_m: float) -> tuple[float, float, float, float]:
    b = np.array([g.bounds for g in geoms if g is not None])
    return (
        b[:, 0].min() - pad_m,
        b[:, 2].max() + pad_m,
        b[:, 1].min() - pad_m,
        b[:, 3].max() + pad_m,
    )


def _view_extent(img: xr.DataArray, tracks, crs) -> tuple[float, float, float, float]:
    """The scene's extent, cropped to the tracks' bounding box (25 m margin) when given."""
    extent = _extent(img)
    if tracks is None:
        return extent
    from toolkit.tracks import read_tracks

    b = _bounds_of(read_tracks(tracks, crs=crs).geometry, pad_m=25.0)
    return (max(b[0], extent[0]), min(b[1], extent[1]), max(b[2], extent[2]), min(b[3], extent[3]))


def _clamped_ratio(extent) -> float:
    """Height / width of a map extent, kept between 0.3 and 1.3 for a column-wide panel."""
    return float(min(max((extent[3] - extent[2]) / (extent[1] - extent[0]), 0.3), 1.3))


def _auto_zoom(outlines, extent, *, width_m: float, aspect: float):
    """A window of ``width_m`` centred on the densest cluster of outlined cars."""
    if outlines is None or len(outlines) == 0:
        cx, cy = (extent[0] + extent[1]) / 2, (extent[2] + extent[3]) / 2
    else:
        c = np.array([(g.centroid.x, g.centroid.y) for g in outlines.geometry])
        # the car with the most neighbours within half the window
        d = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1])
        k = int(np.argmax((d < width_m / 2).sum(axis=1)))
        near = c[d[k] < width_m / 2]
        cx, cy = near.mean(axis=0)
    h = width_m * aspect
    return (cx - width_m / 2, cx + width_m / 2, cy - h / 2, cy + h / 2)


@_styled
def plot_yard_detections(
    cube: xr.DataArray,
    outlines,
    *,
    time,
    tracks=None,
    count: float | None = None,
    zoom="auto",
    zoom_width_m: float = 160.0,
    stretch: tuple[float, float] | None = None,
    synthetic: bool | None = None,
    title: str | None = None,
):
    """Figure 1: the yard on one date, tracks drawn and every detected car outlined.

    The upper panel shows the whole yard, the lower one a close-up where the
    outlines can be checked car by car. Both carry a scale bar and a north
    arrow (true north, from the cube's CRS).

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)`` from :func:`toolkit.load_cube`.
    outlines : geopandas.GeoDataFrame
        One polygon per detected car on ``time``, from :func:`toolkit.car_outlines`,
        in the cube's CRS.
    time : str or datetime-like
        The date shown (nearest acquisition).
    tracks : path or GeoDataFrame, optional
        Track centrelines, drawn and labelled with their ``track_id``.
    count : float, optional
        The yard count for the title; default the number of outlines.
    zoom : 'auto', (xmin, xmax, ymin, ymax) or None
        The close-up window in the cube's CRS; ``'auto'`` centres
        ``zoom_width_m`` on the densest group of cars; None draws no close-up.
    zoom_width_m : float, default 160
        Width of the automatic close-up, metres.
    stretch : (low, high), optional
        Fixed value stretch; default the scene's 2-98 percentiles.
    synthetic : bool, optional
        Label the figure as synthetic; default from the cube's attrs.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_yard_detections(cube, outlines, time="2023-10-05")  # doctest: +SKIP
    """
    from matplotlib.patches import Rectangle

    _check_cube(cube)
    img = _scene(cube, time)
    stretch = stretch or _joint_stretch([img])
    n = len(outlines) if outlines is not None else 0
    count = n if count is None else count
    crs = cube.rio.crs if hasattr(cube, "rio") else None
    full = _view_extent(img, tracks, crs)
    win = None
    if zoom is not None:
        win = zoom
        if isinstance(zoom, str):
            win = _auto_zoom(outlines, full, width_m=zoom_width_m, aspect=0.5)
        else:
            win = tuple(float(v) for v in zoom)
            if len(win) != 4 or win[1] <= win[0] or win[3] <= win[2]:
                raise InputError(f"zoom {zoom!r}: expected (xmin, xmax, ymin, ymax) or 'auto'")
    heights = [COLUMN_WIDTH_IN * _clamped_ratio(full)]
    if win is not None:
        heights.append(COLUMN_WIDTH_IN * _clamped_ratio(win))
    fig = _figure(COLUMN_WIDTH_IN, sum(heights) + 0.4 + 0.35 * len(heights))
    axes = fig.subplots(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        _draw_image(ax, img, stretch)
        if tracks is not None:
            _draw_tracks(ax, tracks, crs, labels=i == 0)
        _draw_outlines(ax, outlines, lw=0.35 if i == 0 else 0.8)
        if i == 0:
            _map_axes(ax, full)
        else:
            _map_axes(ax, win)
            axes[0].add_patch(
                Rectangle(
                    (win[0], win[2]),
                    win[1] - win[0],
                    win[3] - win[2],
                    fill=False,
                    ec=PALETTE["yellow"],
                    lw=0.8,
                    zorder=5,
                )
            )
            ax.set_title("close-up (yellow box above)", fontsize=7)
        _scale_bar(ax)
        _north_arrow(ax, crs=crs)
    day = np.datetime_as_string(img["time"].values, unit="D")
    axes[0].set_title(
        title or f"Yard on {day}: {count:.0f} railcars detected (outlined)", fontsize=8
    )
    if _synthetic(cube, synthetic):
        synthetic_label(fig)
    return fig


@_styled
def plot_before_after(
    cube: xr.DataArray,
    *,
    before,
    after,
    counts: xr.Dataset | None = None,
    tracks=None,
    outlines_before=None,
    outlines_after=None,
    labels: tuple[str, str] = ("baseline maximum", "event"),
    synthetic: bool | None = None,
):
    """Figure 2: two dates side by side (stacked), same extent and same stretch.

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)``.
    before, after : str or datetime-like
        The two dates (nearest acquisitions), e.g. the date of the baseline
        maximum and the event date.
    counts : xarray.Dataset, optional
        ``(time, track)`` counts; their yard totals (with the low-high
        interval) go in the panel titles.
    tracks : path or GeoDataFrame, optional
        Track centrelines; the shared extent is the tracks' bounding box.
    outlines_before, outlines_after : GeoDataFrame, optional
        Detected cars to outline on each date.
    labels : (str, str)
        What each date is, for the titles.
    synthetic : bool, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_cube(cube)
    imgs = [_scene(cube, before), _scene(cube, after)]
    stretch = _joint_stretch(imgs)
    total = _yard_total(counts) if counts is not None else None
    crs = cube.rio.crs if hasattr(cube, "rio") else None
    extent = _view_extent(imgs[0], tracks, crs)
    panel_h = COLUMN_WIDTH_IN * _clamped_ratio(extent)
    fig = _figure(COLUMN_WIDTH_IN, 2 * panel_h + 1.0)
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    for ax, img, label, outl in zip(
        axes, imgs, labels, (outlines_before, outlines_after), strict=True
    ):
        _draw_image(ax, img, stretch)
        if tracks is not None:
            _draw_tracks(ax, tracks, crs, labels=False)
        _draw_outlines(ax, outl, lw=0.35)
        _map_axes(ax, extent)
        _scale_bar(ax)
        _north_arrow(ax, crs=crs)
        day = np.datetime_as_string(img["time"].values, unit="D")
        text = f"{label}, {day}"
        if total is not None:
            tot = total.sel(time=img["time"].values)
            text += (
                f": {float(tot.railcars):.0f} railcars "
                f"({float(tot.railcars_low):.0f}-{float(tot.railcars_high):.0f})"
            )
        ax.set_title(text, fontsize=7.5)
    axes[0].set_xlabel("")
    if _synthetic(cube, synthetic):
        synthetic_label(fig)
    return fig


def _plot_published_counts(ax, rows, *, ms: float, label: str) -> None:
    """Published counts as open orange diamonds (nothing when there are no rows)."""
    if not len(rows):
        return
    ax.plot(
        rows["date_start"].values,
        rows["value"].values,
        "D",
        ms=ms,
        mfc="none",
        color=PALETTE["orange"],
        mec=PALETTE["orange"],
        mew=0.9,
        label=label,
    )


@contextlib.contextmanager
def _closure_and_summit(ax, *, closure, summit):
    """Shade the border closure beneath what the block draws; mark the summit above it.

    Both five-year figures use it, so the two periods look and read the same in
    each: the closure span is drawn on entry (first in the legend), the summit
    line on exit (after whatever the block added, such as the baseline band).
    """
    ax.axvspan(
        _as_time(closure[0]),
        _as_time(closure[1]),
        color=PALETTE["grey"],
        alpha=0.18,
        lw=0,
        label="border rail traffic suspended",
    )
    yield
    ax.axvline(_as_time(summit), color=PALETTE["black"], lw=0.7, ls=":", label="Kim-Putin summit")


def _published_rows(published, site: str = "Tumangang"):
    import pandas as pd

    if published is None:
        return None, None
    p = published.copy()
    for c in ("date_start", "date_end"):
        p[c] = pd.to_datetime(p[c])
    here = p["site"].astype(str).str.lower() == site.lower()
    counts = p[here & (p["quantity"] == "railcars")]
    maxima = p[here & (p["quantity"] == "railcars_max")]
    return counts, maxima


@_styled
def plot_five_year_counts(
    counts: xr.Dataset,
    *,
    comparison=None,
    changepoints=None,
    published=None,
    truth=None,
    event_date=None,
    closure=None,
    summit=None,
    synthetic: bool | None = None,
    ax=None,
    title: str = "Railcars in the yard, five years",
):
    """Figure 3: five years of yard counts against the baseline and the published figures.

    Parameters
    ----------
    counts : xarray.Dataset
        ``(time, track)`` counts (or yard totals over ``time``) with
        ``railcars``, ``railcars_low``, ``railcars_high``. Scenes whose
        ``sun_elevation_deg`` is below :data:`toolkit.occupancy.LOW_SUN_DEG`
        are drawn hollow: their counts are less sure.
    comparison : BaselineComparison, optional
        From :func:`toolkit.compare_with_baseline`: its window is shaded with
        the baseline median to 95th percentile band and its maximum drawn.
    changepoints : ChangePointResult, optional
        From :func:`toolkit.detect_changepoints`: each change drawn at its date
        with its date interval shaded.
    published : pandas.DataFrame, optional
        :func:`toolkit.load_published_observations`: published counts at the
        site (diamonds) and the published five-year maximum (a dashed line).
    truth : DataFrame or Series, optional
        True yard totals (simulator), drawn as small crosses.
    event_date : date-like, optional
        The event, marked with its count; default the comparison's event.
    closure : (start, end), optional
        Shaded as the pandemic suspension; default :data:`toolkit.CLOSURE`.
    summit : date-like, optional
        Marked with a vertical line; default :data:`toolkit.SUMMIT`.
    synthetic : bool, optional
    ax : matplotlib Axes, optional
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from toolkit.baseline import CLOSURE, SUMMIT

    closure = CLOSURE if closure is None else closure
    summit = SUMMIT if summit is None else summit
    total = _yard_total(counts)
    if ax is None:
        fig = _figure(COLUMN_WIDTH_IN, 3.6)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    t = total["time"].values
    lo, hi = total["railcars_low"].values, total["railcars_high"].values
    with _closure_and_summit(ax, closure=closure, summit=summit):
        if comparison is not None:
            b0, b1 = _as_time(comparison.baseline_start), _as_time(comparison.baseline_end)
            ax.fill_between(
                [b0, b1],
                comparison.baseline_median,
                comparison.baseline_p95,
                color=PALETTE["green"],
                alpha=0.25,
                lw=0,
                label=(
                    f"baseline median-95th pct ({comparison.baseline_median:.0f}-"
                    f"{comparison.baseline_p95:.0f})"
                ),
            )
            ax.hlines(
                comparison.baseline_max,
                b0,
                b1,
                color=PALETTE["green"],
                lw=1.0,
                label=f"baseline maximum ({comparison.baseline_max:.0f})",
            )
        if changepoints is not None and changepoints.times:
            for i in range(len(changepoints.times)):
                _mark_changepoint(
                    ax, changepoints, i, "change points (date interval shaded)" if i == 0 else None
                )
    ax.vlines(t, lo, hi, color=PALETTE["sky"], lw=0.8, label="estimate, low-high interval")
    _plot_estimates(ax, total, ms=2.0, label="estimated railcars")
    tr = _true_series(truth)
    if tr is not None:
        ax.plot(
            tr.index.values,
            tr.values,
            "x",
            ms=2.2,
            mew=0.6,
            color=PALETTE["black"],
            alpha=0.6,
            label="true (simulator)",
        )
    ev = event_date if event_date is not None else getattr(comparison, "event_time", None)
    if ev is not None:
        e = total.sel(time=_as_time(ev), method="nearest")
        et = e["time"].values
        ax.plot(
            [et],
            [float(e.railcars)],
            "o",
            ms=4.5,
            color=PALETTE["vermillion"],
            label=f"event {np.datetime_as_string(et, unit='D')}",
            zorder=5,
        )
        ax.annotate(
            f"{float(e.railcars):.0f}",
            (et, float(e.railcars)),
            xytext=(-4, 2),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=PALETTE["vermillion"],
        )
    pub_counts, pub_max = _published_rows(published)
    if pub_max is not None and len(pub_max):
        for k, (_, row) in enumerate(pub_max.iterrows()):
            ax.hlines(
                row["value"],
                row["date_start"],
                row["date_end"],
                colors=PALETTE["orange"],
                lw=1.0,
                ls="--",
                label=f"published: about {row['value']:g} at most" if k == 0 else None,
            )
    if pub_counts is not None:
        _plot_published_counts(ax, pub_counts, ms=3.2, label="published counts")
    ax.set_ylabel("railcars in the yard (count)")
    ax.set_xlabel("acquisition date (UTC)")
    ax.set_title(title)
    ax.xaxis.set_major_locator(mdates.YearLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax.set_ylim(bottom=0)
    tmin = min(t.min(), _as_time(closure[0]))
    tmax = max(t.max(), _as_time(summit))
    pad = (tmax - tmin) * 0.02
    ax.set_xlim(tmin - pad, tmax + pad)
    ax.legend(
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncols=2,
        fontsize=5.8,
        handlelength=1.6,
        columnspacing=1.0,
    )
    if _synthetic(counts, synthetic):
        synthetic_label(fig)
    return fig


@_styled
def plot_event_closeup(
    counts: xr.Dataset,
    online: xr.Dataset,
    *,
    start="2023-08-15",
    end="2023-10-12",
    changepoints=None,
    truth=None,
    published=None,
    summit=None,
    synthetic: bool | None = None,
):
    """Figure 4: the weeks around the event, with the online change probability beneath.

    Parameters
    ----------
    counts : xarray.Dataset
        ``(time, track)`` counts or yard totals.
    online : xarray.Dataset
        From :func:`toolkit.online_changepoint_probability` (``change_probability``
        and ``alert`` over ``time``, and ``attrs['threshold']``).
    start, end : date-like
        The window shown.
    changepoints : ChangePointResult, optional
        Changes inside the window are drawn with their date intervals.
    truth : DataFrame or Series, optional
        True yard totals (simulator).
    published : pandas.DataFrame, optional
        Published counts inside the window are overlaid.
    summit : date-like, optional
        Default :data:`toolkit.SUMMIT`.
    synthetic : bool, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from toolkit.baseline import SUMMIT

    summit = SUMMIT if summit is None else summit
    if not isinstance(online, xr.Dataset) or "change_probability" not in online:
        raise InputError(
            "online: expected the Dataset from toolkit.online_changepoint_probability "
            "with a 'change_probability' variable"
        )
    t0, t1 = _as_time(start), _as_time(end)
    if t1 <= t0:
        raise InputError(f"start {start!r} / end {end!r}: expected start before end")
    total = _yard_total(counts).sel(time=slice(t0, t1))
    prob = online["change_probability"].sel(time=slice(t0, t1))
    fig = _figure(COLUMN_WIDTH_IN, 3.3)
    ax, axp = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1.0])
    t = total["time"].values
    for a in (ax, axp):
        a.axvline(_as_time(summit), color=PALETTE["black"], lw=0.7, ls=":")
    ax.text(
        _as_time(summit),
        1.0,
        " summit",
        transform=ax.get_xaxis_transform(),
        fontsize=6,
        va="top",
        ha="left",
    )
    if changepoints is not None and changepoints.times:
        first = True
        for i, tc in enumerate(changepoints.times):
            tc64 = _as_time(tc)
            if not t0 <= tc64 <= t1:
                continue
            for a in (ax, axp):
                _mark_changepoint(
                    a, changepoints, i, "change point (interval)" if first and a is ax else None
                )
            first = False
    ax.vlines(
        t,
        total["railcars_low"].values,
        total["railcars_high"].values,
        color=PALETTE["sky"],
        lw=1.0,
        label="low-high interval",
    )
    ax.plot(t, total["railcars"].values, "o", ms=2.8, color=PALETTE["blue"], label="estimated")
    tr = _true_series(truth)
    if tr is not None:
        tr = tr[(tr.index >= t0) & (tr.index <= t1)]
        ax.plot(
            tr.index.values,
            tr.values,
            "x",
            ms=3,
            mew=0.7,
            color=PALETTE["black"],
            alpha=0.7,
            label="true (simulator)",
        )
    pub_counts, _ = _published_rows(published)
    if pub_counts is not None:
        pc = pub_counts[(pub_counts["date_start"] >= t0) & (pub_counts["date_start"] <= t1)]
        _plot_published_counts(ax, pc, ms=3.5, label="published count")
    ax.set_ylabel("railcars (count)")
    ax.set_ylim(bottom=0)
    ax.set_title("The rise after the summit")
    ax.legend(frameon=False, loc="upper left", fontsize=6)
    pt = prob["time"].values
    pv = np.nan_to_num(prob.values.astype(float))
    axp.bar(pt, pv, width=np.timedelta64(2, "D"), color=PALETTE["vermillion"], lw=0)
    thr = float(online.attrs.get("threshold", 0.5))
    axp.axhline(thr, color=PALETTE["grey"], lw=0.7, ls="--")
    axp.text(t0, thr, f" alert {thr:g}", fontsize=5.5, va="bottom", color=PALETTE["grey"])
    axp.set_ylim(0, 1.05)
    axp.set_ylabel("P(change)\n(0-1)")
    axp.set_xlabel("acquisition date, 2023 (UTC)")
    axp.set_xlim(t0, t1)
    axp.xaxis.set_major_locator(mdates.WeekdayLocator(byweekday=mdates.MO, interval=2))
    axp.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
    if _synthetic(counts, synthetic):
        synthetic_label(fig)
    return fig


def yard_use(occupancy: xr.Dataset, *, bin_m: float = 5.0) -> xr.Dataset:
    """Share of each along-track bin that is occupied, per date and track.

    Parameters
    ----------
    occupancy : xarray.Dataset
        From :func:`toolkit.estimate_occupancy` (``occupancy`` int8 over
        ``(time, track, along)``: 1 occupied, 0 free, -1 unknown).
    bin_m : float, default 5
        Bin length along the track, metres.

    Returns
    -------
    xarray.Dataset
        ``occupied_share (time, track, position_m)`` in 0-1, NaN where no
        position of the bin was seen (cloud, nodata, past the track's end).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> occ = xr.Dataset({"occupancy": (("time", "track", "along"),
    ...     np.array([[[1, 1, 0, 0, -1, -1]]], "int8"))},
    ...     coords={"along_m": ("along", np.arange(6) * 1.0), "track": ["01"],
    ...             "time": [np.datetime64("2023-10-05")]})
    >>> yard_use(occ, bin_m=2).occupied_share.values.ravel().tolist()
    [1.0, 0.0, nan]
    """
    if not isinstance(occupancy, xr.Dataset) or "occupancy" not in occupancy:
        raise InputError(
            "occupancy: expected the Dataset from toolkit.estimate_occupancy "
            f"with an 'occupancy' variable, found {type(occupancy).__name__}"
        )
    if not bin_m > 0:
        raise InputError(f"bin_m: expected a positive length in metres, found {bin_m!r}")
    occ = occupancy["occupancy"].transpose("time", "track", "along")
    along = (
        np.asarray(occupancy["along_m"].values, float)
        if "along_m" in occupancy.coords
        else np.arange(occ.sizes["along"], dtype=float)
    )
    o = np.asarray(occ.values)
    occupied = (o == 1).astype(float)
    known = (o >= 0).astype(float)
    edges = np.arange(0.0, along.max() + bin_m, bin_m)
    idx = np.clip(np.digitize(along, edges) - 1, 0, edges.size - 2)
    nb = edges.size - 1
    occ_sum = np.zeros(o.shape[:2] + (nb,))
    known_sum = np.zeros_like(occ_sum)
    np.add.at(occ_sum, (slice(None), slice(None), idx), occupied)
    np.add.at(known_sum, (slice(None), slice(None), idx), known)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(known_sum > 0, occ_sum / np.maximum(known_sum, 1), np.nan)
    ds = xr.Dataset(
        {"occupied_share": (("time", "track", "position_m"), share)},
        coords={
            "time": occ["time"].values,
            "track": occ["track"].values,
            "position_m": edges[:-1] + bin_m / 2,
        },
    )
    ds["occupied_share"].attrs.update(units="1", long_name="share of the bin occupied")
    ds["position_m"].attrs.update(units="m", long_name="position along the track (bin centre)")
    ds.attrs.update(bin_m=float(bin_m))
    return ds


@_styled
def plot_yard_use(
    occupancy: xr.Dataset,
    *,
    bin_m: float = 5.0,
    tick_m: float = 100.0,
    synthetic: bool | None = None,
    title: str = "Yard use along each track",
):
    """Figure 5: occupancy by position along each track over time (a heat map).

    Tracks are stacked bottom to top; within each block the position runs
    from the track's start (bottom) to its end, with a minor tick every
    ``tick_m`` metres. Each acquisition is one column (irregular dates: the
    busy weeks before an event get as much room as quiet months); the ticks
    name the first acquisition of each year and the last one. Grey: not seen
    (cloud, nodata).

    Parameters
    ----------
    occupancy : xarray.Dataset
        From :func:`toolkit.estimate_occupancy`.
    bin_m : float, default 5
        Along-track bin (see :func:`yard_use`).
    tick_m : float, default 100
        Spacing of the position ticks within each track, metres.
    synthetic : bool, optional
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import LinearSegmentedColormap

    use = yard_use(occupancy, bin_m=bin_m)
    share = use["occupied_share"].values  # (time, track, pos)
    times = use["time"].values
    pos = use["position_m"].values
    tracks = [str(t) for t in use["track"].values]
    # usable length of each track: the last bin ever seen
    seen = np.isfinite(share).any(axis=0)  # (track, pos)
    lengths = np.array([pos[s].max() + bin_m / 2 if s.any() else bin_m for s in seen])
    gap = max(0.04 * lengths.sum(), bin_m)
    offsets = np.concatenate([[0.0], np.cumsum(lengths + gap)[:-1]])
    fig = _figure(COLUMN_WIDTH_IN, 3.4)
    ax = fig.add_subplot()
    cmap = LinearSegmentedColormap.from_list("occupied", ["#FFFFFF", PALETTE["blue"]])
    cmap = cmap.with_extremes(bad="#D9D9D9")
    # one column per acquisition, so that the dense weeks of the event are as legible as
    # the sparse years before; ticks name the first acquisition of each year and the last
    tedges = np.arange(len(times) + 1) - 0.5
    mesh = None
    for k in range(len(tracks)):
        nb = int(np.ceil(lengths[k] / bin_m))
        yedges = offsets[k] + np.arange(nb + 1) * bin_m
        data = np.ma.masked_invalid(share[:, k, :nb].T)
        mesh = ax.pcolormesh(
            tedges, yedges, data, cmap=cmap, vmin=0, vmax=1, shading="flat", rasterized=True
        )
    ax.set_yticks(offsets + lengths / 2, tracks)
    minor = np.concatenate(
        [o + np.arange(0, ln + 1e-9, tick_m) for o, ln in zip(offsets, lengths, strict=True)]
    )
    ax.set_yticks(minor, minor=True)
    ax.tick_params(axis="y", which="major", length=0)
    ax.tick_params(axis="y", which="minor", length=2)
    ax.set_ylim(-gap / 2, offsets[-1] + lengths[-1] + gap / 2)
    ax.set_ylabel(f"track (position along it; ticks every {tick_m:g} m)")
    years = np.asarray(times, "datetime64[Y]")
    first = [0] + [i for i in range(1, len(times)) if years[i] != years[i - 1]]
    gap = max(3, len(times) // 12)  # labels closer than this would overlap
    first = [i for k, i in enumerate(first) if k == len(first) - 1 or first[k + 1] - i >= gap]
    labels = [str(years[i]) for i in first]
    if len(times) - 1 - first[-1] >= gap or len(first) == 1:
        first.append(len(times) - 1)
        labels.append(np.datetime_as_string(times[-1], unit="D")[5:])
    ax.set_xticks(first, labels)
    ax.set_xlabel("acquisitions, one column each (UTC)")
    ax.set_title(title)
    cb = fig.colorbar(mesh, ax=ax, location="bottom", shrink=0.6, aspect=25, pad=0.02)
    cb.set_label(f"share of each {bin_m:g} m bin occupied (0-1); grey: not seen", fontsize=6.5)
    cb.ax.tick_params(labelsize=6)
    if _synthetic(occupancy, synthetic):
        synthetic_label(fig)
    return fig


_RESOLUTION_COLOURS = ("blue", "orange", "green", "vermillion", "purple", "sky")
_RESOLUTION_MARKERS = ("o", "s", "^", "D", "v", "P")


@_styled
def plot_estimated_vs_true(
    table,
    *,
    by: str = "resolution_m",
    synthetic: bool | None = True,
    ax=None,
    title: str = "Estimated against true counts",
    unit: str = "railcars per scene",
):
    """Figure 6: estimated against true counts, one colour per resolution.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per scene (or scene and track): ``true``, ``estimated`` and
        optionally ``low``/``high`` (counting bounds) and the grouping column
        ``by`` (default ``resolution_m``, pixel size in metres).
    by : str or None
        Column that groups the points (a colour and marker each); None for one group.
    synthetic : bool, default True
        Truth comes from the simulator, so the figure is labelled synthetic.
    ax : matplotlib Axes, optional
    title, unit : str

    Returns
    -------
    matplotlib.figure.Figure
        The legend gives each group's mean absolute error and bias.
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame) or not {"true", "estimated"} <= set(table.columns):
        raise InputError(
            "table: expected a DataFrame with columns 'true' and 'estimated' "
            f"(and '{by}'), found {list(getattr(table, 'columns', []))}"
        )
    if by is not None and by not in table.columns:
        raise InputError(f"table: no column {by!r} to group by; pass by=None for one group")
    if ax is None:
        fig = _figure(COLUMN_WIDTH_IN, 3.3)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    groups = [(None, table)] if by is None else list(table.groupby(by, sort=True))
    for i, (key, g) in enumerate(groups):
        colour = PALETTE[_RESOLUTION_COLOURS[i % len(_RESOLUTION_COLOURS)]]
        err = (g["estimated"] - g["true"]).astype(float)
        name = "all" if key is None else (f"{key:g} m pixels" if by == "resolution_m" else str(key))
        label = f"{name}: MAE {err.abs().mean():.1f}, bias {err.mean():+.1f} (n={len(g)})"
        if {"low", "high"} <= set(g.columns):
            ax.vlines(g["true"], g["low"], g["high"], color=colour, lw=0.6, alpha=0.6)
        ax.plot(
            g["true"],
            g["estimated"],
            _RESOLUTION_MARKERS[i % 6],
            ms=3,
            mfc="none",
            color=colour,
            mec=colour,
            mew=0.8,
            label=label,
        )
    hi = float(np.nanmax(np.r_[table["true"].to_numpy(float), table["estimated"].to_numpy(float)]))
    hi = max(hi * 1.05, 1.0)
    ax.plot([0, hi], [0, hi], color=PALETTE["grey"], lw=0.7, ls="--", label="1:1")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"true {unit} (simulator)")
    ax.set_ylabel(f"estimated {unit}")
    ax.set_title(title)
    ax.legend(frameon=False, loc="lower right", fontsize=5.8)
    if synthetic:
        synthetic_label(fig)
    return fig


@_styled
def plot_change_map(
    changes: xr.Dataset,
    *,
    p_max: float = 0.001,
    tracks=None,
    synthetic: bool | None = None,
    title: str = "When each pixel changed",
):
    """The date of the most likely change of every pixel, where it is significant.

    Parameters
    ----------
    changes : xarray.Dataset
        From :func:`toolkit.change_map` (computed or lazy): ``change_time`` and
        ``p_value`` over ``(y, x)``.
    p_max : float, default 0.001
        Pixels whose change has a p-value at or above this are left grey.
    tracks : path or GeoDataFrame, optional
        Track centrelines drawn on top.
    synthetic : bool, optional
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        The colour bar gives the date of the change (UTC).
    """
    if not isinstance(changes, xr.Dataset) or not {"change_time", "p_value"} <= set(changes):
        raise InputError(
            "changes: expected the Dataset from toolkit.change_map with 'change_time' and 'p_value'"
        )
    if not 0 < p_max <= 1:
        raise InputError(f"p_max: expected a p-value in (0, 1], found {p_max!r}")
    ct = np.asarray(changes["change_time"].values, "datetime64[ns]")
    p = np.asarray(changes["p_value"].values, float)
    significant = ~np.isnat(ct) & (p < p_max)
    days = np.full(ct.shape, np.nan)
    days[significant] = mdates.date2num(ct[significant])
    x, y = changes["x"].values, changes["y"].values
    dx, dy = abs(x[1] - x[0]), abs(y[1] - y[0])
    extent = (x.min() - dx / 2, x.max() + dx / 2, y.min() - dy / 2, y.max() + dy / 2)
    ratio = (extent[3] - extent[2]) / (extent[1] - extent[0])
    fig = _figure(COLUMN_WIDTH_IN, COLUMN_WIDTH_IN * min(max(ratio, 0.35), 1.2) + 1.0)
    ax = fig.add_subplot()
    ax.set_facecolor("#E5E5E5")
    cmap = plt.get_cmap("cividis").with_extremes(bad="#E5E5E5")
    finite = days[np.isfinite(days)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    im = ax.imshow(
        np.ma.masked_invalid(days),
        extent=extent,
        origin="upper" if y[0] > y[-1] else "lower",
        cmap=cmap,
        vmin=vmin,
        vmax=max(vmax, vmin + 1),
        interpolation="nearest",
    )
    crs = changes.rio.crs if "spatial_ref" in changes.coords else None
    if tracks is not None:
        _draw_tracks(ax, tracks, crs, labels=False)
    _map_axes(ax, extent)
    _scale_bar(ax, colour="black")
    _north_arrow(ax, crs=crs, colour="black")
    share = float(significant.mean()) if significant.size else 0.0
    ax.set_title(f"{title} ({share:.0%} of pixels, p < {p_max:g})")
    cb = fig.colorbar(im, ax=ax, location="bottom", shrink=0.8, aspect=30, pad=0.02)
    cb.ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=5))
    cb.ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %Y"))
    cb.set_label("date of the change (UTC); grey: no significant change", fontsize=6.5)
    cb.ax.tick_params(labelsize=6)
    if _synthetic(changes, synthetic):
        synthetic_label(fig)
    return fig


@_styled
def plot_storage_and_railcars(
    counts: xr.Dataset,
    storage: xr.Dataset,
    *,
    areas=None,
    area_truth=None,
    event_date=None,
    closure=None,
    summit=None,
    synthetic: bool | None = None,
    title: str = "Railcars and covered storage area, five years",
):
    """Railcars in the yard above covered storage area, on one time axis.

    Parameters
    ----------
    counts : xarray.Dataset
        ``(time, track)`` counts (or yard totals over ``time``) from
        :func:`toolkit.count_railcars`.
    storage : xarray.Dataset
        ``(time, area)`` from :func:`toolkit.area_occupancy`; the covered area
        of the chosen areas is summed (NaN where an area was not visible).
    areas : list of str, optional
        The areas to sum; default all.
    area_truth : pandas.DataFrame, optional
        The simulator's ``truth_areas.csv`` (time, area_id, covered_m2), drawn
        as crosses.
    event_date : date-like, optional
        The event, marked in both panels.
    closure : (start, end), optional
        Shaded as the pandemic suspension; default :data:`toolkit.CLOSURE`.
    summit : date-like, optional
        Marked with a vertical line; default :data:`toolkit.SUMMIT`.
    synthetic : bool, optional
        Label the figure SYNTHETIC; default from the data's scene names or attrs.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        Two panels sharing the time axis: railcars (count) and covered storage
        area (m2), each with its low-high interval.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> t = np.array(["2019-01-01", "2023-10-05"], dtype="datetime64[ns]")
    >>> c = xr.Dataset({"railcars": ("time", [10.0, 73.0])}, coords={"time": t})
    >>> a = xr.Dataset({k: (("time", "area"), [[50.0], [1900.0]])
    ...                 for k in ("covered_m2", "covered_m2_low", "covered_m2_high")},
    ...                coords={"time": t, "area": ["apron"]})
    >>> fig = plot_storage_and_railcars(c, a, synthetic=True)
    >>> len(fig.axes)
    2
    """
    import pandas as pd

    from toolkit.baseline import CLOSURE, SUMMIT

    if not isinstance(storage, xr.Dataset) or "covered_m2" not in storage:
        raise InputError(
            "storage: expected the Dataset from toolkit.area_occupancy with 'covered_m2', "
            f"found {type(storage).__name__}"
        )
    closure = CLOSURE if closure is None else closure
    summit = SUMMIT if summit is None else summit
    total = _yard_total(counts)
    st = storage if areas is None else storage.sel(area=list(areas))
    names = [v for v in ("covered_m2", "covered_m2_low", "covered_m2_high") if v in st]
    cov = st[names]
    if "area" in cov.dims:
        cov = cov.sum("area", min_count=cov.sizes["area"])
    cov = cov.compute()
    fig = _figure(DOUBLE_WIDTH_IN, 4.4)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for ax in (ax1, ax2):
        with _closure_and_summit(ax, closure=closure, summit=summit):
            pass  # nothing goes between the two marks in this figure
    t = total["time"].values
    if "railcars_low" in total:
        ax1.vlines(
            t,
            total["railcars_low"].values,
            total["railcars_high"].values,
            color=PALETTE["sky"],
            lw=0.8,
            label="low-high interval",
        )
    ax1.plot(t, total["railcars"].values, "o", ms=2.0, color=PALETTE["blue"], label="railcars")
    ta = cov["time"].values
    if "covered_m2_low" in cov and "covered_m2_high" in cov:
        ax2.vlines(
            ta,
            cov["covered_m2_low"].values,
            cov["covered_m2_high"].values,
            color=PALETTE["yellow"],
            lw=0.8,
            label="low-high interval",
        )
    ax2.plot(
        ta, cov["covered_m2"].values, "s", ms=2.0, color=PALETTE["orange"], label="covered area"
    )
    if area_truth is not None:
        tr = area_truth
        if areas is not None:
            tr = tr[tr["area_id"].astype(str).isin([str(a) for a in areas])]
        tr = tr.groupby(pd.to_datetime(tr["time"]))["covered_m2"].sum().sort_index()
        ax2.plot(
            tr.index.values,
            tr.values,
            "x",
            ms=2.2,
            mew=0.6,
            color=PALETTE["black"],
            alpha=0.6,
            label="true (simulator)",
        )
    if event_date is not None:
        e1 = total.sel(time=_as_time(event_date), method="nearest")
        e2 = cov.sel(time=_as_time(event_date), method="nearest")
        lab = f"event {np.datetime_as_string(e1['time'].values, unit='D')}"
        ax1.plot([e1["time"].values], [float(e1.railcars)], "o", ms=4.5,
                 color=PALETTE["vermillion"], label=lab, zorder=5)  # fmt: skip
        ax2.plot([e2["time"].values], [float(e2.covered_m2)], "s", ms=4.5,
                 color=PALETTE["vermillion"], label=lab, zorder=5)  # fmt: skip
    ax1.set_ylabel("railcars (count)")
    ax2.set_ylabel("covered storage area (m$^2$)")
    ax2.set_xlabel("acquisition date (UTC)")
    ax1.set_title(title)
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    ax2.xaxis.set_major_locator(mdates.YearLocator())
    ax2.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    tmin = min(t.min(), ta.min(), _as_time(closure[0]))
    tmax = max(t.max(), ta.max(), _as_time(summit))
    pad = (tmax - tmin) * 0.02
    ax2.set_xlim(tmin - pad, tmax + pad)
    for ax in (ax1, ax2):
        ax.legend(frameon=False, loc="upper left", fontsize=5.8, ncols=2, handlelength=1.6)
    if _synthetic(counts, synthetic) or (synthetic is None and _is_synthetic(storage)):
        synthetic_label(fig)
    return fig
