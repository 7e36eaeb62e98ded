"""Occupancy of storage areas: covered ground, container equivalents, per area and date.

Storage yards, warehouse aprons and loading platforms are watched the way
tracks are: for every scene, the share of an area's visible ground that is
covered (containers, tarped cargo, crates), the covered area in square
metres, and the number of 20-foot container footprints it amounts to.

Method (see ``Notes`` of :func:`area_occupancy`):

1. Every pixel inside an area is compared, in log space, with the *ground
   appearance* of that area in that scene: the most common colour of its
   visible pixels (a mode found by counting neighbours in colour space).
   Open ground between stacks (aisles, margins) is the largest single
   appearance even in a full storage yard, so the reference needs no empty
   scene: an area that is never empty, a season, a change of light or a
   snow cover change it from scene to scene, and the mode follows.
2. A pixel that is darker than the ground by about the same factor in every
   band is ground in a shadow (of a building, a stack, a lorry) and is not
   cargo; the colour shift a shadow may carry grows with its depth, so a
   slightly darker pixel of another hue (a grey tarp on grey concrete) is
   cargo unless it is the blurred edge of a nearby patch (less than half-way
   from the ground to the patch's colour). In a snow scene (a window that is
   near-neutral almost everywhere) a pixel on the line from the area's bare
   ground to the scene's snow is snowy ground. In a scene with clouds, thin
   haze and the soft edges of cloud shadows that the usable-data mask missed
   move the ground reference locally: every pixel is fitted as the ground
   dimmed and blended towards the clouds' colour, and the fit is smoothed
   over about 25 m, so that haze (smooth) moves the reference and cargo
   (compact, sharp-edged) does not. A
   pixel is covered when its colour distance to the ground exceeds
   ``threshold`` times the scene's noise and it is not explained that way,
   or when it holds the fine texture of a tarp or a stack's edges where the
   ground is flat (near clouds and in snow, texture is measured after a
   high-pass filter, so smooth gradients do not count). At pixels of 0.75 m
   or finer, a wrinkled tarp's shallow folds count too where the texture
   fills a patch at least five pixels across away from strongly coloured
   patches (a shadow's texture is a thin line along its edge). At pixels of
   1 m or finer, where a tarp spans several pixels, a grey tarp on grey
   concrete shows by its hue: averaged over 3 x 3 pixels, a small shift of
   hue consistent over a patch stands out against the noise of the area's
   own ground (not the window's, which also holds fields and verges), and
   a shallow shadow carries almost none.
3. Counts are shares of the area's visible pixels (at 1 m or finer, a
   blurred rim pixel of a coloured patch counts by its share of the
   contrast of the patch's core, as linear mixing gives it; where a 2.4 m
   patch spans under three pixels, the pixels around every patch count by
   their share of its colour too, so the blur is counted whole); the interval
   comes from a stricter and a looser reading of the same pixels and from
   the covered patches eroded and dilated by one pixel (the blur of stack
   edges).
"""

from __future__ import annotations

import os

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

from toolkit.errors import InputError

__all__ = [
    "read_areas",
    "area_occupancy",
    "areas_to_dataframe",
    "write_areas_csv",
    "AREA_CSV_COLUMNS",
    "TEU_FOOTPRINT_M2",
]

#: Footprint of a 20-foot container (6.1 x 2.4 m), square metres.
TEU_FOOTPRINT_M2 = 6.1 * 2.4

#: Columns of the ``toolkit areas`` CSV, in order.
AREA_CSV_COLUMNS = (
    "time",
    "area_id",
    "covered_fraction",
    "covered_m2",
    "covered_m2_low",
    "covered_m2_high",
    "container_equivalents",
    "container_equivalents_low",
    "container_equivalents_high",
    "valid_fraction",
    "area_m2",
)

_STATS = ("n_in", "n_valid", "n_cov", "n_low", "n_high", "n_ero", "n_dil")
# relative widening of the interval below and above (see Notes of area_occupancy)
_REL_LOW, _REL_HIGH = 0.2, 0.35
_CROSS = ndimage.generate_binary_structure(2, 1)
_SQUARE = np.ones((3, 3), bool)
_WIDE_TEX = 0.7
# a shadow's shift of hue per unit of darkening (log units; blue sky light in the shade)
_SHADOW_HUE = 0.1
# shallow darkening: brighter than this share of the ground (a grey tarp, a tarp's folds,
# not a shadow, which keeps a third to a half of the light)
_SHALLOW = 0.8
# a patch whose hue (3 x 3 mean, noise units) exceeds this is not shadowed ground, and
# beyond _HUE_K it is covered (a grey tarp on grey concrete)
_HUE_EXPLAIN = 2.5
_HUE_K = 5.5
# the largest pixel (m) at which a tarp (2.4 m wide) or a container has a core pixel
_RESOLVED_PX = 1.0
_DISK2 = np.add.outer(np.arange(-2, 3) ** 2, np.arange(-2, 3) ** 2) <= 4


# --------------------------------------------------------------------------- reading


def read_areas(source, *, crs=None, id_column: str = "area_id") -> gpd.GeoDataFrame:
    """Read storage areas (polygons) from any vector file geopandas reads.

    Parameters
    ----------
    source : str, path or GeoDataFrame
        A GeoJSON (lon/lat, per the GeoJSON spec), GeoPackage, Shapefile, ...
        of Polygon or MultiPolygon areas of interest (storage yards, warehouse
        aprons, loading platforms), or a GeoDataFrame.
    crs : optional
        Reproject the areas to this CRS (for example ``cube.rio.crs``).
    id_column : str, default "area_id"
        The property holding each area's identifier, kept exactly as given,
        as a string ("07" stays "07").

    Returns
    -------
    geopandas.GeoDataFrame
        Indexed by ``area_id`` (str), one (Multi)Polygon per area, with an
        ``area_m2`` column when the CRS is projected.

    Raises
    ------
    toolkit.errors.InputError
        The file is missing or unreadable, holds no areas, has no ``area_id``
        property, duplicate or missing ids, empty or non-polygon geometries,
        or no CRS.

    Examples
    --------
    >>> import geopandas as gpd
    >>> from shapely.geometry import box
    >>> gdf = gpd.GeoDataFrame({"area_id": ["07"]}, geometry=[box(0, 0, 100, 40)],
    ...                        crs="EPSG:32652")
    >>> a = read_areas(gdf)
    >>> a.index.tolist(), float(a["area_m2"].iloc[0])
    (['07'], 4000.0)
    """
    from toolkit.tracks import _feature_frame, _read_features

    gdf, ids, name = _read_features(
        source, id_column=id_column, noun="area", features="Polygon", error=InputError
    )
    geoms = []
    for aid, geom in zip(ids, gdf.geometry, strict=True):
        if geom is None or geom.is_empty:
            raise InputError(f"{name}: area {aid!r} has an empty geometry; expected a Polygon")
        if not isinstance(geom, Polygon | MultiPolygon):
            raise InputError(
                f"{name}: area {aid!r} is a {geom.geom_type}; expected a Polygon outline "
                "(buffer lines or points into polygons first)"
            )
        if geom.area == 0:
            raise InputError(f"{name}: area {aid!r} has zero area; expected a Polygon outline")
        geoms.append(geom)
    out = _feature_frame(ids, geoms, index="area_id", source_crs=gdf.crs, crs=crs, name=name)
    if out.crs.is_projected:
        out["area_m2"] = out.geometry.area * out.crs.axis_info[0].unit_conversion_factor ** 2
    return out


def _place_areas(areas: gpd.GeoDataFrame, cube: xr.DataArray, name: str) -> gpd.GeoDataFrame:
    crs = cube.rio.crs
    if crs is None:
        raise InputError(f"{name}: the cube has no CRS, so areas cannot be placed on it")
    if not CRS.from_user_input(crs).is_projected:
        raise InputError(
            f"{name}: the cube's CRS {crs} is not projected; load it with a metric CRS (e.g. UTM)"
        )
    a = areas.to_crs(crs)
    a["area_m2"] = a.geometry.area
    import shapely

    xs, ys = cube["x"].values, cube["y"].values
    dx = abs(float(xs[1] - xs[0]))
    dy = abs(float(ys[1] - ys[0]))
    box = shapely.box(xs.min() - dx / 2, ys.min() - dy / 2, xs.max() + dx / 2, ys.max() + dy / 2)
    outside = [aid for aid, g in a.geometry.items() if not g.intersects(box)]
    if outside:
        raise InputError(
            f"{name}: area(s) {outside} lie outside every scene (image extent "
            f"{tuple(round(v) for v in box.bounds)} in {crs}); check the areas' CRS and the scenes"
        )
    a.attrs["source"] = name
    return a


# --------------------------------------------------------------------------- occupancy


def area_occupancy(
    cube: xr.DataArray,
    areas,
    *,
    threshold: float = 6.0,
    texture_threshold: float = 2.2,
    shadow_tolerance: float = 0.12,
    min_patch_m2: float = 4.0,
    cloud_margin_m: float = 25.0,
    teu_footprint_m2: float = TEU_FOOTPRINT_M2,
) -> xr.Dataset:
    """Covered ground and container equivalents per storage area and date.

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)`` with a projected CRS, from
        :func:`toolkit.load_cube` (its ``valid`` coordinate masks nodata,
        cloud, cloud shadow and thick haze).
    areas : path or GeoDataFrame
        Polygons with an ``area_id`` (see :func:`read_areas`).
    threshold : float, default 6.0
        A pixel is covered when its colour distance to the area's ground
        exceeds this many times the scene's noise (and is not explained as
        ground in a shadow or under snow).
    texture_threshold : float, default 2.2
        A pixel whose colour is ground-like is still covered when the local
        contrast around it (3 x 3 pixels, in noise units) exceeds this and
        the patch of such pixels is at least ``min_patch_m2``: grey tarps
        and stack edges have texture, bare ground is flat.
    shadow_tolerance : float, default 0.12
        Largest spread between bands (log ratio to the ground) of a darker
        pixel that is still read as ground in a shadow.
    min_patch_m2 : float, default 4.0
        Covered patches smaller than this are dropped (a 20-foot container
        covers 14.6 m2).
    cloud_margin_m : float, default 25.0
        Within this distance of masked pixels (cloud, cloud shadow, nodata)
        the thresholds are tripled: usable-data masks miss the thin haze at
        cloud edges.
    teu_footprint_m2 : float, default 14.64
        Footprint of one container equivalent (a 20-foot container, 6.1 x
        2.4 m).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, area)``; coordinates ``area`` (the ids, str), ``area_m2``
        (polygon area, m2) and the cube's ``scene``. Variables:

        - ``covered_fraction`` (1): share of the area's visible part covered.
        - ``covered_m2`` (m2), ``covered_m2_low``, ``covered_m2_high``: covered
          area seen in the visible part, with a low/high interval.
        - ``container_equivalents`` (1), ``_low``, ``_high``: ``covered_m2``
          in 20-foot container footprints. Seen from above, a stack counts
          once per footprint, whatever its height; tarped cargo counts by
          its footprint too.
        - ``valid_fraction`` (1): share of the area visible (not nodata,
          cloud, cloud shadow or thick haze).

        ``attrs`` record the method, its parameters and the toolkit version.
        Lazy when the cube is: one task per scene, reading only the window
        that holds the areas.

    Raises
    ------
    toolkit.errors.InputError
        The cube is not ``(time, band, y, x)``, has no projected CRS; the areas
        cannot be read or lie outside every scene; a parameter is out of range.

    Notes
    -----
    The ground reference is estimated per scene and area, as the mode of the
    visible pixels' colours (log values; the neighbour count within a radius
    of four noise units or 5 %), because open ground (aisles, margins) is the
    largest single appearance of a storage area even when it is full; so no
    empty scene, and no scene of the same season, is needed. The noise is the
    robust spread of differences between neighbouring pixels: of the area's
    own ground pixels at 1 m or finer (unless clouds are about, whose missed
    haze varies more), else of the whole window. Pixels darker
    than the ground by a similar factor in every band are shadowed ground
    (their band spread below ``shadow_tolerance``, and below a quarter of
    their darkening plus two noise units; a pixel between the two limits is
    ground only within two pixels of a covered patch and less than half-way,
    in linear units, from the ground to that patch's colour: the blurred
    edge of a stack, not a grey tarp). At pixels of 1 m or finer the
    colour is also averaged over 3 x 3 pixels of shallow darkening or
    brightening (within a factor 0.8 of the ground, more than one pixel from
    a strongly coloured patch); where its hue (the bands less their mean, in
    noise units of that average, from the area's ground noise), less a tenth
    of its darkening (the hue of a shadow), exceeds 2.5, over a patch two
    pixels across, the pixels are not shadowed ground, nor a blurred rim
    unless next to a strongly coloured patch; beyond 5.5 they are covered
    (a grey tarp on grey concrete). In a snow scene (the
    window near-neutral almost everywhere), pixels on the line from the
    area's bare ground to the scene's snow (the brightest tenth of the
    window) are ground. In a scene with masked clouds, the reference becomes
    local: each pixel is fitted, in linear units, as ``a * ground + b *
    cloud`` (the cloud colour from the brightest masked pixels), and the
    running median of ``a`` and ``b`` over about 25 m of well-fitted pixels
    gives the ground seen through thin haze or a soft cloud-shadow edge.
    At pixels of 0.75 m or finer, texture above 0.7 ``texture_threshold`` on
    shallow darkening (above 0.8 of the ground's brightness) counts where it
    survives an opening by a disk of radius two pixels and lies more than two
    pixels from a strongly coloured patch (wrinkled tarps; not in snow, but
    in the loose reading of the interval). At pixels of 1 m or finer, a rim
    pixel of a coloured patch, or a pixel less than half-way to it (the blur
    in a narrow gap between two patches), counts by its linear contrast
    relative to the brightest-contrast pixel within half a container's width
    (1.2 m; the footprint at linear mixing, not inflated by the blur). At
    pixels coarser than 0.8 m (a 2.4 m patch under three pixels across, so
    mostly blurred edge), every rim pixel within reach of a coloured patch
    counts by that share (texture alone also finds the blur), and each pixel
    just outside a patch, unless a deep shadow, counts by the projection of
    its colour on the patch's (relative linear units), where mixing explains
    it within two noise units; negative shares are kept, so noise averages
    out. Covered pixels are cleaned of patches smaller than
    ``min_patch_m2``. The interval runs from the smaller of the reading at
    twice the thresholds (less 20 %) and the covered patches eroded by one
    pixel, to the larger of the reading at half the thresholds (plus 35 %)
    and the patches dilated by one pixel (the blur of stack edges at the
    pixel size), widened by half a percent of the visible area (the noise of
    the count).

    Examples
    --------
    >>> import datetime as dt, tempfile
    >>> import toolkit
    >>> site = toolkit.simulate_site(tempfile.mkdtemp() + "/s", resolution_m=1.0,
    ...                              dates=[dt.datetime(2023, 10, 5, 2, 4, 30)])
    >>> cube = toolkit.load_cube(site.path / "scenes")
    >>> occ = toolkit.area_occupancy(cube, site.areas_path).compute()
    >>> occ.covered_fraction.dims, occ.area.values.tolist()
    (('time', 'area'), ['warehouse_apron', 'container_yard'])
    >>> bool((occ.container_equivalents > 40).all())
    True
    """
    from toolkit.tracks import _check_cube, _valid_of

    _check_cube(cube)
    for pname, v in (
        ("threshold", threshold),
        ("texture_threshold", texture_threshold),
        ("shadow_tolerance", shadow_tolerance),
        ("teu_footprint_m2", teu_footprint_m2),
    ):
        if not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
            raise InputError(f"{pname}={v!r}: expected a positive number")
    for pname, v in (("min_patch_m2", min_patch_m2), ("cloud_margin_m", cloud_margin_m)):
        if not (isinstance(v, int | float) and np.isfinite(v) and v >= 0):
            raise InputError(f"{pname}={v!r}: expected a non-negative number")
    gdf = areas if isinstance(areas, gpd.GeoDataFrame) else read_areas(areas)
    if isinstance(areas, gpd.GeoDataFrame):
        gdf = read_areas(areas)
    name = gdf.attrs.get("source", "areas")
    a = _place_areas(gdf, cube, name)

    xs = cube["x"].values.astype("float64")
    ys = cube["y"].values.astype("float64")
    dx, dy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
    px = min(abs(dx), abs(dy))
    # the window: every area plus a margin of 3 pixels (neighbourhood filters)
    minx, miny, maxx, maxy = a.total_bounds
    c0 = int(max(np.floor((min(minx, maxx) - xs[0]) / dx if dx > 0 else 0) - 3, 0))
    cols = sorted(((minx - xs[0]) / dx, (maxx - xs[0]) / dx))
    rows = sorted(((miny - ys[0]) / dy, (maxy - ys[0]) / dy))
    c0 = int(max(np.floor(cols[0]) - 3, 0))
    c1 = int(min(np.ceil(cols[1]) + 4, xs.size))
    r0 = int(max(np.floor(rows[0]) - 3, 0))
    r1 = int(min(np.ceil(rows[1]) + 4, ys.size))
    from affine import Affine
    from rasterio.features import geometry_mask

    transform = Affine(dx, 0.0, xs[c0] - dx / 2, 0.0, dy, ys[r0] - dy / 2)
    shape = (r1 - r0, c1 - c0)
    inside = np.stack(
        [
            ~geometry_mask([g], out_shape=shape, transform=transform, all_touched=False)
            for g in a.geometry
        ]
    )
    empty = [aid for aid, m in zip(a.index, inside, strict=True) if not m.any()]
    if empty:
        raise InputError(
            f"{name}: area(s) {empty} hold no pixel centre of the cube (smaller than a pixel or "
            "off the image); draw them larger or load finer scenes"
        )

    window = cube.isel(y=slice(r0, r1), x=slice(c0, c1)).transpose("time", "band", "y", "x")
    valid = _valid_of(cube).isel(y=slice(r0, r1), x=slice(c0, c1)).transpose("time", "y", "x")
    n_area = inside.shape[0]
    params = {
        "threshold": float(threshold),
        "texture_threshold": float(texture_threshold),
        "shadow_tolerance": float(shadow_tolerance),
        "min_patch_px": max(1, int(round(float(min_patch_m2) / (px * px)))),
        "pixel_m": px,
        "cloud_margin_px": float(cloud_margin_m) / px,
    }
    data, vdata = window.data, valid.data
    if isinstance(data, da.Array) or isinstance(vdata, da.Array):
        data = da.asarray(data).rechunk({0: 1, 1: -1, 2: -1, 3: -1})
        vdata = da.asarray(vdata).rechunk({0: 1, 1: -1, 2: -1})
        stats = da.map_blocks(
            _scene_block,
            data,
            vdata[:, None],
            inside=inside,
            params=params,
            dtype="float64",
            chunks=(data.chunks[0], (n_area,), (len(_STATS),)),
            drop_axis=[2, 3],
            new_axis=[2],
            meta=np.empty((0, 0, 0), "float64"),
        )
    else:
        stats = _scene_block(
            np.asarray(data), np.asarray(vdata)[:, None], inside=inside, params=params
        )

    n_in, n_valid, n_cov, n_low, n_high, n_ero, n_dil = (stats[..., k] for k in range(len(_STATS)))
    area_m2 = a["area_m2"].to_numpy(dtype="float64")
    pix_m2 = area_m2 / inside.sum(axis=(1, 2))  # polygon area per pixel centre inside
    seen = n_valid > 0
    frac = _where(seen, n_cov / _fmax(n_valid, 1), np.nan)
    m2 = _where(seen, n_cov * pix_m2, np.nan)
    # the interval: the stricter and looser readings, widened by the relative error measured
    # on simulated scenes (grey tarps on grey ground are missed), or the patches one pixel
    # smaller and larger (stack edges blur over about a pixel) when that is wider, and a
    # floor of half a percent of the visible area
    floor = 0.005 * n_valid * pix_m2
    n_lo = _fmin(_fmin(n_low, n_cov) * (1 - _REL_LOW), n_ero)
    n_hi = _fmax(_fmax(n_high, n_cov) * (1 + _REL_HIGH), n_dil)
    lo = _where(seen, _fmax(n_lo * pix_m2 - floor, 0.0), np.nan)
    hi = _where(seen, n_hi * pix_m2 + floor, np.nan)
    teu = float(teu_footprint_m2)
    ds = xr.Dataset(
        {
            "covered_fraction": (("time", "area"), frac),
            "covered_m2": (("time", "area"), m2),
            "covered_m2_low": (("time", "area"), lo),
            "covered_m2_high": (("time", "area"), hi),
            "container_equivalents": (("time", "area"), m2 / teu),
            "container_equivalents_low": (("time", "area"), lo / teu),
            "container_equivalents_high": (("time", "area"), hi / teu),
            "valid_fraction": (("time", "area"), n_valid / n_in),
        },
        coords={
            "time": cube["time"].values,
            "area": np.asarray(a.index, dtype=object),
            "area_m2": ("area", area_m2),
        },
    )
    if "scene" in cube.coords and cube["scene"].dims == ("time",):
        ds = ds.assign_coords(scene=("time", cube["scene"].values))
    units = {
        "covered_fraction": ("1", "share of the area's visible part covered by cargo"),
        "covered_m2": ("m2", "covered area seen in the visible part"),
        "covered_m2_low": ("m2", "low end of the covered area"),
        "covered_m2_high": ("m2", "high end of the covered area"),
        "container_equivalents": (
            "1",
            f"covered area in 20-foot container footprints ({teu:.2f} m2); stacks count once",
        ),
        "container_equivalents_low": ("1", "low end of the container equivalents"),
        "container_equivalents_high": ("1", "high end of the container equivalents"),
        "valid_fraction": ("1", "share of the area visible: not nodata, cloud or cloud shadow"),
    }
    for k, (u, long) in units.items():
        ds[k].attrs.update(units=u, long_name=long)
    ds["area_m2"].attrs.update(units="m2", long_name="area of the polygon")
    from toolkit.occupancy import _version

    ds.attrs.update(
        {
            "method": (
                "per-scene ground mode, local haze reference, shadow and snow explanation, "
                "texture, linear rim share (toolkit.areas)"
            ),
            "threshold": float(threshold),
            "texture_threshold": float(texture_threshold),
            "shadow_tolerance": float(shadow_tolerance),
            "min_patch_m2": float(min_patch_m2),
            "cloud_margin_m": float(cloud_margin_m),
            "teu_footprint_m2": teu,
            "pixel_size_m": px,
            "crs": str(cube.rio.crs),
            "areas": name,
            "toolkit_version": _version(),
        }
    )
    return ds


def _where(cond, a, b):
    if isinstance(cond, da.Array):
        return da.where(cond, a, b)
    return np.where(cond, a, b)


def _fmin(a, b):
    if isinstance(a, da.Array):
        return da.fmin(a, b)
    return np.fmin(a, b)


def _fmax(a, b):
    if isinstance(a, da.Array):
        return da.fmax(a, b)
    return np.fmax(a, b)


def areas_to_dataframe(occupancy: xr.Dataset) -> pd.DataFrame:
    """The area occupancy as a table with the ``toolkit areas`` CSV columns.

    One row per scene and area, sorted by time then ``area_id`` (text).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({k: (("time", "area"), [[0.5]]) for k in AREA_CSV_COLUMNS[2:-1]},
    ...                 coords={"time": [np.datetime64("2023-10-05T02:04:30")],
    ...                         "area": ["07"], "area_m2": ("area", [100.0])})
    >>> areas_to_dataframe(ds)[["time", "area_id", "area_m2"]].values.tolist()
    [['2023-10-05T02:04:30', '07', 100.0]]
    """
    missing = [c for c in AREA_CSV_COLUMNS[2:-1] if c not in occupancy]
    if missing:
        raise InputError(
            f"area occupancy Dataset lacks {missing}; make it with toolkit.area_occupancy"
        )
    ds = occupancy[list(AREA_CSV_COLUMNS[2:-1])]
    df = ds.reset_coords(drop=True).to_dataframe().reset_index()
    df["area_m2"] = np.asarray(occupancy["area_m2"].values, float)[
        pd.Index(occupancy["area"].values).get_indexer(df["area"])
    ]
    df = df.rename(columns={"area": "area_id"})
    df["time"] = pd.to_datetime(df["time"]).dt.strftime("%Y-%m-%dT%H:%M:%S")
    df["area_id"] = df["area_id"].astype(str)
    for c in ("covered_fraction", "valid_fraction"):
        df[c] = df[c].round(4)
    for c in ("covered_m2", "covered_m2_low", "covered_m2_high", "area_m2"):
        df[c] = df[c].round(1)
    for c in ("container_equivalents", "container_equivalents_low", "container_equivalents_high"):
        df[c] = df[c].round(1)
    return df[list(AREA_CSV_COLUMNS)].sort_values(["time", "area_id"], kind="stable")


def write_areas_csv(occupancy: xr.Dataset, path: str | os.PathLike) -> str:
    """Write the ``toolkit areas`` CSV atomically (complete or absent, never half-written).

    Examples
    --------
    >>> import tempfile, numpy as np, xarray as xr
    >>> ds = xr.Dataset({k: (("time", "area"), [[1.0]]) for k in AREA_CSV_COLUMNS[2:-1]},
    ...                 coords={"time": [np.datetime64("2023-10-05")], "area": ["a"],
    ...                         "area_m2": ("area", [10.0])})
    >>> path = write_areas_csv(ds, tempfile.mkdtemp() + "/areas.csv")
    >>> open(path).readline().split(",")[:3]
    ['time', 'area_id', 'covered_fraction']
    """
    from toolkit._io import atomic_path

    df = areas_to_dataframe(occupancy)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, na_rep="")
    return os.fspath(path)


# --------------------------------------------------------------------------- kernel


def _noise(logv: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per-band noise (log units): robust spread of differences of horizontal neighbours."""
    both = ok[:, 1:] & ok[:, :-1]
    out = np.empty(logv.shape[0])
    for b in range(logv.shape[0]):
        d = (logv[b][:, 1:] - logv[b][:, :-1])[both]
        if d.size < 20:
            out[b] = 0.02
            continue
        out[b] = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0)
    return np.maximum(out, 0.004)


def _hue_shift(eb, pool, sig_a):
    """Shift of hue against the ground, averaged over 3 x 3 pixels, in units of its noise.

    ``eb`` (band, y, x) is the log ratio to the ground; it is averaged over the
    ``pool`` pixels of every 3 x 3 neighbourhood. Returns the norm of that
    average's hue (the bands less their mean), in noise units of an average of
    that many pixels of the area's ground (``sig_a``, per band), less
    ``_SHADOW_HUE`` times its darkening in the same units (the hue a shadow may
    carry); NaN where the neighbourhood holds no pool pixel.
    """
    wts = ndimage.uniform_filter(pool.astype("float32"), 3)
    ebs = ndimage.uniform_filter(np.where(pool, eb, 0.0).astype("float32"), size=(1, 3, 3))
    ebs /= np.maximum(wts, 1e-6)
    mean_s = ebs.mean(axis=0)
    root_n = np.sqrt(np.maximum(wts * 9, 1.0))
    # the hue: what is left once the brightness (the mean over bands) is taken out
    chroma = np.sqrt((((ebs - mean_s) / sig_a[:, None, None]) ** 2).sum(axis=0)) * root_n
    allowance = _SHADOW_HUE * np.abs(np.minimum(mean_s, 0.0)) / sig_a.mean() * root_n
    return np.where(wts > 0, chroma - allowance, np.nan)


def _ground_noise(logv, sel, g, radius, sigma):
    """Per-band noise of an area's ground (log units), else ``sigma`` (the window's).

    The robust spread of differences between horizontal and vertical neighbours
    that are both visible area pixels of ground colour (within ``radius`` of the
    ground ``g``).
    """
    z = ((logv - g[:, None, None]) / radius[:, None, None]) ** 2
    gr = sel & (z.sum(axis=0) < 1.0)
    out = np.empty(logv.shape[0])
    h = gr[:, 1:] & gr[:, :-1]
    v = gr[1:, :] & gr[:-1, :]
    if h.sum() + v.sum() < 50:
        return sigma
    step = max(1, int(h.sum() + v.sum()) // 20000)  # a robust spread needs no more
    for b in range(logv.shape[0]):
        d = np.concatenate(
            [(logv[b][:, 1:] - logv[b][:, :-1])[h], (logv[b][1:, :] - logv[b][:-1, :])[v]]
        )[::step]
        out[b] = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0)
    return np.clip(out, 0.004, sigma)


def _mode(vals: np.ndarray, radius: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The most common colour of ``vals`` (band, n): the seed with most neighbours, refined."""
    n = vals.shape[1]
    sub = vals[:, rng.choice(n, size=min(n, 3000), replace=False)] if n > 3000 else vals
    z = sub / radius[:, None]
    seeds = z[:, :: max(1, z.shape[1] // 150)]
    d2 = ((z[:, None, :] - seeds[:, :, None]) ** 2).sum(axis=0)  # (seed, n)
    best = int(np.argmax((d2 < 1.0).sum(axis=1)))
    centre = seeds[:, best]
    for _ in range(3):
        near = ((z - centre[:, None]) ** 2).sum(axis=0) < 1.0
        if near.sum() < 3:
            break
        centre = np.median(z[:, near], axis=1)
    return centre * radius


def _scene_block(img, valid, *, inside, params):
    """Per-area pixel counts of one or more scenes: (time, area, stats)."""
    n_t = img.shape[0]
    n_a = inside.shape[0]
    out = np.zeros((n_t, n_a, len(_STATS)), "float64")
    for k in range(n_t):
        out[k] = _scene_stats(img[k], valid[k, 0].astype(bool), inside, params)
    return out


def _scene_stats(img, ok, inside, params, masks=None):
    thr = params["threshold"]
    tex_thr = params["texture_threshold"]
    tol = params["shadow_tolerance"]
    min_px = params["min_patch_px"]
    n_b = img.shape[0]
    raw = img.astype("float32")
    logv = np.log(np.maximum(raw, 1e-6 if img.dtype.kind == "f" else 1.0))
    finite = np.isfinite(logv).all(axis=0)
    ok = ok & finite
    sigma = _noise(logv, ok)
    rng = np.random.default_rng(0)
    # usable-data masks miss the thin haze at cloud edges: be stricter near masked pixels
    near_mask = np.ones(ok.shape, "float32")
    if not ok.all() and params["cloud_margin_px"] > 0:
        dist_bad = ndimage.distance_transform_edt(ok)
        near_mask = np.where(dist_bad < params["cloud_margin_px"], 3.0, 1.0).astype("float32")
    # the colour of the scene's clouds (masked pixels that hold data): thin haze the mask
    # missed blends the ground towards it
    lin = np.exp(logv.astype("float64"))
    hazy = ~ok & finite & (raw.min(axis=0) > (0.0 if img.dtype.kind == "f" else 1.0))
    masked_cols = lin[:, hazy]
    snow = _scene_snow(lin, ok)
    clear_window = bool(ok.all())
    res = np.zeros((inside.shape[0], len(_STATS)))
    # a patch touching masked pixels is not eroded on that side
    ok_in_w = ndimage.binary_erosion(ok, _CROSS, border_value=1)
    lin_w, logv_w, ok_w, near_w = lin, logv, ok, near_mask
    for i, m_w in enumerate(inside):
        n_in = int(m_w.sum())
        res[i, 0], res[i, 1] = n_in, int((m_w & ok_w).sum())
        if res[i, 1] < 10:
            continue
        # work on the area's bounding box and a margin for the neighbourhood filters
        rows, cols = np.flatnonzero(m_w.any(axis=1)), np.flatnonzero(m_w.any(axis=0))
        box = (
            slice(max(rows[0] - 8, 0), rows[-1] + 9),
            slice(max(cols[0] - 8, 0), cols[-1] + 9),
        )
        lin, logv = lin_w[(slice(None), *box)], logv_w[(slice(None), *box)]
        ok, near_mask, ok_in, m = ok_w[box], near_w[box], ok_in_w[box], m_w[box]
        sel = m & ok
        n_valid = int(sel.sum())
        vals = logv[:, sel].astype("float64")
        radius = np.maximum(4.0 * sigma, 0.05)
        g = _mode(vals, radius, rng)
        # the mode may be ground in the shadows of tall stacks: lit ground is then a large
        # cluster brighter by one factor in every band (white containers are a small one)
        ev = vals - g[:, None]
        me = ev.mean(axis=0)
        lit = (me > np.log(1.6)) & (me < np.log(6.0)) & (np.abs(ev - me).max(axis=0) < tol)
        n_g = int((((ev / radius[:, None]) ** 2).sum(axis=0) < 1.0).sum())
        if lit.sum() >= max(0.3 * n_g, 0.05 * n_valid):
            g = _mode(vals[:, lit], radius, rng)
        # the noise of the area's own ground (the window's also holds fields and verges)
        sig_a = _ground_noise(logv, sel, g, radius, sigma)
        ref = np.broadcast_to(g[:, None, None], logv.shape)
        # the scene's clouds: masked pixels that hold data and are clearly brighter than
        # the ground (a mask that is offset from its clouds also masks clear ground)
        bright = masked_cols.mean(axis=0)
        cloudy = masked_cols[:, bright > 1.15 * np.exp(g).mean()]
        hazy = cloudy.shape[1] >= 20
        if hazy:
            top = cloudy[:, cloudy.mean(axis=0) >= np.median(cloudy.mean(axis=0))]
            ref = _haze_reference(lin, sel, g, np.median(top, axis=1), sigma, params)
        eb = logv - ref  # log ratio to the (local) ground, whole window
        # where a tarp spans several pixels, noise units are those of the area's own ground
        # (not with clouds about: the haze the mask missed varies more than the noise)
        sig_s = sig_a if params["pixel_m"] <= _RESOLVED_PX and not hazy else sigma
        e = eb / sig_s[:, None, None]  # noise units
        dist = np.sqrt((e**2).mean(axis=0))
        mean_e = eb.mean(axis=0)
        spread = np.abs(eb - mean_e).max(axis=0)
        # a shadow darkens every band by about one factor; the deeper the shadow, the more
        # colour shift (blue sky light) it may carry: a slightly darker pixel of another hue
        # (a grey tarp on grey concrete) is not ground in a shadow
        darker = (mean_e < 0) & (mean_e > np.log(0.15))
        allowed = np.minimum(tol, 0.25 * np.abs(mean_e)) + 2 * sig_s.max()
        # a pixel a little darker with a small shift of hue is either the blurred edge of a
        # patch (a stack's colour mixed into the ground or its shadow) or faint cargo of its
        # own (a grey tarp on grey concrete): within two pixels of a patch it is ground when
        # less than half-way (in linear units) from the ground to the patch's core colour
        lax = darker & (spread < tol + 3 * sig_s.max())
        rl = np.exp(ref)
        d_lin = np.sqrt((((lin - rl) / rl) ** 2).mean(axis=0))
        strong = (dist > thr * near_mask) & ~lax & ok
        core = ndimage.maximum_filter(np.where(strong, d_lin, 0.0), size=5)
        cand = darker & (spread < allowed) & ok
        if params["pixel_m"] <= _RESOLVED_PX:
            # where a tarp spans several pixels, its hue shows once averaged over 3 x 3
            # pixels of shallow darkening or brightening (not next to a strongly coloured
            # patch, whose blur tints its rim), measured against the noise of the area's own
            # ground: a grey tarp's small shift of hue is consistent over the tarp, the noise
            # is not, and a shallow shadow carries almost none. A patch (two pixels across)
            # of such hue is not ground in a shadow, nor the blurred rim of a patch unless
            # right next to it
            pool = ok & (np.abs(mean_e) < -np.log(_SHALLOW))
            hue = _hue_shift(eb, pool & ~ndimage.binary_dilation(strong, _SQUARE), sig_s)
            hued = _patches(pool & (hue >= _HUE_EXPLAIN))
            core1 = ndimage.maximum_filter(np.where(strong, d_lin, 0.0), size=3)
        else:
            hue = None
            hued = np.zeros_like(cand)
            core1 = core
        shadow = cand & ~hued
        shadow |= lax & (d_lin < 0.5 * np.where(hued, core1, core))
        explained = shadow
        snowy = None if snow is None else _snow_ground(lin, sel, g, sigma, rng, snow)
        if snowy is not None:
            explained = explained | snowy
        # local contrast (texture) on ground-like pixels
        lum = logv.mean(axis=0) - ref.mean(axis=0)
        lum_ok = np.where(ok, lum, 0.0)
        if clear_window and snowy is None:
            mu = ndimage.uniform_filter(lum_ok, 3)
            var = ndimage.uniform_filter(lum_ok**2, 3) - mu**2
        else:
            # near clouds and in snow, high-pass first: the soft edge of a cloud's shadow, a
            # haze gradient or a snow drift is smooth, a tarp's wrinkles and a stack's edges
            # are not
            hp = lum_ok - ndimage.uniform_filter(lum_ok, 3)
            var = ndimage.uniform_filter(hp**2, 3)
        local = np.sqrt(np.maximum(var, 0.0)) / np.sqrt((sigma**2).mean() / n_b)
        # colours close to the ground's (a grey tarp on grey concrete) stand out once the
        # noise is averaged over 3 x 3 pixels; the pixel itself must lean the same way
        es = ndimage.uniform_filter(np.where(ok, e, 0.0), size=(1, 3, 3))
        es /= np.maximum(ndimage.uniform_filter(ok.astype("float64"), 3), 1e-6)
        dist_s = np.sqrt((es**2).mean(axis=0)) * 3.0
        fine = params["pixel_m"] <= 0.75
        near_strong = ndimage.binary_dilation(strong, _DISK2) if fine else None
        counts = []
        for f in (1.0, 2.0, 0.5):
            cov = (dist > thr * f * near_mask) & ~explained
            cov |= (dist_s > thr * f * near_mask) & (dist > thr * f / 3.0) & ~explained
            tex_any = local > tex_thr * f * near_mask
            tex = tex_any & ~explained
            if hue is not None:
                # a patch of clear, consistent hue shift: a grey tarp on grey concrete
                faint = _patches(pool & (hue >= _HUE_K * f * near_mask)) & ~explained
                tex |= faint
            if fine and (snowy is None or f < 1.0):
                # wrinkled tarps: their folds are shallow shadows, but the texture fills the
                # whole tarp (at least 5 pixels across), where a shadow's texture is a thin
                # line along its edges; away from strongly coloured patches, whose blurred
                # edges and shadows make texture of their own
                wide_tex = local > _WIDE_TEX * tex_thr * f * near_mask
                # (only shallow folds: the narrow shadow of a low tarp is all edge)
                wide = ndimage.binary_opening(wide_tex & (mean_e > np.log(_SHALLOW)), _DISK2)
                tex |= wide & ~near_strong
            cov = (cov | tex) & ok
            cov = _drop_small(cov, min_px)
            if f == 1.0 and params["pixel_m"] <= _RESOLVED_PX:
                # blurred edges: a rim pixel of a coloured patch counts by its share of the
                # contrast of the patch's core (linear mixing), so the blur does not inflate
                # the footprint; only where pixels are small enough for a patch to have a
                # pure core (a container or a tarp is 2.4 m wide)
                colour = (dist > thr * near_mask) & cov
                # (the core is within half a container's width, 1.2 m, of the rim pixel)
                reach = 2 * max(1, int(round(1.2 / params["pixel_m"]))) + 1
                core_d = ndimage.maximum_filter(np.where(colour, d_lin, 0.0), size=reach)
                rim = cov & ~ndimage.binary_erosion(cov, _SQUARE)
                share = d_lin / np.maximum(core_d, 1e-12)
                # (and so does a pixel less than half-way to it: the blur in a narrow gap
                # between two patches, which joins them)
                rim |= share < 0.5
                # where a 2.4 m patch spans under three pixels, most of it is blurred
                # edge: every rim pixel next to a coloured patch counts by its share
                # (texture alone finds the blur of a stack as well as the stack), and the
                # pixels around a patch count by their share of its colour, so that the
                # blur is counted whole, neither inflated nor cut at a threshold (not
                # pixels of a deep shadow, which mixing does not explain)
                narrow = hue is not None and params["pixel_m"] > 0.8
                blur = colour | ~faint if narrow else colour
                share = np.where(rim & blur & (core_d > 0), np.clip(share, 0.0, 1.0), 1.0)
                n_cov = float(share[cov & sel].sum())
                if narrow:
                    ring = ndimage.binary_dilation(cov, _SQUARE) & ~cov & sel
                    ring &= ~explained | (mean_e > np.log(_SHALLOW))
                    n_cov += float(_edge_share((lin - rl) / rl, cov, ring, sig_s).sum())
                counts.append(n_cov)
            else:
                counts.append(int((cov & sel).sum()))
            if masks is not None:
                full = np.zeros(m_w.shape, bool)
                full[box] = cov & sel
                masks.append(full)
            if f == 1.0:
                # the blur of patch edges: one pixel in or out around every patch
                ero = ndimage.binary_erosion(cov, _CROSS) | (cov & ~ok_in)
                dil = ndimage.binary_dilation(cov, _CROSS) & ok
                edges = [int((ero & sel).sum()), int((dil & sel).sum())]
        res[i, 2], res[i, 3], res[i, 4] = counts
        res[i, 5], res[i, 6] = edges
    return res


def _haze_reference(lin, sel, g, cloud, sigma, params):
    """Ground seen through thin haze and soft cloud shadows the mask missed (log, per pixel).

    Every visible pixel is fitted, in linear units, as ``a * ground + b * cloud`` (dimmed
    by a cloud's shadow, blended towards the cloud's colour); the fitted ``a`` and ``b`` of
    the pixels that the model explains are smoothed with a running median over about
    25 m, so that haze, which varies over tens of metres, moves the reference and cargo,
    compact and sharp-edged, does not.
    """
    n_b = lin.shape[0]
    gl = np.exp(g)
    # normal equations of the two-parameter fit, per pixel
    # (a small ridge towards a = 1, b = 0 keeps the fit stable when the ground and the
    # clouds are both near-neutral, so nearly parallel)
    lam = 0.05
    gg, gc, cc = float(gl @ gl), float(gl @ cloud), float(cloud @ cloud)
    gg_r, cc_r = gg * (1 + lam), cc * (1 + lam)
    det = gg_r * cc_r - gc * gc
    vg = np.tensordot(gl, lin, axes=(0, 0)) + lam * gg
    vc = np.tensordot(cloud, lin, axes=(0, 0))
    a = (cc_r * vg - gc * vc) / det
    b = (gg_r * vc - gc * vg) / det
    fit = a[None] * gl[:, None, None] + b[None] * cloud[:, None, None]
    resid = np.sqrt((((lin - fit) / (lin * sigma[:, None, None])) ** 2).mean(axis=0))
    good = sel & (resid < 3.0) & (a > 0.2) & (a < 1.6) & (b > -0.5) & (b < 1.0)
    if good.sum() < 10:
        return np.broadcast_to(g[:, None, None], lin.shape)
    block = max(1, int(round(4.0 / params["pixel_m"])))
    fields = []
    for par in (a, b):
        f = _block_median(np.where(good, par, np.nan), block)
        # blocks with no usable pixel take the nearest block's value
        miss = ~np.isfinite(f)
        if miss.all():
            return np.broadcast_to(g[:, None, None], lin.shape)
        if miss.any():
            idx = ndimage.distance_transform_edt(miss, return_distances=False, return_indices=True)
            f = f[tuple(idx)]
        size = max(3, int(round(25.0 / (block * params["pixel_m"]))) | 1)
        f = ndimage.median_filter(f, size=size, mode="nearest")
        f = np.repeat(np.repeat(f, block, axis=0), block, axis=1)[: lin.shape[1], : lin.shape[2]]
        fields.append(f)
    a_s, b_s = fields
    ref = a_s[None] * gl[:, None, None] + b_s[None] * cloud[:, None, None]
    del n_b
    return np.log(np.maximum(ref, 1e-6))


def _block_median(x: np.ndarray, block: int) -> np.ndarray:
    """Median of the finite values in ``block`` x ``block`` tiles (NaN where none)."""
    if block == 1:
        return x.copy()
    h, w = x.shape
    hp, wp = -(-h // block) * block, -(-w // block) * block
    pad = np.full((hp, wp), np.nan)
    pad[:h, :w] = x
    tiles = pad.reshape(hp // block, block, wp // block, block).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(hp // block, wp // block, block * block)
    out = np.full(tiles.shape[:2], np.nan)
    has = np.isfinite(tiles).any(axis=-1)
    if has.any():
        out[has] = np.nanmedian(tiles[has], axis=-1)
    return out


def _scene_snow(lin, ok):
    """The scene's snow colour (linear, per band), or None when the scene has no snow.

    A snow scene is recognised by its window (areas, margins, fields) being
    near-neutral almost everywhere: at least 85 % of visible pixels with a band
    spread below 0.15 in log units (0.2 with four bands), where fields in leaf
    or bare soil are coloured. The snow colour is the median of the brightest
    tenth of the neutral pixels.
    """
    vis = lin[:, ok]
    if vis.shape[1] < 50:
        return None
    spread = np.log(vis.max(axis=0) / np.maximum(vis.min(axis=0), 1e-6))
    neutral = spread < (0.15 if lin.shape[0] <= 3 else 0.2)
    if neutral.mean() < 0.85:
        return None
    bright = vis.mean(axis=0)
    top = neutral & (bright >= np.quantile(bright, 0.9))
    return np.median(vis[:, top], axis=1)


def _snow_ground(lin, sel, g, sigma, rng, snow):
    """Ground partly under snow: pixels on the line from the bare ground to the scene's snow.

    The bare end is the most common colour of the area's pixels clearly darker
    than its ground on the line from the ground to the snow (patchy snow leaves
    the ground showing), else the ground itself. Pixels on the line (within
    three noise units), from a little below the bare end to the snow, are snowy
    ground. Returns None when the snow is not clearly brighter than the ground.
    """
    gl = np.exp(g)
    vals = lin[:, sel]
    seg = snow - gl
    ss = float(seg @ seg)
    bare = gl
    if ss > 0:
        tau = seg @ (vals - gl[:, None]) / ss
        dark = tau < -0.3
        if dark.sum() >= max(10, 0.1 * vals.shape[1]):
            bare = np.exp(_mode(np.log(vals[:, dark]), np.maximum(4.0 * sigma, 0.05), rng))
    seg = snow - bare
    ss = float(seg @ seg)
    if ss <= 0 or snow.mean() < 1.15 * bare.mean():
        return None
    tau = np.tensordot(seg, lin - bare[:, None, None], axes=(0, 0)) / ss
    fit = bare[:, None, None] + np.clip(tau, 0.0, 1.0)[None] * seg[:, None, None]
    resid = np.sqrt((((lin - fit) / (np.maximum(fit, 1e-6) * sigma[:, None, None])) ** 2).mean(0))
    return (tau > -0.3) & (tau < 1.1) & (resid < 3.0)


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    if min_px <= 1 or not mask.any():
        return mask
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[lab]


def _edge_share(rel, patch, ring, sig):
    """Share of a patch's colour in the pixels around it (linear mixing), at most 1.

    ``rel`` (band, y, x) is the difference to the ground relative to it, in
    linear units. The patch colour near every pixel is the mean of ``rel`` over
    the ``patch`` pixels of its 3 x 3 neighbourhood; a ``ring`` pixel counts by
    the projection of its own colour on that colour, where what mixing leaves
    unexplained (a shadow, another colour) stays within two noise units (``sig``,
    log units, about relative). Negative shares (noise on bare ground) are kept,
    so that the noise averages out rather than adding up.
    """
    wts = ndimage.uniform_filter(patch.astype("float64"), 3)
    pc = ndimage.uniform_filter(np.where(patch, rel, 0.0), size=(1, 3, 3))
    pc /= np.maximum(wts, 1e-6)
    norm = (pc**2).sum(axis=0)
    share = np.clip((rel * pc).sum(axis=0) / np.maximum(norm, 1e-12), -1.0, 1.0)
    resid = np.sqrt(((rel - share * pc) ** 2).mean(axis=0)) / sig.max()
    use = ring & (wts > 0) & (norm > 0) & (resid < 2.0)
    return np.where(use, share, 0.0)


def _patches(mask: np.ndarray) -> np.ndarray:
    """``mask`` opened by 2 x 2 pixels: a tarp is at least two pixels across, a tinted rim
    is a line. (The union of the 2 x 2 squares inside ``mask``, as ``binary_opening``.)"""
    sq = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    out = np.zeros_like(mask)
    out[:-1, :-1] |= sq
    out[1:, :-1] |= sq
    out[:-1, 1:] |= sq
    out[1:, 1:] |= sq
    return out
