"""Small compiled kernels shared by the pipeline stages."""

from __future__ import annotations

import functools
import sys

import numpy as np
from numba import njit, prange

__all__ = ["nanmedian_axis0", "nanmedian_rows"]


def worker_threads() -> int | None:
    """Threads of the dask.distributed worker running this code, or None outside a worker."""
    distributed = sys.modules.get("distributed")  # not imported: not in a worker
    if distributed is None:
        return None
    try:
        return int(distributed.get_worker().state.nthreads)
    except (ValueError, AttributeError):  # ValueError: no worker in this thread
        return None


def call_within_worker_threads(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the compiled kernels on at most the worker's own threads.

    numba starts as many threads as the machine has cores in every process. A
    dask worker started with ``--nthreads 1`` is meant to use one core; its
    compiled kernels would otherwise spread over all of them, on top of the
    other workers' (measured on 2 cores: one such worker counting four sites
    took 17.4 s on both cores against 19.6 s on one, so a scaling measurement
    saw 1.45x where the workers gave 1.60x). Outside a worker, or where numba
    already has no more threads than the worker, ``fn`` runs as it is. numba's
    thread count is set for the calling thread only and restored afterwards.
    """
    import numba

    budget = worker_threads()
    before = numba.get_num_threads()
    if budget is None or budget >= before:
        return fn(*args, **kwargs)
    numba.set_num_threads(max(budget, 1))
    try:
        return fn(*args, **kwargs)
    finally:
        numba.set_num_threads(before)


def within_worker_threads(fn):
    """Decorator: :func:`call_within_worker_threads` for every call of ``fn``."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return call_within_worker_threads(fn, *args, **kwargs)

    return run


@njit(cache=True, parallel=True)
def _nanmedian_cols(a):  # pragma: no cover - compiled
    n, m = a.shape
    out = np.empty(m, np.float64)
    block = 512
    nblock = (m + block - 1) // block
    for bi in prange(nblock):
        j0 = bi * block
        j1 = min(m, j0 + block)
        # gather the block row by row (contiguous reads), then one column at a time
        tile = np.empty((j1 - j0, n), np.float64)
        for i in range(n):
            for j in range(j0, j1):
                tile[j - j0, i] = a[i, j]
        buf = np.empty(n, np.float64)
        for jj in range(j1 - j0):
            # insertion sort while gathering: the columns are short time series
            k = _sorted_non_nan(tile[jj], buf)
            out[j0 + jj] = _middle(buf, k) if k > 0 else np.nan
    return out


@njit(cache=True, nogil=True)
def _sorted_non_nan(v, buf):  # pragma: no cover - compiled
    """The non-NaN values of the short 1-D ``v`` sorted into ``buf`` (insertion); their count."""
    m = 0
    for x in v:
        if np.isnan(x):
            continue
        p = m
        while p > 0 and buf[p - 1] > x:
            buf[p] = buf[p - 1]
            p -= 1
        buf[p] = x
        m += 1
    return m


@njit(cache=True, nogil=True)
def _middle(buf, m):  # pragma: no cover - compiled
    """The median of the sorted ``buf[:m]`` (the middle pair averaged), m >= 1."""
    h = m // 2
    return buf[h] if m % 2 == 1 else 0.5 * (buf[h - 1] + buf[h])


def nanmedian_axis0(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)`` (all-NaN columns give NaN, silently), compiled."""
    a = np.asarray(a)
    if a.shape[0] > 256:  # long columns: linear-time selection, a column per task
        # a strided 3-D view (e.g. a moved axis) is read in place, not copied
        a3 = a if a.ndim == 3 else a.reshape(a.shape[0], -1)[:, :, None]
        return _nanmedian_long(a3).reshape(a.shape[1:])
    flat = a.reshape(a.shape[0], -1)
    return _nanmedian_cols(np.ascontiguousarray(flat)).reshape(a.shape[1:])


@njit(cache=True, parallel=True)
def _nanmedian_long(a):  # pragma: no cover - compiled
    n, m1, m2 = a.shape
    out = np.empty(m1 * m2, np.float64)
    for j in prange(m1 * m2):
        j1 = j // m2
        j2 = j % m2
        buf = np.empty(n, np.float64)
        k = 0
        for i in range(n):
            x = a[i, j1, j2]
            if not np.isnan(x):
                buf[k] = x
                k += 1
        out[j] = _median_of(buf, k)
    return out


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)`` for a 2-D array, compiled."""
    return nanmedian_axis0(np.asarray(a).T.copy())


def masked_float32(val: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``np.where(valid[..., None], val, np.nan).astype("float32")``: ``val`` (time, ...,
    band), ``valid`` (time, ...) bool; in one parallel pass."""
    val = np.ascontiguousarray(val)
    valid = np.ascontiguousarray(valid, dtype=np.bool_)
    if val.shape[:-1] != valid.shape or val.ndim < 2:
        raise ValueError(f"masked_float32: shapes {val.shape} and {valid.shape} do not match")
    n_t, n_b = val.shape[0], val.shape[-1]
    # first touched here, on one thread (see divide_by_gains)
    out = np.empty(val.shape, np.float32)
    out.fill(0)
    _masked_float32(val.reshape(n_t, -1, n_b), valid.reshape(n_t, -1), out.reshape(n_t, -1, n_b))
    return out


@njit(cache=True, parallel=True)
def _masked_float32(val, valid, out):  # pragma: no cover - compiled
    n_t, m, n_b = val.shape
    for t in prange(n_t):
        for i in range(m):
            ok = valid[t, i]
            for b in range(n_b):
                out[t, i, b] = val[t, i, b] if ok else np.nan
    return out


def divide_by_gains(v: np.ndarray, gain: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.divide(v, gain[:, None, ..., None, :], out=out)``: ``v`` (time, ..., band)
    C-contiguous float32, ``gain`` (time, band) float32; in one parallel pass."""
    if out is None:
        # first touched here, on one thread: on 2 cores the kernel's threads faulting in a
        # fresh stack's pages together took 5-10 times as long (0.15 s for 128 MB)
        out = np.empty_like(v)
        out.fill(0)
    if not (v.flags.c_contiguous and out.flags.c_contiguous and out.shape == v.shape):
        raise ValueError("divide_by_gains: v and out must be C-contiguous and of one shape")
    n_t, n_b = v.shape[0], v.shape[-1]
    _divide_by_gains(
        v.reshape(n_t, -1, n_b), np.ascontiguousarray(gain, v.dtype), out.reshape(n_t, -1, n_b)
    )
    return out


@njit(cache=True, parallel=True)
def _divide_by_gains(v, gain, out):  # pragma: no cover - compiled
    n_t, m, n_b = v.shape
    for t in prange(n_t):
        for i in range(m):
            for b in range(n_b):
                out[t, i, b] = v[t, i, b] / gain[t, b]


@njit(cache=True, nogil=True)
def bilinear_samples(img, bad, rows, cols, value, ok):  # pragma: no cover - compiled
    """Bilinear samples of every band of ``img`` (band, y, x) at (rows, cols), and validity,
    written into ``value`` (point, band) float32 and ``ok`` (point,) bool.

    Serial, and releases the GIL: it runs once per scene inside the scheduler's
    parallel threads.

    The same numbers as ``scipy.ndimage.map_coordinates(..., order=1,
    mode="constant")`` per band: points outside ``[0, n - 1]`` give NaN.
    ``ok`` is true where every pixel with a share in the sample is good
    (``bad`` false); outside the image it is false. Non-finite coordinates
    count as outside.
    """
    n_b, h, w = img.shape
    n = rows.size
    for i in range(n):
        r = rows[i]
        c = cols[i]
        if not (r >= 0.0 and r <= h - 1 and c >= 0.0 and c <= w - 1):
            for b in range(n_b):
                value[i, b] = np.nan
            ok[i] = False
            continue
        r0 = min(int(np.floor(r)), h - 1)
        c0 = min(int(np.floor(c)), w - 1)
        fr = r - r0
        fc = c - c0
        r1 = min(r0 + 1, h - 1)
        c1 = min(c0 + 1, w - 1)
        w00 = (1.0 - fr) * (1.0 - fc)
        w01 = (1.0 - fr) * fc
        w10 = fr * (1.0 - fc)
        w11 = fr * fc
        for b in range(n_b):
            value[i, b] = (
                w00 * np.float64(img[b, r0, c0])
                + w01 * np.float64(img[b, r0, c1])
                + w10 * np.float64(img[b, r1, c0])
                + w11 * np.float64(img[b, r1, c1])
            )
        share = 0.0
        if bad[r0, c0]:
            share += w00
        if bad[r0, c1]:
            share += w01
        if bad[r1, c0]:
            share += w10
        if bad[r1, c1]:
            share += w11
        ok[i] = share < 1e-6


# --------------------------------------------------------------------------- occupancy kernels
# One scene's (track, along, across, band) samples against the empty-track reference at
# the same places. Each kernel gives the numbers of the NumPy expression in its docstring
# (summed in float64), in one pass. They are serial and release the GIL: the occupancy
# step runs scenes on a pool of threads (occupancy._per_scene).


# The deepest uniform dimming the haze explanations take for an unmasked cloud shadow
# or thin cloud: 30 %. A dark car is dimmer still: an empty ore wagon's interior
# (reflectance 0.10 on ballast's 0.25) is a 60 % dimming, which 0.65 (the limit before)
# explained away in every scene with any masked pixel, a nodata edge included (tuning
# seed 42 at 1 m read 6 of 12 cars on one track of its nodata scene, 12 of 12 now).
# Measured on the tuning sites, scene error / bias / error per track and scene:
# 0.65 -> 0.3: full 0.5 m yard 6.8 / -4.9 / 1.96 -> 5.5 / -3.6 / 1.63; seed 42 8.6 / -1.1
# / 0.24 -> 3.7 / +3.7 / 0.18; the default sample 0.035 -> 0.025 per track and scene; no
# site worse. 0.2 and 0.25 over-counted seed 42 (5.9 / +5.9 / 0.21), 0.35
# and 0.4 gained less on the full yard; none (no dimming term) put false cars on the
# default sample (0.16 per track and scene).
HAZE_DIMMING_MAX = 0.3


@njit(cache=True, nogil=True)
def shadow_candidates(nt, r):  # pragma: no cover - compiled
    """Samples that look like ballast in a shadow: (K, A, C) bool.

    ``ratio = nt / r``; mean over bands in (0.15, 0.75) and relative spread
    (population standard deviation over the mean) below 0.25, non-finite
    ratios skipped.
    """
    n_k, n_a, n_c, n_b = nt.shape
    out = np.zeros((n_k, n_a, n_c), np.bool_)
    for ka in range(n_k * n_a):
        k = ka // n_a
        a = ka % n_a
        for c in range(n_c):
            rho, m = _ratio_mean(nt, r, k, a, c, 0.0)
            if m == 0 or not (rho > 0.15 and rho < 0.75):
                continue  # the spread decides only within that range
            q = 0.0
            for b in range(n_b):
                x = np.float64(nt[k, a, c, b]) / np.float64(r[k, a, c, b])
                if np.isfinite(x):
                    q += (x - rho) ** 2
            spread = np.sqrt(q / m) / max(rho, 1e-6)
            out[k, a, c] = rho > 0.15 and rho < 0.75 and spread < 0.25
    return out


@njit(cache=True, nogil=True)
def scene_distances(
    nt,
    r,
    k_sh,
    use_shadow,
    reached,
    scale_lo,
    scale_hi,
    haze,
    light_lo,
    light_hi,
    across_w,
    penumbra,
):  # pragma: no cover - compiled
    """Colour distance of each sample to the empty track, lit or explained: (d, d_plain, lit).

    ``d_lit = |nt - r|``. With ``use_shadow``: ``shade = k_sh * r``, scaled by
    the least-squares factor ``sum(nt * shade) / sum(shade**2)`` clipped to
    ``[scale_lo, scale_hi]`` where ``reached[k, a]`` (else 1), ``d_sh = |nt -
    shade|``, ``d = fmin(d_lit, d_sh)`` and ``lit = not d_sh < d_lit``. Where
    ``haze[k, a]`` (int8) is 1: also the distance to ballast blended towards a
    neutral of three times its mean (share 0-0.6) and to ballast dimmed
    uniformly (by 0 to ``HAZE_DIMMING_MAX``).
    That is ``d_plain``; ``d`` is also the distance to ``f * r`` with the
    light factor ``f = light_lo + (light_hi - light_lo) * across_w[c]``
    interpolated across the strip, where ``light_lo[k, a]`` is finite,
    with ``use_shadow`` where ``penumbra[k, a]``, the distance to the nearest
    blend ``r + alpha * (sc * shade - r)`` (least-squares ``alpha`` clipped to
    0-1) of the lit and the shaded empty track: the blurred edge of a
    neighbour's shadow, and where ``haze[k, a]`` is 2 the haze distances
    above (an explanation that leaves the noise's distances alone). NaN
    samples give NaN distances and count as lit.

    Three bands (the common case) run a copy of the loops compiled for exactly three, which
    unrolls them (0.46 -> 0.31 s over the sample's 273 calls); any other count runs the
    same code for its count. The numbers are the same either way.
    """
    if nt.shape[-1] == 3:
        return _scene_distances(
            nt,
            r,
            k_sh,
            use_shadow,
            reached,
            scale_lo,
            scale_hi,
            haze,
            light_lo,
            light_hi,
            across_w,
            penumbra,
            3,
        )
    return _scene_distances(
        nt,
        r,
        k_sh,
        use_shadow,
        reached,
        scale_lo,
        scale_hi,
        haze,
        light_lo,
        light_hi,
        across_w,
        penumbra,
        nt.shape[-1],
    )


@njit(cache=True, nogil=True, inline="always")
def _scene_distances(
    nt,
    r,
    k_sh,
    use_shadow,
    reached,
    scale_lo,
    scale_hi,
    haze,
    light_lo,
    light_hi,
    across_w,
    penumbra,
    n_b,
):  # pragma: no cover - compiled
    # scene_distances for ``n_b`` bands (inlined into it, so a constant count unrolls)
    n_k, n_a, n_c, _ = nt.shape
    d = np.empty((n_k, n_a, n_c), np.float64)
    d_plain = np.empty((n_k, n_a, n_c), np.float64)
    lit = np.ones((n_k, n_a, n_c), np.bool_)
    sh = np.empty(n_b, np.float64)
    seg = np.empty(n_b, np.float64)
    edge = np.empty(n_b, np.float64)
    for ka in range(n_k * n_a):
        k = ka // n_a
        a = ka % n_a
        for c in range(n_c):
            s = 0.0
            for b in range(n_b):
                s += (np.float64(nt[k, a, c, b]) - r[k, a, c, b]) ** 2
            d_lit = np.sqrt(s)
            if np.isnan(d_lit):
                # a NaN band, of the sample or the reference: every distance below is NaN
                # too (each sums over the bands of both), and the sample counts as lit
                d[k, a, c] = np.nan
                d_plain[k, a, c] = np.nan
                continue
            best = d_lit
            d_pen = np.inf
            if use_shadow:
                num = 0.0
                den = 0.0
                for b in range(n_b):
                    sh[b] = k_sh[b] * r[k, a, c, b]
                    num += np.float64(nt[k, a, c, b]) * sh[b]
                    den += sh[b] * sh[b]
                sc = 1.0
                if reached[k, a]:
                    sc = num / max(den, 1e-12)
                    if sc < scale_lo:
                        sc = scale_lo
                    elif sc > scale_hi:
                        sc = scale_hi
                s = 0.0
                for b in range(n_b):
                    s += (np.float64(nt[k, a, c, b]) - sc * sh[b]) ** 2
                d_sh = np.sqrt(s)
                if d_sh < d_lit:
                    lit[k, a, c] = False
                best = _fmin(d_lit, d_sh)
                if penumbra[k, a]:
                    # the edge of a neighbour's shadow: a blend of the shade and the light
                    for b in range(n_b):
                        edge[b] = sc * sh[b] - r[k, a, c, b]
                    d_pen = _blend_distance(nt, r, k, a, c, edge, 1.0, n_b)
            d_haze = np.nan
            if haze[k, a]:
                mean_r = 0.0
                m = 0
                for b in range(n_b):
                    if np.isfinite(r[k, a, c, b]):
                        mean_r += r[k, a, c, b]
                        m += 1
                mean_r = mean_r / m if m > 0 else np.nan
                for b in range(n_b):
                    seg[b] = 3.0 * mean_r - r[k, a, c, b]
                d_haze = _blend_distance(nt, r, k, a, c, seg, 0.6, n_b)
                num = 0.0
                den = 0.0
                for b in range(n_b):
                    num += (r[k, a, c, b] - np.float64(nt[k, a, c, b])) * r[k, a, c, b]
                    den += r[k, a, c, b] * r[k, a, c, b]
                tau = _clip(num / max(den, 1e-12), 0.0, HAZE_DIMMING_MAX)
                s = 0.0
                for b in range(n_b):
                    s += (np.float64(nt[k, a, c, b]) - (1.0 - tau) * r[k, a, c, b]) ** 2
                d_haze = _fmin(d_haze, np.sqrt(s))
                if haze[k, a] == 1:
                    best = _fmin(best, d_haze)
            d_plain[k, a, c] = best
            if d_pen < best:
                best = d_pen
            if haze[k, a] == 2:
                best = _fmin(best, d_haze)
            if np.isfinite(light_lo[k, a]):
                f = light_lo[k, a] + (light_hi[k, a] - light_lo[k, a]) * across_w[c]
                s = 0.0
                for b in range(n_b):
                    s += (np.float64(nt[k, a, c, b]) - f * r[k, a, c, b]) ** 2
                best = _fmin(best, np.sqrt(s))
            d[k, a, c] = best
    return d, d_plain, lit


@njit(cache=True)
def _blend_distance(nt, r, k, a, c, step, t_max, n_b):  # pragma: no cover - compiled
    """Distance from ``nt[k, a, c]`` to the nearest ``r[k, a, c] + t * step`` with the
    least-squares ``t`` clipped to ``[0, t_max]``; ``n_b`` bands (``step.size``)."""
    num = 0.0
    den = 0.0
    for b in range(n_b):
        num += (np.float64(nt[k, a, c, b]) - r[k, a, c, b]) * step[b]
        den += step[b] * step[b]
    t = _clip(num / max(den, 1e-12), 0.0, t_max)
    s = 0.0
    for b in range(n_b):
        s += (np.float64(nt[k, a, c, b]) - r[k, a, c, b] - t * step[b]) ** 2
    return np.sqrt(s)


@njit(cache=True)
def _fmin(x, y):  # pragma: no cover - compiled
    if np.isnan(x):
        return y
    if np.isnan(y):
        return x
    return min(x, y)


@njit(cache=True)
def _clip(x, lo, hi):  # pragma: no cover - compiled
    if np.isnan(x):
        return x
    return min(max(x, lo), hi)


@njit(cache=True, nogil=True)
def band_mean_ratio(nt, r, floor):  # pragma: no cover - compiled
    """``nanmean(nt / maximum(r, floor), axis=-1)``: (K, A, C); all-NaN gives NaN."""
    n_k, n_a, n_c, n_b = nt.shape
    out = np.empty((n_k, n_a, n_c), np.float64)
    for ka in range(n_k * n_a):
        k = ka // n_a
        a = ka % n_a
        for c in range(n_c):
            out[k, a, c] = _ratio_mean(nt, r, k, a, c, floor)[0]
    return out


@njit(cache=True)
def _ratio_mean(nt, r, k, a, c, floor):  # pragma: no cover - compiled
    """Mean over bands of the finite ``nt / max(r, floor)`` at one sample, and their number."""
    s = 0.0
    m = 0
    for b in range(nt.shape[-1]):
        x = np.float64(nt[k, a, c, b]) / max(np.float64(r[k, a, c, b]), floor)
        if np.isfinite(x):
            s += x
            m += 1
    return (s / m if m > 0 else np.nan), m


@njit(cache=True, nogil=True)
def masked_ratio_median(num, den, mask):  # pragma: no cover - compiled
    """Per band, the median of ``num / den`` over the samples where ``mask``, NaNs skipped.

    ``num`` and ``den`` are (K, A, C, band); ``mask`` is (K, A, C). Bands with
    no finite ratio give NaN.
    """
    n_k, n_a, n_c, n_b = num.shape
    out = np.empty(n_b, np.float64)
    for b in range(n_b):
        buf = np.empty(n_k * n_a * n_c, np.float64)
        m = 0
        for k in range(n_k):
            for a in range(n_a):
                for c in range(n_c):
                    if mask[k, a, c]:
                        x = np.float64(num[k, a, c, b]) / np.float64(den[k, a, c, b])
                        if not np.isnan(x):
                            buf[m] = x
                            m += 1
        out[b] = _median_of(buf, m)
    return out


@njit(cache=True, parallel=True)
def masked_median_over_time(n, use, places):  # pragma: no cover - compiled
    """``nanmedian(where(use[..., None], n, nan), axis=0)``: (K, A, C, B) from (T, K, A, C, B).

    Only at the places (K, A) where ``places`` is true; NaN elsewhere. The
    masked stack is never materialised; each place's series is gathered in
    time order (contiguous reads) and its median found in float64 (by ranking for up to
    ``_RANK_MAX`` values, by selection beyond).
    """
    n_t, n_k, n_a, n_c, n_b = n.shape
    out = np.full((n_k, n_a, n_c, n_b), np.nan)
    for ka in prange(n_k * n_a):
        k = ka // n_a
        a = ka % n_a
        if not places[k, a]:
            continue
        buf = np.empty((n_c * n_b, n_t), np.float64)
        cnt = np.zeros(n_c * n_b, np.int64)
        for t in range(n_t):
            for c in range(n_c):
                if not use[t, k, a, c]:
                    continue
                for b in range(n_b):
                    x = np.float64(n[t, k, a, c, b])
                    if not np.isnan(x):
                        j = c * n_b + b
                        buf[j, cnt[j]] = x
                        cnt[j] += 1
        for c in range(n_c):
            for b in range(n_b):
                j = c * n_b + b
                out[k, a, c, b] = _quickselect_median(buf[j], cnt[j])
    return out


#: Up to this many values :func:`_quickselect_median` finds the middle ranks by counting:
#: comparisons without branches, about twice as fast as selection for a scene series.
_RANK_MAX = 96


@njit(cache=True)
def _rank_median(buf, m):  # pragma: no cover - compiled
    """Median of ``buf[:m]`` (not reordered; ``m >= 1``, no NaNs): the value whose rank (the
    values below it, ties broken by position) is the middle one, as ``np.median``."""
    h = m // 2
    even = m % 2 == 0
    upper = np.nan
    lower = np.nan
    found = 0
    for i in range(m):
        xi = buf[i]
        r = 0
        for j in range(m):
            r += (buf[j] < xi) | ((buf[j] == xi) & (j < i))
        if r == h:
            upper = xi
            found += 1
        elif even and r == h - 1:
            lower = xi
            found += 1
        if found == (2 if even else 1):
            break
    if not even:
        return upper
    return 0.5 * (lower + upper)


@njit(cache=True, inline="always")  # inlined, its callers' short series rank 10 % faster
def _quickselect_median(buf, m):  # pragma: no cover - compiled
    """Median of ``buf[:m]`` (may be reordered in place), as ``np.median``; NaN when ``m == 0``."""
    if m == 0:
        return np.nan
    if m <= _RANK_MAX:
        return _rank_median(buf, m)
    h = m // 2
    lo, hi = 0, m - 1
    while lo < hi:  # Hoare selection of the h-th smallest
        mid = (lo + hi) // 2
        # median of three as the pivot
        if buf[mid] < buf[lo]:
            buf[mid], buf[lo] = buf[lo], buf[mid]
        if buf[hi] < buf[lo]:
            buf[hi], buf[lo] = buf[lo], buf[hi]
        if buf[hi] < buf[mid]:
            buf[hi], buf[mid] = buf[mid], buf[hi]
        pivot = buf[mid]
        i, j = lo, hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if h <= j:
            hi = j
        elif h >= i:
            lo = i
        else:
            break
    upper = buf[h]
    if m % 2 == 1:
        return upper
    lower = buf[0]
    for q in range(1, h):
        if buf[q] > lower:
            lower = buf[q]
    return 0.5 * (lower + upper)


@njit(cache=True, parallel=True)
def masked_median_per_offset(n, use):  # pragma: no cover - compiled
    """``nanmedian(where(use[..., None], n, nan).reshape(-1, C, B), axis=0)``: (C, B).

    Values are gathered in their own precision (float32 for the strips) and the
    median taken by selection; the middle pair of an even count is averaged in
    float64, as ``np.nanmedian`` of the float64 values does.
    """
    n_t, n_k, n_a, n_c, n_b = n.shape
    out = np.empty((n_c, n_b), np.float64)
    for c in prange(n_c):
        buf = np.empty((n_b, n_t * n_k * n_a), n.dtype)
        cnt = np.zeros(n_b, np.int64)
        for t in range(n_t):
            for k in range(n_k):
                for a in range(n_a):
                    if use[t, k, a, c]:
                        for b in range(n_b):
                            x = n[t, k, a, c, b]
                            if not np.isnan(x):
                                buf[b, cnt[b]] = x
                                cnt[b] += 1
        for b in range(n_b):
            out[c, b] = _median_of(buf[b], cnt[b])
    return out


@njit(cache=True, parallel=True)
def scene_medians_at(v, idx):  # pragma: no cover - compiled
    """``nanmedian(v[..., idx, :].reshape(T, -1, B), axis=1)`` of the strips ``v`` (T, K,
    A, C, B) at the across offsets ``idx``: (T, B), all-NaN giving NaN; no copy of the
    samples."""
    n_t, n_k, n_a, _, n_b = v.shape
    out = np.empty((n_t, n_b), np.float64)
    for tb in prange(n_t * n_b):
        t = tb // n_b
        b = tb % n_b
        buf = np.empty(n_k * n_a * idx.size, np.float64)
        m = 0
        for k in range(n_k):
            for a in range(n_a):
                for c in idx:
                    x = v[t, k, a, c, b]
                    if not np.isnan(x):
                        buf[m] = x
                        m += 1
        out[t, b] = _median_of(buf, m)
    return out


@njit(cache=True)
def _select_median(v):  # pragma: no cover - compiled
    """Median of ``v`` (reordered in place) in float64; NaN when empty."""
    m = v.size
    if m == 0:
        return np.nan
    h = m // 2
    p = np.partition(v, h)
    upper = np.float64(p[h])
    if m % 2 == 1:
        return upper
    return 0.5 * (np.float64(p[:h].max()) + upper)


#: Values below which :func:`_median_of` selects directly; above, it first narrows the
#: search to the histogram bins that hold the middle ranks.
_HIST_MIN = 16384
_HIST_BINS = 4096


@njit(cache=True)
def _median_of(buf, m):  # pragma: no cover - compiled
    """Median of ``buf[:m]`` in float64, as ``np.median`` of the float64 values (the
    middle pair of an even count averaged); NaN when ``m == 0``. NaNs not expected.

    Exact at any size: for many values one pass counts them into ``_HIST_BINS``
    equal bins between their extremes (a monotone map, so the ranks of the bins'
    values follow the bins' order), and only the values of the bins that hold the
    middle ranks are selected among, a few times faster than selecting among all.
    ``buf[:m]`` may be reordered.
    """
    if m < _HIST_MIN:
        return _select_median(buf[:m])
    lo = np.float64(buf[0])
    hi = lo
    for i in range(m):
        x = np.float64(buf[i])
        if x < lo:
            lo = x
        elif x > hi:
            hi = x
    if not (np.isfinite(lo) and np.isfinite(hi)) or not hi > lo:
        return _select_median(buf[:m])
    nb = _HIST_BINS
    scale = nb / (hi - lo)
    cnt = np.zeros(nb, np.int64)
    for i in range(m):
        j = int((np.float64(buf[i]) - lo) * scale)
        cnt[min(j, nb - 1)] += 1
    h = m // 2
    first = h - 1 if m % 2 == 0 else h  # the lower of the middle ranks
    below = 0  # values in the bins before b0
    b0 = -1
    b1 = nb - 1
    acc = 0
    for j in range(nb):
        if b0 < 0 and acc + cnt[j] > first:
            b0 = j
            below = acc
        if acc + cnt[j] > h:
            b1 = j
            break
        acc += cnt[j]
    n_in = 0
    for j in range(b0, b1 + 1):
        n_in += cnt[j]
    sel = np.empty(n_in, np.float64)
    q = 0
    for i in range(m):
        x = np.float64(buf[i])
        j = min(int((x - lo) * scale), nb - 1)
        if j >= b0 and j <= b1:
            sel[q] = x
            q += 1
    r = h - below
    p = np.partition(sel, r)
    upper = p[r]
    if m % 2 == 1:
        return upper
    return 0.5 * (p[:r].max() + upper)


def brighter_margin(n, lo_idx, hi_idx, scenes=None):
    """Per sample place, the band values of the brighter strip margin: (T, K, A, B).

    Each margin's value is the NaN-skipping mean over its across offsets
    (``lo_idx`` or ``hi_idx``); the brighter margin is the one with the larger
    band mean (the high one when the low one is unseen), and where that
    margin has no value in a band the larger of the two (``fmax``) is taken.
    ``scenes`` (bool per scene of ``n``) reads those scenes only, as
    ``brighter_margin(n, lo_idx, hi_idx)[scenes]`` without the others' work.
    """
    if scenes is None:
        pick = np.arange(n.shape[0])
    else:
        scenes = np.asarray(scenes, bool)
        if scenes.shape != (n.shape[0],):
            raise ValueError(f"scenes: expected {n.shape[0]} flags, got shape {scenes.shape}")
        pick = np.flatnonzero(scenes)
    return _brighter_margin(n, np.asarray(lo_idx), np.asarray(hi_idx), pick.astype(np.int64))


@njit(cache=True, parallel=True)
def _brighter_margin(n, lo_idx, hi_idx, pick):  # pragma: no cover - compiled
    _, n_k, n_a, n_c, n_b = n.shape
    n_t = pick.size
    out = np.empty((n_t, n_k, n_a, n_b), np.float64)
    for tk in prange(n_t * n_k):
        i = tk // n_k
        t = pick[i]
        k = tk % n_k
        s0 = np.empty(n_b, np.float64)
        s1 = np.empty(n_b, np.float64)
        for a in range(n_a):
            for b in range(n_b):
                s0[b] = _mean_over(n, t, k, a, lo_idx, b)
                s1[b] = _mean_over(n, t, k, a, hi_idx, b)
            b0 = _finite_mean(s0)
            b1 = _finite_mean(s1)
            pick_hi = np.isnan(b0) or b1 > b0
            for b in range(n_b):
                x = s1[b] if pick_hi else s0[b]
                if np.isnan(x):
                    x = np.fmax(s0[b], s1[b])
                out[i, k, a, b] = x
    return out


@njit(cache=True)
def _mean_over(n, t, k, a, idx, b):  # pragma: no cover - compiled
    s = 0.0
    m = 0
    for c in idx:
        x = np.float64(n[t, k, a, c, b])
        if np.isfinite(x):
            s += x
            m += 1
    return s / m if m > 0 else np.nan


@njit(cache=True)
def _finite_mean(v):  # pragma: no cover - compiled
    s = 0.0
    m = 0
    for x in v:
        if np.isfinite(x):
            s += x
            m += 1
    return s / m if m > 0 else np.nan


@njit(cache=True, nogil=True)
def running_median_rows(a, size):  # pragma: no cover - compiled
    """``ndimage.median_filter(a, size=(1, size), mode="nearest")`` for a 2-D array, odd size.

    Each row's window is clamped at the ends (the edge value repeated), as
    ``mode="nearest"`` does; the median of an odd count is its middle value,
    so the result is exact. NaNs are not expected (callers fill them first).
    The window is kept sorted as it slides: the value leaving it is taken
    out and the one entering inserted after its equals (the window in the
    order a stable sort of it gives, as when it is sorted afresh).
    """
    n_r, n_c = a.shape
    out = np.empty((n_r, n_c), np.float64)
    h = size // 2
    buf = np.empty(size, np.float64)
    age = np.empty(size, np.int64)  # when each value entered the window
    for r in range(n_r):
        if n_c == 0:
            break
        for j in range(size):
            x = a[r, min(max(j - h, 0), n_c - 1)]
            # insertion: windows are a few samples long
            p = j
            while p > 0 and buf[p - 1] > x:
                buf[p] = buf[p - 1]
                age[p] = age[p - 1]
                p -= 1
            buf[p] = x
            age[p] = j
        out[r, 0] = buf[h]
        for c in range(1, n_c):
            # the oldest value leaves; the rest keep their order
            p = 0
            while age[p] != c - 1:
                p += 1
            while p < size - 1:
                buf[p] = buf[p + 1]
                age[p] = age[p + 1]
                p += 1
            x = a[r, min(c + h, n_c - 1)]
            p = size - 1
            while p > 0 and buf[p - 1] > x:
                buf[p] = buf[p - 1]
                age[p] = age[p - 1]
                p -= 1
            buf[p] = x
            age[p] = c - 1 + size
            out[r, c] = buf[h]
    return out


#: :func:`nanmean_at` takes at most this many offsets: NumPy sums fewer than 8 values
#: along a contiguous axis in order (more, in pairs), and the kernel adds them in order.
NANMEAN_AT_MAX = 7


@njit(cache=True, nogil=True)
def nanmean_at(a, idx):  # pragma: no cover - compiled
    """``nanmean(a[..., idx], axis=-1)`` of a 3-D float64 array as the NumPy of
    ``occupancy._nanmean`` gives it (non-finite values left out, all-NaN giving NaN):
    (K, A), for at most ``NANMEAN_AT_MAX`` offsets ``idx``.

    The sum starts from 0 and adds the values in order, each non-finite one as 0,
    as NumPy's sum of the values with the non-finite ones set to 0 does for so few
    (so a lone -0.0 gives 0.0 there too).
    """
    n_k, n_a, _ = a.shape
    out = np.empty((n_k, n_a), np.float64)
    for k in range(n_k):
        for p in range(n_a):
            s = 0.0
            m = 0
            for i in range(idx.size):
                x = a[k, p, idx[i]]
                ok = np.isfinite(x)
                s += x if ok else 0.0
                m += ok
            out[k, p] = s / m if m > 0 else np.nan
    return out


@njit(cache=True, nogil=True)
def nanmedian_flat(a):  # pragma: no cover - compiled
    """``np.nanmedian(a)`` over all values in float64 (NaN when none), serial."""
    flat = a.ravel()
    buf = np.empty(flat.size, np.float64)
    m = 0
    for x in flat:
        if not np.isnan(x):
            buf[m] = x
            m += 1
    return _median_of(buf, m)


@njit(cache=True, parallel=True)
def ballast_like_mode(
    n, use, core_idx, ball_core, ref_core, min_members, gain
):  # pragma: no cover - compiled
    """Per place, the scenes of the two appearance modes' ballast-like one, and where to use it.

    At each place (track, along) the core's mean colour per scene (over the
    core offsets ``core_idx`` where ``use``) is split into two modes by
    2-means, started from the scene nearest to the ballast colour
    ``ball_core`` (K, A, B) and the farthest. The mode whose centre lies
    nearer the ballast is the empty track. Returns ``members`` (T, K, A): the
    scenes of that mode, and ``better`` (K, A): where it has at least
    ``min_members`` scenes, is not every scene, and its centre is nearer the
    ballast than ``gain`` times the temporal reference's core colour
    ``ref_core`` (K, A, B) is (a car parked in most scenes made that one).
    """
    n_t, n_k, n_a, n_c, n_b = n.shape
    members = np.zeros((n_t, n_k, n_a), np.bool_)
    better = np.zeros((n_k, n_a), np.bool_)
    for ka in prange(n_k * n_a):
        k = ka // n_a
        a = ka % n_a
        x = np.full((n_t, n_b), np.nan)
        ok = np.zeros(n_t, np.bool_)
        for t in range(n_t):
            good = True
            for b in range(n_b):
                s = 0.0
                m = 0
                for c in core_idx:
                    if use[t, k, a, c]:
                        v = np.float64(n[t, k, a, c, b])
                        if np.isfinite(v):
                            s += v
                            m += 1
                if m == 0:
                    good = False
                else:
                    x[t, b] = s / m
            ok[t] = good
        n_ok = ok.sum()
        if n_ok < 2:
            continue
        # start from the scene nearest to the ballast and the farthest
        i0, i1 = -1, -1
        lo, hi = np.inf, -np.inf
        for t in range(n_t):
            if ok[t]:
                d = _dist(x[t], ball_core[k, a])
                if d < lo:
                    lo, i0 = d, t
                if d > hi:
                    hi, i1 = d, t
        c0 = x[i0].copy()
        c1 = x[i1].copy()
        lab = np.zeros(n_t, np.bool_)
        for _ in range(6):
            s0 = np.zeros(n_b)
            s1 = np.zeros(n_b)
            m0 = 0
            m1 = 0
            for t in range(n_t):
                if not ok[t]:
                    continue
                lab[t] = _dist(x[t], c1) < _dist(x[t], c0)
                if lab[t]:
                    s1 += x[t]
                    m1 += 1
                else:
                    s0 += x[t]
                    m0 += 1
            if m0 > 0:
                c0 = s0 / m0
            if m1 > 0:
                c1 = s1 / m1
        e0 = _dist(c0, ball_core[k, a])
        e1 = _dist(c1, ball_core[k, a])
        empty_is_1 = e1 < e0
        n_empty = 0
        for t in range(n_t):
            if ok[t] and lab[t] == empty_is_1:
                members[t, k, a] = True
                n_empty += 1
        e_ref = _dist(ref_core[k, a], ball_core[k, a])
        better[k, a] = n_empty >= min_members and n_empty < n_ok and min(e0, e1) < gain * e_ref
    return members, better


@njit(cache=True)
def _dist(p, q):  # pragma: no cover - compiled
    s = 0.0
    for b in range(p.size):
        s += (p[b] - q[b]) ** 2
    return np.sqrt(s)


@njit(cache=True, nogil=True)
def masked_ratio_mode(num, den, mask, width):  # pragma: no cover - compiled
    """Per band, the ratio ``num / den`` of the most common brightness; and its share.

    Over the samples where ``mask`` whose ratio is finite and positive in
    every band, ``L`` is the mean over bands of ``log(num / den)``. The mode
    of ``L`` is the centre of the window ``+-width`` holding the most samples,
    searched in steps of ``width / 4`` within 1 of the median of ``L``
    (``width`` at most 0.2). Returns per band the median ratio over the
    samples in that window (band,) and their share of all usable samples; no
    usable sample gives NaN and 0.

    Where most samples are one thing seen against its own reference (empty
    track against the empty-track reference) and the rest are scattered
    (railcars of many colours), this is that thing's ratio even when it is
    not the majority, which the plain median needs.
    """
    n_k, n_a, n_c, n_b = num.shape
    n_all = n_k * n_a * n_c
    ratio = np.empty((n_all, n_b), np.float64)
    level = np.empty(n_all, np.float64)
    m = 0
    for k in range(n_k):
        for a in range(n_a):
            for c in range(n_c):
                if not mask[k, a, c]:
                    continue
                prod = 1.0
                ok = True
                for b in range(n_b):
                    x = np.float64(num[k, a, c, b]) / np.float64(den[k, a, c, b])
                    if not (np.isfinite(x) and x > 0):
                        ok = False
                        break
                    ratio[m, b] = x
                    prod *= x
                if ok and prod > 0 and np.isfinite(prod):
                    level[m] = np.log(prod) / n_b  # one logarithm per sample
                    m += 1
    out = np.full(n_b, np.nan)
    if m == 0:
        return out, 0.0
    centre = _median_of(level[:m].copy(), m)
    step = width / 4.0
    nb = int(2.0 / step) + 1
    lo = centre - 1.0
    cnt = np.zeros(nb, np.int64)
    for i in range(m):
        j = int(np.floor((level[i] - lo) / step + 0.5))
        if j >= 0 and j < nb:
            cnt[j] += 1
    # the window of +-4 steps holding the most samples
    run = 0
    for j in range(min(9, nb)):
        run += cnt[j]
    best = run
    bj = 4
    for j in range(5, nb - 4):
        run += cnt[j + 4] - cnt[j - 5]
        if run > best:
            best = run
            bj = j
    peak = lo + bj * step
    inside = np.empty(m, np.bool_)
    q = 0
    for i in range(m):
        inside[i] = abs(level[i] - peak) <= width
        q += inside[i]
    buf = np.empty(q, np.float64)
    for b in range(n_b):
        p = 0
        for i in range(m):
            if inside[i]:
                buf[p] = ratio[i, b]
                p += 1
        out[b] = _median_of(buf, q) if q > 0 else np.nan
    return out, q / m


@njit(cache=True, nogil=True)
def ballast_share(colour, ref, w):  # pragma: no cover - compiled
    """Share of the empty track's look in each position's colour, against the cars beside it.

    ``colour`` and ``ref`` are (track, along, band): a scene's core colour and
    the empty-track reference's. The car colours ``A`` before and ``B`` after
    a position are the per-band medians of the samples 2 to ``w + 1``
    positions away, NaN skipped (the position's direct neighbours are skipped:
    a coupler gap blurs into them). The position's colour is read as a mix
    ``s * ref + b * A + (1 - s - b) * B`` by least squares over the bands,
    and ``s`` is returned: about 0 on a car body and at a boundary between
    two cars of different colours without a gap, up to 1 where the ballast
    shows through a coupler gap, whether the cars are darker or brighter
    than the track. Where ``A`` and ``B`` are alike, or their difference lies
    along ``ref - B``, the mix is read against their mean alone. NaN where
    the colour is missing, no car colour is found on either side or the car
    colour equals the reference.
    """
    n_k, n_a, n_b = colour.shape
    out = np.full((n_k, n_a), np.nan, np.float32)
    buf = np.empty(w, np.float64)
    ca = np.empty(n_b, np.float64)
    cb = np.empty(n_b, np.float64)
    # the medians after each position (NaN: no value); the window before position a is
    # the one after position a - 3 - w where that is a position, so read from there
    after = np.empty((n_a, n_b), np.float64)
    for k in range(n_k):
        for a in range(n_a):
            for b in range(n_b):
                m = _sorted_non_nan(colour[k, min(a + 2, n_a) : min(a + 2 + w, n_a), b], buf)
                after[a, b] = _middle(buf, m) if m > 0 else np.nan
        for a in range(n_a):
            ok = True
            for b in range(n_b):
                if not np.isfinite(colour[k, a, b]) or not np.isfinite(ref[k, a, b]):
                    ok = False
            if not ok:
                continue
            have_a = True
            have_b = True
            for b in range(n_b):
                if a - 3 - w >= 0:
                    x = after[a - 3 - w, b]
                else:
                    m = _sorted_non_nan(colour[k, max(a - 1 - w, 0) : max(a - 1, 0), b], buf)
                    x = _middle(buf, m) if m > 0 else np.nan
                if np.isnan(x):
                    have_a = False
                else:
                    ca[b] = x
                if np.isnan(after[a, b]):
                    have_b = False
                else:
                    cb[b] = after[a, b]
            if not (have_a or have_b):
                continue
            if not have_a:
                ca[:] = cb
            if not have_b:
                cb[:] = ca
            # colour - B = s (ref - B) + b (A - B): two regressors over the bands
            sxx = 0.0
            sxz = 0.0
            szz = 0.0
            sxy = 0.0
            szy = 0.0
            for b in range(n_b):
                x = ref[k, a, b] - cb[b]
                z = ca[b] - cb[b]
                y = colour[k, a, b] - cb[b]
                sxx += x * x
                sxz += x * z
                szz += z * z
                sxy += x * y
                szy += z * y
            det = sxx * szz - sxz * sxz
            if szz > 1e-12 and det > 0.1 * sxx * szz:
                out[k, a] = (szz * sxy - sxz * szy) / det
                continue
            # the two cars alike (or their difference along the ballast's): their mean
            num = 0.0
            den = 0.0
            for b in range(n_b):
                c = 0.5 * (ca[b] + cb[b])
                d = ref[k, a, b] - c
                num += (colour[k, a, b] - c) * d
                den += d * d
            if den > 1e-12:
                out[k, a] = num / den
    return out


@njit(cache=True, nogil=True)
def car_cuts(score, lmin, lmax, step, mean_m, sd_m):  # pragma: no cover - compiled
    """The most likely cuts of an occupied run into whole railcars (dynamic programming).

    ``score`` (one per sample of the run) is the evidence for a coupler gap at
    each sample; a run of ``n`` samples is split into segments of ``lmin`` to
    ``lmax`` samples, maximising the summed score at the inner cuts plus, per
    segment, ``-0.5 * ((length_m - mean_m) / sd_m) ** 2`` (the spread of car
    lengths). Returns the cut indices including 0 and ``n``; an empty array
    when no split into such segments exists.
    """
    n = score.size
    best = np.full(n + 1, -np.inf)
    prev = np.full(n + 1, -1, np.int64)
    best[0] = 0.0
    for j in range(1, n + 1):
        gain = score[j] if j < n else 0.0
        for length in range(lmin, lmax + 1):
            i = j - length
            if i < 0:
                break
            if not np.isfinite(best[i]):
                continue
            z = (length * step - mean_m) / sd_m
            v = best[i] - 0.5 * z * z + gain
            if v > best[j]:
                best[j] = v
                prev[j] = i
    if not np.isfinite(best[n]):
        return np.empty(0, np.int64)
    k = 0
    j = n
    while j > 0:
        j = prev[j]
        k += 1
    cuts = np.empty(k + 1, np.int64)
    j = n
    for p in range(k, -1, -1):
        cuts[p] = j
        if j > 0:
            j = prev[j]
    return cuts
