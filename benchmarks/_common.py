"""Timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import dataclasses
import gc
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

#: The dask scheduler every sample benchmark runs under: two threads, as on a laptop.
SAMPLE_SCHEDULER = {"scheduler": "threads", "num_workers": 2}


def median_time(fn, *, repeat: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms), MB."""

    def __enter__(self):
        self._proc = psutil.Process()
        self.base_mb = self._proc.memory_info().rss / 2**20
        self.peak_mb = self.base_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
        self.delta_mb = self.peak_mb - self.base_mb
        return False


@dataclasses.dataclass(frozen=True)
class Timing:
    """One timed case: median and all wall times (s), peak resident memory (MB)."""

    median_s: float
    times_s: list[float]
    peak_mb: float


@dataclasses.dataclass(frozen=True)
class Sample:
    """The default sample's files, and the work the sample benchmarks compare against."""

    path: Path

    @property
    def scenes(self) -> Path:
        return self.path / "scenes"

    @property
    def tracks(self) -> Path:
        return self.path / "tracks.geojson"

    @property
    def areas(self) -> Path:
        return self.path / "areas.geojson"

    def cube(self):
        """The lazy cube of the sample's scenes (a fresh load each call)."""
        from toolkit.cube import load_cube

        return load_cube(self.scenes)

    def count(self):
        """Count the railcars of every scene and track (load and compute)."""
        import toolkit

        return toolkit.count_railcars(self.cube(), self.tracks).compute()


def repeats(quick: bool) -> int:
    """Timed runs per case: 3, or 1 for a smoke run."""
    return 1 if quick else 3


def time_cases(cases: dict[str, Callable[[], object]], *, quick: bool) -> dict[str, Timing]:
    """Time each case in turn under :data:`SAMPLE_SCHEDULER` (median of :func:`repeats`
    runs after one warm-up), with its peak memory."""
    import dask

    out = {}
    with dask.config.set(SAMPLE_SCHEDULER):
        for name, fn in cases.items():
            with PeakRSS() as mem:
                t, times = median_time(fn, repeat=repeats(quick))
            out[name] = Timing(t, times, mem.peak_mb)
    return out
