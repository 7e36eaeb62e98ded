"""The ``toolkit`` command line (also ``python -m toolkit``).

Errors in the input print one line naming the input and exit with status 2;
no output file is written unless the whole run succeeded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from toolkit.errors import ToolkitError

EXIT_INPUT = 2
EXIT_INTERNAL = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="toolkit",
        description=(
            "Rail-yard monitoring from satellite image time series: railcar counts per "
            "track and date, change points and baseline comparisons."
        ),
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "count",
        help="count railcars per scene and track; write the counts CSV",
        description=(
            "Count railcars on every track in every scene. SCENES are GeoTIFF/COG files, "
            "folders of them or glob patterns; scenes may differ in CRS, pixel size and grid "
            "offset. Writes one row per scene per track: time, track_id, railcars, "
            "railcars_low, railcars_high, occupied_m, occupancy, valid_fraction (then the "
            "railcars per kind with --kinds)."
        ),
    )
    c.add_argument("scenes", nargs="+", metavar="SCENES", help="scene files, folders or globs")
    c.add_argument(
        "--tracks", required=True, metavar="TRACKS", help="vector file of track centrelines"
    )
    c.add_argument("--out", metavar="COUNTS.csv", help="output CSV (default: standard output)")
    c.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="dask.distributed scheduler address (default: DASK_SCHEDULER_ADDRESS, else local)",
    )
    c.add_argument("--progress", action="store_true", help="show a progress bar")
    c.add_argument(
        "--hand-counts",
        metavar="HAND.csv",
        default=None,
        help="railcars counted by hand in a few scenes (columns time, track_id, railcars): "
        "fit the occupancy threshold and mean car length to them and count with the fitted "
        "ones where they are clearly better (toolkit.calibrate); the fit goes to stderr",
    )
    c.add_argument(
        "--kinds",
        action="store_true",
        help="add railcars per kind (box, tank, ore, flat, locomotive; unknown where the "
        "kind cannot be told, as at pixels coarser than 1 m; other: detections read as no "
        "railcar) as columns after the contract's",
    )

    ar = sub.add_parser(
        "areas",
        help="covered ground and container equivalents per scene and storage area",
        description=(
            "Measure the occupancy of storage areas (yards, aprons, platforms) in every scene. "
            "SCENES as for 'count'. AREAS is a vector file of polygons with an area_id. Writes "
            "one row per scene per area: time, area_id, covered_fraction, covered_m2, "
            "covered_m2_low, covered_m2_high, container_equivalents (20-foot footprints; a "
            "stack counts once), container_equivalents_low, container_equivalents_high, "
            "valid_fraction, area_m2."
        ),
    )
    ar.add_argument("scenes", nargs="+", metavar="SCENES", help="scene files, folders or globs")
    ar.add_argument("--areas", required=True, metavar="AREAS", help="vector file of area polygons")
    ar.add_argument("--out", metavar="AREAS.csv", help="output CSV (default: standard output)")
    ar.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="dask.distributed scheduler address (default: DASK_SCHEDULER_ADDRESS, else local)",
    )
    ar.add_argument("--progress", action="store_true", help="show a progress bar")

    st = sub.add_parser(
        "sites",
        help="count railcars at many sites in one job (a site catalogue)",
        description=(
            "Count railcars at every site of a catalogue (JSON, or CSV with columns name, "
            "tracks, scenes and optionally hand_counts) as one dask job. A site with hand "
            "counts is calibrated to them first (the fit on stderr). Writes <site>.csv per "
            "site and all_sites.csv into OUT_DIR, atomically."
        ),
    )
    st.add_argument("catalogue", metavar="CATALOGUE", help="site catalogue (.json or .csv)")
    st.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for the CSVs")
    st.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="dask.distributed scheduler address (default: DASK_SCHEDULER_ADDRESS, else local)",
    )

    s = sub.add_parser(
        "synth",
        help="write a SYNTHETIC Tumangang-like site (scenes, tracks, ground truth)",
        description=(
            "Write a deterministic, clearly labelled synthetic rail-yard site: georeferenced "
            "GeoTIFF scenes, track centrelines and ground truth. With --default, write (or "
            "check) the default sample that the notebooks use."
        ),
    )
    s.add_argument("out", metavar="OUT_DIR", help="folder to write the site into")
    s.add_argument(
        "--default",
        action="store_true",
        help="the default sample (other options ignored); skipped if present and valid",
    )
    s.add_argument(
        "--verify",
        action="store_true",
        help="check the default sample against data/sample_manifest.json (SHA-256)",
    )
    s.add_argument("--layout", default="tumangang", help="yard layout: tumangang or second")
    s.add_argument("--resolution", type=float, default=0.5, help="pixel size in m: 0.5, 1 or 3")
    s.add_argument("--seed", type=int, default=20231005, help="random seed")
    s.add_argument(
        "--history", default="tumangang", help="count history: tumangang, dense, empty, random"
    )
    s.add_argument("--mixed-grids", action="store_true", help="vary CRS, pixel size, offsets")
    s.add_argument("--no-clouds", action="store_true", help="cloud-free scenes")
    s.add_argument("--no-snow", action="store_true", help="no snow in winter")
    s.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from toolkit import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return EXIT_INPUT
    try:
        if args.command == "count":
            return _count(args)
        if args.command == "areas":
            return _areas(args)
        if args.command == "synth":
            return _synth(args)
        if args.command == "sites":
            return _sites(args)
    except ToolkitError as exc:
        print(f"toolkit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"toolkit {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a deep traceback
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"toolkit {args.command}: internal error: {type(exc).__name__}: {first} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return EXIT_INPUT


def _count(args) -> int:
    from toolkit.cube import load_cube
    from toolkit.occupancy import count_railcars, counts_to_dataframe, write_counts_csv

    cube = load_cube(list(args.scenes), progress=args.progress)
    if args.hand_counts is None and not args.kinds:
        counts = _compute(count_railcars(cube, args.tracks), args)
    else:
        counts = _count_in_steps(cube, args)
    if args.out:
        write_counts_csv(counts, args.out)
        n = counts.sizes["time"]
        print(f"wrote {args.out}: {n} scene(s) x {counts.sizes['track']} track(s)", file=sys.stderr)
    else:
        counts_to_dataframe(counts).to_csv(sys.stdout, index=False, na_rep="")
    _note_unreadable(counts)
    _note_unsupported(counts)
    return 0


def _count_in_steps(cube, args):
    """The counts of :func:`toolkit.count_railcars`, step by step: strips computed once, the
    parameters fitted to the hand counts when given (the fit on stderr), railcars per kind
    added when asked for."""
    from toolkit.occupancy import _fitted_counts, _site_strips

    strips = _compute(_site_strips(cube, args.tracks), args)  # in memory: so is what follows
    fit, occupancy, counts = _fitted_counts(strips, args.hand_counts, progress=args.progress)
    if fit is not None:
        _note_calibration(fit.summary())
    if args.kinds:
        from toolkit.kinds import classify_railcars, kind_counts
        from toolkit.occupancy import KIND_CSV_COLUMNS

        lengths = {k: v for k, v in (fit.params if fit else {}).items() if k != "threshold"}
        per_kind = kind_counts(classify_railcars(strips, occupancy, **lengths), occupancy)
        counts = counts.assign({c: per_kind[c] for c in KIND_CSV_COLUMNS if c in per_kind})
    return counts


def _note_calibration(summary: str, site: str | None = None) -> None:
    """A calibration's summary on stderr, one ``calibration:`` line each (not its title)."""
    where = f"site {site} " if site else ""
    for line in summary.splitlines()[1:]:
        print(f"{where}calibration: {line.strip()}", file=sys.stderr)


def _note_unreadable(counts) -> None:
    """One line on stderr naming the scenes that were seen but not counted."""
    if "scene_readable" not in counts:
        return
    bad = counts["time"].values[~counts["scene_readable"].values.astype(bool)]
    if bad.size:
        from toolkit.occupancy import _LONE_BRIGHT_RATIO, _LONE_BRIGHT_RATIO_CLEAR

        days = ", ".join(str(t)[:10] for t in bad)
        print(
            f"note: {bad.size} scene(s) not counted, railcars left empty ({days}): "
            f"brighter beside the tracks than the other scenes ({_LONE_BRIGHT_RATIO_CLEAR} "
            f"times with nothing masked along them, {_LONE_BRIGHT_RATIO} otherwise), like a "
            "lone snow scene, so no empty-track reference fits them",
            file=sys.stderr,
        )


def _note_unsupported(counts) -> None:
    """One line on stderr naming the tracks whose high bound is every railcar that fits."""
    from toolkit.occupancy import unsupported_tracks

    weak = unsupported_tracks(counts)
    if weak:
        print(
            f"note: {len(weak)} track(s) seldom seen empty at {counts.attrs['pixel_size_m']:g} m "
            f"pixels ({', '.join(weak)}): few scenes show their empty-track reference, so their "
            "railcars can be far too low; railcars_high is every railcar that fits on them",
            file=sys.stderr,
        )


def _compute(result, args):
    """Compute a lazy result on the chosen scheduler, with a progress bar if asked."""
    from toolkit.distributed import use_scheduler

    with use_scheduler(args.scheduler):
        if args.progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return result.compute()
        return result.compute()


def _areas(args) -> int:
    from toolkit.areas import area_occupancy, areas_to_dataframe, read_areas, write_areas_csv
    from toolkit.cube import load_cube

    areas = read_areas(args.areas)  # a bad areas file is reported before any scene is read
    cube = load_cube(list(args.scenes))
    occ = _compute(area_occupancy(cube, areas), args)
    if args.out:
        write_areas_csv(occ, args.out)
        n = occ.sizes["time"]
        print(f"wrote {args.out}: {n} scene(s) x {occ.sizes['area']} area(s)", file=sys.stderr)
    else:
        areas_to_dataframe(occ).to_csv(sys.stdout, index=False, na_rep="")
    return 0


def _sites(args) -> int:
    from toolkit.distributed import use_scheduler
    from toolkit.sites import count_sites, read_catalogue, write_site_counts

    catalogue = read_catalogue(args.catalogue)
    with use_scheduler(args.scheduler):
        tree = count_sites(catalogue)
        out = write_site_counts(tree, args.out)
    for site in catalogue:
        if "calibration" in tree[site.name].attrs:
            _note_calibration(tree[site.name].attrs["calibration"], site=site.name)
    print(f"wrote {out}: {len(catalogue.sites)} site(s)", file=sys.stderr)
    return 0


def _synth(args) -> int:
    from toolkit import synth

    if args.default:
        info = synth.write_default_sample(args.out, verify=True, progress=True)
    elif args.verify:
        raise ToolkitError("--verify checks the default sample only; use it with --default")
    else:
        info = synth.simulate_site(
            args.out,
            layout=args.layout,
            resolution_m=args.resolution,
            seed=args.seed,
            history=args.history,
            clouds=not args.no_clouds,
            snow=not args.no_snow,
            mixed_grids=args.mixed_grids,
            overwrite=args.overwrite,
            progress=True,
        )
    print(info.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
