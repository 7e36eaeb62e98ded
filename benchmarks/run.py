"""Run every benchmark in one process and write a table of ratios.

``python -m benchmarks.run --sample data/sample --out benchmarks/latest.md``
(what ``make bench`` does). Each row times the toolkit against a baseline run
in the same process on the same data; ratios and medians, not single timings,
because this machine is noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import math
import os
import platform
import sys
import traceback
from pathlib import Path

import psutil

SUITES = [
    "bench_loading",
    "bench_counting",
    "bench_areas",
    "bench_changepoints",
    "bench_scaling",
]


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run")
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--out", default="benchmarks/latest.md")
    p.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    p.add_argument("--only", nargs="*", help="suites to run")
    args = p.parse_args(argv)

    rows, failures = [], []
    for name in SUITES:
        if args.only and name not in args.only:
            continue
        print(f"[bench] {name} ...", flush=True)
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
            if name == "bench_changepoints":
                got = mod.run(quick=args.quick)
            else:
                got = mod.run(args.sample, quick=args.quick)
            rows.extend(got)
        except Exception as exc:  # noqa: BLE001 - a failing suite is reported, not hidden
            traceback.print_exc()
            failures.append(f"{name}: {type(exc).__name__}: {exc}")

    cols = [
        "benchmark",
        "case",
        "ours_s",
        "reference",
        "reference_s",
        "ratio",
        "target",
        "met",
        "peak_mem_mb",
        "note",
    ]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}. Run: {dt.date.today().isoformat()}. Times are medians in",
        "seconds; ratio = ours / reference (lower is better for time ratios unless the",
        "target says otherwise). Produced by `make bench`.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    if failures:
        lines += ["", "Suites that failed:", *[f"- {f}" for f in failures]]
    text = "\n".join(lines) + "\n"
    from toolkit._io import atomic_write_text

    atomic_write_text(Path(args.out), text)
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
