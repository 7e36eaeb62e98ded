"""Re-run every notebook headless and collect the headline numbers.

``python -m toolkit.reproduce`` (what ``make reproduce`` calls) executes the
numbered notebooks in ``notebooks/`` in order with papermill, keeps the
executed copies in ``notebooks/executed/``, and writes ``results/summary.json``
and ``results/summary.md`` from the numbers the notebooks recorded with
:func:`record_results`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from toolkit._io import atomic_write_text
from toolkit.errors import InputError, ToolkitError

__all__ = [
    "record_results",
    "read_results",
    "execute_notebook",
    "run_notebooks",
    "write_summary",
    "versions",
]

ROOT = Path(__file__).resolve().parents[1]


def record_results(values: dict, *, path: str | os.PathLike = "../results/summary.json") -> dict:
    """Merge ``values`` into the results JSON (atomically) and return the whole summary.

    Values must be JSON-serialisable numbers, strings or lists; numpy scalars
    are converted. Keys are kept sorted so re-runs diff cleanly.
    """
    path = Path(path)
    current = read_results(path) if path.exists() else {}
    for key, value in values.items():
        current[str(key)] = _plain(value)
    atomic_write_text(path, json.dumps(dict(sorted(current.items())), indent=2) + "\n")
    return current


def read_results(path: str | os.PathLike = ROOT / "results" / "summary.json") -> dict:
    """The results summary as a dict."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no results yet; run `make reproduce` first") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def write_summary(path: str | os.PathLike = ROOT / "results" / "summary.json") -> Path:
    """Write ``summary.md`` beside the JSON: one table of the headline numbers."""
    path = Path(path)
    results = read_results(path)
    lines = [
        "# Headline numbers",
        "",
        "Computed by `make reproduce` from the SYNTHETIC sample (simulated scenes whose",
        "true counts follow the published facts); published figures are quoted with sources",
        "in `data/published_observations.csv`.",
        "",
        "| quantity | value |",
        "| --- | --- |",
    ]
    for key, value in results.items():
        lines.append(f"| {key} | {value} |")
    md = path.with_suffix(".md")
    atomic_write_text(md, "\n".join(lines) + "\n")
    return md


def execute_notebook(
    notebook: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    parameters: dict | None = None,
    cwd: str | os.PathLike | None = None,
    timeout_s: int = 900,
    kernel_name: str = "python3",
) -> Path:
    """Execute one notebook headless with papermill; return the executed copy's path.

    Raises
    ------
    ToolkitError
        Naming the notebook and the cell's error when a cell fails.
    """
    import papermill as pm

    notebook = Path(notebook)
    if not notebook.exists():
        raise InputError(f"{notebook}: notebook not found")
    output = Path(output) if output else ROOT / "notebooks" / "executed" / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters or {},
            cwd=str(cwd or notebook.parent),
            kernel_name=kernel_name,
            progress_bar=False,
            execution_timeout=timeout_s,
            log_output=False,
        )
    except pm.PapermillExecutionError as exc:
        raise ToolkitError(
            f"{notebook.name}: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}"
        ) from None
    return output


def run_notebooks(
    notebooks_dir: str | os.PathLike = ROOT / "notebooks",
    *,
    only: list[str] | None = None,
    parameters: dict | None = None,
) -> dict[str, float]:
    """Execute every numbered notebook in order; return seconds per notebook."""
    nbs = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [nb for nb in nbs if any(o in nb.stem for o in only)]
    if not nbs:
        raise InputError(f"{notebooks_dir}: no numbered notebooks (NN_name.ipynb) found")
    took = {}
    for nb in nbs:
        start = time.perf_counter()
        print(f"[reproduce] executing {nb.name} ...", flush=True)
        execute_notebook(nb, parameters=parameters)
        took[nb.name] = round(time.perf_counter() - start, 1)
        print(f"[reproduce] {nb.name} done in {took[nb.name]} s", flush=True)
    return took


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolkit.reproduce", description=__doc__)
    p.add_argument("--sample", default="data/sample", help="the default sample folder")
    p.add_argument("--only", nargs="*", help="run only notebooks whose names contain these")
    args = p.parse_args(argv)
    try:
        from toolkit.synth import write_default_sample

        write_default_sample(args.sample, verify=True)
        took = run_notebooks(only=args.only)
        summary = ROOT / "results" / "summary.json"
        if summary.exists():
            md = write_summary(summary)
            print(f"[reproduce] wrote {summary} and {md}")
        print("[reproduce] notebooks: " + ", ".join(f"{k} {v} s" for k, v in took.items()))
    except ToolkitError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _plain(value):
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


if __name__ == "__main__":
    raise SystemExit(main())


def versions() -> str:
    """One line with the versions of the toolkit and the libraries that shape its numbers."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["railyard-toolkit", "numpy", "xarray", "dask", "rasterio", "scipy", "statsmodels"]
    parts = []
    for name in names:
        try:
            parts.append(f"{name.replace('railyard-', '')} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return f"Python {sys.version.split()[0]}; " + ", ".join(parts)
