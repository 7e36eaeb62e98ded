"""Track centrelines: reading, validation and along-track strips.

A *strip* is a track resampled into a straight grid: ``along`` the centreline
(metres from its first vertex) by ``across`` it (metres, positive to the left
of the direction of travel). Curved tracks and turnouts are unrolled the same
way, so occupancy and counting work on straight 1-D profiles whatever the
geometry.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - registers the .rio accessor
import shapely
import xarray as xr
from pyproj import CRS
from shapely.geometry import LineString, MultiLineString
from shapely.ops import linemerge

from toolkit.errors import TrackError

__all__ = ["read_tracks", "validate_tracks", "track_strips"]


def read_tracks(source, *, crs=None, id_column: str = "track_id") -> gpd.GeoDataFrame:
    """Read track centrelines from any vector file geopandas reads.

    Parameters
    ----------
    source : str, path or GeoDataFrame
        A GeoJSON (lon/lat, per the GeoJSON spec), GeoPackage, Shapefile, ...
        of LineString centrelines, or a GeoDataFrame.
    crs : optional
        Reproject the tracks to this CRS (for example ``cube.rio.crs``).
    id_column : str, default "track_id"
        The property holding each track's identifier. Identifiers are kept
        exactly as given, as strings ("07" stays "07").

    Returns
    -------
    geopandas.GeoDataFrame
        Indexed by ``track_id`` (str), one LineString per track, with a
        ``length_m`` column when the CRS is projected.

    Raises
    ------
    TrackError
        The file cannot be read, has no ``track_id`` property, holds empty or
        non-line geometries, duplicate ids, or no CRS.

    Examples
    --------
    >>> import geopandas as gpd
    >>> from shapely.geometry import LineString
    >>> gdf = gpd.GeoDataFrame({"track_id": ["07"]},
    ...                        geometry=[LineString([(0, 0), (100, 0)])], crs="EPSG:32652")
    >>> read_tracks(gdf).index.tolist()
    ['07']
    """
    gdf, ids, name = _read_features(
        source, id_column=id_column, noun="track", features="LineString", error=TrackError
    )
    geoms = []
    for tid, geom in zip(ids, gdf.geometry, strict=True):
        geoms.append(_as_line(geom, tid, name))
    out = _feature_frame(ids, geoms, index="track_id", source_crs=gdf.crs, crs=crs, name=name)
    if out.crs.is_projected:
        out["length_m"] = out.geometry.length * out.crs.axis_info[0].unit_conversion_factor
    return out


def _read_features(source, *, id_column, noun, features, error):
    """Read a vector file (or take a GeoDataFrame) whose features carry a text id.

    Shared by tracks and storage areas: the checks every such input needs (the
    file exists and reads, holds features, has the id property on every feature
    without duplicates, and a CRS), each failing with one line naming the input.
    Returns the frame, the ids as text ("07" stays "07") and the input's name.
    """
    name = _name(source, noun)
    article = "an" if id_column[:1].lower() in "aeiou" else "a"
    if isinstance(source, gpd.GeoDataFrame):
        gdf = source.copy()
        if id_column not in gdf.columns and gdf.index.name == id_column:
            gdf = gdf.reset_index()  # the output of the reader itself
    else:
        path = Path(os.fspath(source))
        if not path.exists():
            raise error(
                f"{name}: {noun}s file not found; expected a vector file of {features}s with "
                f"{article} '{id_column}' property"
            )
        try:
            # Read the id column as text so "07" is not turned into 7.
            gdf = gpd.read_file(path)
            raw = _raw_ids(path, id_column)
            if raw is not None and len(raw) == len(gdf) and id_column in gdf.columns:
                gdf[id_column] = raw
        except Exception as exc:  # noqa: BLE001 - report any reader failure in one line
            raise error(
                f"{name}: cannot be read as a vector file ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                "expected GeoJSON, GeoPackage or another format geopandas reads"
            ) from None
    if len(gdf) == 0:
        raise error(
            f"{name}: holds no {noun}s; expected {features} features with {article} '{id_column}'"
        )
    if id_column not in gdf.columns:
        found = sorted(c for c in gdf.columns if c != "geometry")
        raise error(
            f"{name}: no '{id_column}' property; found {found}; "
            f"add {article} '{id_column}' to every {noun}"
        )
    if gdf.crs is None:
        raise error(f"{name}: has no CRS; GeoJSON is lon/lat (EPSG:4326), set it with set_crs")
    ids = gdf[id_column]
    if ids.isna().any():
        raise error(
            f"{name}: {int(ids.isna().sum())} {noun}(s) have no {id_column}; give every {noun} one"
        )
    ids = ids.map(_id_text)
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise error(f"{name}: duplicate {id_column} {dup}; every {noun} needs its own id")
    return gdf, ids, name


def _feature_frame(ids, geoms, *, index, source_crs, crs, name):
    """Checked features as a frame indexed by their text ids, reprojected to ``crs`` if given.

    Shared by tracks and storage areas; ``attrs["source"]`` names the input.
    """
    out = gpd.GeoDataFrame(
        {index: ids.to_numpy(dtype=object)}, geometry=geoms, crs=source_crs
    ).set_index(index)
    if crs is not None:
        out = out.to_crs(crs)
    out.attrs["source"] = name
    return out


def validate_tracks(tracks: gpd.GeoDataFrame, cube: xr.DataArray, *, name: str | None = None):
    """Reproject tracks to the cube's CRS and check that each one lies on the image.

    A track entirely outside the cube's extent is an error; a track partly
    outside is kept (its outside part is simply never visible, which lowers its
    ``valid_fraction``).

    Returns
    -------
    geopandas.GeoDataFrame
        The tracks in the cube's CRS, with ``length_m``.
    """
    name = name or tracks.attrs.get("source", "tracks")
    crs = cube.rio.crs
    if crs is None:
        raise TrackError(f"{name}: the cube has no CRS, so tracks cannot be placed on it")
    t = tracks.to_crs(crs)
    if not CRS.from_user_input(crs).is_projected:
        raise TrackError(
            f"{name}: the cube's CRS {crs} is not projected; load it with a metric CRS (e.g. UTM)"
        )
    t["length_m"] = t.geometry.length
    xs, ys = cube["x"].values, cube["y"].values
    dx = abs(float(xs[1] - xs[0])) if xs.size > 1 else 1.0
    dy = abs(float(ys[1] - ys[0])) if ys.size > 1 else 1.0
    box = shapely.box(xs.min() - dx / 2, ys.min() - dy / 2, xs.max() + dx / 2, ys.max() + dy / 2)
    outside = [tid for tid, g in t.geometry.items() if not g.intersects(box)]
    if outside:
        raise TrackError(
            f"{name}: track(s) {outside} lie outside every scene (image extent "
            f"{tuple(round(v) for v in box.bounds)} in {crs}); check the tracks' CRS and the scenes"
        )
    t.attrs["source"] = name
    return t


def track_strips(
    cube: xr.DataArray,
    tracks,
    *,
    half_width_m: float = 2.5,
    step_m: float | None = None,
    shifts_m=None,
) -> xr.Dataset:
    """Resample every track into a straight along-track strip, lazily.

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)``, with a projected CRS and, optionally, a boolean
        ``valid`` coordinate ``(time, y, x)`` (from :func:`toolkit.load_cube`).
    tracks : path or GeoDataFrame
        Track centrelines (see :func:`read_tracks`).
    half_width_m : float, default 2.5
        Half the strip width across the track, metres. Yard tracks are 4.5-5.5 m
        apart, so 2.5 m keeps each strip on its own track.
    step_m : float, optional
        Sample spacing along and across, metres. Default: the cube's pixel
        size up to 1 m (at least 0.25 m); half the pixel size (at least 1 m)
        for pixels up to 4 m, so that at 3 m a strip still has samples on
        both sides of the centreline and a car on the neighbouring track,
        blurred into one side, can be told from a car on this track; the
        pixel size beyond 4 m.
    shifts_m : array-like (time, 2) or xarray.Dataset, optional
        Georeferencing error of each scene, metres east and north: how far the
        image content lies from its true place (``shift_x_m``, ``shift_y_m``
        from :func:`toolkit.coregister`). Each scene is sampled that much
        further, so the strips of all scenes line up. Numpy or dask.

    Returns
    -------
    xarray.Dataset
        ``value (time, track, along, across, band)`` float32, bilinear samples;
        ``valid (time, track, along, across)`` bool (all four neighbouring
        pixels valid); coordinates ``along_m``, ``across_m``, ``on_track
        (track, along)`` (False past a track's end: strips are padded to the
        longest track), ``length_m (track)``, and the sample positions
        ``x_sample``/``y_sample (track, along, across)`` in the cube's CRS.
        Lazy when the cube is: each time step is one task reading only the
        window that holds the tracks.

    Examples
    --------
    >>> import numpy as np, xarray as xr, geopandas as gpd
    >>> from shapely.geometry import LineString
    >>> cube = xr.DataArray(np.ones((1, 1, 40, 40), "uint8"), dims=("time", "band", "y", "x"),
    ...     coords={"time": [np.datetime64("2023-10-05")], "band": ["red"],
    ...             "y": 39.5 - np.arange(40.0), "x": 0.5 + np.arange(40.0)}).rio.write_crs(32652)
    >>> t = gpd.GeoDataFrame({"track_id": ["01"]}, geometry=[LineString([(5, 20), (35, 20)])],
    ...                      crs=32652)
    >>> s = track_strips(cube, t)
    >>> s.value.sizes["along"], float(s.value.mean())
    (31, 1.0)
    """
    _check_cube(cube)
    t = validate_tracks(read_tracks(tracks), cube)
    xs = cube["x"].values.astype("float64")
    ys = cube["y"].values.astype("float64")
    res = min(abs(xs[1] - xs[0]), abs(ys[1] - ys[0]))
    step = float(step_m) if step_m is not None else _default_step(res)
    if not np.isfinite(step) or step <= 0:
        raise TrackError(f"step_m must be a positive number of metres, got {step_m!r}")
    across = np.arange(-half_width_m, half_width_m + step / 2, step)
    across = across - across.mean()  # symmetric about the centreline
    lengths = t["length_m"].to_numpy()
    n_along = int(np.floor(lengths.max() / step)) + 1
    along = np.arange(n_along) * step
    n_tr = len(t)
    px = np.full((n_tr, n_along, across.size), np.nan)
    py = np.full_like(px, np.nan)
    on_track = np.zeros((n_tr, n_along), bool)
    for i, geom in enumerate(t.geometry):
        n_i = int(np.floor(geom.length / step)) + 1
        s = along[:n_i]
        cx, cy, nx, ny = _centre_and_normal(geom, s, step)
        px[i, :n_i] = cx[:, None] + across[None, :] * nx[:, None]
        py[i, :n_i] = cy[:, None] + across[None, :] * ny[:, None]
        on_track[i, :n_i] = True

    # Fractional pixel positions; the window holds every sample plus one pixel.
    col = (px - xs[0]) / (xs[1] - xs[0])
    row = (py - ys[0]) / (ys[1] - ys[0])
    finite = np.isfinite(col)
    c0 = int(max(np.floor(np.nanmin(col)) - 1, 0))
    c1 = int(min(np.ceil(np.nanmax(col)) + 2, xs.size))
    r0 = int(max(np.floor(np.nanmin(row)) - 1, 0))
    r1 = int(min(np.ceil(np.nanmax(row)) + 2, ys.size))
    n_time = cube.sizes["time"]
    offsets, pad = _scene_offsets(shifts_m, n_time, xs, ys)
    if pad:
        r0, c0 = max(r0 - pad, 0), max(c0 - pad, 0)
        r1, c1 = min(r1 + pad, ys.size), min(c1 + pad, xs.size)
    coords_rc = np.stack([row - r0, col - c0])  # (2, track, along, across)
    coords_rc[:, ~finite] = np.nan  # sampled as invalid

    window = cube.isel(y=slice(r0, r1), x=slice(c0, c1))
    valid = _valid_of(cube).isel(y=slice(r0, r1), x=slice(c0, c1))
    n_band = cube.sizes["band"]
    data = window.transpose("time", "band", "y", "x").data
    vdata = valid.transpose("time", "y", "x").data
    if isinstance(data, da.Array) or isinstance(vdata, da.Array):
        data = da.asarray(data).rechunk({0: 1, 1: -1, 2: -1, 3: -1})
        vdata = da.asarray(vdata).rechunk({0: 1, 1: -1, 2: -1})
        off = da.asarray(offsets).rechunk((data.chunks[0], 2))
        # the sample positions are one chunk that every scene's task depends on: on a
        # cluster it goes to each worker once, not pickled into every scene's task (4 MB
        # a scene for the default sample's tracks)
        positions = da.from_array(coords_rc, chunks=-1)
        # one task per scene samples it; its value and valid arrays are taken apart
        # without copies, each contiguous (the occupancy step joins them along time)
        pairs = da.blockwise(
            _sample_pair,
            "tkas",
            data,
            "tbyx",
            vdata,
            "tyx",
            off,
            "tz",
            positions,
            "ckas",
            concatenate=True,
            dtype="float32",
            meta=np.empty((0, 0, 0, 0), "float32"),
        )
        value = da.map_blocks(
            operator.getitem,
            pairs,
            0,
            new_axis=4,
            chunks=(*pairs.chunks, (n_band,)),
            dtype="float32",
            meta=np.empty((0, 0, 0, 0, 0), "float32"),
        )
        ok = da.map_blocks(
            operator.getitem, pairs, 1, dtype=bool, meta=np.empty((0, 0, 0, 0), bool)
        )
    else:
        value, ok = _sample_pair(
            np.asarray(data), np.asarray(vdata), np.asarray(offsets), coords_rc=coords_rc
        )

    track_ids = np.asarray(t.index, dtype=object)
    ds = xr.Dataset(
        {
            "value": (("time", "track", "along", "across", "band"), value),
            "valid": (("time", "track", "along", "across"), ok),
        },
        coords={
            "time": cube["time"].values,
            "track": track_ids,
            "along": along,
            "across": across,
            "band": cube["band"].values,
            "along_m": ("along", along),
            "across_m": ("across", across),
            "on_track": (("track", "along"), on_track),
            "length_m": ("track", lengths),
            "x_sample": (("track", "along", "across"), px),
            "y_sample": (("track", "along", "across"), py),
        },
        attrs={
            "step_m": step,
            "half_width_m": float(half_width_m),
            "pixel_size_m": float(res),
            "crs": str(cube.rio.crs),
            "tracks": t.attrs.get("source", "tracks"),
        },
    )
    for extra in ("scene",):
        if extra in cube.coords and cube[extra].dims == ("time",):
            ds = ds.assign_coords({extra: ("time", cube[extra].values)})
    ds["value"].attrs["long_name"] = "image value sampled along the track (bilinear)"
    ds["valid"].attrs["long_name"] = "sample is usable: not nodata, cloud or cloud shadow"
    return ds


# --------------------------------------------------------------------------- helpers


def _default_step(pixel_m: float) -> float:
    """Strip sample spacing for a pixel size: the pixel up to 1 m, half of it up to 4 m.

    Beyond 4 m a car is under two pixels wide and the strip keeps one sample
    per pixel (a single one across, on the centreline).
    """
    if pixel_m <= 1.0:
        return max(pixel_m, 0.25)
    if pixel_m <= 4.0:
        return max(pixel_m / 2.0, 1.0)
    return pixel_m


def _scene_offsets(shifts_m, n_time, xs, ys):
    """Per-scene (row, column) sampling offsets in pixels and the window padding they need."""
    if shifts_m is None:
        return np.zeros((n_time, 2)), 0
    dx, dy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
    lazy_pad = int(np.ceil(_MAX_SHIFT_M / min(abs(dx), abs(dy)))) + 1  # shifts not known yet
    if isinstance(shifts_m, xr.Dataset):
        if "shift_x_m" not in shifts_m or "shift_y_m" not in shifts_m:
            raise TrackError("shifts_m: expected a Dataset with shift_x_m and shift_y_m")
        east, north = shifts_m["shift_x_m"].data, shifts_m["shift_y_m"].data
        if isinstance(east, da.Array) or isinstance(north, da.Array):
            # lazy shifts (coregister's): one small task per scene block, not a matrix
            # product's chain of them
            east, north = da.asarray(east), da.asarray(north)
            for part in (east, north):
                _check_shift_pairs((*part.shape, 2), n_time)
            offsets = da.map_blocks(
                _offsets_block,
                east,
                north.rechunk(east.chunks),
                dx=dx,
                dy=dy,
                new_axis=1,
                chunks=(east.chunks[0], (2,)),
                dtype="float64",
                meta=np.empty((0, 0), "float64"),
            )
            return offsets, lazy_pad
        shifts_m = xr.concat([shifts_m["shift_x_m"], shifts_m["shift_y_m"]], "xy").T.data
    sh = shifts_m if isinstance(shifts_m, da.Array) else np.asarray(shifts_m, dtype="float64")
    _check_shift_pairs(sh.shape, n_time)
    # content moved east by s lies s / pixel-width columns further (rows count southwards)
    scale = np.array([[0.0, 1.0 / dx], [1.0 / dy, 0.0]])
    offsets = sh @ scale  # (time, [row, col]): row = north / dy, col = east / dx
    if isinstance(sh, da.Array):
        pad = lazy_pad
    else:
        if not np.isfinite(sh).all():
            raise TrackError("shifts_m: shifts must be finite numbers of metres")
        pad = int(np.ceil(np.abs(offsets).max())) if offsets.size else 0
    return offsets, pad


def _check_shift_pairs(shape, n_time):
    """Shifts come as one (east, north) pair per scene."""
    if tuple(shape) != (n_time, 2):
        raise TrackError(
            f"shifts_m: expected {n_time} (east, north) pairs in metres, one per scene; "
            f"got shape {tuple(shape)}"
        )


# the largest georeferencing error the strips are padded for when shifts are lazy
_MAX_SHIFT_M = 12.0


def _offsets_block(east, north, *, dx, dy):
    """(row, column) offsets in pixels of scenes shifted ``east`` and ``north`` metres: the
    numbers of ``[east, north] @ [[0, 1/dx], [1/dy, 0]]`` for finite shifts."""
    return np.stack([north * (1.0 / dy), east * (1.0 / dx)], axis=-1)


def _sample_pair(img, valid, offsets, coords_rc):
    """Bilinear samples of one or more time steps, and their validity.

    ``img`` (time, band, y, x), ``valid`` (time, y, x), ``offsets`` (time, 2): each
    scene's (row, column) sampling offset in pixels. Returns ``value`` (time,
    *pts, band) float32 and ``valid`` (time, *pts) bool, both contiguous.
    """
    from toolkit._fast import bilinear_samples

    n_t, n_b = img.shape[0], img.shape[1]
    pts = coords_rc.shape[1:]
    value = np.empty((n_t, *pts, n_b), "float32")
    ok = np.empty((n_t, *pts), bool)
    rows0 = coords_rc[0].reshape(-1)
    cols0 = coords_rc[1].reshape(-1)
    for k in range(n_t):
        off = np.asarray(offsets[k], "float64")
        bad = ~np.asarray(valid[k], bool)
        bilinear_samples(
            np.ascontiguousarray(img[k]),
            bad,
            rows0 + off[0],
            cols0 + off[1],
            value[k].reshape(-1, n_b),
            ok[k].reshape(-1),
        )
    return value, ok


def _valid_of(cube: xr.DataArray) -> xr.DataArray:
    if "valid" in cube.coords:
        return cube["valid"]
    nodata = cube.rio.nodata if cube.rio.nodata is not None else cube.attrs.get("_FillValue")
    if nodata is None:
        if np.issubdtype(cube.dtype, np.floating):
            return cube.notnull().all("band")
        return xr.ones_like(cube.isel(band=0), dtype=bool)
    return (cube != nodata).all("band") & cube.notnull().all("band")


def _check_cube(cube) -> None:
    from toolkit.errors import InputError

    if not isinstance(cube, xr.DataArray):
        raise InputError(f"expected a cube DataArray (time, band, y, x), got {type(cube).__name__}")
    missing = {"time", "band", "y", "x"} - set(cube.dims)
    if missing:
        raise InputError(
            f"cube has dims {cube.dims}; expected (time, band, y, x), missing {sorted(missing)}"
        )
    if cube.sizes["x"] < 2 or cube.sizes["y"] < 2:
        raise InputError("cube is smaller than 2 x 2 pixels; nothing to sample")


def _centre_and_normal(geom: LineString, s: np.ndarray, step: float):
    """Centreline points and unit left normals at along-track distances ``s``."""
    pts = shapely.line_interpolate_point(geom, s)
    cx, cy = shapely.get_x(pts), shapely.get_y(pts)
    h = max(step, 0.5)
    a = shapely.line_interpolate_point(geom, np.clip(s - h, 0, geom.length))
    b = shapely.line_interpolate_point(geom, np.clip(s + h, 0, geom.length))
    tx, ty = shapely.get_x(b) - shapely.get_x(a), shapely.get_y(b) - shapely.get_y(a)
    norm = np.hypot(tx, ty)
    norm[norm == 0] = 1.0
    tx, ty = tx / norm, ty / norm
    return cx, cy, -ty, tx


def _as_line(geom, tid: str, name: str) -> LineString:
    if geom is None or geom.is_empty:
        raise TrackError(f"{name}: track {tid!r} has an empty geometry; expected a LineString")
    if isinstance(geom, MultiLineString):
        merged = linemerge(geom)
        if isinstance(merged, LineString):
            geom = merged
        else:
            raise TrackError(
                f"{name}: track {tid!r} is a MultiLineString of {len(geom.geoms)} disconnected "
                "parts; split it into separate tracks with their own ids"
            )
    if not isinstance(geom, LineString):
        raise TrackError(
            f"{name}: track {tid!r} is a {geom.geom_type}; expected a LineString centreline"
        )
    if geom.length == 0:
        raise TrackError(f"{name}: track {tid!r} has zero length")
    return LineString(np.asarray(geom.coords)[:, :2])


def _id_text(v) -> str:
    if isinstance(v, float) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _raw_ids(path: Path, column: str):
    """Track ids exactly as written in a GeoJSON file (strings stay strings)."""
    if path.suffix.lower() not in (".geojson", ".json"):
        return None
    import json

    try:
        features = json.loads(path.read_text()).get("features", [])
    except (ValueError, AttributeError):
        return None
    vals = [(f.get("properties") or {}).get(column) for f in features]
    return pd.Series([None if v is None else _id_text(v) for v in vals], dtype=object)


def _name(source, noun: str = "track") -> str:
    if isinstance(source, gpd.GeoDataFrame):
        return source.attrs.get("source", f"{noun}s (GeoDataFrame)")
    return os.fspath(source)
