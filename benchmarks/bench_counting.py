"""Counting the five-year sample against loading it once (same process, same files)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import PeakRSS, median_time


def run(sample_dir, quick: bool = False) -> list[dict]:
    import dask

    import toolkit
    from toolkit.cube import load_cube

    sample_dir = Path(sample_dir)
    scenes = sample_dir / "scenes"
    tracks = sample_dir / "tracks.geojson"
    repeat = 1 if quick else 3

    def load():
        return load_cube(scenes).compute()

    def count():
        cube = load_cube(scenes)
        return toolkit.count_railcars(cube, tracks).compute()

    with dask.config.set(scheduler="threads", num_workers=2):
        with PeakRSS() as mem_load:
            t_load, _ = median_time(load, repeat=repeat)
        with PeakRSS() as mem_count:
            t_count, _ = median_time(count, repeat=repeat)
        cube = load_cube(scenes)
    megapixels = cube.sizes["time"] * cube.sizes["y"] * cube.sizes["x"] / 1e6
    ratio = t_count / t_load
    return [
        {
            "benchmark": "counting vs loading",
            "case": f"default sample, {cube.sizes['time']} scenes, "
            f"{cube.sizes['y']}x{cube.sizes['x']} px",
            "ours_s": t_count,
            "reference": "load_cube(...).compute()",
            "reference_s": t_load,
            "ratio": ratio,
            "target": "<= 1.0",
            "met": ratio <= 1.0,
            "peak_mem_mb": mem_count.peak_mb,
            "note": f"counting throughput {megapixels / t_count:.1f} Mpx/s; "
            f"load peak {mem_load.peak_mb:.0f} MB",
        }
    ]
