"""Many sites in one run: a site catalogue counted as one dask job.

A *site catalogue* lists rail yards, each with its track centrelines and its
scenes. :func:`count_sites` checks every site first (every scene opened once,
every track validated), builds all the lazy count graphs, and computes them in
a single ``dask.compute`` call, so a ``dask.distributed`` cluster works on all
sites at once and a bad input anywhere stops the run before anything is
computed or written.

Catalogue formats
-----------------
JSON, either a list of sites or ``{"sites": [...]}``::

    {"sites": [
      {"name": "tumangang", "tracks": "tumangang/tracks.geojson",
       "scenes": "tumangang/scenes"},
      {"name": "khasan", "tracks": "khasan/tracks.gpkg",
       "scenes": ["khasan/2023/*.tif", "khasan/2024/*.tif"]}
    ]}

or CSV with the columns ``name,tracks,scenes`` (several scene patterns in one
cell are separated by ``;``). An optional ``hand_counts`` key or column names a
CSV of railcars counted by hand at that site (``time, track_id, railcars``):
the site's threshold and mean car length are then fitted to them
(:func:`toolkit.calibrate`) before it is counted. Relative paths are relative
to the catalogue file. Site names are short identifiers (letters, digits,
``_``, ``-``, ``.``), used as node and file names.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from toolkit._io import atomic_directory
from toolkit.errors import InputError, ToolkitError

__all__ = [
    "Site",
    "SiteCatalogue",
    "read_catalogue",
    "site_counts",
    "count_sites",
    "sites_to_dataframe",
    "write_site_counts",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_COLUMNS = ("name", "tracks", "scenes")


@dataclass(frozen=True, kw_only=True)
class Site:
    """One rail yard: its name, its track centrelines and its scene sources.

    Attributes
    ----------
    name : str
        Identifier (letters, digits, ``_``, ``-``, ``.``).
    tracks : pathlib.Path
        Vector file of track centrelines (see :func:`toolkit.read_tracks`).
    scenes : tuple of str
        Scene files, folders or glob patterns (see :func:`toolkit.load_cube`).
    hand_counts : pathlib.Path or None
        CSV of railcars counted by hand at the site (``time, track_id, railcars``), to
        fit its counting parameters to (:func:`toolkit.calibrate`); None: the defaults.
    """

    name: str
    tracks: Path
    scenes: tuple[str, ...]
    hand_counts: Path | None = None


@dataclass(frozen=True, kw_only=True)
class SiteCatalogue:
    """The sites of one job, in catalogue order.

    Attributes
    ----------
    sites : tuple of Site
    source : str
        The catalogue file (or ``"<in memory>"``).
    """

    sites: tuple[Site, ...]
    source: str = "<in memory>"
    _by_name: dict[str, Site] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.sites})

    def __len__(self) -> int:
        return len(self.sites)

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites)

    def __getitem__(self, name: str) -> Site:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    def summary(self) -> str:
        lines = [f"Site catalogue {self.source}: {len(self.sites)} site(s)"]
        for s in self.sites:
            hand = f"; hand counts {s.hand_counts}" if s.hand_counts else ""
            lines.append(f"  {s.name}: tracks {s.tracks}; scenes {', '.join(s.scenes)}{hand}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(str(s.tracks))}</td>"
            f"<td>{html.escape(', '.join(s.scenes))}</td>"
            f"<td>{html.escape(str(s.hand_counts or ''))}</td></tr>"
            for s in self.sites
        )
        return (
            f"<table><caption>Site catalogue {html.escape(self.source)}</caption>"
            f"<tr><th>name</th><th>tracks</th><th>scenes</th><th>hand counts</th></tr>"
            f"{rows}</table>"
        )


# --------------------------------------------------------------------------- reading


def read_catalogue(path: str | os.PathLike) -> SiteCatalogue:
    """Read and check a site catalogue (JSON or CSV).

    Parameters
    ----------
    path : str or path-like
        A ``.json`` or ``.csv`` catalogue (see the module notes for the
        format). Relative paths inside are relative to its folder.

    Returns
    -------
    SiteCatalogue

    Raises
    ------
    toolkit.errors.InputError
        The file is missing or unreadable, a column or key is missing, a name
        is empty, repeated or not an identifier, a site has no scenes, or a
        tracks file does not exist. Scene files are checked by
        :func:`count_sites` (through :func:`toolkit.load_cube`).

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "tracks.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    >>> _ = (d / "sites.json").write_text(json.dumps(
    ...     [{"name": "yard_a", "tracks": "tracks.geojson", "scenes": "a/*.tif"}]))
    >>> cat = read_catalogue(d / "sites.json")
    >>> cat.names, cat["yard_a"].scenes[0].endswith("a/*.tif")
    (['yard_a'], True)
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: site catalogue not found; expected a JSON or CSV file with name, tracks "
            f"and scenes per site; check the path"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: cannot be read as text ({type(exc).__name__}); expected a UTF-8 JSON or "
            f"CSV site catalogue; re-save it as UTF-8"
        ) from None
    if path.suffix.lower() == ".json":
        records = _records_from_json(text, path)
    elif path.suffix.lower() == ".csv":
        records = _records_from_csv(text, path)
    else:
        raise InputError(
            f"{path}: unknown catalogue format {path.suffix!r}; expected a .json or .csv file "
            f"(YAML is not supported); convert the catalogue to JSON or CSV"
        )
    return _catalogue(records, base=path.parent, source=str(path))


def _records_from_json(text: str, path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(
            f"{path}: is not valid JSON ({exc}); expected a list of sites or "
            f'{{"sites": [...]}}; fix the syntax'
        ) from None
    if isinstance(doc, dict) and "sites" in doc:
        doc = doc["sites"]
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise InputError(
            f'{path}: expected a list of site objects (or {{"sites": [...]}}) with name, '
            f"tracks and scenes, found {type(doc).__name__}; restructure the file"
        )
    return doc


def _records_from_csv(text: str, path: Path) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    missing = [c for c in _COLUMNS if c not in fields]
    if missing:
        raise InputError(
            f"{path}: lacks column(s) {missing}; expected a header 'name,tracks,scenes', found "
            f"{fields}; add the columns"
        )
    out = []
    for row in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        row["scenes"] = [p.strip() for p in row["scenes"].split(";") if p.strip()]
        out.append(row)
    return out


def _catalogue(records: Sequence[Mapping[str, Any]], *, base: Path, source: str) -> SiteCatalogue:
    if not records:
        raise InputError(
            f"{source}: lists no sites; expected at least one site with name, tracks and "
            f"scenes; add a site"
        )
    sites: list[Site] = []
    seen: set[str] = set()
    for i, rec in enumerate(records, start=1):
        missing = [k for k in _COLUMNS if not rec.get(k)]
        if missing:
            raise InputError(
                f"{source}: site {i} lacks {missing}; expected name, tracks and scenes for "
                f"every site; fill them in"
            )
        name = str(rec["name"]).strip()
        if not _NAME.match(name):
            raise InputError(
                f"{source}: site {i} has name {name!r}; expected an identifier of letters, "
                f"digits, '_', '-' or '.' (it names output files); rename the site"
            )
        if name in seen:
            raise InputError(
                f"{source}: site name {name!r} appears twice; expected unique names; rename "
                f"one of them"
            )
        seen.add(name)
        scenes = rec["scenes"]
        scenes = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
        if not scenes or not all(isinstance(s, (str, os.PathLike)) and str(s) for s in scenes):
            raise InputError(
                f"{source}: site {name!r} has scenes {rec['scenes']!r}; expected a file, folder "
                f"or glob pattern, or a list of them; fix the entry"
            )
        tracks = _resolve(rec["tracks"], base)
        if not Path(tracks).is_file():
            raise InputError(
                f"{source}: site {name!r} tracks file {tracks} not found; expected a vector "
                f"file of track centrelines; check the path"
            )
        hand = rec.get("hand_counts") or None
        if hand is not None:
            hand = Path(_resolve(hand, base))
            if not hand.is_file():
                raise InputError(
                    f"{source}: site {name!r} hand-count file {hand} not found; expected a CSV "
                    f"of time, track_id, railcars; check the path or leave the entry empty"
                )
        sites.append(
            Site(
                name=name,
                tracks=Path(tracks),
                scenes=tuple(_resolve(s, base) for s in scenes),
                hand_counts=hand,
            )
        )
    return SiteCatalogue(sites=tuple(sites), source=source)


def _resolve(p: Any, base: Path) -> str:
    p = os.path.expanduser(os.fspath(p))
    return p if os.path.isabs(p) else os.fspath(base / p)


def _as_catalogue(catalogue: Any) -> SiteCatalogue:
    if isinstance(catalogue, SiteCatalogue):
        return catalogue
    if isinstance(catalogue, (str, os.PathLike)):
        return read_catalogue(catalogue)
    if isinstance(catalogue, Sequence) and all(isinstance(s, Site) for s in catalogue):
        return _catalogue(
            [
                {
                    "name": s.name,
                    "tracks": s.tracks,
                    "scenes": list(s.scenes),
                    "hand_counts": s.hand_counts,
                }
                for s in catalogue
            ],
            base=Path.cwd(),
            source="<in memory>",
        )
    raise InputError(
        f"catalogue: expected a SiteCatalogue, a catalogue file or a list of Site, got "
        f"{type(catalogue).__name__}; read it with toolkit.sites.read_catalogue"
    )


# --------------------------------------------------------------------------- counting


def site_counts(
    catalogue: Any,
    *,
    chunks: Mapping[str, int] | None = None,
    count_options: Mapping[str, Any] | None = None,
) -> dict[str, xr.Dataset]:
    """Lazy railcar counts of every site (nothing is computed).

    Every site's scenes are opened and checked and its tracks validated
    against its cube here, so a bad input fails before any computation. A site
    with hand counts is the exception: its strips are computed here and its
    threshold and mean car length fitted to the hand counts
    (:func:`toolkit.calibrate`); its counts are then in memory, and their attrs
    hold the fit's summary as ``calibration``.

    Parameters
    ----------
    catalogue : SiteCatalogue, path or list of Site
    chunks : mapping, optional
        ``load_cube`` chunks for every site (e.g. from
        :func:`toolkit.distributed.plan_chunks`).
    count_options : mapping, optional
        Keyword options for :func:`toolkit.count_railcars`, the same for every
        site (e.g. ``{"car_length_m": 15.2}``); not with a site's hand counts
        (the fit sets the threshold and car length, the rest at their defaults).

    Returns
    -------
    dict of str to xarray.Dataset
        Site name to its ``(time, track)`` counts: lazy, or in memory for a
        site with hand counts.

    Raises
    ------
    toolkit.errors.ToolkitError
        The catalogue or any site's scenes or tracks are invalid; the message
        starts with the site's name.
    """
    cat = _as_catalogue(catalogue)
    from toolkit.cube import load_cube
    from toolkit.occupancy import count_railcars

    options = dict(count_options or {})
    out: dict[str, xr.Dataset] = {}
    for site in cat:
        if site.hand_counts is not None and options:
            raise InputError(
                f"site {site.name!r}: count_options {sorted(options)} cannot go with hand "
                f"counts (the fit sets the threshold and car length, the rest at their "
                f"defaults); drop the options or the site's hand_counts"
            )
        try:
            cube = load_cube(list(site.scenes), chunks=dict(chunks) if chunks else None)
            if site.hand_counts is None:
                counts = count_railcars(cube, site.tracks, **options)
            else:
                counts = _calibrated_counts(cube, site)
        except ToolkitError as exc:
            raise type(exc)(f"site {site.name!r}: {exc}") from None
        except TypeError as exc:
            raise InputError(
                f"count_options: {exc}; expected keyword options of toolkit.count_railcars"
            ) from None
        counts.attrs.update(
            {"site": site.name, "site_tracks": str(site.tracks), "site_scenes": list(site.scenes)}
        )
        out[site.name] = counts
    return out


def _calibrated_counts(cube, site: Site) -> xr.Dataset:
    """A site's counts with its threshold and mean car length fitted to its hand counts
    (computed here); the fit's summary in attrs (``calibration``)."""
    from toolkit.occupancy import _fitted_counts, _site_strips

    strips = _site_strips(cube, site.tracks).compute()
    fit, _, counts = _fitted_counts(strips, site.hand_counts)
    counts.attrs["calibration"] = fit.summary()
    return counts


def count_sites(
    catalogue: Any,
    *,
    chunks: Mapping[str, int] | None = None,
    count_options: Mapping[str, Any] | None = None,
) -> xr.DataTree:
    """Count railcars at every site of a catalogue, as one dask job.

    All sites are checked and their graphs built first (:func:`site_counts`),
    then everything is computed in a single ``dask.compute`` call, on the
    active ``dask.distributed`` client if there is one (see
    :func:`toolkit.distributed.use_scheduler`), else on local threads.

    Parameters
    ----------
    catalogue : SiteCatalogue, path or list of Site
        The sites (see :func:`read_catalogue`).
    chunks : mapping, optional
        ``load_cube`` chunks for every site.
    count_options : mapping, optional
        Keyword options for :func:`toolkit.count_railcars`.

    Returns
    -------
    xarray.DataTree
        One child node per site, in catalogue order, holding that site's
        ``(time, track)`` counts (``railcars``, ``railcars_low``,
        ``railcars_high``, ``occupied_m`` in m, ``occupancy``,
        ``valid_fraction``, ...; see :func:`toolkit.count_railcars`). Root
        attrs: ``catalogue``, ``sites``, ``toolkit_version``.

    Raises
    ------
    toolkit.errors.ToolkitError
        Any site's input is invalid (message prefixed by the site's name);
        nothing is computed then.

    Examples
    --------
    >>> tree = count_sites("data/sites.json")  # doctest: +SKIP
    >>> tree["tumangang"].dataset.railcars.sum("track", min_count=1)  # doctest: +SKIP
    """
    import dask

    cat = _as_catalogue(catalogue)
    lazy = site_counts(cat, chunks=chunks, count_options=count_options)
    names = list(lazy)
    computed = dask.compute(*(lazy[n] for n in names))
    tree = xr.DataTree.from_dict(dict(zip(names, computed, strict=True)))
    tree.attrs.update(
        {
            "catalogue": cat.source,
            "sites": names,
            "method": "toolkit.sites.count_sites (one dask.compute over all sites)",
            "toolkit_version": _version(),
        }
    )
    return tree


def sites_to_dataframe(tree: xr.DataTree) -> pd.DataFrame:
    """All sites' counts as one table: a ``site`` column, then the count CSV columns.

    Examples
    --------
    >>> df = sites_to_dataframe(count_sites("data/sites.json"))  # doctest: +SKIP
    """
    from toolkit.occupancy import counts_to_dataframe

    frames = []
    for name, node in _site_nodes(tree):
        df = counts_to_dataframe(node)
        df.insert(0, "site", name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def write_site_counts(tree: xr.DataTree, out_dir: str | os.PathLike) -> Path:
    """Write ``<site>.csv`` per site and ``all_sites.csv``, atomically, into ``out_dir``.

    The folder is written beside ``out_dir`` and swapped into place only when
    every file is complete: a reader sees the previous folder or the new one.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    from toolkit.occupancy import counts_to_dataframe

    nodes = _site_nodes(tree)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        frames = []
        for name, ds in nodes:
            df = counts_to_dataframe(ds)
            df.to_csv(tmp / f"{name}.csv", index=False, na_rep="")
            df.insert(0, "site", name)
            frames.append(df)
        pd.concat(frames, ignore_index=True).to_csv(tmp / "all_sites.csv", index=False, na_rep="")
    return out_dir


def _site_nodes(tree: Any) -> list[tuple[str, xr.Dataset]]:
    if not isinstance(tree, xr.DataTree) or not tree.children:
        raise InputError(
            f"tree: expected the DataTree from toolkit.sites.count_sites, got "
            f"{type(tree).__name__}; run count_sites first"
        )
    return [(str(name), node.to_dataset()) for name, node in tree.children.items()]


def _version() -> str:
    from toolkit import __version__

    return str(__version__)
