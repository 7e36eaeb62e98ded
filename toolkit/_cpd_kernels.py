"""Compiled kernels for change-point detection (numba, cached on disk).

Segment costs are negative log-likelihoods evaluated in O(1) from cumulative
sums, so that PELT, binary segmentation and the per-pixel scan never touch the
raw series inside their inner loops.

Cost codes (``kind``):

0  Gaussian change in mean, known variance ``param``:
   ``C = (S2 - S1**2 / n) / (2 * param)``.
1  Gaussian change in mean and variance (variance MLE floored at ``param``):
   ``C = n/2 * log(v) + n/2`` with ``v = max(S2/n - (S1/n)**2, param)``
   (the ``n/2`` term becomes ``SS / (2 * floor)`` when floored).
2  Poisson change in rate: ``C = S1 - S1 * log(S1 / n)`` (``0`` when ``S1 == 0``).
3  Negative binomial change in mean, fixed size ``param`` (shared dispersion):
   ``C = -(n * r * log(r / (r + m)) + S1 * log(m / (r + m)))`` with ``m = S1 / n``.

Every cost is the minimum over a common parameter space of a sum of
per-observation terms (up to terms that do not depend on the segmentation),
so ``C(a, c) >= C(a, b) + C(b, c)`` and PELT pruning with ``K = 0`` is exact.
The optional MBIC segment-length term ``0.5 * log(n_seg / n)`` keeps that
inequality (it only lowers the cost of a split).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__: list[str] = []


@njit(cache=True, inline="always")
def _cost(cs1, cs2, s, e, kind, param, mbic_n):
    n = e - s
    s1 = cs1[e] - cs1[s]
    if kind == 0:
        s2 = cs2[e] - cs2[s]
        c = (s2 - s1 * s1 / n) / (2.0 * param)
        if c < 0.0:
            c = 0.0
    elif kind == 1:
        s2 = cs2[e] - cs2[s]
        m = s1 / n
        v = s2 / n - m * m
        if v >= param:
            c = 0.5 * n * math.log(v) + 0.5 * n
        else:
            ss = s2 - s1 * m
            if ss < 0.0:
                ss = 0.0
            c = 0.5 * n * math.log(param) + ss / (2.0 * param)
    elif kind == 2:
        if s1 <= 0.0:
            c = 0.0
        else:
            c = s1 - s1 * math.log(s1 / n)
    else:
        r = param
        m = s1 / n
        if s1 <= 0.0:
            c = 0.0
        else:
            c = -(n * r * math.log(r / (r + m)) + s1 * math.log(m / (r + m)))
    if mbic_n > 0:
        c += 0.5 * math.log(n / mbic_n)
    return c


@njit(cache=True)
def segment_costs(cs1, cs2, starts, ends, kind, param, mbic_n):
    """Cost of each segment ``[starts[i], ends[i])``."""
    out = np.empty(starts.shape[0])
    for i in range(starts.shape[0]):
        out[i] = _cost(cs1, cs2, starts[i], ends[i], kind, param, mbic_n)
    return out


@njit(cache=True)
def pelt(cs1, cs2, kind, param, pen, last_start, mbic_n):
    """Exact penalised segmentation by PELT.

    ``last_start[t]`` is the largest admissible start of a segment that ends
    (exclusive) at ``t`` (``-1`` if none); it encodes the minimum segment length
    in observations and/or in time and must be non-decreasing in ``t``.
    Returns the array ``prev`` of optimal last-change positions and the optimal
    penalised cost ``F[n]``.

    Pruning: ``s`` is dominated from the first ``T`` for which the pruning time
    ``t`` (where ``F[s] + C(s, t) >= F[t]``) is itself an admissible start, i.e.
    ``last_start[T] >= t``; until then ``s`` stays a candidate. With a minimum
    segment length of one this is the usual PELT rule. One pass per step
    applies the previous step's pruning, compacts the candidates, evaluates
    the costs and finds the minimum.
    """
    n = cs1.shape[0] - 1
    F = np.full(n + 1, np.inf)
    F[0] = -pen
    prev = np.full(n + 1, -1, dtype=np.int64)
    cand = np.empty(n + 1, dtype=np.int64)
    kill = np.empty(n + 1, dtype=np.int64)
    vals = np.empty(n + 1)
    m = 0
    nxt = 0
    big = n + 10
    for t in range(1, n + 1):
        ls = last_start[t]
        while nxt <= ls:
            if F[nxt] < np.inf:
                cand[m] = nxt
                kill[m] = big
                vals[m] = -np.inf
                m += 1
            nxt += 1
        fprev = F[t - 1]
        k = 0
        best = np.inf
        arg = -1
        for j in range(m):
            kj = kill[j]
            if kj == big and vals[j] >= fprev:
                kj = t - 1
            if kj > ls:
                s = cand[j]
                cand[k] = s
                kill[k] = kj
                v = F[s] + _cost(cs1, cs2, s, t, kind, param, mbic_n)
                vals[k] = v
                if v < best:
                    best = v
                    arg = s
                k += 1
        m = k
        if arg >= 0:
            F[t] = best + pen
            prev[t] = arg
    return prev, F[n]


@njit(cache=True)
def best_split(cs1, cs2, s, e, kind, param, min_start, max_start, mbic_n):
    """Best single split of ``[s, e)`` at positions ``min_start..max_start``.

    Returns ``(position, gain)`` where gain is the cost decrease; ``(-1, 0)``
    if no admissible split exists.
    """
    whole = _cost(cs1, cs2, s, e, kind, param, mbic_n)
    best = -np.inf
    arg = -1
    for tau in range(min_start, max_start + 1):
        g = whole - _cost(cs1, cs2, s, tau, kind, param, mbic_n)
        g -= _cost(cs1, cs2, tau, e, kind, param, mbic_n)
        if g > best:
            best = g
            arg = tau
    if arg < 0:
        return -1, 0.0
    return arg, best


@njit(cache=True)
def profile_costs(cs1, cs2, s, e, kind, param, lo, hi, mbic_n):
    """Two-segment cost of ``[s, e)`` split at each position ``lo..hi``."""
    out = np.empty(hi - lo + 1)
    for tau in range(lo, hi + 1):
        out[tau - lo] = _cost(cs1, cs2, s, tau, kind, param, mbic_n) + _cost(
            cs1, cs2, tau, e, kind, param, mbic_n
        )
    return out


@njit(cache=True)
def bocpd_normal(x, sigma2, mu0, tau2, hazard, window):
    """Bayesian online change-point detection, Gaussian known variance.

    Conjugate normal prior ``N(mu0, tau2)`` on each segment mean. Returns, for
    each observation ``t``, the posterior probability that ``x[t]`` is the
    first observation of a new segment given ``x[:t + 1]`` (the new segment is
    scored with the prior predictive), the probability that the current
    segment began within the last ``window`` valid observations, and the most
    probable run length.
    NaN observations carry the run-length distribution forward unchanged.
    """
    n = x.shape[0]
    logw = np.full(n + 1, -np.inf)  # log P(run length r | data)
    mu = np.empty(n + 1)
    prec = np.empty(n + 1)
    p_change = np.full(n, np.nan)
    p_recent = np.full(n, np.nan)
    run_map = np.zeros(n, dtype=np.int64)
    nr = 0  # number of live run lengths
    lh = math.log(hazard)
    l1h = math.log1p(-hazard)
    for t in range(n):
        xt = x[t]
        if math.isnan(xt):
            if nr > 0:
                best = 0
                for r in range(nr):
                    if logw[r] > logw[best]:
                        best = r
                run_map[t] = best
            continue
        # predictive log densities
        pv0 = tau2 + sigma2
        lp0 = -0.5 * (math.log(2 * math.pi * pv0) + (xt - mu0) ** 2 / pv0)
        if nr == 0:
            logw[0] = 0.0
            mu[0] = mu0
            prec[0] = 1.0 / tau2
            nr = 1
            p_change[t] = np.nan  # the first observation starts the first segment
        else:
            newlog = np.empty(nr + 1)
            # change: previous runs end, x_t starts a new run
            mx = -np.inf
            for r in range(nr):
                if logw[r] > mx:
                    mx = logw[r]
            tot = 0.0
            for r in range(nr):
                tot += math.exp(logw[r] - mx)
            newlog[0] = mx + math.log(tot) + lh + lp0
            for r in range(nr):
                pv = 1.0 / prec[r] + sigma2
                lp = -0.5 * (math.log(2 * math.pi * pv) + (xt - mu[r]) ** 2 / pv)
                newlog[r + 1] = logw[r] + l1h + lp
            mx = -np.inf
            for r in range(nr + 1):
                if newlog[r] > mx:
                    mx = newlog[r]
            tot = 0.0
            for r in range(nr + 1):
                tot += math.exp(newlog[r] - mx)
            lz = mx + math.log(tot)
            # shift runs up by one, updating posteriors
            for r in range(nr, 0, -1):
                logw[r] = newlog[r] - lz
                p_new = prec[r - 1] + 1.0 / sigma2
                mu[r] = (mu[r - 1] * prec[r - 1] + xt / sigma2) / p_new
                prec[r] = p_new
            logw[0] = newlog[0] - lz
            mu[0] = (mu0 / tau2 + xt / sigma2) / (1.0 / tau2 + 1.0 / sigma2)
            prec[0] = 1.0 / tau2 + 1.0 / sigma2
            nr += 1
            p_change[t] = math.exp(logw[0])
            acc = 0.0
            for r in range(min(window, nr - 1)):
                acc += math.exp(logw[r])
            p_recent[t] = min(acc, 1.0)
        best = 0
        for r in range(nr):
            if logw[r] > logw[best]:
                best = r
        run_map[t] = best
    return p_change, p_recent, run_map


@njit(cache=True, inline="always")
def _kolmogorov_sf(stat):
    """P(sup |Brownian bridge| > stat), alternating series."""
    if stat < 0.3:
        return 1.0
    p = 0.0
    for kk in range(1, 101):
        term = math.exp(-2.0 * kk * kk * stat * stat)
        p += term if kk % 2 == 1 else -term
        if term < 1e-16:
            break
    p *= 2.0
    return min(max(p, 0.0), 1.0)


@njit(cache=True, fastmath={"contract", "arcp", "nsz"})
def _pixel_change(y, min_size):
    """Most likely single mean change of one pixel series (NaN skipped).

    Returns ``(index, size, statistic, p_value, n_valid)``; ``index`` is the
    position of the first valid observation after the change, -1 if none.
    """
    T = y.shape[0]
    n = 0
    s1 = 0.0
    s2 = 0.0
    for i in range(T):
        v = np.float64(y[i])
        if v == v:
            n += 1
            s1 += v
            s2 += v * v
    if n < 2 * min_size or n < 3:
        return -1, np.nan, np.nan, np.nan, n
    mean = s1 / n
    # maximise d^2 / (k (n - k)) without dividing: compare cross products
    best_num = -1.0
    best_den = 1.0
    best_k = -1
    best_cs = 0.0
    best_pos = -1
    maxabs = 0.0
    cs = 0.0
    k = 0
    for i in range(T):
        v = np.float64(y[i])
        if v != v:
            continue
        cs += v
        k += 1
        if k >= n:
            break
        d = cs - k * mean
        ad = abs(d)
        if ad > maxabs:
            maxabs = ad
        if k >= min_size and n - k >= min_size:
            num = d * d
            den = float(k * (n - k))
            if num * best_den > best_num * den:
                best_num = num
                best_den = den
                best_k = k
                best_cs = cs
                best_pos = i
    if best_k < 0:
        return -1, np.nan, np.nan, np.nan, n
    j = best_pos + 1
    while j < T and y[j] != y[j]:
        j += 1
    m1 = best_cs / best_k
    m2 = (s1 - best_cs) / (n - best_k)
    gain = best_num / best_den * n  # between-segment sum of squares
    ss_within = max(s2 - s1 * mean - gain, 0.0)
    var = ss_within / (n - 2) if n > 2 else 0.0
    if var <= 0.0:
        if gain > 0:
            return j, m2 - m1, np.inf, 0.0, n
        return j, m2 - m1, 0.0, 1.0, n
    stat = maxabs / math.sqrt(var * n)
    return j, m2 - m1, stat, _kolmogorov_sf(stat), n


@njit(cache=True)
def change_map_block(block, min_size):
    """Single most likely mean change for every pixel of a ``(pixel, time)`` block."""
    npix = block.shape[0]
    idx = np.empty(npix, dtype=np.int64)
    size = np.empty(npix, dtype=np.float32)
    stat = np.empty(npix, dtype=np.float32)
    pval = np.empty(npix)
    nobs = np.empty(npix, dtype=np.int32)
    for p in range(npix):
        i, sz, st, pv, nn = _pixel_change(block[p], min_size)
        idx[p] = i
        size[p] = sz
        stat[p] = st
        pval[p] = pv
        nobs[p] = nn
    return idx, size, stat, pval, nobs


@njit(cache=True, fastmath={"contract", "arcp", "nsz"})
def pelt_l2(cs1, cs2, pen, last_start):
    """PELT specialised to the Gaussian change in mean (sum-of-squares cost).

    Same recursion and pruning as :func:`pelt` with ``kind=0``, with the cost
    in sum-of-squares units (``pen`` must be scaled by ``2 sigma^2``). The
    candidates' ``F``, cumulative sums and starts live in contiguous arrays,
    and one pass per step applies the previous step's pruning, compacts the
    candidate set, evaluates the costs and finds the minimum.
    """
    n = cs1.shape[0] - 1
    F = np.full(n + 1, np.inf)
    F[0] = -pen
    prev = np.full(n + 1, -1, dtype=np.int64)
    cs = np.empty(n + 1, dtype=np.int64)
    cf = np.empty(n + 1)
    c1 = np.empty(n + 1)
    c2 = np.empty(n + 1)
    kill = np.empty(n + 1, dtype=np.int64)
    vals = np.empty(n + 1)
    m = 0
    nxt = 0
    big = n + 10
    for t in range(1, n + 1):
        ls = last_start[t]
        while nxt <= ls:
            if F[nxt] < np.inf:
                cs[m] = nxt
                cf[m] = F[nxt]
                c1[m] = cs1[nxt]
                c2[m] = cs2[nxt]
                kill[m] = big
                vals[m] = -np.inf
                m += 1
            nxt += 1
        fprev = F[t - 1]
        a1 = cs1[t]
        a2 = cs2[t]
        k = 0
        best = np.inf
        arg = -1
        for j in range(m):
            # vals[j] = F[s] + C(s, t - 1): dominated at t - 1 if >= F[t - 1]
            kj = kill[j]
            if kj == big and vals[j] >= fprev:
                kj = t - 1
            if kj > ls:
                s = cs[j]
                f = cf[j]
                b1 = c1[j]
                b2 = c2[j]
                cs[k] = s
                cf[k] = f
                c1[k] = b1
                c2[k] = b2
                kill[k] = kj
                d1 = a1 - b1
                v = (a2 - b2) - d1 * d1 / (t - s)
                if v < 0.0:
                    v = 0.0
                v += f
                vals[k] = v
                if v < best:
                    best = v
                    arg = s
                k += 1
        m = k
        if arg >= 0:
            F[t] = best + pen
            prev[t] = arg
    return prev, F[n]


@njit(cache=True, fastmath={"contract", "arcp", "nsz", "reassoc"})
def _l2_cost_pass(m, a1, a2, t, c1, c2, cf, cl, vals):
    """``vals[j] = F[s_j] + SS(s_j, t)`` for all candidates; returns (min, max).

    Branch-free over contiguous arrays, so it compiles to SIMD code.
    """
    mn = np.inf
    mx = -np.inf
    for j in range(m):
        d1 = a1 - c1[j]
        v = (a2 - c2[j]) - d1 * d1 / (t - cl[j])
        v = v if v > 0.0 else 0.0
        v += cf[j]
        vals[j] = v
        mn = min(mn, v)
        mx = max(mx, v)
    return mn, mx


@njit(cache=True)
def pelt_l2_unit(cs1, cs2, pen):
    """PELT for the sum-of-squares cost with a minimum segment length of one.

    Equivalent to :func:`pelt_l2` with ``last_start[t] = t - 1``: a candidate
    dominated at ``t`` (``F[s] + C(s, t) >= F[t]``) is dropped at ``t + 1``.
    Each step runs one vectorised pass for the costs, their minimum and
    maximum; the candidate set is compacted only when the maximum shows that
    something is to be pruned, and the first candidate attaining the minimum
    (the smallest start, as in :func:`pelt`) is the optimal last change.
    """
    n = cs1.shape[0] - 1
    F = np.full(n + 1, np.inf)
    F[0] = -pen
    prev = np.full(n + 1, -1, dtype=np.int64)
    cs = np.empty(n + 1, dtype=np.int64)
    cl = np.empty(n + 1)
    cf = np.empty(n + 1)
    c1 = np.empty(n + 1)
    c2 = np.empty(n + 1)
    vals = np.empty(n + 1)
    m = 0
    compact = False
    for t in range(1, n + 1):
        if compact:
            fprev = F[t - 1]
            k = 0
            for j in range(m):
                if vals[j] < fprev:
                    cs[k] = cs[j]
                    cl[k] = cl[j]
                    cf[k] = cf[j]
                    c1[k] = c1[j]
                    c2[k] = c2[j]
                    k += 1
            m = k
        s = t - 1
        cs[m] = s
        cl[m] = s
        cf[m] = F[s]
        c1[m] = cs1[s]
        c2[m] = cs2[s]
        m += 1
        mn, mx = _l2_cost_pass(m, cs1[t], cs2[t], float(t), c1, c2, cf, cl, vals)
        F[t] = mn + pen
        for j in range(m):
            if vals[j] == mn:
                prev[t] = cs[j]
                break
        compact = mx >= F[t]
    return prev, F[n]
