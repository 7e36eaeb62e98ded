"""Counting accuracy on the SYNTHETIC evaluation sites, as a Markdown table.

Simulates the held-out sites of :data:`toolkit.validation.HELD_OUT_SITES` (never used
while tuning the occupancy step), counts each with the defaults of
``toolkit.count_railcars`` and writes ``benchmarks/accuracy.md``: the figures of the
README's accuracy table, measured afresh (50 s on two cores). The default sample (a
tuning site) is included when ``data/sample`` exists. ``--tuning`` adds the 29 sites
the occupancy step was tuned on, in a second table (1 min 54 s to 3 min 3 s in all, measured);
``make accuracy`` runs it with ``--tuning``.

``python -m benchmarks.accuracy [--out PATH] [--workdir DIR] [--site NAME ...] [--tuning]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
from pathlib import Path

from toolkit._io import atomic_write_text
from toolkit.occupancy import LOW_SUN_DEG
from toolkit.validation import (
    HELD_OUT_SITES,
    TUNING_SITES,
    accuracy_by_sun_markdown,
    accuracy_markdown,
    evaluation_accuracy,
)

ROOT = Path(__file__).resolve().parent.parent

SUN_NOTE = (
    "The same counts split by the sun's elevation at acquisition (the counts' "
    f"`sun_elevation_deg`): below {LOW_SUN_DEG:g} degrees a 4 m railcar's shadow can reach "
    "across the "
    "neighbouring track, where dark cars and ballast in a neighbour's shadow look alike. "
    "Error per track and scene over every track-scene of those scenes; scene error over "
    "the scored ones among them (blank where none is)."
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "accuracy.md"))
    p.add_argument("--workdir", default=None, help="where to simulate (default: a temp dir)")
    p.add_argument("--site", action="append", choices=sorted(HELD_OUT_SITES), default=None)
    p.add_argument("--sample", default=str(ROOT / "data" / "sample"))
    p.add_argument(
        "--tuning",
        action="store_true",
        help="also the sites the occupancy step was tuned on (TUNING_SITES), in a second table",
    )
    args = p.parse_args(argv)
    sites = {}
    if Path(args.sample, "truth.csv").exists():
        sites["default sample (tuning)"] = {"path": args.sample, "resolution_m": 0.5}
    for name in args.site or HELD_OUT_SITES:
        sites[name] = HELD_OUT_SITES[name]
    with tempfile.TemporaryDirectory(prefix="accuracy_") as tmp:
        table = evaluation_accuracy(sites, workdir=args.workdir or tmp, progress=True)
        tuning = (
            evaluation_accuracy(TUNING_SITES, workdir=args.workdir or tmp, progress=True)
            if args.tuning
            else None
        )
    text = "\n".join(
        [
            "# Counting accuracy (SYNTHETIC sites, measured)",
            "",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}. Run: {dt.date.today().isoformat()}. Produced by "
            "`make accuracy` (`python -m benchmarks.accuracy`).",
            "",
            "Every site is SYNTHETIC (`toolkit.simulate_site`), counted with the defaults of "
            "`toolkit.count_railcars`. Scene error and bias are over cloud-free scenes holding "
            f'at least {table.attrs["min_cars"]} railcars ("scored"); scenes "not counted" '
            "are lone snow scenes, seen but left out. The other columns are over every "
            "track-scene; the mask's figure is the usable-data mask's own visible share at "
            "the true track. Targets: scene error 3 % at 0.5-1 m and 12 % at 3 m, bias "
            "within 2 %, 0.5 railcars per track and scene at 0.5-1 m, 90 % within low/high, "
            "valid_fraction within 0.05 everywhere.",
            "",
            accuracy_markdown(table),
            "",
            "### By sun elevation",
            "",
            SUN_NOTE,
            "",
            accuracy_by_sun_markdown(table),
            "",
        ]
        + (
            [
                "## Sites used while tuning (SYNTHETIC)",
                "",
                "How well the occupancy step fits the sites it was tuned on (`--tuning`); "
                "not a measure of how it generalises. Grouped by traffic, then pixel size.",
                "",
                accuracy_markdown(tuning),
                "",
                "### By sun elevation",
                "",
                accuracy_by_sun_markdown(tuning),
                "",
            ]
            if tuning is not None
            else []
        )
    )
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
