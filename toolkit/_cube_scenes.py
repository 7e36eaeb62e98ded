"""Scene discovery and validation for :func:`toolkit.cube.load_cube` (private).

Everything here runs eagerly at the public boundary, before a dask graph is
built: sources are expanded into files, each file is opened once to check that
it is a complete, georeferenced, dated raster, and its metadata is captured in
small picklable records that the lazy block readers use later.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

from toolkit.errors import InputError, SceneError

__all__: list[str] = []

_RASTER_SUFFIXES = (".tif", ".tiff")
_MASK_SUFFIX = ".mask.tif"
_REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "az://", "ftp://", "/vsi")
_GLOB_CHARS = ("*", "?", "[")
# Above this many TIFF blocks only the last ones (where a cut file fails) are checked.
_MAX_BLOCKS_CHECKED = 4096


@dataclass(frozen=True)
class _Raster:
    """Geometry of one raster file (a scene or its usable-data mask)."""

    path: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    nodata: float | None
    # True when GDAL has a per-dataset mask (internal mask band or alpha) and no nodata.
    dataset_mask: bool = False


@dataclass(frozen=True)
class _Scene:
    """One validated scene: where it is, when it was taken and what it holds."""

    raster: _Raster
    name: str
    time: np.datetime64
    count: int
    dtype: str
    bands: tuple[str, ...]
    bands_described: bool
    units: str
    mask: _Raster | None
    label: str


@dataclass(frozen=True)
class _Candidate:
    """A file to inspect, possibly with metadata already known from STAC."""

    path: str
    time: np.datetime64 | None = None
    mask_path: str | None = None
    label: str | None = None


# --------------------------------------------------------------------------- discovery


def _is_remote(href: str) -> bool:
    return href.lower().startswith(_REMOTE_PREFIXES)


def _is_scene_file(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith("."):  # hidden files: debris of an interrupted write, editor locks
        return False
    return name.endswith(_RASTER_SUFFIXES) and not (
        name.endswith(_MASK_SUFFIX) or name.endswith(".mask.tiff")
    )


def _expand_sources(sources: Any, *, masks: str | None) -> list[_Candidate]:
    """Turn the user's ``sources`` into a flat, de-duplicated list of candidates."""
    items: list[Any]
    if isinstance(sources, (str, os.PathLike)):
        items = [sources]
    elif _is_pystac(sources):
        items = [sources]
    elif isinstance(sources, Iterable):
        items = list(sources)
    else:
        raise InputError(
            f"sources: expected a path, folder, glob pattern, list of those or STAC items, "
            f"got {type(sources).__name__}; pass e.g. 'scenes/*.tif'"
        )
    if not items:
        raise SceneError(
            "sources: got an empty list; expected at least one scene file, folder, glob "
            "pattern or STAC item; pass e.g. 'scenes/*.tif'"
        )
    out: list[_Candidate] = []
    for item in items:
        out.extend(_expand_one(item, masks=masks))
    seen: set[str] = set()
    unique: list[_Candidate] = []
    for cand in out:
        key = os.path.realpath(cand.path)
        if key not in seen:
            seen.add(key)
            unique.append(cand)
    return unique


def _expand_one(item: Any, *, masks: str | None) -> list[_Candidate]:
    if _is_pystac(item):
        return _from_pystac(item, masks=masks)
    if not isinstance(item, (str, os.PathLike)):
        raise InputError(
            f"sources: expected paths, glob patterns or STAC items, got an element of type "
            f"{type(item).__name__}; pass file paths as str or pathlib.Path"
        )
    text = os.fspath(item)
    if _is_remote(text):
        raise SceneError(
            f"{text}: is a remote address; the toolkit reads local files only and makes no "
            f"network requests; download the scene and pass the local path"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_scene_file(p))
        if not files:
            raise SceneError(
                f"{path}: folder holds no scene files; expected *.tif or *.tiff (mask "
                f"sidecars *.mask.tif do not count); check the folder or pass a glob pattern"
            )
        return [_Candidate(str(p)) for p in files]
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _from_stac_json(path, masks=masks)
        return [_Candidate(str(path))]
    if any(ch in text for ch in _GLOB_CHARS):
        matched = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        files = [p for p in matched if p.is_file() and _is_scene_file(p)]
        if not files:
            raise SceneError(
                f"{text}: glob pattern matched no scene files (found {len(matched)} paths, "
                f"none *.tif/*.tiff scenes); expected at least one GeoTIFF; check the pattern"
            )
        return [_Candidate(str(p)) for p in files]
    raise SceneError(
        f"{text}: no such file or folder; expected an existing scene file, folder or glob "
        f"pattern; check the path"
    )


def _is_pystac(obj: Any) -> bool:
    try:
        import pystac
    except ImportError:  # pragma: no cover - pystac is a dependency
        return False
    return isinstance(obj, (pystac.Item, pystac.ItemCollection, pystac.Catalog))


def _from_stac_json(path: Path, *, masks: str | None) -> list[_Candidate]:
    import json

    import pystac

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SceneError(
            f"{path}: is not readable JSON ({err}); expected a STAC Item, ItemCollection or "
            f"Collection; check the file"
        ) from None
    kind = doc.get("type") if isinstance(doc, dict) else None
    try:
        if kind == "FeatureCollection":
            obj: Any = pystac.ItemCollection.from_file(str(path))
        else:
            obj = pystac.read_file(str(path))
    except Exception as err:  # pystac raises many kinds of errors on bad documents
        raise SceneError(
            f"{path}: is not a valid STAC document ({type(err).__name__}: {err}); expected a "
            f"STAC Item, ItemCollection or Collection with local assets; check the file"
        ) from None
    return _from_pystac(obj, masks=masks)


def _from_pystac(obj: Any, *, masks: str | None) -> list[_Candidate]:
    import pystac

    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.ItemCollection):
        items = list(obj.items)
    else:  # Catalog or Collection
        items = list(obj.get_items(recursive=True))
    if not items:
        raise SceneError(
            f"STAC {getattr(obj, 'id', type(obj).__name__)}: holds no items; expected at "
            f"least one item with a local GeoTIFF asset; check the catalog"
        )
    return [_candidate_from_item(item, masks=masks) for item in items]


_DATA_KEYS = ("data", "image", "visual", "analytic", "ortho_analytic_4b", "ortho_visual")
_MASK_KEYS = ("mask", "udm", "udm2", "ortho_udm2", "cloud_mask", "usable_data_mask")
_SKIP_ROLES = {"thumbnail", "overview", "metadata"}


def _asset_href(item: Any, key: str, asset: Any) -> str:
    href = asset.get_absolute_href() or asset.href
    if _is_remote(href):
        raise SceneError(
            f"STAC item {item.id} asset {key!r}: href {href} is remote; the toolkit reads "
            f"local assets only and makes no network requests; download the asset and set "
            f"its href to the local file"
        )
    return href


def _candidate_from_item(item: Any, *, masks: str | None) -> _Candidate:
    rasters: dict[str, Any] = {}
    mask_key = None
    for key, asset in item.assets.items():
        roles = set(asset.roles or ())
        media = (asset.media_type or "").lower()
        is_tiff = "tiff" in media or asset.href.lower().split("?")[0].endswith(_RASTER_SUFFIXES)
        if not is_tiff or roles & _SKIP_ROLES:
            continue
        if key.lower() in _MASK_KEYS or roles & {"cloud", "snow-ice", "data-mask"}:
            mask_key = key
        else:
            rasters[key] = asset
    if not rasters:
        raise SceneError(
            f"STAC item {item.id}: has no GeoTIFF data asset (assets: "
            f"{', '.join(item.assets) or 'none'}); expected one asset with a .tif href or "
            f"image/tiff media type; add the asset"
        )
    if len(rasters) == 1:
        key = next(iter(rasters))
    else:
        preferred = [k for k in rasters if "data" in (rasters[k].roles or ())]
        preferred = preferred or [k for k in _DATA_KEYS if k in rasters]
        if len(preferred) < 1:
            raise SceneError(
                f"STAC item {item.id}: has several GeoTIFF assets ({', '.join(rasters)}) and "
                f"none with role 'data'; expected one multi-band data asset; give the asset "
                f"to load the role 'data'"
            )
        key = preferred[0]
    path = _asset_href(item, key, rasters[key])
    when = item.datetime or item.common_metadata.start_datetime
    if when is not None:
        _check_time_range(when, f"STAC item {item.id}", "fix the item's datetime")
    time = None if when is None else _to_datetime64(when)
    mask_path = None
    if masks == "auto" and mask_key is not None:
        mask_path = _asset_href(item, mask_key, item.assets[mask_key])
    return _Candidate(path, time=time, mask_path=mask_path, label=f"STAC item {item.id}")


# --------------------------------------------------------------------------- time


_TAG_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
_NAME_PATTERNS = (
    # 20231005T021500, 2023-10-05T02-15-00, 20231005_021500 (PlanetScope)
    re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[T_](\d{2})[:-]?(\d{2})[:-]?(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),  # 2023-10-05
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),  # 20231005, NAIP ..._20090818
)


def _to_datetime64(when: datetime) -> np.datetime64:
    if when.tzinfo is not None:
        from datetime import UTC

        when = when.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(when.isoformat(), "ns")


def _time_from_tag(value: str) -> datetime | None:
    text = value.strip().rstrip("\x00").strip()
    for fmt in _TAG_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _time_from_name(name: str) -> datetime | None:
    for pattern in _NAME_PATTERNS:
        for match in pattern.finditer(name):
            parts = [int(p) for p in match.groups()]
            if not 1900 <= parts[0] <= 2100:
                continue
            try:
                return datetime(*parts)
            except ValueError:
                continue
    return None


# datetime64[ns] spans 1677-09-21 .. 2262-04-11; imagery starts long after 1900.
_FIRST_TIME = datetime(1900, 1, 1)
_LAST_TIME = datetime(2262, 4, 11)


def _check_time_range(when: datetime, where: str, fix: str) -> None:
    naive = when.replace(tzinfo=None)
    if not _FIRST_TIME <= naive < _LAST_TIME:
        raise SceneError(
            f"{where}: acquisition date {naive.isoformat()} is outside the supported range "
            f"1900-01-01 .. 2262-04-10 (datetime64[ns] time axis); expected the date the scene "
            f"was taken; {fix}"
        )


def _scene_time(tags: dict[str, str], path: Path) -> np.datetime64:
    tag = tags.get("TIFFTAG_DATETIME")
    if tag:
        parsed = _time_from_tag(tag)
        if parsed is not None:
            _check_time_range(
                parsed, str(path), "fix the tag with gdal_edit.py -mo TIFFTAG_DATETIME=..."
            )
            return _to_datetime64(parsed)
    parsed = _time_from_name(path.name)
    if parsed is not None:
        return _to_datetime64(parsed)
    found = f"TIFFTAG_DATETIME={tag!r} (unparseable)" if tag else "no TIFFTAG_DATETIME tag"
    raise SceneError(
        f"{path}: has no acquisition date ({found} and no date in the file name); expected "
        f"TIFFTAG_DATETIME 'YYYY:MM:DD HH:MM:SS' or a name like scene_20231005T021500.tif; "
        f"set the tag (gdal_edit.py -mo TIFFTAG_DATETIME=...) or rename the file"
    )


# --------------------------------------------------------------------------- inspection


def _open_error(path: str, err: Exception, what: str = "scene") -> SceneError:
    msg = str(err).replace(str(path), "").strip(" :") or type(err).__name__
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        magic = b""
    if magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return SceneError(
            f"{path}: starts like a TIFF but cannot be read as a raster {what} ({msg}); it is "
            f"probably truncated or corrupt; expected a complete GeoTIFF/COG; re-download or "
            f"re-export the file"
        )
    return SceneError(
        f"{path}: cannot be read as a raster {what} ({msg}); expected a GeoTIFF/COG that GDAL "
        f"can open; re-export or re-download the file"
    )


def _check_complete(ds: Any, path: str) -> None:
    """Raise if the file is cut short: a block's bytes would lie past the end of the file."""
    size = os.path.getsize(path)
    if ds.driver == "GTiff":
        bh, bw = ds.block_shapes[0]
        nby, nbx = math.ceil(ds.height / bh), math.ceil(ds.width / bw)
        separate = ds.count > 1 and str(ds.interleaving).lower().endswith("band")
        bands = range(1, ds.count + 1) if separate else (1,)
        blocks = [(j, i) for i in range(nby) for j in range(nbx)]
        if len(blocks) * len(bands) > _MAX_BLOCKS_CHECKED:
            blocks = blocks[:1] + blocks[-(_MAX_BLOCKS_CHECKED // len(bands)) :]
        end = 0
        for b in bands:
            for j, i in blocks:
                off = ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=b)
                nbytes = ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=b)
                if off is None or nbytes is None:
                    break
                end = max(end, int(off) + int(nbytes))
        if end > size:
            raise SceneError(
                f"{path}: is truncated (image data runs to byte {end} but the file has "
                f"{size} bytes); expected a complete GeoTIFF; re-download or re-export the file"
            )
        if end > 0:
            return
    # Other drivers (or no block table): read the last pixel, which touches the last block.
    try:
        ds.read(1, window=Window(ds.width - 1, ds.height - 1, 1, 1))
    except rasterio.errors.RasterioError as err:
        raise _open_error(path, err) from None


def _band_labels(ds: Any) -> tuple[tuple[str, ...], bool]:
    desc = ds.descriptions
    if all(d and d.strip() for d in desc) and len(set(desc)) == len(desc):
        return tuple(d.strip() for d in desc), True
    interp = ds.colorinterp
    names = tuple(c.name for c in interp)
    generic = {ColorInterp.undefined}
    if ds.count > 1:
        generic.add(ColorInterp.gray)
    if not any(c in generic for c in interp) and len(set(names)) == len(names):
        return names, False
    return tuple(f"b{i}" for i in range(1, ds.count + 1)), False


def _raster_geometry(ds: Any, path: str, crs_wkt: str | None = None) -> _Raster:
    t = ds.transform
    nodata = ds.nodata
    flags = ds.mask_flag_enums[0] if ds.count else []
    dataset_mask = nodata is None and (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags)
    return _Raster(
        path=str(path),
        crs_wkt=crs_wkt if crs_wkt is not None else ds.crs.to_wkt(),
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        width=int(ds.width),
        height=int(ds.height),
        nodata=None if nodata is None else float(nodata),
        dataset_mask=bool(dataset_mask),
    )


@contextlib.contextmanager
def _open_quiet(path: str) -> Iterator[Any]:
    """Open with rasterio; a missing georeference is reported by us, not as a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(path)
    try:
        yield ds
    finally:
        ds.close()


def _inspect(cand: _Candidate, *, masks: str | None) -> _Scene:
    """Open one candidate file and return its validated metadata."""
    path = cand.path
    label = cand.label or path
    if not os.path.exists(path):
        raise SceneError(
            f"{label}: file {path} does not exist; expected a local scene file; check the "
            f"path or the STAC asset href"
        )
    try:
        with _open_quiet(path) as ds:
            if ds.width == 0 or ds.height == 0 or ds.count == 0:
                raise SceneError(
                    f"{path}: is an empty raster ({ds.count} bands of {ds.width}x{ds.height} "
                    f"pixels); expected at least one band with pixels; re-export the scene"
                )
            if ds.crs is None:
                raise SceneError(
                    f"{path}: has no CRS; expected a georeferenced GeoTIFF; set it with "
                    f"rioxarray's rio.write_crs(...) before saving or gdal_edit.py -a_srs EPSG:..."
                )
            t = ds.transform
            if t.is_identity or t.determinant == 0:
                raise SceneError(
                    f"{path}: has no geotransform (identity pixel grid); expected a "
                    f"georeferenced GeoTIFF; set it with rio.write_transform(...) or gdal_edit.py "
                    f"-a_ullr"
                )
            dtypes = set(ds.dtypes)
            if len(dtypes) > 1:
                raise SceneError(
                    f"{path}: bands have different dtypes ({', '.join(ds.dtypes)}); expected one "
                    f"dtype for all bands; re-export with a single data type"
                )
            _check_complete(ds, path)
            time = cand.time if cand.time is not None else _scene_time(ds.tags(), Path(path))
            bands, described = _band_labels(ds)
            units = next((u for u in ds.units if u), "DN")
            raster = _raster_geometry(ds, path)
    except rasterio.errors.RasterioError as err:
        raise _open_error(path, err) from None
    mask = None
    if masks == "auto":
        mask_path = cand.mask_path or _sidecar(path)
        if mask_path is not None:
            mask = _inspect_mask(mask_path, raster)
    return _Scene(
        raster=raster,
        name=Path(path).name,
        time=time,
        count=len(bands),
        dtype=next(iter(dtypes)),
        bands=bands,
        bands_described=described,
        units=units,
        mask=mask,
        label=label,
    )


def _sidecar(path: str) -> str | None:
    p = Path(path)
    stem = p.name
    for suffix in (".tiff", ".tif", ".TIFF", ".TIF"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    candidate = p.with_name(stem + _MASK_SUFFIX)
    return str(candidate) if candidate.is_file() else None


def _inspect_mask(path: str, scene: _Raster) -> _Raster:
    try:
        with _open_quiet(path) as ds:
            if ds.width == 0 or ds.height == 0 or ds.count == 0:
                raise SceneError(
                    f"{path}: usable-data mask is empty; expected a uint8 mask on the scene's "
                    f"grid; re-export the mask or load with masks=None"
                )
            _check_complete(ds, path)
            if ds.crs is None:
                if (ds.width, ds.height) != (scene.width, scene.height):
                    raise SceneError(
                        f"{path}: usable-data mask has no CRS and a different size "
                        f"({ds.width}x{ds.height}) from its scene ({scene.width}x"
                        f"{scene.height}); expected a mask on the scene's grid; fix the mask "
                        f"or load with masks=None"
                    )
                geometry = _raster_geometry(ds, path, crs_wkt=scene.crs_wkt)
                return _Raster(
                    path=geometry.path,
                    crs_wkt=scene.crs_wkt,
                    transform=scene.transform,
                    width=scene.width,
                    height=scene.height,
                    nodata=255.0,
                )
            geometry = _raster_geometry(ds, path)
    except rasterio.errors.RasterioError as err:
        raise _open_error(path, err, what="usable-data mask") from None
    return _Raster(
        path=geometry.path,
        crs_wkt=geometry.crs_wkt,
        transform=geometry.transform,
        width=geometry.width,
        height=geometry.height,
        nodata=255.0,
    )
