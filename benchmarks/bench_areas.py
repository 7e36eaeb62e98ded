"""Storage-area occupancy of the five-year sample against counting its railcars (same process)."""

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
    areas = sample_dir / "areas.geojson"
    repeat = 1 if quick else 3

    def count():
        return toolkit.count_railcars(load_cube(scenes), tracks).compute()

    def occupy():
        return toolkit.area_occupancy(load_cube(scenes), areas).compute()

    with dask.config.set(scheduler="threads", num_workers=2):
        with PeakRSS() as mem_count:
            t_count, _ = median_time(count, repeat=repeat)
        with PeakRSS() as mem_areas:
            t_areas, _ = median_time(occupy, repeat=repeat)
        cube = load_cube(scenes)
    ratio = t_areas / t_count
    return [
        {
            "benchmark": "area occupancy vs railcar counting",
            "case": f"default sample, {cube.sizes['time']} scenes, 2 storage areas",
            "ours_s": t_areas,
            "reference": "count_railcars(...).compute() on the same scenes",
            "reference_s": t_count,
            "ratio": ratio,
            "target": "<= 1.0",
            "met": ratio <= 1.0,
            "peak_mem_mb": mem_areas.peak_mb,
            "note": f"median of {repeat}; counting peak {mem_count.peak_mb:.0f} MB",
        }
    ]
