"""The pipeline on a real dask.distributed cluster (scheduler + 2 workers on 127.0.0.1).

Counts, change maps, change points and baseline comparisons computed on the
cluster must equal the local threaded run exactly; a cube several times larger
than a worker's memory limit must be counted and change-mapped without a worker
being killed (same worker processes before and after), with ground truth
recovered. All scenes here are SYNTHETIC, written by the helpers below.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import psutil
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin
from shapely.geometry import LineString

import toolkit
from toolkit.distributed import describe_cluster, get_client, plan_chunks, scheduler_address

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CRS = "EPSG:32652"
X0, Y0 = 500_000.0, 4_700_000.0
BANDS = ("blue", "green", "red", "nir")
# PlanetScope SuperDove's eight bands
BANDS8 = ("coastal_blue", "blue", "green_i", "green", "yellow", "red", "red_edge", "nir")
# Out-of-core case: 32 dates x 8 bands x 2048 x 2048 uint16 = 2 GiB of pixels, on fresh
# workers limited to 600 MiB each (the interpreter with the toolkit imported takes ~260 MiB;
# workers pause at 80 % of the limit and are killed at 95 %).
BIG_DATES, BIG_SIZE, SMALL_WORKER_MEMORY = 32, 2048, "600MiB"
EQUALITY_WORKER_MEMORY = "2GiB"
CAR_M, GAP_M = 14.2, 1.0  # 15.2 m per car over couplers, the counting default


# --------------------------------------------------------------------------- synthetic yard


def write_yard(
    folder: Path,
    *,
    n_dates: int,
    size: int,
    n_tracks: int,
    seed: int,
    res: float = 0.5,
    change_at: int | None = None,
    compress: str | None = None,
    track_length_m: float | None = None,
    bands: tuple[str, ...] = BANDS,
) -> dict:
    """Write a SYNTHETIC yard: dated multi-band uint16 scenes, tracks, and the true counts.

    Tracks run west-east; cars are rust-brown 3.5 m wide runs of 14.2 m cars with 1 m
    coupler gaps, at most half the track full. From date ``change_at`` on, a 96 x 96 px
    block (no track) is 300 DN brighter.
    """
    rng = np.random.default_rng(seed)
    scenes = folder / "scenes"
    scenes.mkdir(parents=True)
    noise = rng.integers(0, 40, (len(bands), size + 64, size + 64), dtype=np.uint16)
    # A yard is a narrow band of a scene: 5 m between track centres, in the middle rows.
    rows = (size // 2 + (np.arange(n_tracks) - n_tracks // 2) * int(5.0 / res)).astype(int)
    x_start_m = 10.0
    x_end_m = size * res - 10.0 if track_length_m is None else x_start_m + track_length_m
    per_car = CAR_M + GAP_M
    capacity = int((x_end_m - x_start_m - 20.0) // per_car)
    dates = pd.date_range("2023-01-03 02:15", periods=n_dates, freq="5D")
    truth = np.zeros((n_dates, n_tracks), int)
    change_box = (size // 8, size // 8 + 96, 40, 136)
    # rust-brown cars: darker than the ballast and redder (not a shadow, which is grey)
    car = np.linspace(450, 1250, len(bands)).astype(np.uint16)
    for t, when in enumerate(dates):
        k = t % 64
        img = noise[:, k : k + size, (3 * k) % 64 : (3 * k) % 64 + size] + np.uint16(1000)
        for i, r in enumerate(rows):
            img[:, r - 4 : r + 5, :] = 1400  # ballast
            n = int(rng.integers(0, capacity // 2 + 1)) if rng.random() > 0.2 else 0
            truth[t, i] = n
            start = x_start_m + 10.0 + rng.uniform(0, (capacity - n) * per_car)
            for c in range(n):
                a = int(round((start + c * per_car) / res))
                b = int(round((start + c * per_car + CAR_M) / res))
                img[:, r - 3 : r + 4, a:b] = car[:, None, None]
        if change_at is not None and t >= change_at:
            y0, y1, x0, x1 = change_box
            img[:, y0:y1, x0:x1] += np.uint16(300)
        profile = dict(
            driver="GTiff",
            width=size,
            height=size,
            count=len(bands),
            dtype="uint16",
            nodata=0,
            crs=CRS,
            transform=from_origin(X0, Y0, res, res),
            tiled=True,
            blockxsize=256,
            blockysize=256,
        )
        if compress:
            # fast settings: the big yard's 32 scenes take 1 GB on disk this way, not 2
            profile.update(compress=compress, predictor=2, zlevel=1)
        with rasterio.open(scenes / f"synthetic_{when:%Y%m%dT%H%M%S}.tif", "w", **profile) as dst:
            dst.write(img)
            dst.descriptions = bands
            dst.update_tags(TIFFTAG_DATETIME=when.strftime("%Y:%m:%d %H:%M:%S"), SYNTHETIC="yes")
    lines = [
        LineString([(X0 + x_start_m, Y0 - (r + 0.5) * res), (X0 + x_end_m, Y0 - (r + 0.5) * res)])
        for r in rows
    ]
    ids = [f"{i + 1:02d}" for i in range(n_tracks)]
    tracks = folder / "tracks.geojson"
    gpd.GeoDataFrame({"track_id": ids}, geometry=lines, crs=CRS).to_crs(4326).to_file(
        tracks, driver="GeoJSON"
    )
    return {
        "scenes": scenes,
        "tracks": tracks,
        "truth": xr.DataArray(truth, dims=("time", "track"), coords={"track": ids}),
        "change_box": change_box,
        "change_at": change_at,
        "dates": dates,
    }


# --------------------------------------------------------------------------- cluster


class Cluster:
    """A scheduler and worker processes started with the ``dask`` command line."""

    def __init__(self, folder: Path, *, n_workers: int, memory_limit: str):
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.n_workers = n_workers
        self.memory_limit = memory_limit

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.folder / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:
            self.procs.append(
                subprocess.Popen([str(BIN / "dask"), *args], stdout=fh, stderr=subprocess.STDOUT)
            )

    def start(self) -> Cluster:
        self._spawn(
            "scheduler",
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
        )
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"scheduler did not start: {self.logs[0].read_text()[-2000:]}")
            time.sleep(0.1)
        for i in range(self.n_workers):
            self._spawn(
                f"worker{i}",
                [
                    "worker",
                    "--scheduler-file",
                    str(self.scheduler_file),
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    self.memory_limit,
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    "--local-directory",
                    str(self.folder / f"worker{i}"),
                ],
            )
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        return self

    def stop(self) -> None:
        children = []
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                children += psutil.Process(p.pid).children(recursive=True)
        for p in reversed(self.procs):  # workers first, then the scheduler
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for child in children:  # the nannies' worker processes, if any outlived them
            with contextlib.suppress(psutil.Error):
                child.kill()
                child.wait(timeout=5)

    def log_text(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')}" for p in self.logs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(
        tmp_path_factory.mktemp("cluster"), n_workers=2, memory_limit=EQUALITY_WORKER_MEMORY
    )
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture()
def client(cluster):
    with get_client(scheduler_file=cluster.scheduler_file, timeout="60s") as cl:
        cl.wait_for_workers(cluster.n_workers, timeout=120)
        yield cl


@pytest.fixture(scope="module")
def small_yard(tmp_path_factory):
    return write_yard(
        tmp_path_factory.mktemp("small"), n_dates=12, size=384, n_tracks=3, seed=7, change_at=7
    )


def _local(obj):
    with dask.config.set(scheduler="threads", num_workers=2):
        return obj.compute()


# --------------------------------------------------------------------------- helpers' API


def test_scheduler_address_order(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with dask.config.set({"scheduler-address": None}):
        assert scheduler_address() is None
        assert get_client() is None
    with dask.config.set({"scheduler-address": "tcp://10.1.2.3:8786"}):
        assert scheduler_address() == "tcp://10.1.2.3:8786"
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.9.9.9:8786")
        assert scheduler_address() == "tcp://10.9.9.9:8786"
        assert scheduler_address("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"
        # an explicit scheduler file wins over the environment
        with pytest.raises(toolkit.ToolkitError, match=r"nope\.json: scheduler file not found"):
            get_client(scheduler_file="nope.json")


def test_unreachable_scheduler_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(toolkit.ToolkitError, match=r"cannot reach the dask scheduler at tcp://"):
        get_client("tcp://127.0.0.1:9", timeout="1s")


def test_plan_chunks_fits_the_memory_limit():
    sizes = {"time": 64, "band": 4, "y": 2048, "x": 2048, "dtype": "uint16"}
    plan = plan_chunks(sizes, memory_limit_bytes=500 * 2**20)
    edge = plan["y"]
    assert plan == {"time": 1, "band": -1, "y": edge, "x": edge} and edge % 64 == 0
    # the whole time series of one block, with its working copies, is <= 1/4 of the limit
    assert 64 * edge**2 * (4 * 2 + 24) <= 0.25 * 500 * 2**20
    assert 64 * (edge + 64) ** 2 * (4 * 2 + 24) > 0.25 * 500 * 2**20
    assert plan_chunks(sizes, memory_limit_bytes=2**40)["y"] == 2048
    with pytest.raises(toolkit.InputError, match="give the workers more memory"):
        plan_chunks(sizes, memory_limit_bytes=2**20)


# --------------------------------------------------------------------------- equality


def test_counts_and_change_map_identical_on_the_cluster(client, small_yard, cluster):
    cube = toolkit.load_cube(small_yard["scenes"], chunks={"y": 256, "x": 256})
    counts = toolkit.count_railcars(cube, small_yard["tracks"])
    cmap = toolkit.change_map(cube.sel(band="red").where(cube.valid), min_size=2)
    # Each result is computed on its own: dask.compute(counts, cmap) trips a dask 2026.8 graph
    # optimisation bug ("Missing dependency transpose-...") on change_map's Dataset.
    local_counts, local_map = _local(counts), _local(cmap)
    pids = describe_cluster(client).worker_pids
    remote_counts, remote_map = counts.compute(), cmap.compute()  # the client is the default
    xr.testing.assert_identical(remote_counts, local_counts)
    xr.testing.assert_identical(remote_map, local_map)
    # ... and the numbers matter: the planted change is found in every pixel of its block.
    # (Counting accuracy against the planted cars is the occupancy tests' business; here the
    # cluster must reproduce the local numbers exactly, whatever they are.)
    assert local_counts.railcars.notnull().all()
    y0, y1, x0, x1 = small_yard["change_box"]
    box = local_map.isel(y=slice(y0 + 2, y1 - 2), x=slice(x0 + 2, x1 - 2))
    assert (box.change_index == small_yard["change_at"]).all()
    assert float(box.p_value.max()) < 1e-6
    assert describe_cluster(client).worker_pids == pids


def test_compiled_kernels_keep_to_the_workers_threads(client, cluster):
    """A worker started with ``--nthreads 1`` runs the occupancy step's compiled kernels (and
    its pool of scene threads, sized by numba's count) on one thread, not on one per core of
    the machine, and its thread's count is restored afterwards; outside a worker nothing
    changes. (That the counts are the same either way is the equality test above.)"""
    import numba

    from toolkit._fast import call_within_worker_threads

    cores = numba.config.NUMBA_NUM_THREADS
    if cores < 2:
        pytest.skip("numba has one thread on this machine: nothing to cap")

    def probe():
        during = call_within_worker_threads(numba.get_num_threads)
        return during, numba.get_num_threads()

    during, after = client.submit(probe, pure=False).result()
    assert (during, after) == (1, cores)  # the test cluster's workers have one thread each
    assert call_within_worker_threads(numba.get_num_threads) == numba.get_num_threads() == cores


def test_zarr_cache_written_by_workers_reads_back_identical(client, small_yard, tmp_path):
    cube = toolkit.load_cube(small_yard["scenes"], chunks={"y": 256, "x": 256})
    store = toolkit.cache_cube(cube, tmp_path / "cube.zarr")  # computed on the cluster
    back = toolkit.open_cube(store)
    xr.testing.assert_identical(_local(back), _local(cube))
    xr.testing.assert_identical(
        toolkit.count_railcars(back, small_yard["tracks"]).compute(),
        _local(toolkit.count_railcars(cube, small_yard["tracks"])),
    )


def test_changepoints_and_baseline_identical_in_a_worker(client):
    from toolkit.synth import five_year_history

    h = five_year_history()
    series = pd.Series(h["railcars"].to_numpy(float), index=pd.DatetimeIndex(h["time"]))
    local_cp = toolkit.detect_changepoints(series, model="poisson")
    local_cmp = toolkit.compare_with_baseline(series, "2023-10-05", seed=3)
    remote_cp = client.submit(toolkit.detect_changepoints, series, model="poisson").result()
    remote_cmp = client.submit(toolkit.compare_with_baseline, series, "2023-10-05", seed=3)
    remote_cmp = remote_cmp.result()
    assert remote_cp.summary() == local_cp.summary()
    assert remote_cmp.summary() == local_cmp.summary()
    assert remote_cmp.p_exceed == local_cmp.p_exceed
    assert remote_cmp.unprecedented and local_cmp.event_value >= 60


def _csv_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_scheduler_option_and_environment(cluster, small_yard, tmp_path):
    args = [sys.executable, "-m", "toolkit", "count", str(small_yard["scenes"])]
    args += ["--tracks", str(small_yard["tracks"])]
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    cube = toolkit.load_cube(small_yard["scenes"])
    toolkit.write_counts_csv(
        _local(toolkit.count_railcars(cube, small_yard["tracks"])), tmp_path / "local.csv"
    )
    runs = {
        "option": (
            [*args, "--out", str(tmp_path / "option.csv"), "--scheduler", cluster.address],
            env,
        ),
        "env": (
            [*args, "--out", str(tmp_path / "env.csv")],
            {**env, "DASK_SCHEDULER_ADDRESS": cluster.address},
        ),
    }
    for name, (cmd, e) in runs.items():
        r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)
        assert r.returncode == 0, (name, r.stderr)
    digests = {name: _csv_digest(tmp_path / f"{name}.csv") for name in [*runs, "local"]}
    assert digests["option"] == digests["local"] == digests["env"]


# --------------------------------------------------------------------------- out of core


class _PeakRSS:
    """Peak resident memory (MiB) of the given processes, sampled every 20 ms."""

    def __init__(self, pids):
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = {p.pid: 0.0 for p in self.procs}
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            for p in self.procs:
                with contextlib.suppress(psutil.Error):
                    self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss / 2**20)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def big_yard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    yield write_yard(
        folder,
        n_dates=BIG_DATES,
        size=BIG_SIZE,
        n_tracks=3,
        seed=11,
        change_at=20,
        # estimate_occupancy holds every date of every track's strip in one task (about
        # 32 dates x 3 tracks x 400 m x 11 across x 8 bands float32 = 27 MB here)
        track_length_m=400.0,
        bands=BANDS8,
        # compressed, as delivered imagery is; GDAL's block cache then holds decoded tiles
        compress="deflate",
    )
    shutil.rmtree(folder, ignore_errors=True)  # 1 GB of scenes: not kept to the session's end


@pytest.mark.slow
def test_cube_larger_than_worker_memory_is_counted_and_change_mapped(big_yard, tmp_path, capsys):
    small = Cluster(tmp_path, n_workers=2, memory_limit=SMALL_WORKER_MEMORY)
    try:
        small.start()
        with get_client(scheduler_file=small.scheduler_file, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            try:
                _out_of_core(client, big_yard, capsys, small)
            except AssertionError as err:  # say what the cluster said, whatever failed
                raise AssertionError(f"{err}\n{small.log_text()[-4000:]}") from err
            log = small.log_text()
            assert "was killed" not in log and "Restarting worker" not in log, log[-3000:]
    finally:
        small.stop()


def _out_of_core(client, big_yard, capsys, small):
    info = describe_cluster(client)
    # the worker processes as the operating system knows them (a restarted worker is a new
    # process), so the check below does not depend on the client's connection
    started = {p: psutil.Process(p).create_time() for p in info.worker_pids}
    limit = info.min_memory_limit_bytes
    probe = toolkit.load_cube(big_yard["scenes"])
    cube_bytes = probe.size * probe.dtype.itemsize
    assert cube_bytes >= 3 * limit, (cube_bytes, limit)
    chunks = plan_chunks(probe, memory_limit_bytes=limit, threads_per_worker=1)
    cube = toolkit.load_cube(big_yard["scenes"], chunks=chunks)
    counts = toolkit.count_railcars(cube, big_yard["tracks"])
    cmap = toolkit.change_map(cube.sel(band="red").where(cube.valid), min_size=3)
    t0 = time.perf_counter()
    with _PeakRSS(info.worker_pids) as mem:
        counts, cmap = counts.compute(), cmap.compute()
    elapsed = time.perf_counter() - t0
    # no worker was killed or restarted: the same processes are still there, and so is the
    # scheduler
    assert len(started) == 2
    for pid, created in started.items():
        assert psutil.pid_exists(pid) and psutil.Process(pid).create_time() == created, pid
    assert small.procs[0].poll() is None, "the scheduler exited"
    peak = max(mem.peak.values())
    assert peak < limit / 2**20, (mem.peak, limit)
    # ground truth: planted cars and the planted change
    agree = float((counts.railcars.values == big_yard["truth"].values).mean())
    # the cluster's counts are the local ones (counting reads only the track window: cheap)
    window = toolkit.load_cube(big_yard["scenes"], chunks=chunks)
    xr.testing.assert_identical(counts, _local(toolkit.count_railcars(window, big_yard["tracks"])))
    y0, y1, x0, x1 = big_yard["change_box"]
    box = cmap.isel(y=slice(y0 + 2, y1 - 2), x=slice(x0 + 2, x1 - 2))
    assert (box.change_index == big_yard["change_at"]).all()
    with capsys.disabled():
        print(
            f"\n[out-of-core] cube {cube_bytes / 2**30:.2f} GiB, worker limit "
            f"{limit / 2**20:.0f} MiB, chunks {chunks['y']}x{chunks['x']}, peak worker RSS "
            f"{peak:.0f} MiB, {elapsed:.1f} s, counts equal to the planted cars: {agree:.3f}, "
            f"client {client.status}"
        )


# toolkit.occupancy._reference takes np.nanmean over margin samples that are all NaN for some
# positions of this small yard (occupancy.py, "Mean of empty slice"); the local comparison run
# executes in this process, where warnings are errors. This test is about the site job.
@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_site_catalogue_counted_as_one_job_on_the_cluster(client, small_yard, tmp_path):
    from toolkit.sites import count_sites, read_catalogue, sites_to_dataframe, write_site_counts

    other = write_yard(tmp_path / "other", n_dates=5, size=256, n_tracks=2, seed=3)
    catalogue = tmp_path / "sites.json"
    catalogue.write_text(
        json.dumps(
            {
                "sites": [
                    {
                        "name": "yard_a",
                        "tracks": str(small_yard["tracks"]),
                        "scenes": str(small_yard["scenes"]),
                    },
                    {"name": "yard_b", "tracks": "other/tracks.geojson", "scenes": "other/scenes"},
                ]
            }
        )
    )
    cat = read_catalogue(catalogue)
    remote = count_sites(cat)
    with dask.config.set(scheduler="threads", num_workers=2):
        local = count_sites(cat)
    xr.testing.assert_identical(remote, local)
    assert list(remote.children) == ["yard_a", "yard_b"]
    # each site equals counting it on its own
    alone = _local(toolkit.count_railcars(toolkit.load_cube(other["scenes"]), other["tracks"]))
    xr.testing.assert_equal(remote["yard_b"].to_dataset(), alone)
    table = sites_to_dataframe(remote)
    assert table.groupby("site").size().to_dict() == {"yard_a": 12 * 3, "yard_b": 5 * 2}
    out = write_site_counts(remote, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["all_sites.csv", "yard_a.csv", "yard_b.csv"]
    back = pd.read_csv(out / "all_sites.csv", dtype={"track_id": str})
    assert back["railcars"].sum() == table["railcars"].sum()


def test_csv_catalogue_with_relative_paths_and_several_patterns(tmp_path):
    from toolkit.sites import count_sites, read_catalogue

    yard = write_yard(tmp_path / "y", n_dates=6, size=256, n_tracks=2, seed=4)
    early = sorted(yard["scenes"].glob("*.tif"))[:3]
    (tmp_path / "y" / "later").mkdir()
    for p in sorted(yard["scenes"].glob("*.tif"))[3:]:
        p.rename(tmp_path / "y" / "later" / p.name)
    (tmp_path / "sites.csv").write_text(
        "name,tracks,scenes\n"
        f"north,y/tracks.geojson,{early[0].parent.relative_to(tmp_path)}/*.tif; y/later\n"
    )
    cat = read_catalogue(tmp_path / "sites.csv")
    assert cat.names == ["north"] and len(cat["north"].scenes) == 2
    assert "north" in cat.summary() and "<table>" in cat._repr_html_()
    with dask.config.set(scheduler="threads", num_workers=2):
        tree = count_sites(cat)
        alone = toolkit.count_railcars(
            toolkit.load_cube([yard["scenes"], tmp_path / "y" / "later"]), yard["tracks"]
        ).compute()
    assert tree["north"].to_dataset().sizes == {"time": 6, "track": 2}
    xr.testing.assert_equal(tree["north"].to_dataset(), alone)
    assert tree.attrs["sites"] == ["north"]
