"""Storage-area occupancy of the five-year sample against counting its railcars (same process)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import Sample, repeats, time_cases


def run(sample_dir, quick: bool = False) -> list[dict]:
    import toolkit

    sample = Sample(Path(sample_dir))

    def occupy():
        return toolkit.area_occupancy(sample.cube(), sample.areas).compute()

    timed = time_cases({"count": sample.count, "areas": occupy}, quick=quick)
    count, areas = timed["count"], timed["areas"]
    ratio = areas.median_s / count.median_s
    return [
        {
            "benchmark": "area occupancy vs railcar counting",
            "case": f"default sample, {sample.cube().sizes['time']} scenes, 2 storage areas",
            "ours_s": areas.median_s,
            "reference": "count_railcars(...).compute() on the same scenes",
            "reference_s": count.median_s,
            "ratio": ratio,
            "target": "<= 1.0",
            "met": ratio <= 1.0,
            "peak_mem_mb": areas.peak_mb,
            "note": f"median of {repeats(quick)}; counting peak {count.peak_mb:.0f} MB",
        }
    ]
