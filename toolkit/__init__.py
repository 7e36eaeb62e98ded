"""Rail-yard monitoring from satellite image time series.

Image files -> xarray cube -> railcar occupancy and counts per track and date
-> change points and a five-year baseline comparison -> publication figures.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from toolkit.areas import area_occupancy, areas_to_dataframe, read_areas, write_areas_csv
from toolkit.baseline import (
    CLOSURE,
    SUMMIT,
    BaselineComparison,
    compare_with_baseline,
    load_published_observations,
)
from toolkit.changepoints import (
    ChangePointResult,
    CusumResult,
    binary_segmentation,
    change_map,
    cusum,
    detect_changepoints,
    online_changepoint_probability,
    pelt,
    robust_scale,
)
from toolkit.cube import cache_cube, load_cube, open_cube, scene_quality
from toolkit.errors import (
    DataIntegrityError,
    InputError,
    SceneError,
    SeriesError,
    ToolkitError,
    TrackError,
)
from toolkit.kinds import classify_railcars, kind_counts
from toolkit.occupancy import (
    CalibrationResult,
    calibrate,
    car_outlines,
    count_railcars,
    counts_from_occupancy,
    counts_to_dataframe,
    estimate_occupancy,
    load_counts_cache,
    save_counts_cache,
    unsupported_tracks,
    write_counts_csv,
)
from toolkit.registration import coregister
from toolkit.synth import (
    DEFAULT_SAMPLE,
    SiteInfo,
    five_year_history,
    simulate_site,
    write_default_sample,
)
from toolkit.tracks import read_tracks, track_strips, validate_tracks

try:
    __version__ = version("railyard-toolkit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "ToolkitError",
    "InputError",
    "SceneError",
    "TrackError",
    "SeriesError",
    "DataIntegrityError",
    "load_cube",
    "scene_quality",
    "cache_cube",
    "open_cube",
    "simulate_site",
    "write_default_sample",
    "five_year_history",
    "SiteInfo",
    "DEFAULT_SAMPLE",
    "read_tracks",
    "validate_tracks",
    "track_strips",
    "estimate_occupancy",
    "counts_from_occupancy",
    "count_railcars",
    "counts_to_dataframe",
    "load_counts_cache",
    "save_counts_cache",
    "unsupported_tracks",
    "write_counts_csv",
    "car_outlines",
    "calibrate",
    "CalibrationResult",
    "detect_changepoints",
    "ChangePointResult",
    "pelt",
    "binary_segmentation",
    "cusum",
    "CusumResult",
    "online_changepoint_probability",
    "change_map",
    "robust_scale",
    "compare_with_baseline",
    "BaselineComparison",
    "load_published_observations",
    "CLOSURE",
    "SUMMIT",
    "read_areas",
    "area_occupancy",
    "areas_to_dataframe",
    "write_areas_csv",
    "classify_railcars",
    "kind_counts",
    "coregister",
]
