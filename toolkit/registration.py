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

import functools

import dask.array as da
import numpy as np
import scipy.fft
import xarray as xr
from numba import njit

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
    fft_shape = _fft_shape((cube.sizes["y"], cube.sizes["x"]), max_px=max_px, exclude_px=sigma_px)

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
        # the reference's spectrum: one task, shared by every scene's correlation
        spectrum = edges.mean(axis=0).map_blocks(
            _reference_spectrum,
            fft_shape=fft_shape,
            dtype="complex64",
            chunks=(fft_shape[0], fft_shape[1] // 2 + 1),
            meta=np.empty((0, 0), "complex64"),
        )
        res = da.blockwise(
            _shift_block,
            "tk",
            edges,
            "tyx",
            spectrum,
            "uv",
            new_axes={"k": 3},
            concatenate=True,
            fft_shape=fft_shape,
            max_px=max_px,
            exclude_px=sigma_px,
            dtype="float64",
            meta=np.empty((0, 0), "float64"),
        )
    else:
        valid = np.ones((data.shape[0], *data.shape[2:]), bool) if valid is None else valid
        edges = _edges_block(np.asarray(data), np.asarray(valid)[:, None], sigma=sigma_px)
        spectrum = _reference_spectrum(edges.mean(axis=0), fft_shape=fft_shape)
        res = _shift_block(edges, spectrum, fft_shape=fft_shape, max_px=max_px, exclude_px=sigma_px)
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
    weights = _gaussian_weights(sigma)
    iterations = int(np.ceil(2 * sigma))
    for k in range(img.shape[0]):
        ok = np.ascontiguousarray(valid[k, 0], dtype=bool)
        band = _normalised_band(img[k], ok)
        if band is None:
            continue
        # masked areas and their rim contribute nothing
        rim = _erode_cross(ok, iterations)
        _highpass(band, weights, rim, out=out[k])
    return out


def _normalised_band(img, ok):
    """Band mean over its median on ``ok`` (1 elsewhere), float32; None if unusable.

    The same numbers as ``np.where(ok, mean / np.median(mean[ok]), 1)`` of the
    float32 band mean. Unsigned 8- and 16-bit bands take the median from a
    histogram of the integer band sums (each mean is a sum over the band count,
    a monotone map, so the order statistics are those of the sums).
    """
    nb = img.shape[0]
    if img.dtype in (np.uint8, np.uint16) and nb * np.iinfo(img.dtype).max < 2**24:
        sums, hist = _band_sums(np.ascontiguousarray(img), ok, nb * np.iinfo(img.dtype).max + 1)
        n = int(hist.sum())
        if n < 64:
            return None
        cum = np.cumsum(hist)
        mean = np.float32(np.searchsorted(cum, n // 2, side="right")) / np.float32(nb)
        if n % 2 == 0:
            lower = np.float32(np.searchsorted(cum, n // 2 - 1, side="right")) / np.float32(nb)
            mean = (lower + mean) / np.float32(2)
        level = float(mean)
        if level <= 0:
            return None
        return _scaled_band(sums, ok, np.float32(nb), np.float32(level))
    if ok.sum() < 64:
        return None
    band = img.astype("float32").mean(axis=0)
    level = float(np.median(band[ok]))
    if not np.isfinite(level) or level <= 0:
        return None
    return np.where(ok, band / level, 1.0).astype("float32")


@njit(cache=True, nogil=True)
def _band_sums(img, ok, nbins):  # pragma: no cover - compiled
    nb, h, w = img.shape
    sums = np.zeros((h, w), np.int32)
    for b in range(nb):
        for i in range(h):
            for j in range(w):
                sums[i, j] += img[b, i, j]
    hist = np.zeros(nbins, np.int64)
    for i in range(h):
        for j in range(w):
            if ok[i, j]:
                hist[sums[i, j]] += 1
    return sums, hist


@njit(cache=True, nogil=True)
def _scaled_band(sums, ok, nb, level):  # pragma: no cover - compiled
    h, w = sums.shape
    out = np.empty((h, w), np.float32)
    one = np.float32(1.0)
    for i in range(h):
        for j in range(w):
            out[i, j] = np.float32(sums[i, j]) / nb / level if ok[i, j] else one
    return out


def _gaussian_weights(sigma):
    """Centre-first half of :func:`scipy.ndimage.gaussian_filter`'s kernel (truncate 4)."""
    radius = int(4.0 * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x**2)
    return (phi / phi.sum())[radius:].copy()


def _highpass(band, weights, rim, out=None):
    """``band - gaussian_filter(band, sigma)`` where ``rim``, else 0; float32.

    The Gaussian is scipy's (``mode="reflect"``, rows then columns, float64
    sums in scipy's order, float32 between the passes), so the numbers are
    the same; compiled, it skips the line buffering and runs vectorised. Rows
    without a ``rim`` pixel are not smoothed at all. ``out``, when given, is a
    zero-filled float32 array of the band's shape that receives the result.
    """
    rows = np.ascontiguousarray(rim.any(axis=1))
    if out is None:
        out = np.zeros(band.shape, "float32")
    _highpass_rows(band, _smooth_cols(band, weights, rows), weights, rim, rows, out)
    return out


@njit(cache=True, nogil=True, inline="always")
def _reflect(i, n):  # pragma: no cover - compiled
    # scipy.ndimage mode "reflect" (d c b a | a b c d | d c b a), any distance out
    if 0 <= i < n:
        return i
    if n == 1:
        return 0
    i = i % (2 * n)
    return i if i < n else 2 * n - 1 - i


# Both passes add the kernel taps to a row of float64 sums in the same order as scipy
# (centre, then the outermost pair inwards). Four taps are added per sweep over the row,
# one after another into the same sum, so each sum sees the same additions in the same
# order (the same bits) while the row of sums is loaded and stored a quarter as often.


@njit(cache=True, nogil=True)
def _smooth_cols(a, weights, rows):  # pragma: no cover - compiled
    # the column pass, for the rows flagged in ``rows`` (the others are left undefined)
    h, w = a.shape
    r = weights.size - 1
    out = np.empty((h, w), np.float32)
    acc = np.empty(w, np.float64)
    for i in range(h):
        if not rows[i]:
            continue
        w0 = weights[0]
        for j in range(w):
            acc[j] = np.float64(a[i, j]) * w0
        k = r
        while k >= 4:
            l0, h0 = a[_reflect(i - k, h)], a[_reflect(i + k, h)]
            l1, h1 = a[_reflect(i - k + 1, h)], a[_reflect(i + k - 1, h)]
            l2, h2 = a[_reflect(i - k + 2, h)], a[_reflect(i + k - 2, h)]
            l3, h3 = a[_reflect(i - k + 3, h)], a[_reflect(i + k - 3, h)]
            w0, w1, w2, w3 = weights[k], weights[k - 1], weights[k - 2], weights[k - 3]
            for j in range(w):
                s = acc[j]
                s += (np.float64(l0[j]) + np.float64(h0[j])) * w0
                s += (np.float64(l1[j]) + np.float64(h1[j])) * w1
                s += (np.float64(l2[j]) + np.float64(h2[j])) * w2
                s += (np.float64(l3[j]) + np.float64(h3[j])) * w3
                acc[j] = s
            k -= 4
        while k >= 1:
            lo, hi = a[_reflect(i - k, h)], a[_reflect(i + k, h)]
            wk = weights[k]
            for j in range(w):
                acc[j] += (np.float64(lo[j]) + np.float64(hi[j])) * wk
            k -= 1
        for j in range(w):
            out[i, j] = np.float32(acc[j])
    return out


@njit(cache=True, nogil=True)
def _highpass_rows(a, smooth, weights, rim, rows, out):  # pragma: no cover - compiled
    # the row pass and the difference, written into the zero-filled ``out``
    h, w = a.shape
    r = weights.size - 1
    ext = np.empty(w + 2 * r, np.float64)
    acc = np.empty(w, np.float64)
    zero = np.float32(0.0)
    for i in range(h):
        if not rows[i]:
            continue
        for j in range(w):
            ext[j + r] = np.float64(smooth[i, j])
        for j in range(r):
            ext[j] = np.float64(smooth[i, _reflect(j - r, w)])
            ext[w + r + j] = np.float64(smooth[i, _reflect(w + j, w)])
        w0 = weights[0]
        for j in range(w):
            acc[j] = ext[j + r] * w0
        k = r
        while k >= 4:
            l0, h0 = ext[r - k : r - k + w], ext[r + k : r + k + w]
            l1, h1 = ext[r - k + 1 : r - k + 1 + w], ext[r + k - 1 : r + k - 1 + w]
            l2, h2 = ext[r - k + 2 : r - k + 2 + w], ext[r + k - 2 : r + k - 2 + w]
            l3, h3 = ext[r - k + 3 : r - k + 3 + w], ext[r + k - 3 : r + k - 3 + w]
            w0, w1, w2, w3 = weights[k], weights[k - 1], weights[k - 2], weights[k - 3]
            for j in range(w):
                s = acc[j]
                s += (l0[j] + h0[j]) * w0
                s += (l1[j] + h1[j]) * w1
                s += (l2[j] + h2[j]) * w2
                s += (l3[j] + h3[j]) * w3
                acc[j] = s
            k -= 4
        while k >= 1:
            wk = weights[k]
            lo, hi = ext[r - k : r - k + w], ext[r + k : r + k + w]  # views: the loop vectorises
            for j in range(w):
                acc[j] += (lo[j] + hi[j]) * wk
            k -= 1
        for j in range(w):
            out[i, j] = a[i, j] - np.float32(acc[j]) if rim[i, j] else zero
    return out


def _erode_cross(ok, iterations):
    """``ndimage.binary_erosion(ok, iterations=iterations)``, 2-D, iterations >= 1.

    That erosion keeps a pixel when every pixel within city-block distance
    ``iterations`` is True, with the outside counted False: a fully valid image
    loses a border of that width, anything else is thresholded on an exact
    two-pass city-block distance transform.
    """
    out = np.zeros(ok.shape, bool)
    if ok.all():
        h, w = ok.shape
        out[iterations : h - iterations, iterations : w - iterations] = True
        return out
    return _cityblock_distance(np.ascontiguousarray(ok, dtype=bool)) > iterations


@njit(cache=True, nogil=True)
def _cityblock_distance(ok):  # pragma: no cover - compiled
    # distance to the nearest False pixel, the outside counting as False
    h, w = ok.shape
    d = np.empty((h, w), np.int32)
    for i in range(h):
        for j in range(w):
            if not ok[i, j]:
                d[i, j] = 0
            else:
                up = d[i - 1, j] if i > 0 else 0
                left = d[i, j - 1] if j > 0 else 0
                d[i, j] = min(up, left) + 1
    for i in range(h - 1, -1, -1):
        for j in range(w - 1, -1, -1):
            down = d[i + 1, j] if i < h - 1 else 0
            right = d[i, j + 1] if j < w - 1 else 0
            v = min(down, right) + 1
            if v < d[i, j]:
                d[i, j] = v
    return d


@functools.lru_cache(maxsize=8)
def _taper(shape):
    wy = np.hanning(shape[0]) if shape[0] > 2 else np.ones(shape[0])
    wx = np.hanning(shape[1]) if shape[1] > 2 else np.ones(shape[1])
    w = np.sqrt(np.outer(wy, wx)).astype("float32")
    w.flags.writeable = False
    return w


def _search_radius(max_px, exclude_px):
    return int(np.ceil(max_px + exclude_px))


def _fft_shape(shape, *, max_px, exclude_px):
    """Padded FFT size: fast to transform, no wrap-around at the lags looked at."""
    r = _search_radius(max_px, exclude_px) + 1
    return (
        scipy.fft.next_fast_len(shape[0] + r),
        scipy.fft.next_fast_len(shape[1] + r, real=True),
    )


def _reference_spectrum(reference, *, fft_shape):
    """Conjugate spectrum of the tapered, zero-padded reference (computed once)."""
    buf = np.zeros(fft_shape, "float32")
    h, w = reference.shape
    np.multiply(reference, _taper((h, w)), out=buf[:h, :w])
    return np.conj(scipy.fft.rfft2(buf))


def _shift_block(edges, f_ref, *, fft_shape, max_px, exclude_px=3.0):
    """(row, col, peak ratio) of each scene's content against the reference spectrum."""
    out = np.zeros((edges.shape[0], 3))
    h, wd = edges.shape[1:]
    w = _taper((h, wd))
    cy, cx = h // 2, wd // 2
    r = _search_radius(max_px, exclude_px)
    # lags searched (as far as the image reaches), and one more each side for the vertex
    y0, y1 = max(-r, -cy), min(r, h - 1 - cy)
    x0, x1 = max(-r, -cx), min(r, wd - 1 - cx)
    ly = np.arange(max(y0 - 1, -cy), min(y1 + 1, h - 1 - cy) + 1)
    lx = np.arange(max(x0 - 1, -cx), min(x1 + 1, wd - 1 - cx) + 1)
    buf = np.zeros(fft_shape, "float32")
    for k in range(edges.shape[0]):
        e = edges[k]
        if not np.any(e):
            continue
        # plain cross-correlation of edge images: its peak is a few pixels wide, so
        # the vertex of a parabola through it finds fractions of a pixel (a whitened,
        # phase-only peak is one pixel wide and pulls sub-pixel shifts to zero)
        np.multiply(e, w, out=buf[:h, :wd])
        cross = scipy.fft.rfft2(buf)
        cross *= f_ref
        # zero padding makes it the linear correlation; only the lags near 0 are needed
        rows = scipy.fft.ifft(cross, axis=0)[ly % fft_shape[0]]
        corr = scipy.fft.irfft(rows, n=fft_shape[1], axis=1)[:, lx % fft_shape[1]]
        oy, ox = y0 - ly[0], x0 - lx[0]
        win = corr[oy : oy + y1 - y0 + 1, ox : ox + x1 - x0 + 1]
        iy, ix = np.unravel_index(np.argmax(win), win.shape)
        py, pxx = iy + oy, ix + ox  # in corr
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

        dy, dx = int(ly[py]), int(lx[pxx])
        sy = _sub(corr[py - 1, pxx], peak, corr[py + 1, pxx]) if -cy < dy < h - 1 - cy else 0.0
        sx = _sub(corr[py, pxx - 1], peak, corr[py, pxx + 1]) if -cx < dx < wd - 1 - cx else 0.0
        out[k] = (dy + sy, dx + sx, ratio)
    return out
