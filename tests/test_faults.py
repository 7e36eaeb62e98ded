"""A run killed while writing an output or a cache leaves the previous file intact.

Each test starts a child Python process that overwrites an existing output
(the counts CSV through the command line, a zarr cube cache through
``cache_cube``), slowed down *inside the child's own script* so that it can be
killed mid-write with SIGKILL. The previous file must then be byte-identical
and still read back as before; debris of the killed run may remain only under
a ``.tmp-`` name that nothing reads as output. Scenes are SYNTHETIC.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

import toolkit

X0, Y0, RES = 500_000.0, 4_700_100.0, 0.5


def _scene(path: Path, when: str, value: int) -> Path:
    """A SYNTHETIC 64 x 64 px, 2-band uint16 scene."""
    img = np.full((2, 64, 64), value, "uint16")
    img[:, 10:20, 10:40] = value + 100
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=2,
        dtype="uint16",
        nodata=0,
        crs="EPSG:32652",
        transform=from_origin(X0, Y0, RES, RES),
    ) as dst:
        dst.write(img)
        dst.update_tags(TIFFTAG_DATETIME=when, SYNTHETIC="yes")
    return path


@pytest.fixture()
def scenes(tmp_path) -> Path:
    d = tmp_path / "scenes"
    d.mkdir()
    for i in range(4):
        _scene(d / f"s{i}.tif", f"2023:10:0{i + 1} 02:00:00", 1000 + 10 * i)
    return d


def _digest_tree(path: Path) -> dict[str, str]:
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _run_and_kill(script: str, marker: str, *, timeout: float = 120.0) -> None:
    """Run ``script`` in a child process; SIGKILL it as soon as it prints ``marker``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = proc.stdout.readline()
            if marker in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
            if not line or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(
                    f"child never reached {marker!r} (exit {proc.poll()}): {proc.stderr.read()}"
                )
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _debris(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_killed_while_writing_the_counts_csv_keeps_the_previous_file(scenes, tmp_path):
    out = tmp_path / "out" / "counts.csv"
    out.parent.mkdir()
    previous = "time,track_id,railcars\n2023-09-01T00:00:00,01,3\n"
    out.write_text(previous)
    tracks = tmp_path / "tracks.geojson"
    import geopandas as gpd
    from shapely.geometry import LineString

    gpd.GeoDataFrame(
        {"track_id": ["01"]},
        geometry=[LineString([(X0 + 4, Y0 - 7.5), (X0 + 28, Y0 - 7.5)])],
        crs="EPSG:32652",
    ).to_crs(4326).to_file(tracks, driver="GeoJSON")
    script = f"""
        import sys, time
        import pandas as pd

        real = pd.DataFrame.to_csv

        def slow_to_csv(self, path, *args, **kwargs):
            # write the real table, then keep appending slowly: the kill lands mid-write
            real(self, path, *args, **kwargs)
            with open(path, "a") as fh:
                fh.write("partial row that must never be seen\\n")
                fh.flush()
                print("WRITING", flush=True)
                time.sleep(60)

        pd.DataFrame.to_csv = slow_to_csv
        from toolkit.cli import main
        sys.exit(main(["count", {str(scenes)!r}, "--tracks", {str(tracks)!r},
                       "--out", {str(out)!r}]))
    """
    env_free = os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
    try:
        _run_and_kill(script, "WRITING")
    finally:
        if env_free is not None:
            os.environ["DASK_SCHEDULER_ADDRESS"] = env_free
    assert out.read_text() == previous
    debris = _debris(out.parent, {"counts.csv"})
    assert all(name.startswith(".tmp-counts.csv.") for name in debris), debris
    # a complete run afterwards replaces it and leaves nothing else behind
    from toolkit.cli import main

    assert main(["count", str(scenes), "--tracks", str(tracks), "--out", str(out)]) == 0
    df = pd.read_csv(out, dtype={"track_id": str})
    assert len(df) == 4 and "partial row" not in out.read_text()


def _cache_script(scenes: Path, store: Path, marker_after_chunks: int) -> str:
    return f"""
        import time
        import dask, dask.array as da
        import toolkit

        cube = toolkit.load_cube({str(scenes)!r}, chunks={{"y": 32, "x": 32}})
        cube = cube + 1  # a different cube from the cached one
        written = [0]

        def slow(block):
            written[0] += 1
            if written[0] == {marker_after_chunks}:
                print("WRITING", flush=True)
                time.sleep(60)
            return block

        cube = cube.copy(data=cube.data.map_blocks(slow, dtype=cube.dtype))
        with dask.config.set(scheduler="synchronous"):
            toolkit.cache_cube(cube, {str(store)!r}, overwrite=True)
    """


def test_killed_while_writing_a_zarr_cache_keeps_the_previous_store(scenes, tmp_path):
    store = tmp_path / "cache" / "cube.zarr"
    cube = toolkit.load_cube(scenes)
    toolkit.cache_cube(cube, store)
    before = _digest_tree(store)
    expected = toolkit.open_cube(store).compute()
    _run_and_kill(_cache_script(scenes, store, marker_after_chunks=5), "WRITING")
    assert _digest_tree(store) == before
    xr.testing.assert_identical(toolkit.open_cube(store).compute(), expected)
    debris = _debris(store.parent, {"cube.zarr"})
    assert all(name.startswith(".tmp-cube.zarr.") for name in debris), debris


def test_killed_during_a_cache_swap_leaves_a_complete_store(scenes, tmp_path):
    """Killed right after the new store was swapped in, before the old one was removed."""
    store = tmp_path / "cache" / "cube.zarr"
    toolkit.cache_cube(toolkit.load_cube(scenes), store)
    script = f"""
        import os, shutil, time
        import toolkit

        real = shutil.rmtree

        def pause_then_remove(path, *args, **kwargs):
            here = os.path.dirname(os.fspath(path)) == {str(store.parent)!r}
            if here and os.path.basename(os.fspath(path)).startswith(".tmp-cube.zarr."):
                print("SWAPPED", flush=True)  # swapped in; the old store not yet removed
                time.sleep(60)
            real(path, *args, **kwargs)

        shutil.rmtree = pause_then_remove
        cube = toolkit.load_cube({str(scenes)!r}) + 1
        toolkit.cache_cube(cube, {str(store)!r}, overwrite=True)
    """
    _run_and_kill(script, "SWAPPED")
    # the store at the path is the complete new cube, readable as it is
    new = (toolkit.load_cube(scenes) + 1).compute()
    got = toolkit.open_cube(store).compute()
    np.testing.assert_array_equal(got.values, new.values)
    debris = _debris(store.parent, {"cube.zarr"})
    assert all(name.startswith(".tmp-cube.zarr.") for name in debris), debris


def test_debris_of_a_killed_scene_write_is_not_loaded(scenes, tmp_path):
    before = toolkit.load_cube(scenes)
    script = f"""
        import time
        import numpy as np, rasterio
        from rasterio.transform import from_origin
        from toolkit._io import atomic_path

        with atomic_path({str(scenes / "s9.tif")!r}) as tmp:
            with rasterio.open(tmp, "w", driver="GTiff", width=64, height=64, count=2,
                               dtype="uint16", nodata=0, crs="EPSG:32652",
                               transform=from_origin({X0}, {Y0}, {RES}, {RES})) as dst:
                dst.write(np.full((2, 64, 64), 7, "uint16"))
                dst.update_tags(TIFFTAG_DATETIME="2023:10:09 02:00:00", SYNTHETIC="yes")
            print("WRITTEN", flush=True)
            time.sleep(60)
    """
    _run_and_kill(script, "WRITTEN")
    assert not (scenes / "s9.tif").exists()
    after = toolkit.load_cube(scenes)
    assert list(after.scene.values) == list(before.scene.values)
