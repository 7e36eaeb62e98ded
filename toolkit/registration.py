"""Co-registration: how far each scene's content lies from where the others put it.

Satellite scenes carry georeferencing errors of a pixel or more (the sample's
simulator draws up to 2 pixels; PlanetScope and WorldView quote several
metres). A track strip sampled from a misregistered scene shows ballast and
grass where the track should be, which reads as railcars. :func:`coregister`
measures each scene's shift against the stack's mean appearance by phase
correlation of edge images (static structure: ballast beds, roads, buildings),
to a tenth of a pixel, and :func:`toolkit.track_strips` samples each scene that
much further so the strips line up.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from toolkit.errors import InputError

__all__ = ["coregister"]


def coregister(
    cube: xr.DataArray,
    *,
    bounds: tuple[float, float, float, float] | None = None,
    tracks=None,
    margin_m: float = 40.0,
    max_shift_m: float | None = None,
    highpass_m: float = 4.0,
    min_peak_ratio: float = 1.05,
) -> xr.Dataset:
    """Georeferencing shift of every scene against the stack, by phase correlation.

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)`` from :func:`toolkit.load_cube` (one grid, a
        projected CRS); its ``valid`` coordinate, when present, keeps clouds
        and nodata out of the comparison.
    bounds : (minx, miny, maxx, maxy), optional
        Window to compare, in the cube's CRS (for example the tracks' extent
        plus a margin); default the whole cube.
    tracks : path or GeoDataFrame, optional
        Instead of ``bounds``: compare the tracks' extent plus ``margin_m``
        (see :func:`toolkit.read_tracks`).
    margin_m : float, default 40.0
        Margin around the tracks, metres.
    max_shift_m : float, optional
        Largest shift looked for; default 5 pixels.
    highpass_m : float, default 4.0
        Scale of the Gaussian whose blur is subtracted before correlating:
        edges (ballast beds, roads, roofs) are compared, not illumination.
    min_peak_ratio : float, default 1.05
        A scene whose correlation peak is not this many times the next
        highest one (too cloudy, nothing to see) gets shift 0 and
        ``registered = False``.

    Returns
    -------
    xarray.Dataset
        Dims ``(time,)``: ``shift_x_m`` and ``shift_y_m`` (metres east and
        north by which the scene's content lies off the stack's mean
        position), ``peak_ratio`` and ``registered`` (bool). Lazy when the cube
        is: each scene is one task, against the stack's mean edge image.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> base = rng.random((64, 64)).astype("float32")
    >>> frames = [np.roll(base, s, axis=1) for s in (0, 0, 2, 0)]  # the third moved east 2 px
    >>> cube = xr.DataArray(np.stack(frames)[:, None], dims=("time", "band", "y", "x"),
    ...     coords={"time": np.arange(4).astype("datetime64[D]"), "band": ["pan"],
    ...             "y": 63.5 - np.arange(64.0), "x": 0.5 + np.arange(64.0)}).rio.write_crs(32652)
    >>> shifts = coregister(cube, highpass_m=2.0)
    >>> [round(float(v), 1) for v in shifts.shift_x_m - shifts.shift_x_m.median()]
    [0.0, 0.0, 2.0, 0.0]
    """
    if not isinstance(cube, xr.DataArray) or set(cube.dims) != {"time", "band", "y", "x"}:
        raise InputError("coregister: expected a cube with dims (time, band, y, x)")
    if cube.sizes["y"] < 8 or cube.sizes["x"] < 8:
        raise InputError("coregister: the cube is smaller than 8 x 8 pixels")
    if tracks is not None:
        if bounds is not None:
            raise InputError("coregister: pass bounds or tracks, not both")
        from toolkit.tracks import read_tracks, validate_tracks

        x0, y0, x1, y1 = validate_tracks(read_tracks(tracks), cube).total_bounds
        bounds = (x0 - margin_m, y0 - margin_m, x1 + margin_m, y1 + margin_m)
    xs = cube["x"].values.astype("float64")
    ys = cube["y"].values.astype("float64")
    dx, dy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
    px = min(abs(dx), abs(dy))
    if bounds is not None:
        minx, miny, maxx, maxy = (float(b) for b in bounds)
        cols = np.flatnonzero((xs >= minx) & (xs <= maxx))
        rows = np.flatnonzero((ys >= miny) & (ys <= maxy))
        if cols.size < 8 or rows.size < 8:
            raise InputError(
                f"coregister: bounds {bounds} hold fewer than 8 x 8 pixels of the cube"
            )
        cube = cube.isel(x=slice(cols[0], cols[-1] + 1), y=slice(rows[0], rows[-1] + 1))
    max_px = 5.0 if max_shift_m is None else float(max_shift_m) / px
    sigma_px = max(float(highpass_m) / px, 1.0)

    data = cube.transpose("time", "band", "y", "x").data
    if "valid" in cube.coords:
        valid = cube["valid"].transpose("time", "y", "x").data
    else:
        valid = None
    lazy = isinstance(data, da.Array) or isinstance(valid, da.Array)
    if lazy:
        data = da.asarray(data).rechunk({0: 1, 1: -1, 2: -1, 3: -1})
        if valid is None:
            valid = da.ones((data.shape[0], data.shape[2], data.shape[3]), bool, chunks=(1, -1, -1))
        valid = da.asarray(valid).rechunk({0: 1, 1: -1, 2: -1})
        edges = da.map_blocks(
            _edges_block,
            data,
            valid[:, None],
            sigma=sigma_px,
            dtype="float32",
            drop_axis=[1],
            meta=np.empty((0, 0, 0), "float32"),
        )
        reference = edges.mean(axis=0)
        res = da.map_blocks(
            _shift_block,
            edges,
            reference[None],
            max_px=max_px,
            exclude_px=sigma_px,
            dtype="float64",
            chunks=(edges.chunks[0], (3,)),
            drop_axis=[2],
            meta=np.empty((0, 0), "float64"),
        )
    else:
        valid = np.ones((data.shape[0], *data.shape[2:]), bool) if valid is None else valid
        edges = _edges_block(np.asarray(data), np.asarray(valid)[:, None], sigma=sigma_px)
        reference = edges.mean(axis=0)
        res = _shift_block(edges, reference[None], max_px=max_px, exclude_px=sigma_px)
    drow, dcol, ratio = res[:, 0], res[:, 1], res[:, 2]
    ok = ratio >= min_peak_ratio
    ds = xr.Dataset(
        {
            "shift_x_m": (
                "time",
                da.where(ok, dcol * dx, 0.0) if lazy else np.where(ok, dcol * dx, 0.0),
            ),
            "shift_y_m": (
                "time",
                da.where(ok, drow * dy, 0.0) if lazy else np.where(ok, drow * dy, 0.0),
            ),
            "peak_ratio": ("time", ratio),
            "registered": ("time", ok),
        },
        coords={"time": cube["time"].values},
        attrs={
            "method": "phase correlation of high-passed band-mean images against the stack mean",
            "highpass_m": float(highpass_m),
            "max_shift_m": float(max_px * px),
            "min_peak_ratio": float(min_peak_ratio),
            "window": [float(v) for v in (xs.min(), ys.min(), xs.max(), ys.max())]
            if bounds is None
            else [float(b) for b in bounds],
        },
    )
    ds["shift_x_m"].attrs.update(units="m", long_name="scene content offset, east")
    ds["shift_y_m"].attrs.update(units="m", long_name="scene content offset, north")
    return ds


def _edges_block(img, valid, *, sigma):
    """High-passed, brightness-normalised band mean; unusable pixels 0. (t, y, x) float32."""
    out = np.zeros((img.shape[0], *img.shape[2:]), "float32")
    for k in range(img.shape[0]):
        ok = valid[k, 0].astype(bool)
        if ok.sum() < 64:
            continue
        band = img[k].astype("float32").mean(axis=0)
        level = float(np.median(band[ok]))
        if not np.isfinite(level) or level <= 0:
            continue
        band = np.where(ok, band / level, 1.0).astype("float32")
        hp = band - ndimage.gaussian_filter(band, sigma)
        # masked areas and their rim contribute nothing
        rim = ndimage.binary_erosion(ok, iterations=int(np.ceil(2 * sigma)))
        out[k] = np.where(rim, hp, 0.0)
    return out


def _taper(shape):
    wy = np.hanning(shape[0]) if shape[0] > 2 else np.ones(shape[0])
    wx = np.hanning(shape[1]) if shape[1] > 2 else np.ones(shape[1])
    return np.sqrt(np.outer(wy, wx)).astype("float32")


def _shift_block(edges, reference, *, max_px, exclude_px=3.0):
    """(row, col, peak ratio) of each scene's content against the reference."""
    ref = reference[0]
    w = _taper(ref.shape)
    f_ref = np.conj(np.fft.rfft2(ref * w))
    out = np.zeros((edges.shape[0], 3))
    h, wd = ref.shape
    for k in range(edges.shape[0]):
        e = edges[k]
        if not np.any(e):
            continue
        # plain cross-correlation of edge images: its peak is a few pixels wide, so
        # the vertex of a parabola through it finds fractions of a pixel (a whitened,
        # phase-only peak is one pixel wide and pulls sub-pixel shifts to zero)
        cross = np.fft.rfft2(e * w) * f_ref
        corr = np.fft.irfft2(cross, s=ref.shape)
        corr = np.fft.fftshift(corr)
        cy, cx = h // 2, wd // 2
        r = int(np.ceil(max_px + exclude_px))
        win = corr[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1]
        iy, ix = np.unravel_index(np.argmax(win), win.shape)
        py, pxx = iy + max(cy - r, 0), ix + max(cx - r, 0)
        peak = corr[py, pxx]
        # the next highest value away from the peak's neighbourhood
        masked = win.copy()
        ex = max(3, int(np.ceil(exclude_px)))
        masked[max(iy - ex, 0) : iy + ex + 1, max(ix - ex, 0) : ix + ex + 1] = -np.inf
        second = float(masked.max()) if np.isfinite(masked).any() else 0.0
        ratio = float(peak / second) if second > 0 else np.inf

        def _sub(a, b, c):  # parabolic vertex offset through three samples
            den = a - 2 * b + c
            return 0.5 * (a - c) / den if den != 0 else 0.0

        sy = _sub(corr[py - 1, pxx], peak, corr[py + 1, pxx]) if 0 < py < h - 1 else 0.0
        sx = _sub(corr[py, pxx - 1], peak, corr[py, pxx + 1]) if 0 < pxx < wd - 1 else 0.0
        out[k] = (py - cy + sy, pxx - cx + sx, ratio)
    return out
