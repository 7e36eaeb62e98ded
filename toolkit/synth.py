"""Deterministic simulator of a Tumangang-like rail yard (SYNTHETIC sample data).

Real very-high-resolution scenes of the Tumangang rail facility cannot be
redistributed, so the toolkit ships a simulator of a made-up yard that looks
like it: ten tracks (one with a curve, one leaving another through a turnout),
a road, a warehouse and storage areas with containers and tarped cargo. Its
freight-railcar counts follow the published facts (about 20 at most in the
five years before the 2023 Kim-Putin summit, near zero during the pandemic
closure, 5 cars on 2022-11-18 and 8 on 2022-11-30, then a steady rise to 73
cars on 2023-10-05). The scenes are rendered with clouds and their shadows,
haze, seasons and snow, tarps, sun-dependent shadows, sensor noise, blur and
georeferencing errors, and every file comes with its ground truth, so every
estimate made from them can be checked.

Everything this module writes is SYNTHETIC and labelled so (file metadata,
``site.json``, ``README.md``).

Main entry points: :func:`five_year_history` (the calibrated counts),
:func:`simulate_site` (write a site), :func:`write_default_sample` (the
default sample, verified against ``data/sample_manifest.json``).
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import hashlib
import html
import json
import math
import multiprocessing
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit._io import atomic_directory, atomic_write_text
from toolkit._synth_history import HISTORIES, LAYOUTS, check_layout, five_year_history, history_rng
from toolkit._synth_layout import SITE_CRS, Layout, build_layout
from toolkit._synth_render import GridSpec, SceneSpec, make_grid, render_scene
from toolkit._synth_traffic import capacity, simulate_traffic, storage_slots
from toolkit.errors import DataIntegrityError, InputError

__all__ = [
    "DEFAULT_SAMPLE",
    "SAMPLE_MANIFEST",
    "SiteInfo",
    "five_year_history",
    "simulate_site",
    "write_default_sample",
    "update_manifest",
    "yard_capacity",
]

_REPO = Path(__file__).resolve().parents[1]
#: Where the checksums of the default sample live (committed with the code).
SAMPLE_MANIFEST = _REPO / "data" / "sample_manifest.json"
_DEFAULT_SAMPLE_DIR = _REPO / "data" / "sample"

#: Keyword arguments of :func:`simulate_site` that make the default sample.
DEFAULT_SAMPLE: dict = {
    "layout": "tumangang",
    "resolution_m": 0.5,
    "seed": 20231005,
    "history": "tumangang",
}

# Dates whose scenes stay clear (the published numbers must be visible).
_KEY_DAYS = {
    _dt.date(2022, 11, 18),
    _dt.date(2022, 11, 30),
    _dt.date(2023, 9, 18),
    _dt.date(2023, 10, 5),
}
_MIXED_GRIDS = (  # (crs, pixel-size factor, sub-pixel grid offset)
    (SITE_CRS, 1.0, (0.0, 0.0)),
    (SITE_CRS, 1.2, (0.37, 0.61)),
    ("EPSG:3857", 1.0, (0.25, 0.5)),
    ("EPSG:32651", 1.5, (0.5, 0.13)),
    ("EPSG:3857", 1.2, (0.71, 0.29)),
    (SITE_CRS, 1.5, (0.5, 0.5)),
)


@dataclass(frozen=True)
class SiteInfo:
    """Paths and parameters of a generated (synthetic) site.

    Attributes
    ----------
    path : pathlib.Path
        The site folder.
    layout : str
        Yard layout ("tumangang" or "second").
    resolution_m : float
        Nominal ground pixel size in metres.
    crs : str
        CRS of the site (tracks are stored in lon/lat; scenes in this CRS unless
        generated with ``mixed_grids=True``).
    seed : int
        Seed the site was generated from.
    scenes : tuple of pathlib.Path
        The scene GeoTIFFs in time order (each has a ``.mask.tif`` sidecar).
    tracks_path, areas_path : pathlib.Path
        ``tracks.geojson`` (track centrelines) and ``areas.geojson`` (storage areas).
    truth_path, cars_path, areas_truth_path : pathlib.Path
        ``truth.csv`` (per scene and track), ``truth_cars.csv`` (per vehicle) and
        ``truth_areas.csv`` (per scene and storage area).

    Examples
    --------
    >>> import tempfile, datetime as dt
    >>> from toolkit.synth import simulate_site
    >>> site = simulate_site(tempfile.mkdtemp() + "/s", resolution_m=3.0, history="empty",
    ...                      dates=[dt.datetime(2023, 6, 1, 2, 0)])
    >>> site.layout, site.scenes[0].name
    ('tumangang', '20230601T020000_tumangang_synthetic_3m.tif')
    >>> print(site.summary().splitlines()[0])
    Synthetic rail-yard site (SYNTHETIC data, toolkit.synth)
    """

    path: Path
    layout: str
    resolution_m: float
    crs: str
    seed: int
    scenes: tuple[Path, ...]
    tracks_path: Path
    areas_path: Path
    truth_path: Path
    cars_path: Path
    areas_truth_path: Path

    @property
    def masks(self) -> tuple[Path, ...]:
        """The usable-data mask beside each scene (``<stem>.mask.tif``)."""
        return tuple(p.with_name(p.stem + ".mask.tif") for p in self.scenes)

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> SiteInfo:
        """Describe an existing site folder from its ``site.json``."""
        path = Path(path)
        meta_path = path / "site.json"
        if not meta_path.is_file():
            raise InputError(
                f"{path}: expected a synthetic site folder with site.json, found none; "
                "generate one with toolkit.synth.simulate_site"
            )
        meta = json.loads(meta_path.read_text())
        return cls(
            path=path,
            layout=meta["layout"],
            resolution_m=float(meta["resolution_m"]),
            crs=meta["crs"],
            seed=int(meta["seed"]),
            scenes=tuple(path / "scenes" / name for name in meta["scenes"]),
            tracks_path=path / "tracks.geojson",
            areas_path=path / "areas.geojson",
            truth_path=path / "truth.csv",
            cars_path=path / "truth_cars.csv",
            areas_truth_path=path / "truth_areas.csv",
        )

    def read_truth(self, table: str = "tracks") -> pd.DataFrame:
        """Read a ground-truth table of the site.

        Parameters
        ----------
        table : {"tracks", "cars", "areas"}
            ``truth.csv`` (per scene and track), ``truth_cars.csv`` (per
            vehicle) or ``truth_areas.csv`` (per scene and storage area).

        Returns
        -------
        pandas.DataFrame
            With ``time`` as datetime64 (UTC, timezone-naive) and ``track_id``
            kept as text ("01").

        Examples
        --------
        >>> import tempfile, datetime as dt
        >>> from toolkit.synth import simulate_site
        >>> site = simulate_site(tempfile.mkdtemp() + "/s", resolution_m=3.0,
        ...                      dates=[dt.datetime(2023, 10, 5)])
        >>> int(site.read_truth()["railcars"].sum())
        73
        """
        paths = {
            "tracks": self.truth_path,
            "cars": self.cars_path,
            "areas": self.areas_truth_path,
        }
        path = paths.get(table)
        if path is None:
            raise InputError(
                f"table={table!r}: expected one of tracks, cars, areas; pass one of them"
            )
        df = pd.read_csv(path, dtype={"track_id": str, "area_id": str})
        df["time"] = pd.to_datetime(df["time"]).astype("datetime64[ns]")
        return df

    def summary(self) -> str:
        """A short text description of the site."""
        lines = [
            "Synthetic rail-yard site (SYNTHETIC data, toolkit.synth)",
            f"  path:        {self.path}",
            f"  layout:      {self.layout}",
            f"  resolution:  {self.resolution_m:g} m",
            f"  crs:         {self.crs}",
            f"  seed:        {self.seed}",
            f"  scenes:      {len(self.scenes)}",
        ]
        if self.scenes:
            first, last = self.scenes[0].name[:15], self.scenes[-1].name[:15]
            lines.append(f"  time span:   {first} .. {last}")
        lines += [
            f"  tracks:      {self.tracks_path.name}",
            f"  areas:       {self.areas_path.name}",
            f"  truth:       {self.truth_path.name}, {self.cars_path.name}, "
            f"{self.areas_truth_path.name}",
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in [
                ("path", self.path),
                ("layout", self.layout),
                ("resolution", f"{self.resolution_m:g} m"),
                ("crs", self.crs),
                ("seed", self.seed),
                ("scenes", len(self.scenes)),
                ("tracks", self.tracks_path.name),
                ("truth", self.truth_path.name),
            ]
        )
        return (
            "<div><strong>Synthetic rail-yard site</strong> "
            "<em>(SYNTHETIC data)</em><table>" + rows + "</table></div>"
        )


# --------------------------------------------------------------------------- validation


def _check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InputError(
            f"{name}={value!r}: expected one of {', '.join(choices)}; pass one of them"
        )
    return value


def _check_number(name: str, value, lo: float, hi: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not (math.isfinite(x) and lo <= x <= hi):
        raise InputError(
            f"{name}={value!r}: expected a number between {lo:g} and {hi:g}; pass one in range"
        )
    return x


def _check_dates(dates) -> list[_dt.datetime]:
    try:
        stamps = [pd.Timestamp(d) for d in dates]
    except (TypeError, ValueError) as err:
        raise InputError(
            f"dates={dates!r}: expected a list of datetimes (UTC), found an unreadable value "
            f"({err}); pass e.g. [datetime(2023, 10, 5, 2, 0)]"
        ) from None
    if not stamps:
        raise InputError("dates=[]: expected at least one datetime; pass dates=None for all")
    out = []
    for t in stamps:
        if pd.isna(t):
            raise InputError(f"dates={dates!r}: found a missing date (NaT); remove it")
        if t.tzinfo is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        out.append(t.to_pydatetime().replace(microsecond=0))
    if len(set(out)) != len(out):
        raise InputError(f"dates={dates!r}: found duplicate acquisition times; remove them")
    return sorted(out)


def yard_capacity(layout: str = "tumangang", *, rotation_deg: float | None = None) -> int:
    """Freight cars the synthetic yard ``layout`` holds when every track is packed.

    The "dense" history fills 60-90 % of it and the "random" history draws
    counts from 0 to it.

    Parameters
    ----------
    layout : {"tumangang", "second"}
        The yard.
    rotation_deg : float, optional
        Rotation of the yard (does not change the capacity).

    Returns
    -------
    int
        Number of freight cars: each track's parking length divided by 20 m
        (the longest car plus a metre), summed over the tracks.

    Examples
    --------
    >>> from toolkit.synth import yard_capacity
    >>> yard_capacity("tumangang") > 73
    True
    """
    check_layout(layout)
    return capacity(build_layout(layout, rotation_deg=rotation_deg))


# --------------------------------------------------------------------------- schedule


def _schedule(
    layout: Layout, history: str, seed: int, dates: list[_dt.datetime] | None
) -> tuple[list[_dt.datetime], list, list[int], list[int]]:
    """Times, per-scene vehicles, targets and locomotives for a site."""
    calibrated = five_year_history(layout=layout.name, seed=seed)
    cal_times = [t.to_pydatetime() for t in calibrated["time"]]
    rng = history_rng(seed, 2)
    if history == "tumangang":
        targets = calibrated["railcars"].tolist()
        locos = calibrated["locomotives"].tolist()
        vehicles = simulate_traffic(layout, cal_times, targets, locos, persistent=True, rng=rng)
        if dates is None:
            return cal_times, vehicles, targets, locos
        by_day = {t.date(): i for i, t in enumerate(cal_times)}
        keep = []
        for d in dates:
            if d.date() not in by_day:
                raise InputError(
                    f"dates: {d.date()} is not an acquisition day of the calibrated history "
                    "(history='tumangang'); pick days from five_year_history() or use "
                    "history='random', 'dense' or 'empty' with your own dates"
                )
            if by_day[d.date()] in keep:
                raise InputError(
                    f"dates: {d.date()} is given twice; the calibrated history has one "
                    "acquisition per day: pass each day once"
                )
            keep.append(by_day[d.date()])
        return (
            [cal_times[i] for i in keep],
            [vehicles[i] for i in keep],
            [targets[i] for i in keep],
            [locos[i] for i in keep],
        )
    times = cal_times if dates is None else dates
    cap = capacity(layout)
    n = len(times)
    if history == "empty":
        targets = [0] * n
        locos = [0] * n
    else:
        if history == "dense":
            targets = [int(round(rng.uniform(0.6, 0.9) * cap)) for _ in range(n)]
        else:  # random
            targets = [int(rng.integers(0, cap + 1)) for _ in range(n)]
        locos = [int(rng.random() < 0.05) for _ in range(n)]
    vehicles = simulate_traffic(layout, times, targets, locos, persistent=False, rng=rng)
    return times, vehicles, targets, locos


def _conditions(
    times: list[_dt.datetime], clouds: bool, protect: set, rng: np.random.Generator
) -> tuple[list[str], list[bool]]:
    """Cloud class and nodata wedge per scene (key dates stay clear and complete)."""
    n = len(times)
    kinds = ["none"] * n
    wedges = [False] * n
    free = [i for i, t in enumerate(times) if t.date() not in _KEY_DAYS | protect]
    order = [free[int(k)] for k in rng.permutation(len(free))]
    if clouds:
        n_full = 0 if n < 20 else (1 if n < 45 else 2)
        n_heavy = int(round(0.05 * n))
        n_haze = int(round(0.05 * n))
        n_partial = max(1 if n >= 2 else 0, int(round(0.25 * n)) - n_full - n_heavy - n_haze)
        labels = ["full"] * n_full + ["heavy"] * n_heavy + ["partial"] * n_partial
        labels += ["haze"] * n_haze
        for i, label in zip(order, labels, strict=False):
            kinds[i] = label
    n_wedge = max(1 if n >= 3 else 0, int(round(0.08 * n)))
    for i in [order[int(k)] for k in rng.permutation(len(order))][:n_wedge]:
        wedges[i] = kinds[i] != "full"
    return kinds, wedges


#: From the Kim-Putin summit on, storage follows the railcars beyond the five-year level.
_STORAGE_RISE = _dt.datetime(2023, 9, 13)


def _activity(history: str, targets: list[int], cap: int, times: list[_dt.datetime]) -> list[float]:
    """Storage level per scene (the share of storage slots occupied).

    "tumangang": sparse storage (at most 8 % of the slots) before the 2023
    summit, then growing with the railcars beyond the five-year level of about
    20 to 95 % with 73 cars on 2023-10-05: the published analysis saw many
    containers at the main warehouse area "never seen there before". Other
    histories: busier storage areas when more railcars stand in the yard.
    """
    if history == "tumangang":
        out = []
        for t, n in zip(times, targets, strict=True):
            level = 0.02 + 0.06 * min(1.0, n / 20.0)
            if t >= _STORAGE_RISE:
                level = max(level, 0.08 + 0.87 * min(1.0, max(0.0, n - 20.0) / 53.0) ** 0.8)
            out.append(float(level))
        return out
    return [float(0.08 + 0.87 * min(1.0, t / max(cap, 1))) for t in targets]


def _res_label(res: float) -> str:
    return f"{res:g}"


# --------------------------------------------------------------------------- writing


def _geojson_tracks(layout: Layout) -> str:
    from pyproj import Transformer

    tr = Transformer.from_crs(SITE_CRS, "EPSG:4326", always_xy=True)
    feats = []
    for t in layout.tracks:
        lon, lat = tr.transform(t.xy[:, 0], t.xy[:, 1])
        coords = [[round(float(a), 9), round(float(b), 9)] for a, b in zip(lon, lat, strict=True)]
        feats.append(
            {
                "type": "Feature",
                "properties": {
                    "track_id": t.track_id,
                    "length_m": round(t.length_m, 2),
                    "synthetic": True,
                },
                "geometry": {"type": "LineString", "coordinates": coords},
            }
        )
    return json.dumps(
        {"type": "FeatureCollection", "name": "tracks (SYNTHETIC)", "features": feats}, indent=1
    )


def _geojson_areas(layout: Layout) -> str:
    from pyproj import Transformer

    tr = Transformer.from_crs(SITE_CRS, "EPSG:4326", always_xy=True)
    feats = []
    for a in layout.areas:
        ring = layout.rect_world(a)
        ring = np.vstack([ring, ring[:1]])
        lon, lat = tr.transform(ring[:, 0], ring[:, 1])
        coords = [[round(float(x), 9), round(float(y), 9)] for x, y in zip(lon, lat, strict=True)]
        feats.append(
            {
                "type": "Feature",
                "properties": {
                    "area_id": a.name,
                    "area_m2": round(a.area_m2, 1),
                    "synthetic": True,
                },
                "geometry": {"type": "Polygon", "coordinates": [coords]},
            }
        )
    return json.dumps(
        {"type": "FeatureCollection", "name": "storage areas (SYNTHETIC)", "features": feats},
        indent=1,
    )


def _readme(meta: dict) -> str:
    p = meta["params"]
    return f"""# SYNTHETIC rail-yard site

Everything in this folder is **SYNTHETIC**: computer-generated images of a
made-up rail yard, produced by `toolkit.synth.simulate_site`. It is not
satellite imagery of any real place. The yard is modelled on the Tumangang rail
facility (North Korea) and, with `history="tumangang"`, its freight-railcar
counts follow the published facts (about 20 cars at most before the 2023
summit, near zero during the pandemic closure, 5 cars on 2022-11-18, 8 on
2022-11-30, a steady rise to 73 cars on 2023-10-05).

## Parameters

- layout: `{meta["layout"]}` ({meta["n_tracks"]} tracks, rotated {meta["rotation_deg"]:g} degrees)
- resolution: {meta["resolution_m"]:g} m per pixel, CRS {meta["crs"]}
- seed: {meta["seed"]}
- history: `{p["history"]}`
- clouds: {p["clouds"]}, snow: {p["snow"]}, mixed grids: {p["mixed_grids"]}
- misregistration: up to {meta["misregistration_px"]:g} px
- scenes: {meta["n_scenes"]}

Regenerate with:

```python
from toolkit.synth import simulate_site
simulate_site("path/to/folder", layout="{meta["layout"]}", resolution_m={meta["resolution_m"]!r},
              seed={meta["seed"]}, history="{p["history"]}", overwrite=True)
```

The same parameters give the same bytes.

## Files

- `site.json`: parameters and the list of scenes.
- `tracks.geojson`: track centrelines (lon/lat, EPSG:4326), `track_id` as strings
  ("01", "02", ...). Read with `geopandas.read_file`.
- `areas.geojson`: storage areas beside the warehouse (`area_id`).
- `scenes/<YYYYMMDDTHHMMSS>_<layout>_synthetic_<res>m.tif`: one tiled, DEFLATE-compressed
  GeoTIFF per acquisition (time also in `TIFFTAG_DATETIME`, UTC), nodata 0. Below 2 m:
  3-band uint8 RGB; from 2 m: 4-band uint16 blue, green, red, nir (reflectance x 10000).
- `scenes/<stem>.mask.tif`: usable-data mask on the same grid: 0 clear, 1 cloud,
  2 cloud shadow, 3 thick haze, 255 nodata. Like a real one it is imperfect: its edges are
  off by 1-3 pixels.
- `truth.csv`: per scene and track: `railcars` (freight cars, locomotives excluded),
  `railcars_visible` (cars whose centre is not under cloud, cloud shadow, thick haze or
  nodata), `locomotives`, counts by kind (`box`, `tank`, `ore`, `flat`), `tarped`,
  `occupied_m` (summed over-coupler length of all vehicles), `visible_fraction` (share of
  the centreline that is visible), and per scene `cloud_fraction` (cloud or thick haze),
  `nodata_fraction`, `shift_x_m`/`shift_y_m` (georeferencing error: image content is
  displaced by this many metres east/north), `snow`, sun elevation and azimuth.
- `truth_cars.csv`: every vehicle: `start_m`/`end_m` along the track from its first
  vertex (over couplers), `kind`, `length_m`, `tarp`, `visible`.
- `truth_areas.csv`: per scene and storage area: `covered_m2`, `covered_fraction`,
  `containers` (20-ft-equivalent footprints seen from above: a 40-ft container counts 2,
  stacking does not count), `tarp_m2`, `visible_fraction`.

Read `track_id` as text: `pandas.read_csv(path, dtype={{"track_id": str}})`.
Times are UTC without a zone suffix.
"""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _workers(n_scenes: int) -> int:
    """Processes to render with: two on a multi-core machine for long series, else one.

    Worker processes are forked, which is only safe while this process runs a
    single thread (a script, the command line); inside a threaded host (a Jupyter
    kernel, a dask client) the scenes are rendered in this process.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    if (
        n_scenes < 8
        or cpus < 2
        or threading.active_count() > 1
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    return 2


def _run(specs: list[SceneSpec], progress: bool, workers: int) -> list[dict]:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(specs), desc="synthetic scenes", unit="scene")
    results = []
    try:
        if workers <= 1:
            for spec in specs:
                results.append(render_scene(spec))
                if bar is not None:
                    bar.update(1)
        else:
            ctx = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                futures = [ex.submit(render_scene, spec) for spec in specs]
                for fut in concurrent.futures.as_completed(futures):
                    results.append(fut.result())
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    # every scene has its own random stream: the order of completion does not matter
    return sorted(results, key=lambda r: r["index"])


def simulate_site(
    out_dir: str | os.PathLike,
    *,
    layout: str = "tumangang",
    resolution_m: float = 0.5,
    seed: int = 20231005,
    history: str = "tumangang",
    dates: Sequence | None = None,
    clouds: bool = True,
    snow: bool = True,
    mixed_grids: bool = False,
    misregistration_px: float | None = None,
    rotation_deg: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> SiteInfo:
    """Generate a synthetic rail-yard site: scenes, masks, tracks, areas and ground truth.

    The site is deterministic: the same arguments give byte-identical files.
    It is written to a temporary folder and swapped into place at the end, so
    ``out_dir`` is either complete or untouched.

    Parameters
    ----------
    out_dir : str or path-like
        Folder to create (see the layout of files in its ``README.md``).
    layout : {"tumangang", "second"}
        "tumangang": 10 tracks (400-1000 m, 4.6-5.4 m apart, rotated 17 degrees,
        one curve, one turnout), a road, a warehouse and two storage areas.
        "second": a different yard (8 tracks 4.6 m apart, rotated -31 degrees,
        its own curve and turnout) for held-out tests and "your own site" examples.
    resolution_m : float
        Ground pixel size in metres (0.25-10). Below 2 m scenes are 3-band uint8
        RGB; from 2 m, 4-band uint16 PlanetScope-like reflectance (blue, green,
        red, nir; x 10000).
    seed : int
        Seed of everything random (schedule, traffic, looks, clouds, noise).
    history : {"tumangang", "dense", "empty", "random"}
        "tumangang": the calibrated five-year history (:func:`five_year_history`);
        "dense": the yard 60-90 % full on every date; "empty": no railcars;
        "random": random counts from 0 to the yard's capacity.
    dates : sequence of datetime-like, optional
        Acquisition times (UTC) instead of the five-year schedule, for small
        sites. With ``history="tumangang"`` they must fall on days of the
        calibrated schedule (those scenes are rendered, with the same traffic).
    clouds, snow : bool
        Draw clouds (partial, heavy, one or two full) with their shadows, or banks
        of thick haze, on about a quarter of the scenes; allow
        snow in winter scenes.
    mixed_grids : bool
        Scenes differ in CRS (EPSG:32652, EPSG:3857, EPSG:32651), pixel size
        (1, 1.2 or 1.5 times ``resolution_m``) and sub-pixel grid offset.
    misregistration_px : float, optional
        Largest georeferencing error (image content shifted) in pixels; default
        2 px below 2 m, 1 px from 2 m. Recorded per scene in ``truth.csv``.
    rotation_deg : float, optional
        Rotate the yard to this angle (degrees counter-clockwise from east)
        instead of the layout's own.
    overwrite : bool
        Replace ``out_dir`` if it exists.
    progress : bool
        Show a progress bar.

    Returns
    -------
    SiteInfo
        Paths and parameters of the site.

    Raises
    ------
    InputError
        If an argument is out of range, or ``out_dir`` exists and ``overwrite``
        is False.

    Examples
    --------
    >>> import tempfile, datetime as dt
    >>> from toolkit.synth import simulate_site
    >>> site = simulate_site(tempfile.mkdtemp() + "/site", resolution_m=3.0,
    ...                      history="random", dates=[dt.datetime(2023, 7, 1, 2, 0)])
    >>> len(site.scenes)
    1
    """
    layout_name = _check_choice("layout", layout, LAYOUTS)
    history = _check_choice("history", history, HISTORIES)
    res = _check_number("resolution_m", resolution_m, 0.25, 10.0)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed={seed!r}: expected a non-negative integer; pass e.g. seed=1")
    seed = int(seed)
    if misregistration_px is None:
        mis = 2.0 if res < 2.0 else 1.0
    else:
        mis = _check_number("misregistration_px", misregistration_px, 0.0, 50.0)
    rot = None if rotation_deg is None else _check_number("rotation_deg", rotation_deg, -360, 360)
    when = None if dates is None else _check_dates(dates)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise InputError(
            f"{out}: the output folder exists; pass overwrite=True to replace it "
            "or choose another folder"
        )

    lay = build_layout(layout_name, rotation_deg=rot)
    times, vehicles, targets, _ = _schedule(lay, history, seed, when)
    cond_rng = history_rng(seed, 3)
    protect = set()
    if history == "tumangang":  # the scene with the five-year maximum stays clear too
        hist = five_year_history(layout=layout_name, seed=seed)
        pre = hist[hist["time"] < "2023-09-18"]
        protect = {t.date() for t in pre.loc[pre["railcars"] == pre["railcars"].max(), "time"]}
    cloud_kinds, wedges = _conditions(times, clouds, protect, cond_rng)
    slots = storage_slots(lay, history_rng(seed, 4))
    activity = _activity(history, targets, capacity(lay), times)
    grid_rng = history_rng(seed, 5)
    base_grid = make_grid(lay, res)
    grids: dict[int, GridSpec] = {}

    specs = []
    names = []
    for i, t in enumerate(times):
        if mixed_grids:
            k = int(grid_rng.integers(0, len(_MIXED_GRIDS)))
            if k not in grids:
                crs, factor, offset = _MIXED_GRIDS[k]
                grids[k] = make_grid(lay, res * factor, crs=crs, offset_px=offset)
            grid = grids[k]
        else:
            grid = base_grid
        stem = f"{t:%Y%m%dT%H%M%S}_{layout_name}_synthetic_{_res_label(grid.pixel_m)}m"
        names.append(stem + ".tif")
        epoch_s = int((t - _dt.datetime(1970, 1, 1)).total_seconds())
        child = np.random.SeedSequence([seed, 11, epoch_s])
        specs.append(
            SceneSpec(
                index=i,
                time=t,
                stem=stem,
                grid=grid,
                seed=int(child.generate_state(1, np.uint64)[0]),
                site_seed=seed,
                layout_name=layout_name,
                rotation_deg=rot,
                vehicles=vehicles[i],
                slots=slots,
                activity=activity[i],
                cloud_kind=cloud_kinds[i],
                nodata_wedge=wedges[i],
                snow_allowed=bool(snow),
                misregistration_px=mis,
                out_tif="",
                out_mask="",
            )
        )

    with atomic_directory(out) as tmp:
        scenes_dir = tmp / "scenes"
        scenes_dir.mkdir()
        for spec in specs:
            spec.out_tif = str(scenes_dir / f"{spec.stem}.tif")
            spec.out_mask = str(scenes_dir / f"{spec.stem}.mask.tif")
        workers = _workers(len(specs))
        results = _run(specs, progress, workers)
        _write_tables(tmp, specs, results)
        (tmp / "tracks.geojson").write_text(_geojson_tracks(lay))
        (tmp / "areas.geojson").write_text(_geojson_areas(lay))
        from toolkit import __version__

        params = {
            "history": history,
            "dates": None if when is None else [f"{t:%Y-%m-%dT%H:%M:%S}" for t in when],
            "clouds": bool(clouds),
            "snow": bool(snow),
            "mixed_grids": bool(mixed_grids),
            "misregistration_px": mis,
            "rotation_deg": rot,
        }
        meta = {
            "synthetic": True,
            "description": "SYNTHETIC scenes of a synthetic rail yard (toolkit.synth)",
            "layout": layout_name,
            "resolution_m": res,
            "crs": SITE_CRS,
            "seed": seed,
            "toolkit_version": __version__,
            "generator": "toolkit.synth.simulate_site",
            "params": params,
            "rotation_deg": lay.theta_deg,
            "n_tracks": len(lay.tracks),
            "track_ids": [t.track_id for t in lay.tracks],
            "area_ids": [a.name for a in lay.areas],
            "capacity_railcars": capacity(lay),
            "n_scenes": len(names),
            "scenes": names,
        }
        (tmp / "site.json").write_text(json.dumps(meta, indent=1) + "\n")
        readme_meta = dict(meta, misregistration_px=mis)
        (tmp / "README.md").write_text(_readme(readme_meta))
    return SiteInfo.from_path(out)


def _write_tables(folder: Path, specs: list[SceneSpec], results: list[dict]) -> None:
    track_rows, car_rows, area_rows = [], [], []
    for spec, res in zip(specs, results, strict=True):
        head = {"time": f"{spec.time:%Y-%m-%dT%H:%M:%S}", "scene": f"{spec.stem}.tif"}
        for row in res["tracks"]:
            track_rows.append({**head, **row, **res["scene"]})
        for row in res["cars"]:
            car_rows.append({**head, **row})
        for row in res["areas"]:
            area_rows.append({**head, **row})
    track_cols = [
        "time", "scene", "track_id", "railcars", "railcars_visible", "locomotives", "box",
        "tank", "ore", "flat", "tarped", "occupied_m", "visible_fraction", "cloud_fraction",
        "nodata_fraction", "shift_x_m", "shift_y_m", "snow", "sun_elevation_deg",
        "sun_azimuth_deg",
    ]  # fmt: skip
    car_cols = [
        "time", "scene", "track_id", "vehicle", "kind", "start_m", "end_m", "length_m",
        "tarp", "visible",
    ]  # fmt: skip
    area_cols = [
        "time", "scene", "area_id", "covered_m2", "covered_fraction", "containers", "tarp_m2",
        "visible_fraction",
    ]  # fmt: skip
    pd.DataFrame(track_rows, columns=track_cols).to_csv(folder / "truth.csv", index=False)
    pd.DataFrame(car_rows, columns=car_cols).to_csv(folder / "truth_cars.csv", index=False)
    pd.DataFrame(area_rows, columns=area_cols).to_csv(folder / "truth_areas.csv", index=False)


# --------------------------------------------------------------------------- default sample


def _manifest_files(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {p.relative_to(path).as_posix(): _sha256(p) for p in files}


def update_manifest(path: str | os.PathLike | None = None) -> Path:
    """Rewrite ``data/sample_manifest.json`` from the sample folder (maintainers only).

    Run this after a deliberate change to the generator, check the sample, and
    commit the new manifest with the change.

    Parameters
    ----------
    path : str or path-like, optional
        The sample folder; default the repository's ``data/sample``.

    Returns
    -------
    pathlib.Path
        The manifest written.

    Raises
    ------
    InputError
        If the folder is not a generated site.

    Examples
    --------
    >>> from toolkit.synth import update_manifest
    >>> update_manifest()  # doctest: +SKIP
    PosixPath('.../data/sample_manifest.json')
    """
    folder = _DEFAULT_SAMPLE_DIR if path is None else Path(path)
    if not (folder / "site.json").is_file():
        raise InputError(
            f"{folder}: expected the generated default sample (site.json missing); "
            "run toolkit.synth.write_default_sample(verify=False) first"
        )
    manifest = {
        "synthetic": True,
        "description": "SHA-256 of every file of the SYNTHETIC default sample (toolkit.synth)",
        "generator": "toolkit.synth.simulate_site",
        "params": DEFAULT_SAMPLE,
        "files": _manifest_files(folder),
    }
    atomic_write_text(SAMPLE_MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return SAMPLE_MANIFEST


def _verify(folder: Path, manifest: dict) -> tuple[str, str] | None:
    """The first bad file and what is wrong with it, or None if all files match."""
    for rel, digest in manifest["files"].items():
        p = folder / rel
        if not p.is_file():
            return rel, "missing"
        if _sha256(p) != digest:
            return rel, "checksum differs"
    return None


def write_default_sample(
    path: str | os.PathLike | None = None, *, verify: bool = True, progress: bool = False
) -> SiteInfo:
    """Generate the default synthetic sample if needed and verify it against its manifest.

    If the folder exists and every file matches ``data/sample_manifest.json``
    (SHA-256), nothing is regenerated. If it is missing, or files listed in
    the manifest are absent, the sample is generated (``DEFAULT_SAMPLE``) and
    then verified.

    Parameters
    ----------
    path : str or path-like, optional
        The sample folder; default the repository's ``data/sample``.
    verify : bool
        Check every file against the manifest.
    progress : bool
        Show a progress bar while generating.

    Returns
    -------
    SiteInfo
        The sample.

    Raises
    ------
    DataIntegrityError
        If a file differs from the manifest (the message names the first one),
        or the manifest is missing.

    Examples
    --------
    >>> from toolkit.synth import write_default_sample
    >>> site = write_default_sample()  # doctest: +SKIP
    """
    folder = _DEFAULT_SAMPLE_DIR if path is None else Path(path)
    manifest = None
    if verify:
        if not SAMPLE_MANIFEST.is_file():
            raise DataIntegrityError(
                f"{SAMPLE_MANIFEST}: expected the sample manifest, found none; restore it from "
                "git or run toolkit.synth.update_manifest() after generating the sample"
            )
        manifest = json.loads(SAMPLE_MANIFEST.read_text())
    if folder.exists() and (folder / "site.json").is_file():
        if manifest is None:
            return SiteInfo.from_path(folder)
        bad = _verify(folder, manifest)
        if bad is None:
            return SiteInfo.from_path(folder)
        if bad[1] != "missing":
            raise DataIntegrityError(
                f"{folder / bad[0]}: expected SHA-256 {manifest['files'][bad[0]][:12]}... from "
                f"{SAMPLE_MANIFEST.name}, found a different file; delete {folder} to regenerate "
                "it (or run toolkit.synth.update_manifest() if the generator changed on purpose)"
            )
    simulate_site(folder, **DEFAULT_SAMPLE, overwrite=True, progress=progress)
    if manifest is not None:
        bad = _verify(folder, manifest)
        if bad is not None:
            raise DataIntegrityError(
                f"{folder / bad[0]}: freshly generated file does not match {SAMPLE_MANIFEST.name} "
                f"({bad[1]}); the generator or its libraries changed: run "
                "toolkit.synth.update_manifest() if this is intended"
            )
    return SiteInfo.from_path(folder)
