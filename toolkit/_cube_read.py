"""Target grid and lazy block readers for :func:`toolkit.cube.load_cube` (private).

The target grid is chosen once from the scenes' metadata. Each dask task then
opens its scene file(s) itself and reads one block of the target grid: by a
plain windowed read when the scene already lies on the target grid (the fast
path) or through a GDAL warped VRT otherwise. Only module-level functions and
frozen dataclasses of plain values enter the graph, so it pickles to
``dask.distributed`` workers.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from toolkit._cube_scenes import _Raster, _Scene
from toolkit.errors import InputError, SceneError

__all__: list[str] = []

# Offsets within this many pixels of a whole number count as on the grid.
_GRID_TOL_PX = 1e-3
_MASK_FILL = 255
_NATIVE_RES_SLACK = 1.05
# GDAL's block cache defaults to 5 % of the machine's memory in every process (1.2 GB on a
# 24 GB machine). Decoded tiles of compressed scenes stay in it between reads, so a dask
# worker with a 600 MiB limit was killed reading them; windowed reads of whole chunks gain
# little from a larger cache. A GDAL_CACHEMAX the user sets is left as it is.
_GDAL_CACHE_BYTES = 64 * 2**20
_cache_bounded = False
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class _Grid:
    """The target grid: CRS, north-up transform and size."""

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)


@dataclass(frozen=True)
class _Source:
    """How one raster is read onto the target grid."""

    raster: _Raster
    # (row, col) of the raster's top-left pixel on the target grid, or None -> warp.
    offset: tuple[int, int] | None


@dataclass(frozen=True)
class _Step:
    """One time step: the scenes (mosaicked in order) and their masks."""

    scenes: tuple[_Source, ...]
    masks: tuple[_Source | None, ...]


@dataclass(frozen=True)
class _ReadSpec:
    nbands: int
    dtype: str
    fill: float
    resampling: str
    with_mask: bool


# --------------------------------------------------------------------------- target grid


def _parse_crs(crs: Any) -> CRS:
    try:
        if hasattr(crs, "to_wkt"):
            return CRS.from_wkt(crs.to_wkt())
        return CRS.from_user_input(crs)
    except (rasterio.errors.CRSError, ValueError, TypeError) as err:
        raise InputError(
            f"crs: cannot interpret {crs!r} as a CRS ({err}); expected e.g. 'EPSG:32652', "
            f"32652 or a pyproj.CRS; fix the crs argument"
        ) from None


def _parse_resolution(resolution: Any) -> tuple[float, float] | None:
    if resolution is None:
        return None
    try:
        if np.ndim(resolution) == 0:
            res = (float(resolution), float(resolution))
        else:
            xres, yres = (float(v) for v in resolution)
            res = (abs(xres), abs(yres))
    except (TypeError, ValueError):
        res = (math.nan, math.nan)
    if not all(math.isfinite(r) and r > 0 for r in res):
        raise InputError(
            f"resolution: expected a positive pixel size in target CRS units (a number or "
            f"(x, y) pair), got {resolution!r}; pass e.g. resolution=0.5"
        )
    return res


def _parse_bounds(bounds: Any) -> tuple[float, float, float, float] | None:
    if bounds is None:
        return None
    try:
        left, bottom, right, top = (float(v) for v in bounds)
    except (TypeError, ValueError):
        left = bottom = right = top = math.nan
    if not (left < right and bottom < top):
        raise InputError(
            f"bounds: expected (left, bottom, right, top) in target CRS units with left < right "
            f"and bottom < top, got {bounds!r}; fix the bounds argument"
        )
    return left, bottom, right, top


def _is_north_up(t: tuple[float, ...]) -> bool:
    return t[1] == 0 and t[3] == 0 and t[0] > 0 and t[4] < 0


def _native_bounds(r: _Raster) -> tuple[float, float, float, float]:
    t = Affine(*r.transform)
    xs, ys = zip(*(t @ (c, w) for c in (0, r.width) for w in (0, r.height)), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _footprint(r: _Raster, crs: CRS) -> tuple[float, float, float, float]:
    bounds = _native_bounds(r)
    src = CRS.from_wkt(r.crs_wkt)
    if src == crs:
        return bounds
    return transform_bounds(src, crs, *bounds, densify_pts=21)


def _resolution_in(r: _Raster, crs: CRS) -> tuple[float, float]:
    src = CRS.from_wkt(r.crs_wkt)
    t = r.transform
    if src == crs and _is_north_up(t):
        return abs(t[0]), abs(t[4])
    dst_t, _, _ = calculate_default_transform(src, crs, r.width, r.height, *_native_bounds(r))
    return abs(dst_t.a), abs(dst_t.e)


def _target_grid(
    scenes: list[_Scene], *, crs: Any, resolution: Any, bounds: Any
) -> tuple[_Grid, str]:
    """Choose the target grid; return it and a short note on how it was chosen."""
    crss = [CRS.from_wkt(s.raster.crs_wkt) for s in scenes]
    if crs is None:
        reps: list[CRS] = []
        counts: Counter[int] = Counter()
        for c in crss:
            idx = next((i for i, r in enumerate(reps) if r == c), None)
            if idx is None:
                reps.append(c)
                idx = len(reps) - 1
            counts[idx] += 1
        best = max(counts.values())
        target = reps[min(i for i, n in counts.items() if n == best)]
        crs_note = "most common scene CRS"
    else:
        target = _parse_crs(crs)
        crs_note = "given"
    res = _parse_resolution(resolution)
    in_target = [s for s, c in zip(scenes, crss, strict=True) if c == target]
    if res is None:
        per_scene = [_resolution_in(s.raster, target) for s in scenes]
        res = min(per_scene, key=lambda r: (r[0] * r[1], r))
        # A reprojected pixel looks a little finer or coarser (scale factor, distortion):
        # prefer the native size of a scene already in the target CRS if within 5 %.
        native = [
            r
            for r, c in zip(per_scene, crss, strict=True)
            if c == target and r[0] * r[1] <= res[0] * res[1] * _NATIVE_RES_SLACK**2
        ]
        if native:
            res = min(native, key=lambda r: (r[0] * r[1], r))
        res_note = "finest scene pixel size"
    else:
        res_note = "given"
    xres, yres = res
    # Anchor: the first scene in the target CRS at the target resolution (else any in the CRS).
    anchor = None
    for s in in_target:
        t = s.raster.transform
        if _is_north_up(t) and abs(t[0] - xres) <= 1e-9 * xres and abs(-t[4] - yres) <= 1e-9 * yres:
            anchor = s
            break
    if anchor is None:
        anchor = next((s for s in in_target if _is_north_up(s.raster.transform)), None)
    x0 = anchor.raster.transform[2] if anchor is not None else 0.0
    y0 = anchor.raster.transform[5] if anchor is not None else 0.0
    footprints = [_footprint(s.raster, target) for s in scenes]
    user_bounds = _parse_bounds(bounds)
    if user_bounds is None:
        left = min(f[0] for f in footprints)
        bottom = min(f[1] for f in footprints)
        right = max(f[2] for f in footprints)
        top = max(f[3] for f in footprints)
    else:
        left, bottom, right, top = user_bounds
        for s, f in zip(scenes, footprints, strict=True):
            if not (f[0] < right and f[2] > left and f[1] < top and f[3] > bottom):
                raise SceneError(
                    f"{s.raster.path}: does not overlap the requested bounds "
                    f"({left:g}, {bottom:g}, {right:g}, {top:g}); its footprint is "
                    f"({f[0]:g}, {f[1]:g}, {f[2]:g}, {f[3]:g}) in the target CRS; widen bounds "
                    f"or leave this scene out"
                )
    eps = _GRID_TOL_PX
    gl = x0 + math.floor((left - x0) / xres + eps) * xres
    gr = x0 + math.ceil((right - x0) / xres - eps) * xres
    gt = y0 + math.ceil((top - y0) / yres - eps) * yres
    gb = y0 + math.floor((bottom - y0) / yres + eps) * yres
    width = max(1, round((gr - gl) / xres))
    height = max(1, round((gt - gb) / yres))
    grid = _Grid(target.to_wkt(), (xres, 0.0, gl, 0.0, -yres, gt), int(width), int(height))
    anchor_note = anchor.name if anchor is not None else "CRS origin"
    note = f"crs: {crs_note}; resolution: {res_note}; grid anchored on {anchor_note}"
    return grid, note


def _grid_offset(r: _Raster, grid: _Grid) -> tuple[int, int] | None:
    """Whole-pixel (row, col) offset of ``r`` on ``grid``, or None if it must be warped."""
    t = r.transform
    g = grid.transform
    if not _is_north_up(t) or CRS.from_wkt(r.crs_wkt) != grid.crs:
        return None
    size = max(r.width, r.height)
    if abs(t[0] - g[0]) * size > _GRID_TOL_PX * g[0] or abs(t[4] - g[4]) * size > (
        _GRID_TOL_PX * -g[4]
    ):
        return None
    col = (t[2] - g[2]) / g[0]
    row = (t[5] - g[5]) / g[4]
    if abs(col - round(col)) > _GRID_TOL_PX or abs(row - round(row)) > _GRID_TOL_PX:
        return None
    return round(row), round(col)


# --------------------------------------------------------------------------- block reading


def _bound_gdal_cache() -> None:
    """Lower this process's GDAL block cache to ``_GDAL_CACHE_BYTES``, once per process."""
    global _cache_bounded
    if _cache_bounded:
        return
    with _cache_lock:
        if not _cache_bounded and "GDAL_CACHEMAX" not in os.environ:
            try:
                current = int(get_gdal_config("GDAL_CACHEMAX"))
            except (TypeError, ValueError):  # a share such as "10%" set in the session
                current = 0
            # values below 100000 are megabytes to GDAL, so they are already small
            if current > max(_GDAL_CACHE_BYTES, 100_000):
                set_gdal_config("GDAL_CACHEMAX", _GDAL_CACHE_BYTES)
        _cache_bounded = True


def _open(path: str, *, siblings: bool = True) -> Any:
    """Open ``path``; ``siblings=False`` skips GDAL's listing of the folder (faster)."""
    _bound_gdal_cache()
    options = {} if siblings else {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    with warnings.catch_warnings(), rasterio.Env(**options):
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            msg = str(err).replace(str(path), "").strip(" :")
            raise SceneError(
                f"{path}: could not be opened while computing the cube ({msg}); it was readable "
                f"when load_cube checked it, so it has since been moved, deleted or rewritten; "
                f"restore the file or call load_cube again"
            ) from None


def _read_source(
    src: _Source,
    grid: _Grid,
    rows: tuple[int, int],
    cols: tuple[int, int],
    *,
    indexes: list[int],
    dtype: str,
    fill: float,
    resampling: Resampling,
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
    """Read one raster's part of a target block.

    Returns ``(data, inside, good)``: data (band, y, x) in ``dtype`` with ``fill`` outside
    the footprint, ``inside`` the footprint (None: the whole block) and ``good`` inside
    with no band at nodata; or None when the raster does not reach the block.
    """
    r0, r1 = rows
    c0, c1 = cols
    h, w = r1 - r0, c1 - c0
    nodata = src.raster.nodata
    inside: np.ndarray | None = None
    # Everything the read needs (nodata, grid) was captured at load time; only an external
    # .msk mask needs GDAL to look for sibling files.
    with _open(src.raster.path, siblings=src.raster.dataset_mask) as ds:
        if src.offset is not None:
            orow, ocol = src.offset
            a0, a1 = max(r0, orow), min(r1, orow + src.raster.height)
            b0, b1 = max(c0, ocol), min(c1, ocol + src.raster.width)
            if a0 >= a1 or b0 >= b1:
                return None
            win = Window(b0 - ocol, a0 - orow, b1 - b0, a1 - a0)
            if (a0, a1, b0, b1) == (r0, r1, c0, c1):
                # The common case: the block lies inside the scene; no copy at all.
                data = ds.read(indexes, window=win, out_dtype=dtype)
                if src.raster.dataset_mask:
                    inside = ds.dataset_mask(window=win) > 0
            else:
                data = np.full((len(indexes), h, w), fill, dtype=dtype)
                sl = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
                data[(slice(None), *sl)] = ds.read(indexes, window=win, out_dtype=dtype)
                inside = np.zeros((h, w), dtype=bool)
                inside[sl] = ds.dataset_mask(window=win) > 0 if src.raster.dataset_mask else True
        else:
            has_alpha = ColorInterp.alpha in ds.colorinterp
            # With a nodata value the warper fills the outside with it, so no alpha band is
            # needed; without one, an added alpha band (or the scene's own) marks the footprint.
            add_alpha = nodata is None and not has_alpha
            win = Window(c0, r0, w, h)
            with WarpedVRT(
                ds,
                crs=grid.crs,
                transform=grid.affine,
                width=grid.width,
                height=grid.height,
                resampling=resampling,
                src_nodata=nodata,
                nodata=nodata if nodata is not None else fill,
                add_alpha=add_alpha,
            ) as vrt:
                if add_alpha:
                    both = vrt.read(indexes + [vrt.count], window=win, out_dtype=dtype)
                    data = both[:-1]
                    inside = both[-1] > 0
                else:
                    data = vrt.read(indexes, window=win, out_dtype=dtype)
                    if nodata is None:  # the scene's own alpha band
                        inside = vrt.dataset_mask(window=win) > 0
    # Values are kept as read (byte-identical to rasterio): outside the footprint they are
    # already the fill (windowed reads) or the nodata value (warped reads).
    if not check:
        return data, inside, inside if inside is not None else np.ones((h, w), dtype=bool)
    # good: no band at nodata (or NaN), accumulated plane by plane without band-sized
    # temporaries.
    good = None
    is_float = np.issubdtype(data.dtype, np.floating)
    if nodata is not None and not math.isnan(nodata):
        nd = np.asarray(nodata).astype(data.dtype)
        good = np.not_equal(data[0], nd)
        plane = np.empty_like(good)
        for b in range(1, data.shape[0]):
            good &= np.not_equal(data[b], nd, out=plane)
        if not _same_value(nodata, fill) and not good.all():
            # A band at the scene's own nodata takes the cube's nodata value.
            data[data == nd] = np.asarray(fill).astype(data.dtype)
    if is_float:
        finite = ~np.isnan(data).any(axis=0)
        good = finite if good is None else good & finite
    if inside is not None and src.offset is None and nodata is None:
        data = np.where(inside, data, np.asarray(fill).astype(data.dtype))
    if good is None:
        good = np.ones((h, w), dtype=bool) if inside is None else inside
    elif inside is not None:
        good &= inside
    if inside is None and src.offset is None:
        inside = good  # warped with a nodata value: outside reads as nodata
    return data, inside, good


def _same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _read_step_block(
    step: _Step, grid: _Grid, rows: tuple[int, int], cols: tuple[int, int], spec: _ReadSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read one (time step, y block, x block): data (1, band, y, x), valid and mask (1, y, x).

    Scenes of a time step are mosaicked in order: the first valid pixel wins; where no
    scene is valid, the first scene with a footprint there gives the values.
    """
    h, w = rows[1] - rows[0], cols[1] - cols[0]
    resampling = Resampling[spec.resampling]
    indexes = list(range(1, spec.nbands + 1))
    fill = np.asarray(spec.fill).astype(spec.dtype)
    data: np.ndarray | None = None
    valid = np.zeros((h, w), dtype=bool)
    has_data = np.zeros((h, w), dtype=bool)
    mask = np.full((h, w), _MASK_FILL, dtype=np.uint8) if spec.with_mask else None
    single = len(step.scenes) == 1
    for src, msrc in zip(step.scenes, step.masks, strict=True):
        got = _read_source(
            src,
            grid,
            rows,
            cols,
            indexes=indexes,
            dtype=spec.dtype,
            fill=spec.fill,
            resampling=resampling,
        )
        if got is None:
            continue
        part, inside, good = got
        if inside is None and not single:
            inside = np.ones((h, w), dtype=bool)
        m = None
        clear = good
        if msrc is not None:
            mgot = _read_source(
                msrc,
                grid,
                rows,
                cols,
                indexes=[1],
                dtype="uint8",
                fill=_MASK_FILL,
                resampling=Resampling.nearest,
                check=False,  # the mask's own values say what is usable
            )
            m = np.full((h, w), _MASK_FILL, np.uint8) if mgot is None else mgot[0][0]
            clear = good & (m == 0)
        if single:
            data, valid = part, clear
            if mask is not None:
                mask = m if m is not None else np.where(good, np.uint8(0), mask)
            break
        take = clear & ~valid
        put = take | (inside & ~has_data & ~valid)
        if data is None:
            data = np.where(put, part, fill)
        else:
            np.copyto(data, part, where=put)
        if mask is not None:
            if m is not None:
                # The mask follows the data it describes; clear pixels beat cloudy ones.
                mask = np.where(put | ((mask == _MASK_FILL) & (m != _MASK_FILL)), m, mask)
            else:
                mask = np.where(put & good, np.uint8(0), mask)
        has_data |= inside
        valid |= take
        if valid.all():
            break
    if data is None:
        data = np.full((spec.nbands, h, w), fill, dtype=spec.dtype)
    return data[None], valid[None], None if mask is None else mask[None]
