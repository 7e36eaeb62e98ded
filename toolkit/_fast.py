"""Small compiled kernels shared by the pipeline stages."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["nanmedian_axis0", "nanmedian_rows"]


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
            k = 0
            for i in range(n):
                x = tile[jj, i]
                if not np.isnan(x):
                    # insertion sort while gathering: the columns are short time series
                    q = k
                    while q > 0 and buf[q - 1] > x:
                        buf[q] = buf[q - 1]
                        q -= 1
                    buf[q] = x
                    k += 1
            if k == 0:
                out[j0 + jj] = np.nan
            elif k % 2 == 1:
                out[j0 + jj] = buf[k // 2]
            else:
                out[j0 + jj] = 0.5 * (buf[k // 2 - 1] + buf[k // 2])
    return out


def nanmedian_axis0(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)`` (all-NaN columns give NaN, silently), compiled."""
    a = np.asarray(a)
    flat = a.reshape(a.shape[0], -1)
    if flat.shape[0] > 256:  # long columns: numpy's linear-time selection, column by column
        out = np.empty(flat.shape[1], np.float64)
        for j in range(flat.shape[1]):
            col = flat[:, j]
            col = col[~np.isnan(col)]
            k = col.size
            if k == 0:
                out[j] = np.nan
                continue
            part = np.partition(col, [(k - 1) // 2, k // 2])
            out[j] = 0.5 * (float(part[(k - 1) // 2]) + float(part[k // 2]))
        return out.reshape(a.shape[1:])
    return _nanmedian_cols(np.ascontiguousarray(flat)).reshape(a.shape[1:])


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)`` for a 2-D array, compiled."""
    return nanmedian_axis0(np.asarray(a).T.copy())
