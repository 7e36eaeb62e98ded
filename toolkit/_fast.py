"""Small compiled kernels shared by the pipeline stages."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["nanmedian_axis0", "nanmedian_rows"]


@njit(cache=True, parallel=True)
def _nanmedian_cols(a):  # pragma: no cover - compiled
    n, m = a.shape
    out = np.empty(m, np.float64)
    for j in prange(m):
        buf = np.empty(n, np.float64)
        k = 0
        for i in range(n):
            x = a[i, j]
            if not np.isnan(x):
                buf[k] = x
                k += 1
        if k == 0:
            out[j] = np.nan
        else:
            s = np.sort(buf[:k])
            if k % 2 == 1:
                out[j] = s[k // 2]
            else:
                out[j] = 0.5 * (s[k // 2 - 1] + s[k // 2])
    return out


def nanmedian_axis0(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)`` (all-NaN columns give NaN, silently), compiled."""
    a = np.asarray(a)
    flat = np.ascontiguousarray(a.reshape(a.shape[0], -1))
    return _nanmedian_cols(flat).reshape(a.shape[1:])


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)`` for a 2-D array, compiled."""
    return nanmedian_axis0(np.asarray(a).T.copy())
