"""Shared fixtures: paths, the default synthetic sample, small simulated sites."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL = SHARED / "data" / "real"

os.environ.setdefault("MPLBACKEND", "Agg")

# The suite's temporary rasters peak at 1.2 GB (measured; the out-of-core test's 32 compressed
# scenes take 1 GB of it); with less room the failures would come from deep inside rasterio.
TMP_NEEDED_MB = int(os.environ.get("TOOLKIT_TEST_TMP_MB", "1500"))


def pytest_sessionstart(session):
    where = Path(session.config.option.basetemp or tempfile.gettempdir()).absolute()
    while not where.exists():
        where = where.parent
    free_mb = shutil.disk_usage(where).free // 2**20
    if free_mb < TMP_NEEDED_MB:
        pytest.exit(
            f"{where}: {free_mb} MiB free, the test suite writes up to {TMP_NEEDED_MB} MiB of "
            f"temporary rasters; free some disk or set TMPDIR to a larger disk",
            returncode=3,
        )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL.is_dir():
        pytest.fail(f"real rasters not found at {REAL}; ../shared must sit beside the repository")
    return REAL


@pytest.fixture(scope="session")
def default_sample() -> Path:
    """The default synthetic sample in data/sample (generated once, verified by manifest)."""
    from toolkit.synth import write_default_sample

    return write_default_sample(ROOT / "data" / "sample", verify=True)


@pytest.fixture(autouse=True)
def _isolated_dask_scheduler():
    """Each test starts with the same dask scheduler settings: a Client left open or a
    global ``dask.config.set(scheduler=...)`` in one test must not send the next test's
    computations to a cluster that is gone. (Other configuration, such as the defaults
    that importing distributed adds, is left alone.)"""
    import dask

    keys = ("scheduler", "scheduler-address", "get")
    saved = {k: dask.config.config[k] for k in keys if k in dask.config.config}
    yield
    for k in keys:
        if k in saved:
            dask.config.config[k] = saved[k]
        else:
            dask.config.config.pop(k, None)
