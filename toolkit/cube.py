"""Load scene files or STAC items into one aligned, lazy image cube, and cache it.

The cube is a :class:`xarray.DataArray` with dims ``(time, band, y, x)`` on a
single grid (CRS in ``spatial_ref`` via rioxarray), backed by dask: nothing is
read until a result is asked for. Scenes that differ in CRS, pixel size or grid
offset are aligned block by block; scenes already on the target grid are read
directly without resampling.

Public functions
----------------
load_cube
    Scene files, folders, glob patterns or STAC items -> cube.
scene_quality
    Per-time valid, cloud and nodata fractions and mean brightness of a cube.
cache_cube, open_cube
    Write a cube to a zarr store atomically and read it back lazily.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from rasterio.crs import CRS
from rasterio.enums import Resampling

from toolkit._cube_read import (
    _MASK_FILL,
    _Grid,
    _grid_offset,
    _read_step_block,
    _ReadSpec,
    _Source,
    _Step,
    _target_grid,
)
from toolkit._cube_scenes import _expand_sources, _inspect, _Scene
from toolkit._io import atomic_directory
from toolkit.errors import InputError, SceneError

__all__ = ["load_cube", "scene_quality", "cache_cube", "open_cube"]

_DUPLICATE_POLICIES = ("mosaic", "first", "last", "error", "keep")
_DEFAULT_CHUNKS = {"time": 1, "band": -1, "y": 2048, "x": 2048}
_CLOUD_CLASSES = (1, 2, 3)
_CHECK_THREADS = 2


def _toolkit_version() -> str:
    try:
        from toolkit import __version__
    except ImportError:  # pragma: no cover - partial installs
        return "0+unknown"
    return str(__version__)


# --------------------------------------------------------------------------- validation


def _check_options(
    resampling: str, duplicate_times: str, masks: str | None, chunks: Any
) -> dict[str, int]:
    if resampling not in Resampling.__members__:
        raise InputError(
            f"resampling: unknown method {resampling!r}; expected one of "
            f"{', '.join(Resampling.__members__)}; pass e.g. resampling='bilinear'"
        )
    if duplicate_times not in _DUPLICATE_POLICIES:
        raise InputError(
            f"duplicate_times: unknown policy {duplicate_times!r}; expected one of "
            f"{', '.join(_DUPLICATE_POLICIES)}; pass e.g. duplicate_times='mosaic'"
        )
    if masks not in ("auto", None):
        raise InputError(
            f"masks: expected 'auto' (read <stem>.mask.tif sidecars) or None, got {masks!r}; "
            f"pass masks='auto' or masks=None"
        )
    merged = dict(_DEFAULT_CHUNKS)
    if chunks is not None:
        if not isinstance(chunks, dict) or set(chunks) - set(merged):
            raise InputError(
                f"chunks: expected a dict with keys among time, band, y, x, got {chunks!r}; "
                f"pass e.g. chunks={{'y': 512, 'x': 512}}"
            )
        for key, value in chunks.items():
            value = -1 if value is None else value
            if not isinstance(value, (int, np.integer)) or (value < 1 and value != -1):
                raise InputError(
                    f"chunks[{key!r}]: expected a positive int or -1 (whole dimension), got "
                    f"{value!r}; pass e.g. chunks={{'{key}': 512}}"
                )
            merged[key] = int(value)
    return merged


def _check_consistent(scenes: list[_Scene]) -> None:
    first = scenes[0]
    for s in scenes[1:]:
        if s.count != first.count:
            raise SceneError(
                f"{s.raster.path}: has {s.count} bands but {first.name} has {first.count}; "
                f"expected the same bands in every scene; load the scenes separately or "
                f"select matching files"
            )
        if s.dtype != first.dtype:
            raise SceneError(
                f"{s.raster.path}: has dtype {s.dtype} but {first.name} has {first.dtype}; "
                f"expected one dtype for all scenes; convert the scenes to one data type"
            )
    described = [s for s in scenes if s.bands_described]
    for s in described[1:]:
        if s.bands != described[0].bands:
            raise SceneError(
                f"{s.raster.path}: band descriptions {list(s.bands)} differ from "
                f"{described[0].name}'s {list(described[0].bands)}; expected the same band "
                f"order in every scene; reorder the bands or load the scenes separately"
            )


def _group_times(scenes: list[_Scene], policy: str) -> tuple[list[list[_Scene]], list[str]]:
    """Group scenes with identical timestamps per ``policy``; return groups and a report."""
    groups: list[list[_Scene]] = []
    for s in scenes:
        if groups and groups[-1][0].time == s.time and policy != "keep":
            groups[-1].append(s)
        else:
            groups.append([s])
    report: list[str] = []
    out: list[list[_Scene]] = []
    for g in groups:
        if len(g) == 1:
            out.append(g)
            continue
        when = np.datetime_as_string(g[0].time, unit="s")
        names = ", ".join(s.name for s in g)
        if policy == "error":
            raise SceneError(
                f"{g[1].raster.path}: has the same acquisition time {when} as "
                f"{g[0].raster.path}; expected one scene per time; pass "
                f"duplicate_times='mosaic', 'first', 'last' or 'keep', or remove one file"
            )
        if policy == "mosaic":
            out.append(g)
            report.append(f"{when}: mosaicked {names} (first valid pixel wins)")
        elif policy == "first":
            out.append(g[:1])
            report.append(f"{when}: kept {g[0].name}, dropped {', '.join(s.name for s in g[1:])}")
        else:  # last
            out.append(g[-1:])
            report.append(f"{when}: kept {g[-1].name}, dropped {', '.join(s.name for s in g[:-1])}")
    if policy == "keep":
        times = [s.time for s in scenes]
        dup = len(times) - len(set(times))
        if dup:
            report.append(f"kept {dup} scenes whose time repeats an earlier one; time not unique")
    return out, report


def _resolution_m(scene: _Scene) -> float:
    crs = CRS.from_wkt(scene.raster.crs_wkt)
    t = scene.raster.transform
    px = math.sqrt(abs(t[0] * t[4] - t[1] * t[3]))
    if crs.is_geographic:
        lat = t[5] + 0.5 * scene.raster.height * t[4]
        return float(px * 111_320.0 * math.sqrt(abs(math.cos(math.radians(lat)))))
    try:
        factor = crs.linear_units_factor[1]
    except Exception:  # pragma: no cover - CRS without linear units
        factor = 1.0
    return float(px * factor)


def _crs_label(wkt: str) -> str:
    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def _fill_value(scenes: list[_Scene]) -> float:
    for s in scenes:
        if s.raster.nodata is not None:
            return s.raster.nodata
    if np.issubdtype(np.dtype(scenes[0].dtype), np.floating):
        return math.nan
    return 0


def _file_stamp(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def _blocks(n: int, size: int, *, merge_tail: bool = False) -> list[tuple[int, int]]:
    """Block edges along one dim; with ``merge_tail`` a sliver under 1/4 block joins the last."""
    size = n if size == -1 else size
    edges = [(i, min(i + size, n)) for i in range(0, n, size)]
    if merge_tail and len(edges) > 1 and edges[-1][1] - edges[-1][0] <= size // 4:
        # A 1-pixel sliver would cost a file open (and a warp) per scene for nothing.
        edges[-2:] = [(edges[-2][0], n)]
    return edges


# --------------------------------------------------------------------------- load_cube


def load_cube(
    sources: Any,
    *,
    crs: Any = None,
    resolution: float | tuple[float, float] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    resampling: str = "bilinear",
    chunks: dict[str, int] | None = None,
    duplicate_times: str = "mosaic",
    masks: str | None = "auto",
    progress: bool = False,
) -> xr.DataArray:
    """Load scenes into one aligned, lazy ``(time, band, y, x)`` cube.

    Every scene is opened once here to check it (readable and complete, has a
    CRS, a date, pixels, the same bands and dtype as the others); pixel data
    are read later, block by block, when the cube is computed.

    Parameters
    ----------
    sources : str, path-like, pystac object or list of them
        A scene file, a folder (its ``*.tif``/``*.tiff`` files, not the
        ``*.mask.tif`` sidecars), a glob pattern, a local STAC Item /
        ItemCollection / Collection JSON file, a ``pystac.ItemCollection`` or
        ``pystac.Item``, or a list mixing these. STAC assets must have local
        hrefs.
    crs : str, int or CRS, optional
        Target CRS. Default: the CRS most scenes use (ties: the earliest
        scene's).
    resolution : float or (float, float), optional
        Target pixel size in target CRS units. Default: the finest native
        pixel size among the scenes.
    bounds : (left, bottom, right, top), optional
        Target extent in target CRS units. Default: the union of the scene
        footprints. Bounds are snapped outward to whole pixels of a grid
        anchored on the first scene already in the target CRS and
        resolution, so such scenes are read without resampling.
    resampling : str
        Resampling for scenes off the target grid (a
        :class:`rasterio.enums.Resampling` name). Masks always use nearest.
    chunks : dict, optional
        Dask chunk sizes by dim name; default ``{"time": 1, "band": -1,
        "y": 2048, "x": 2048}``. ``-1`` means the whole dimension.
    duplicate_times : {"mosaic", "first", "last", "error", "keep"}
        What to do with scenes sharing one timestamp. ``"mosaic"`` combines
        them into one time step (first valid pixel wins, in file-name
        order); ``"first"``/``"last"`` keep one file; ``"error"`` raises;
        ``"keep"`` keeps all, so ``time`` is then **not unique** and
        ``cube.sel(time=...)`` returns several steps.
    masks : {"auto", None}
        ``"auto"`` reads a usable-data sidecar ``<stem>.mask.tif`` beside a
        scene (uint8: 0 clear, 1 cloud, 2 cloud shadow, 3 thick haze, 255
        nodata) or a STAC ``mask``/``udm`` asset; ``None`` ignores them.
    progress : bool
        Show a progress bar while scenes are checked.

    Returns
    -------
    xarray.DataArray
        Dims ``(time, band, y, x)`` in the scenes' native dtype and units
        (``attrs["units"]``, ``"DN"`` unless the files say otherwise), dask
        backed. Coordinates: ``time`` (datetime64[ns], ascending, UTC),
        ``band`` (str), ``y``/``x`` (pixel centres, target CRS units),
        ``spatial_ref`` (CRS and transform), ``valid`` (time, y, x; bool:
        inside the scene footprint, no band at nodata, mask clear),
        ``mask`` (time, y, x; uint8; only when a mask was found),
        ``scene`` (file name(s) per time), ``source_crs`` and
        ``source_resolution_m`` (native pixel size in metres). Pixels
        without data hold the nodata value ``attrs["_FillValue"]``.

    Raises
    ------
    toolkit.errors.SceneError
        No files matched; a file is not a raster, corrupt or truncated, has
        no CRS, no date or no pixels; scenes differ in band count or dtype;
        a scene does not overlap ``bounds``; a STAC asset href is remote;
        duplicate times with ``duplicate_times="error"``.
    toolkit.errors.InputError
        An option has an invalid value.

    Notes
    -----
    Acquisition time comes from the TIFF tag ``TIFFTAG_DATETIME`` (``"YYYY:MM:DD
    HH:MM:SS"``), else from a date in the file name (``20231005T021500``,
    ``20231005_021500``, ``2023-10-05``, ``20231005``), or from the STAC item
    datetime. Scenes on the target grid (same CRS and pixel size, origin a
    whole number of pixels away) are read with plain windowed reads; others
    go through a GDAL warped VRT with ``resampling``, one block at a time.
    Each dask task opens its files itself, so the graph runs on
    ``dask.distributed`` workers. The target grid is anchored on the first
    scene already in the target CRS at the target resolution; a native pixel
    size in the target CRS is preferred to one up to 5 % finer that only
    comes from reprojecting another scene. Default chunks of 2048 pixels
    absorb a remainder of up to 512 pixels into the last block.

    Memory: ``cube.compute()`` briefly holds about twice the cube (dask keeps
    every block while it assembles the result). Reduce lazily (e.g. counts
    per track), write with :func:`cache_cube`, or ``dask.array.store`` into
    preallocated arrays to stay near one cube. Reading lowers GDAL's block
    cache to 64 MiB in each process that reads (GDAL's default is 5 % of the
    machine's memory per process, which kept decoded tiles of compressed
    scenes past a 600 MiB worker's limit); set ``GDAL_CACHEMAX`` in the
    environment to choose another size.

    Examples
    --------
    >>> import tempfile, numpy as np, rasterio
    >>> from affine import Affine
    >>> from toolkit.cube import load_cube
    >>> folder = tempfile.mkdtemp()
    >>> for day, value in [("20231005", 7), ("20230918", 3)]:
    ...     with rasterio.open(f"{folder}/synthetic_{day}.tif", "w", driver="GTiff",
    ...                        width=4, height=3, count=1, dtype="uint8", nodata=0,
    ...                        crs="EPSG:32652", transform=Affine(0.5, 0, 500000, 0, -0.5, 4700000)) as f:
    ...         f.write(np.full((1, 3, 4), value, "uint8"))
    >>> cube = load_cube(folder)
    >>> cube.sizes["time"], cube.sizes["y"], cube.sizes["x"], str(cube.dtype)
    (2, 3, 4, 'uint8')
    >>> str(cube.time.values[0])[:10], int(cube.isel(time=1).max())
    ('2023-09-18', 7)
    >>> cube.rio.crs.to_epsg()
    32652
    """
    merged_chunks = _check_options(resampling, duplicate_times, masks, chunks)
    candidates = _expand_sources(sources, masks=masks)
    # Opening files is mostly GDAL work outside the GIL: two threads check them.
    with ThreadPoolExecutor(max_workers=_CHECK_THREADS) as pool:
        checked: Iterable[_Scene] = pool.map(lambda c: _inspect(c, masks=masks), candidates)
        if progress:
            from tqdm.auto import tqdm

            checked = tqdm(checked, total=len(candidates), desc="checking scenes", unit="scene")
        scenes = list(checked)
    scenes.sort(key=lambda s: (s.time, s.name, s.raster.path))
    _check_consistent(scenes)
    groups, dup_report = _group_times(scenes, duplicate_times)
    used = [s for g in groups for s in g]
    grid, grid_note = _target_grid(used, crs=crs, resolution=resolution, bounds=bounds)
    return _build_cube(
        groups,
        grid,
        chunks=merged_chunks,
        user_chunks=dict(chunks or {}),
        resampling=resampling,
        duplicate_times=duplicate_times,
        dup_report=dup_report,
        grid_note=grid_note,
        all_scenes=scenes,
    )


def _build_cube(
    groups: list[list[_Scene]],
    grid: _Grid,
    *,
    chunks: dict[str, int],
    user_chunks: dict[str, Any],
    resampling: str,
    duplicate_times: str,
    dup_report: list[str],
    grid_note: str,
    all_scenes: list[_Scene],
) -> xr.DataArray:
    used = [s for g in groups for s in g]
    first = used[0]
    fill = _fill_value(used)
    with_mask = any(s.mask is not None for s in used)
    steps = []
    n_fast = 0
    for g in groups:
        sources = []
        masks = []
        for s in g:
            off = _grid_offset(s.raster, grid)
            n_fast += off is not None
            sources.append(_Source(s.raster, off))
            masks.append(None if s.mask is None else _Source(s.mask, _grid_offset(s.mask, grid)))
        steps.append(_Step(tuple(sources), tuple(masks)))
    spec = _ReadSpec(
        nbands=first.count,
        dtype=first.dtype,
        fill=fill,
        resampling=resampling,
        with_mask=with_mask,
    )
    ybl = _blocks(grid.height, chunks["y"], merge_tail=not user_chunks.get("y"))
    xbl = _blocks(grid.width, chunks["x"], merge_tail=not user_chunks.get("x"))
    # File sizes and modification times enter the token: a regenerated scene gets new keys.
    stamps = [_file_stamp(s.raster.path) for s in used] + [
        _file_stamp(s.mask.path) for s in used if s.mask is not None
    ]
    token = tokenize(steps, grid, spec, ybl, xbl, stamps)
    rname = f"load_cube-read-{token}"
    dname, vname, mname = (f"load_cube-{k}-{token}" for k in ("data", "valid", "mask"))
    read_layer: dict[Any, Any] = {}
    dlayer: dict[Any, Any] = {}
    vlayer: dict[Any, Any] = {}
    mlayer: dict[Any, Any] = {}
    for t, step in enumerate(steps):
        for i, rows in enumerate(ybl):
            for j, cols in enumerate(xbl):
                read_layer[(rname, t, i, j)] = (_read_step_block, step, grid, rows, cols, spec)
                dlayer[(dname, t, 0, i, j)] = (operator.getitem, (rname, t, i, j), 0)
                vlayer[(vname, t, i, j)] = (operator.getitem, (rname, t, i, j), 1)
                mlayer[(mname, t, i, j)] = (operator.getitem, (rname, t, i, j), 2)
    ych = tuple(b - a for a, b in ybl)
    xch = tuple(b - a for a, b in xbl)
    tch = (1,) * len(steps)

    def _array(name: str, layer: dict, chunks: tuple, dtype: Any) -> da.Array:
        hlg = HighLevelGraph({rname: read_layer, name: layer}, {rname: set(), name: {rname}})
        meta = np.empty((0,) * len(chunks), dtype=dtype)
        return da.Array(hlg, name, chunks, dtype=dtype, meta=meta)

    data = _array(dname, dlayer, (tch, (first.count,), ych, xch), np.dtype(first.dtype))
    valid = _array(vname, vlayer, (tch, ych, xch), np.dtype(bool))
    mask = _array(mname, mlayer, (tch, ych, xch), np.dtype(np.uint8)) if with_mask else None
    if chunks["time"] != 1 or chunks["band"] != -1:
        tc = chunks["time"]
        bc = chunks["band"]
        data = data.rechunk({0: tc, 1: bc})
        valid = valid.rechunk({0: tc})
        mask = None if mask is None else mask.rechunk({0: tc})

    xres, _, left, _, yres, top = grid.transform
    x = left + (np.arange(grid.width) + 0.5) * xres
    y = top + (np.arange(grid.height) + 0.5) * yres
    times = np.array([g[0].time for g in groups], dtype="datetime64[ns]")
    described = next((s for s in used if s.bands_described), first)
    coords: dict[str, Any] = {
        "time": ("time", times),
        "band": ("band", np.array(described.bands, dtype=str)),
        "y": ("y", y, {"units": "metre" if CRS.from_wkt(grid.crs_wkt).is_projected else "degree"}),
        "x": ("x", x, {"units": "metre" if CRS.from_wkt(grid.crs_wkt).is_projected else "degree"}),
        "valid": (("time", "y", "x"), valid),
        "scene": ("time", np.array(["+".join(s.name for s in g) for g in groups], dtype=str)),
        "source_crs": (
            "time",
            np.array(
                ["+".join(dict.fromkeys(_crs_label(s.raster.crs_wkt) for s in g)) for g in groups],
                dtype=str,
            ),
        ),
        "source_resolution_m": (
            "time",
            np.array([min(_resolution_m(s) for s in g) for g in groups], dtype="float64"),
            {"units": "m"},
        ),
    }
    if mask is not None:
        coords["mask"] = (
            ("time", "y", "x"),
            mask,
            {"flag_values": "0 clear, 1 cloud, 2 cloud shadow, 3 thick haze, 255 nodata"},
        )
    nodata_values = sorted({str(s.raster.nodata) for s in used})
    attrs = {
        "long_name": "image cube",
        "units": first.units,
        "sources": [s.raster.path for s in all_scenes],
        "toolkit_version": _toolkit_version(),
        "resampling": resampling,
        "grid": grid_note,
        "scenes_on_grid": f"{n_fast} of {len(used)} scenes read without resampling",
        "duplicate_times": duplicate_times,
        "duplicate_times_report": "; ".join(dup_report) if dup_report else "no duplicate times",
        "source_nodata": ", ".join(nodata_values),
    }
    cube = xr.DataArray(
        data, dims=("time", "band", "y", "x"), coords=coords, attrs=attrs, name="image"
    )
    cube = cube.rio.write_crs(CRS.from_wkt(grid.crs_wkt).to_wkt())
    cube = cube.rio.write_transform(grid.affine)
    cube = cube.rio.write_nodata(fill, encoded=False)
    return cube


# --------------------------------------------------------------------------- quality


def scene_quality(cube: xr.DataArray) -> xr.Dataset:
    """Per-time quality of a cube: valid, cloud and nodata fractions, brightness.

    Parameters
    ----------
    cube : xarray.DataArray
        A cube from :func:`load_cube` (dims ``time, band, y, x`` with a
        ``valid`` coordinate; a ``mask`` coordinate is used when present).

    Returns
    -------
    xarray.Dataset
        Lazy (dask) variables along ``time``:

        - ``valid_fraction`` (1): share of grid pixels that are valid.
        - ``cloud_fraction`` (1): share of observed pixels (mask not 255)
          flagged cloud, cloud shadow or haze (mask 1-3); NaN without a mask.
        - ``nodata_fraction`` (1): share of grid pixels with no data (outside
          the footprint, nodata in a band, or mask 255), clouds excluded.
        - ``mean_brightness`` (cube units): mean over bands of valid pixels.

    Raises
    ------
    toolkit.errors.InputError
        ``cube`` lacks the dims or the ``valid`` coordinate.

    Examples
    --------
    >>> import tempfile, numpy as np, rasterio
    >>> from affine import Affine
    >>> from toolkit.cube import load_cube, scene_quality
    >>> path = f"{tempfile.mkdtemp()}/synthetic_2023-10-05.tif"
    >>> values = np.array([[[0, 10], [20, 30]]], "uint8")  # one nodata pixel
    >>> with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1,
    ...                    dtype="uint8", nodata=0, crs="EPSG:32652",
    ...                    transform=Affine(1, 0, 500000, 0, -1, 4700000)) as f:
    ...     f.write(values)
    >>> q = scene_quality(load_cube(path)).compute()
    >>> float(q.valid_fraction[0]), float(q.mean_brightness[0])
    (0.75, 20.0)
    """
    if not isinstance(cube, xr.DataArray) or not {"time", "band", "y", "x"} <= set(cube.dims):
        raise InputError(
            "cube: expected a DataArray with dims (time, band, y, x) from load_cube, got "
            f"{type(cube).__name__} with dims {getattr(cube, 'dims', None)}; load it with "
            "toolkit.cube.load_cube"
        )
    if "valid" not in cube.coords:
        raise InputError(
            "cube: has no 'valid' coordinate; expected a cube from load_cube or open_cube; "
            "reload it with toolkit.cube.load_cube"
        )
    valid = cube["valid"].reset_coords(drop=True)
    area = ("y", "x")
    valid_fraction = valid.mean(area)
    if "mask" in cube.coords:
        mask = cube["mask"].reset_coords(drop=True)
        cloud = mask.isin(list(_CLOUD_CLASSES))
        observed = (mask != _MASK_FILL).sum(area)
        cloud_fraction = cloud.sum(area) / observed.where(observed > 0)
        nodata_fraction = (~valid & ~cloud).mean(area)
    else:
        cloud_fraction = xr.full_like(valid_fraction, np.nan, dtype="float64")
        nodata_fraction = 1.0 - valid_fraction
    data = cube.reset_coords(drop=True).astype("float64")
    brightness = data.where(valid).mean(("band", "y", "x"))
    out = xr.Dataset(
        {
            "valid_fraction": valid_fraction.astype("float64").assign_attrs(units="1"),
            "cloud_fraction": cloud_fraction.astype("float64").assign_attrs(units="1"),
            "nodata_fraction": nodata_fraction.astype("float64").assign_attrs(units="1"),
            "mean_brightness": brightness.assign_attrs(units=cube.attrs.get("units", "DN")),
        },
        attrs={"method": "scene_quality", "toolkit_version": _toolkit_version()},
    )
    for name in ("scene", "source_crs", "source_resolution_m"):
        if name in cube.coords and cube[name].dims == ("time",):
            out = out.assign_coords({name: cube[name]})
    return out


# --------------------------------------------------------------------------- zarr cache


_CACHE_FORMAT = "toolkit-cube-zarr-1"
_STRING_COORDS = ("band", "scene", "source_crs")


def cache_cube(cube: xr.DataArray, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a cube to a zarr (v3) store atomically; return the store path.

    The data, the ``valid`` and ``mask`` coordinates, the per-time scene
    coordinates, the CRS (``spatial_ref``), the nodata value and the attrs
    are all stored, so :func:`open_cube` gives back the same cube. The store
    is written into a temporary folder beside ``path`` and renamed into place
    only when complete: a reader sees the old store or the new one, never a
    half-written one. Computing a lazy cube happens here, chunk by chunk.

    Parameters
    ----------
    cube : xarray.DataArray
        A cube from :func:`load_cube` (dask or numpy backed).
    path : str or path-like
        The store folder to write, e.g. ``"cache/tumangang.zarr"``.
    overwrite : bool
        Replace an existing store at ``path``. Default False: an existing
        store is an error.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    toolkit.errors.InputError
        ``cube`` is not a cube, or ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, numpy as np, rasterio
    >>> from affine import Affine
    >>> from toolkit.cube import load_cube, cache_cube, open_cube
    >>> folder = tempfile.mkdtemp()
    >>> with rasterio.open(f"{folder}/synthetic_20231005.tif", "w", driver="GTiff", width=3,
    ...                    height=2, count=1, dtype="uint16", nodata=0, crs="EPSG:32652",
    ...                    transform=Affine(0.5, 0, 500000, 0, -0.5, 4700000)) as f:
    ...     f.write(np.arange(1, 7, dtype="uint16").reshape(1, 2, 3))
    >>> cube = load_cube(folder)
    >>> store = cache_cube(cube, f"{folder}/cube.zarr")
    >>> back = open_cube(store)
    >>> back.identical(cube.compute()), str(back.dtype), back.rio.crs.to_epsg()
    (True, 'uint16', 32652)
    """
    _check_cube(cube, "cube")
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(
            f"{path}: already exists; expected a new store path for cache_cube; pass "
            f"overwrite=True to replace it or choose another path"
        )
    name = cube.name if isinstance(cube.name, str) else "image"
    data = cube.rename(name)
    nodata = data.rio.nodata
    if nodata is None:
        nodata = data.attrs.get("_FillValue")
    attrs = {k: v for k, v in data.attrs.items() if k != "_FillValue"}
    attrs["cache_format"] = _CACHE_FORMAT
    attrs["cache_name"] = name
    data = data.copy(data=data.data)
    data.attrs = attrs
    string_coords = [c for c in _STRING_COORDS if c in data.coords]
    data = data.assign_coords({c: data[c].astype(object) for c in string_coords})
    ds = data.to_dataset(promote_attrs=False)
    encoding: dict[str, dict[str, Any]] = {name: {}}
    if nodata is not None:
        encoding[name]["_FillValue"] = np.asarray(nodata).astype(cube.dtype).item()
    for var in ds.variables.values():
        var.encoding.pop("grid_mapping", None)
        var.attrs.pop("grid_mapping", None)
    ds[name].attrs["grid_mapping"] = "spatial_ref"
    for var in (name, "valid", "mask"):
        # zarr needs regular chunks: the first chunk size along each dim, rest as it falls.
        if var in ds.variables and isinstance(ds[var].data, da.Array):
            arr = ds[var].data
            regular = arr.rechunk(tuple(c[0] for c in arr.chunks))
            ds[var] = ds[var].copy(data=regular)
    with atomic_directory(path) as tmp:
        store = tmp / "store.zarr"
        ds.to_zarr(store, mode="w", consolidated=False, zarr_format=3, encoding=encoding)
        for child in store.iterdir():
            child.rename(tmp / child.name)
        store.rmdir()
    return path


def open_cube(path: str | os.PathLike) -> xr.DataArray:
    """Open a cube cached by :func:`cache_cube`, lazily (dask backed).

    Parameters
    ----------
    path : str or path-like
        A store written by :func:`cache_cube`.

    Returns
    -------
    xarray.DataArray
        The cube with the same dims, coordinates (``valid``, ``mask``,
        ``scene``, ...), dtype, CRS, nodata and attrs as the one cached.

    Raises
    ------
    toolkit.errors.InputError
        ``path`` does not exist or is not a cube store written by
        :func:`cache_cube`.

    Examples
    --------
    See :func:`cache_cube`.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(
            f"{path}: no such cube store; expected a folder written by cache_cube; check the "
            f"path or create it with toolkit.cube.cache_cube(cube, path)"
        )
    try:
        ds = xr.open_zarr(path, consolidated=False, mask_and_scale=False, zarr_format=3, chunks={})
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"{path}: is not a readable zarr store ({type(err).__name__}: {err}); expected a "
            f"store written by cache_cube; write it again with cache_cube(..., overwrite=True)"
        ) from None
    names = [k for k, v in ds.data_vars.items() if v.attrs.get("cache_format") == _CACHE_FORMAT]
    if len(names) != 1:
        raise InputError(
            f"{path}: is a zarr store but not a cached cube (no variable with cache_format "
            f"{_CACHE_FORMAT!r}); expected a store written by cache_cube; write it with "
            f"cache_cube"
        )
    name = names[0]
    if "spatial_ref" in ds.data_vars:
        ds = ds.set_coords("spatial_ref")
    cube = ds[name]
    attrs = dict(cube.attrs)
    nodata = attrs.pop("_FillValue", None)
    for key in ("cache_format", "cache_name", "grid_mapping"):
        attrs.pop(key, None)
    cube.attrs = attrs
    for c in list(cube.coords):
        cube[c].attrs.pop("_FillValue", None)
    restore = {}
    for c in _STRING_COORDS:
        if c in cube.coords:
            restore[c] = (
                cube[c].dims,
                np.array(np.asarray(cube[c].values).tolist(), dtype=str),
                cube[c].attrs,
            )
    cube = cube.assign_coords(restore)
    cube = cube.rio.write_crs(cube.rio.crs)
    if nodata is not None:
        cube = cube.rio.write_nodata(np.asarray(nodata).astype(cube.dtype), encoded=False)
    return cube


def _check_cube(cube: Any, name: str) -> None:
    if not isinstance(cube, xr.DataArray) or not {"time", "band", "y", "x"} <= set(cube.dims):
        raise InputError(
            f"{name}: expected a DataArray with dims (time, band, y, x) from load_cube, got "
            f"{type(cube).__name__} with dims {getattr(cube, 'dims', None)}; load it with "
            f"toolkit.cube.load_cube"
        )
