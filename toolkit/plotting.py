"""Figures: functions that take results and return a matplotlib Figure.

Plot functions never show or save; :func:`save_figure` writes PNG (300 dpi) and
PDF into ``figures/`` with fixed metadata, so re-runs give identical files.
Colours come from the Okabe-Ito colour-blind-safe palette. A figure built from
synthetic scenes says so in its corner.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"), force=False)

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from toolkit.errors import InputError  # noqa: E402

__all__ = [
    "PALETTE",
    "save_figure",
    "synthetic_label",
    "plot_scene",
    "plot_count_series",
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


def synthetic_label(fig, *, text: str = "SYNTHETIC DATA (simulated scenes)") -> None:
    """Stamp the bottom-right corner of ``fig`` with a synthetic-data label."""
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
        ``(time, track)`` from :func:`toolkit.count_railcars`.
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
    est = total["railcars"].values
    lo, hi = total["railcars_low"].values, total["railcars_high"].values
    ax.vlines(t, lo, hi, color=PALETTE["sky"], lw=1.2, label="low-high interval")
    ax.plot(t, est, "o", ms=2.5, color=PALETTE["blue"], label="estimated")
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
