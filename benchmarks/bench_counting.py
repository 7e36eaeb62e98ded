"""Counting the five-year sample against loading it once (same process, same files)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import Sample, time_cases


def run(sample_dir, quick: bool = False) -> list[dict]:
    sample = Sample(Path(sample_dir))
    timed = time_cases(
        {"load": lambda: sample.cube().compute(), "count": sample.count}, quick=quick
    )
    load, count = timed["load"], timed["count"]
    cube = sample.cube()
    megapixels = cube.sizes["time"] * cube.sizes["y"] * cube.sizes["x"] / 1e6
    ratio = count.median_s / load.median_s
    return [
        {
            "benchmark": "counting vs loading",
            "case": f"default sample, {cube.sizes['time']} scenes, "
            f"{cube.sizes['y']}x{cube.sizes['x']} px",
            "ours_s": count.median_s,
            "reference": "load_cube(...).compute()",
            "reference_s": load.median_s,
            "ratio": ratio,
            "target": "<= 1.0",
            "met": ratio <= 1.0,
            "peak_mem_mb": count.peak_mb,
            "note": f"counting throughput {megapixels / count.median_s:.1f} Mpx/s; "
            f"load peak {load.peak_mb:.0f} MB",
        }
    ]
