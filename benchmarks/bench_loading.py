"""Loading scenes into a cube: toolkit.load_cube against a plain rasterio loop and odc-stac.

``run(sample_dir)`` times, on the same folder of scenes:

- ``load_cube(folder).compute()`` (threaded dask, 2 workers);
- ``load_cube`` stored chunk by chunk into a preallocated array (``dask.array.store``);
- a plain rasterio loop that reads every scene (and its mask sidecar, if any) into a
  preallocated numpy array on the same target grid (windowed reads for scenes on the
  grid, a WarpedVRT for the others, as the toolkit does);
- ``odc.stac.load`` over pystac items made from the same files.

Timing runs all variants in one subprocess, interleaved round by round, so that they
see the same load on a shared machine; times are medians of at least 3 rounds after one
warm-up run of each (so every variant reads from a warm page cache). Peak memory is
measured for each variant alone in a fresh subprocess (RSS above the level after
imports). The folder is
``<sample_dir>/scenes`` if it exists (the synthetic sample from ``toolkit.synth``),
otherwise small SYNTHETIC GeoTIFFs are generated into a temporary folder.

``python -m benchmarks.bench_loading [--sample data/sample] [--quick]`` prints the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.1
TARGET_MEM = 1.5


# --------------------------------------------------------------------------- synthetic scenes


def _write_synthetic_scenes(folder: Path, *, n: int, size: int, seed: int = 0) -> Path:
    """Write ``n`` SYNTHETIC 4-band uint8 scenes (some off-grid) with mask sidecars."""
    import numpy as np
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x0, y0, res = 500_000.0, 4_700_000.0, 0.5
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        # Every third scene is misregistered by a fraction of a pixel: read through a warp.
        dx = 0.3 * res if i % 3 == 2 else 0.0
        dy = -0.2 * res if i % 3 == 2 else 0.0
        t = Affine(res, 0, x0 + dx + res * (i % 2), 0, -res, y0 + dy)
        base = (np.sin(xx / 37.0 + i) * 60 + np.cos(yy / 53.0) * 60 + 120).astype("uint8")
        data = np.stack([base + k * 10 for k in range(4)]).astype("uint8")
        data += rng.integers(0, 8, size=data.shape, dtype="uint8")
        data[:, :, : 20 * (i % 4)] = 0  # a nodata collar on some scenes
        profile = dict(
            driver="GTiff",
            width=size,
            height=size,
            count=4,
            dtype="uint8",
            nodata=0,
            crs="EPSG:32652",
            transform=t,
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
        )
        stamp = f"2023:{1 + i % 12:02d}:{1 + i // 12:02d} 02:15:00"
        path = folder / f"synthetic_scene_{i:03d}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(TIFFTAG_DATETIME=stamp, SYNTHETIC="yes (benchmarks/bench_loading.py)")
        mask = np.zeros((size, size), "uint8")
        mask[size // 3 : size // 2, size // 4 : size // 2] = 1 + i % 3
        mprof = {**profile, "count": 1, "nodata": None}
        with rasterio.open(folder / f"synthetic_scene_{i:03d}.mask.tif", "w", **mprof) as dst:
            dst.write(mask[None])
            dst.update_tags(SYNTHETIC="yes (benchmarks/bench_loading.py)")
    return folder


def _scene_folder(sample_dir: Path | None, quick: bool, tmp: Path) -> tuple[Path, str]:
    if sample_dir is not None:
        for cand in (Path(sample_dir) / "scenes", Path(sample_dir)):
            if cand.is_dir() and any(cand.glob("*.tif")):
                # A private copy: the sample may be regenerated while the benchmark runs.
                copy = shutil.copytree(cand, tmp / "scenes")
                n = len(_files(copy))
                return copy, f"{n} scenes of the synthetic sample ({cand})"
    n, size = (6, 1024) if quick else (12, 2048)
    folder = _write_synthetic_scenes(tmp / "scenes", n=n, size=size)
    return folder, f"{n} synthetic {size}x{size} px 4-band scenes (generated)"


# --------------------------------------------------------------------------- workers


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in (".tif", ".tiff") and not p.name.lower().endswith(".mask.tif")
    )


def _rasterio_loop(folder: Path, grid: dict) -> object:
    """Read every scene (and mask) of ``folder`` into preallocated arrays on ``grid``."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    files = _files(folder)
    crs = CRS.from_wkt(grid["crs"])
    gt = Affine(*grid["transform"])
    h, w, nb = grid["height"], grid["width"], grid["bands"]
    out = np.full((len(files), nb, h, w), grid["fill"], dtype=grid["dtype"])
    masks = np.full((len(files), h, w), 255, dtype="uint8")

    def read_into(path: Path, target: np.ndarray, resampling: Resampling) -> None:
        with rasterio.open(path) as ds:
            t = ds.transform
            col = (t.c - gt.c) / gt.a
            row = (t.f - gt.f) / gt.e
            on_grid = (
                ds.crs == crs
                and abs(t.a - gt.a) < 1e-9
                and abs(t.e - gt.e) < 1e-9
                and abs(col - round(col)) < 1e-3
                and abs(row - round(row)) < 1e-3
            )
            if on_grid:
                r0, c0 = round(row), round(col)
                a0, a1 = max(0, r0), min(h, r0 + ds.height)
                b0, b1 = max(0, c0), min(w, c0 + ds.width)
                win = Window(b0 - c0, a0 - r0, b1 - b0, a1 - a0)
                ds.read(
                    out=target[..., a0:a1, b0:b1],
                    window=win,
                    indexes=list(range(1, target.shape[0] + 1)),
                )
            else:
                with WarpedVRT(
                    ds, crs=crs, transform=gt, width=w, height=h, resampling=resampling
                ) as vrt:
                    vrt.read(out=target, indexes=list(range(1, target.shape[0] + 1)))

    for i, path in enumerate(files):
        read_into(path, out[i], Resampling.bilinear)
        mask_path = path.with_name(path.name[: -len(path.suffix)] + ".mask.tif")
        if mask_path.exists():
            read_into(mask_path, masks[i : i + 1], Resampling.nearest)
    return out, masks


def _stac_items(folder: Path) -> list:
    import datetime as dt

    import pystac
    import rasterio
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterBand, RasterExtension
    from rasterio.warp import transform_bounds

    from toolkit.cube import load_cube

    cube = load_cube(folder, duplicate_times="keep", masks=None)
    times = {Path(p).name: t for p, t in zip(cube.scene.values, cube.time.values, strict=True)}
    items = []
    for path in _files(folder):
        with rasterio.open(path) as ds:
            b = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
            when = dt.datetime.fromisoformat(str(times[path.name])[:26])
            geom = {
                "type": "Polygon",
                "coordinates": [
                    [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]
                ],
            }
            item = pystac.Item(
                id=path.stem, geometry=geom, bbox=list(b), datetime=when, properties={}
            )
            asset = pystac.Asset(href=str(path), media_type=pystac.MediaType.GEOTIFF)
            item.add_asset("image", asset)
            proj = ProjectionExtension.ext(asset, add_if_missing=True)
            proj.epsg = ds.crs.to_epsg()
            proj.shape = list(ds.shape)
            proj.transform = list(ds.transform)[:6]
            raster = RasterExtension.ext(asset, add_if_missing=True)
            raster.bands = [
                RasterBand.create(nodata=ds.nodata, data_type=ds.dtypes[0]) for _ in range(ds.count)
            ]
            items.append(item)
    return items


KINDS = ("ours", "ours_store", "rasterio", "ours_nomask", "odc")


def _variants(folder: Path, kinds: tuple[str, ...]) -> tuple[dict, dict]:
    """Functions that load ``folder`` for each variant, and the bytes each result holds."""
    import dask.array as da
    import numpy as np

    from toolkit.cube import load_cube

    probe = load_cube(folder)
    grid = {
        "crs": probe.rio.crs.to_wkt(),
        "transform": list(probe.rio.transform())[:6],
        "height": probe.sizes["y"],
        "width": probe.sizes["x"],
        "bands": probe.sizes["band"],
        "dtype": str(probe.dtype),
        "fill": probe.rio.nodata if probe.rio.nodata is not None else 0,
    }
    data_bytes = probe.nbytes
    with_valid = data_bytes + probe.valid.nbytes
    with_mask = with_valid + (probe.mask.nbytes if "mask" in probe.coords else 0)
    nbytes = {
        "ours": with_mask,
        "ours_store": with_mask,
        "rasterio": with_mask,
        "ours_nomask": with_valid,
        "odc": data_bytes,  # odc-stac returns the bands only
    }
    res = abs(grid["transform"][0])
    target_crs = probe.rio.crs

    def ours():
        return load_cube(folder).compute()

    def ours_nomask():
        return load_cube(folder, masks=None).compute()

    def ours_store():
        cube = load_cube(folder)
        targets = [np.empty(cube.shape, cube.dtype), np.empty(cube.valid.shape, bool)]
        sources = [cube.data, cube.valid.data]
        if "mask" in cube.coords:
            targets.append(np.empty(cube.mask.shape, "uint8"))
            sources.append(cube.mask.data)
        da.store(sources, targets, lock=False)
        return targets

    def rasterio_loop():
        return _rasterio_loop(folder, grid)

    fns = {"ours": ours, "ours_nomask": ours_nomask, "ours_store": ours_store}
    fns["rasterio"] = rasterio_loop
    if "odc" in kinds:
        import odc.stac

        items = _stac_items(folder)

        def odc_load():
            return odc.stac.load(items, crs=target_crs, resolution=res, pool=2)

        fns["odc"] = odc_load
    return {k: fns[k] for k in kinds}, {k: nbytes[k] / 2**20 for k in kinds}


def _worker(kinds: tuple[str, ...], folder: Path, repeat: int, mode: str) -> dict:
    """Time the variants interleaved, or measure the peak memory of one variant.

    Timing runs every variant once per round, round after round, so that all of them see
    the same load on a shared machine; the medians over rounds are reported.
    """
    import gc
    import statistics
    import time

    import dask

    sys.path.insert(0, str(ROOT))
    from benchmarks._common import PeakRSS

    fns, mb = _variants(folder, kinds)
    out: dict[str, dict] = {}
    with dask.config.set(scheduler="threads", num_workers=2):
        if mode == "memory":
            # One run in a fresh process: the peak above the level after imports is its own.
            (kind,) = kinds
            gc.collect()
            with PeakRSS() as mem:
                fns[kind]()
            return {kind: {"peak_delta_mb": mem.delta_mb, "cube_mb": mb[kind]}}
        for fn in fns.values():
            fn()  # warm-up: page cache, GDAL and dask first-call costs
        times: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(repeat):
            for kind, fn in fns.items():
                gc.collect()
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[kind].append(time.perf_counter() - t0)
                cpu[kind].append(time.process_time() - c0)
    for kind in kinds:
        out[kind] = {
            "median_s": statistics.median(times[kind]),
            "times": times[kind],
            "cpu_s": statistics.median(cpu[kind]),
            "cube_mb": mb[kind],
        }
    return out


def _run_worker(kinds: tuple[str, ...], folder: Path, repeat: int, mode: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_loading",
            "--worker",
            ",".join(kinds),
            "--folder",
            str(folder),
            "--repeat",
            str(repeat),
            "--mode",
            mode,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {kinds} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- rows


def run(sample_dir: str | os.PathLike | None = None, quick: bool = False) -> list[dict]:
    """Benchmark rows: load_cube against a rasterio loop and odc-stac on the same scenes."""
    repeat = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="bench_loading_") as tmp:
        folder, case = _scene_folder(
            None if sample_dir is None else Path(sample_dir), quick, Path(tmp)
        )
        res = _run_worker(KINDS, folder, repeat, "time")
        for kind in KINDS:
            res[kind].update(_run_worker((kind,), folder, repeat, "memory")[kind])
    cube_mb = res["ours"]["cube_mb"]
    ref = res["rasterio"]
    rows = []
    for kind, label in (
        ("ours", "load_cube(...).compute()"),
        ("ours_store", "load_cube stored into preallocated arrays (dask.array.store)"),
    ):
        got = res[kind]
        ratio = got["median_s"] / ref["median_s"]
        mem_ratio = got["peak_delta_mb"] / cube_mb
        rows.append(
            {
                "benchmark": "loading",
                "case": f"{case}; {label}",
                "ours_s": got["median_s"],
                "reference": "rasterio loop (scenes + masks) into a preallocated array",
                "reference_s": ref["median_s"],
                "ratio": ratio,
                "target": f"time <= {TARGET_RATIO}x, peak <= {TARGET_MEM}x cube",
                "met": ratio <= TARGET_RATIO and mem_ratio <= TARGET_MEM,
                "note": f"cube {cube_mb:.0f} MB (data+valid+mask); peak {mem_ratio:.2f}x cube "
                f"(rasterio loop {ref['peak_delta_mb'] / cube_mb:.2f}x); CPU {got['cpu_s']:.2f} s "
                f"vs {ref['cpu_s']:.2f} s; load average {os.getloadavg()[0]:.1f} on "
                f"{os.cpu_count()} cores; median of {repeat}",
                "peak_mem_mb": got["peak_delta_mb"],
            }
        )
    ours, odc = res["ours_nomask"], res["odc"]
    ratio = ours["median_s"] / odc["median_s"]
    nomask_mb = ours["cube_mb"]
    rows.append(
        {
            "benchmark": "loading",
            "case": f"{case}; load_cube(..., masks=None).compute()",
            "ours_s": ours["median_s"],
            "reference": "odc.stac.load (pool=2) over pystac items of the same files",
            "reference_s": odc["median_s"],
            "ratio": ratio,
            "target": f"<= {TARGET_RATIO}",
            "met": ratio <= TARGET_RATIO,
            "note": f"no masks on either side; peak {ours['peak_delta_mb'] / nomask_mb:.2f}x "
            f"its result (data+valid), odc-stac {odc['peak_delta_mb'] / odc['cube_mb']:.2f}x its "
            f"result (data only); median of {repeat}",
            "peak_mem_mb": ours["peak_delta_mb"],
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_loading")
    p.add_argument("--sample", default=str(ROOT / "data" / "sample"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kinds = tuple(args.worker.split(","))
        print(json.dumps(_worker(kinds, Path(args.folder), args.repeat, args.mode)))
        return 0
    for row in run(args.sample, quick=args.quick):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
