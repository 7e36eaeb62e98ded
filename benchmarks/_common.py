"""Timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import statistics
import threading
import time

import psutil


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
