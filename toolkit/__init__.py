"""Rail-yard monitoring from satellite image time series.

Image files -> xarray cube -> railcar occupancy and counts per track and date
-> change points and a five-year baseline comparison -> publication figures.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from toolkit.errors import (
    DataIntegrityError,
    InputError,
    SceneError,
    SeriesError,
    ToolkitError,
    TrackError,
)
from toolkit.occupancy import (
    count_railcars,
    counts_from_occupancy,
    counts_to_dataframe,
    estimate_occupancy,
    write_counts_csv,
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
    "read_tracks",
    "validate_tracks",
    "track_strips",
    "estimate_occupancy",
    "counts_from_occupancy",
    "count_railcars",
    "counts_to_dataframe",
    "write_counts_csv",
]
