"""Interactive exploration in JupyterLab: browse scenes by date with the detected cars.

:func:`scene_browser` returns a :class:`SceneBrowser`, which shows one scene
of the cube with the tracks and every car detected on that date outlined, a
date slider, and the yard count with its interval. Each view is rendered with
the same code as figure 1 (:func:`toolkit.plotting.plot_yard_detections`), so
what an analyst checks interactively is what the report shows.
"""

from __future__ import annotations

import io

import numpy as np
import xarray as xr

from toolkit.errors import InputError

__all__ = ["SceneBrowser", "scene_browser"]


class SceneBrowser:
    """A date slider over a cube with the detected cars of each date outlined.

    Build it with :func:`scene_browser`. In a notebook the browser displays
    itself (the ``widget`` attribute: an ipywidgets ``VBox``); moving the
    slider renders the chosen date. :meth:`show` renders a date from code.

    Attributes
    ----------
    times : numpy.ndarray
        Acquisition times (datetime64[ns]) the slider offers.
    widget : ipywidgets.VBox
        Slider, a line of text with the counts, and the image.
    figure : matplotlib.figure.Figure or None
        The figure of the date shown last.
    n_cars : int
        Cars outlined on the date shown last.
    """

    def __init__(
        self,
        cube: xr.DataArray,
        occupancy: xr.Dataset,
        strips: xr.Dataset,
        *,
        tracks=None,
        counts: xr.Dataset | None = None,
        synthetic: bool | None = None,
        dpi: int = 110,
    ):
        import ipywidgets as w

        self._cube = cube
        self._occ = occupancy
        self._strips = strips
        self._tracks = tracks
        self._counts = counts
        self._synthetic = synthetic
        self._dpi = int(dpi)
        self.times = np.asarray(occupancy["time"].values, "datetime64[ns]")
        self.figure = None
        self.n_cars = 0
        options = [
            (np.datetime_as_string(t, unit="m").replace("T", " "), i)
            for i, t in enumerate(self.times)
        ]
        self._slider = w.SelectionSlider(
            options=options,
            value=len(options) - 1,
            description="scene (UTC)",
            continuous_update=False,
            layout=w.Layout(width="95%"),
            style={"description_width": "initial"},
        )
        self._text = w.HTML()
        self._image = w.Image(format="png", layout=w.Layout(width="100%"))
        self.widget = w.VBox([self._slider, self._text, self._image])
        self._slider.observe(self._on_change, names="value")
        self._render(len(options) - 1)

    # ------------------------------------------------------------------ public
    def show(self, time):
        """Render the acquisition nearest ``time``; moves the slider and returns the figure."""
        import pandas as pd

        try:
            t = np.datetime64(pd.Timestamp(time).tz_localize(None).to_datetime64(), "ns")
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"time {time!r}: expected a date such as '2023-10-05' ({exc})"
            ) from None
        i = int(np.argmin(np.abs(self.times - t)))
        if self._slider.value != i:
            self._slider.value = i  # renders through the observer
        else:
            self._render(i)
        return self.figure

    @property
    def image_png(self) -> bytes:
        """The PNG bytes currently shown."""
        return bytes(self._image.value)

    @property
    def text(self) -> str:
        """The line of text above the image (HTML)."""
        return self._text.value

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ----------------------------------------------------------------- private
    def _on_change(self, change) -> None:
        self._render(int(change["new"]))

    def _render(self, i: int) -> None:
        import matplotlib.pyplot as plt

        from toolkit.occupancy import car_outlines
        from toolkit.plotting import plot_yard_detections

        t = self.times[i]
        outlines = car_outlines(self._occ, self._strips, time=t)
        self.n_cars = len(outlines)
        count = None
        line = f"<b>{np.datetime_as_string(t, unit='m').replace('T', ' ')} UTC</b>: "
        if self._counts is not None:
            tot = self._counts[["railcars", "railcars_low", "railcars_high"]]
            if "track" in tot.dims:
                tot = tot.sum("track", min_count=1)
            tot = tot.sel(time=t, method="nearest")
            count = float(tot["railcars"])
            line += (
                f"{count:.0f} railcars (interval {float(tot['railcars_low']):.0f}-"
                f"{float(tot['railcars_high']):.0f}), "
            )
        line += f"{self.n_cars} cars outlined"
        fig = plot_yard_detections(
            self._cube,
            outlines,
            time=t,
            tracks=self._tracks,
            count=count,
            zoom=None,
            synthetic=self._synthetic,
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self._dpi)
        plt.close(fig)  # shown through the image widget, not by the notebook backend
        self.figure = fig
        self._image.value = buf.getvalue()
        self._text.value = line


def scene_browser(
    cube: xr.DataArray,
    occupancy: xr.Dataset,
    strips: xr.Dataset,
    *,
    tracks=None,
    counts: xr.Dataset | None = None,
    synthetic: bool | None = None,
) -> SceneBrowser:
    """Browse the scenes of a cube by date, with the detected cars outlined.

    Parameters
    ----------
    cube : xarray.DataArray
        ``(time, band, y, x)`` from :func:`toolkit.load_cube`.
    occupancy : xarray.Dataset
        From :func:`toolkit.estimate_occupancy`, computed (``.compute()``) so
        that moving the slider is quick.
    strips : xarray.Dataset
        The strips the occupancy came from (their geometry places the cars).
    tracks : path or GeoDataFrame, optional
        Track centrelines to draw.
    counts : xarray.Dataset, optional
        ``(time, track)`` counts; the yard total and its interval are shown.
    synthetic : bool, optional
        Label the views as synthetic; default from the cube's attrs.

    Returns
    -------
    SceneBrowser
        Displays as a widget in Jupyter; ``show(time)`` renders a date.

    Raises
    ------
    InputError
        The occupancy and strips do not share times and tracks.

    Examples
    --------
    >>> b = scene_browser(cube, occ, strips, tracks="tracks.geojson")  # doctest: +SKIP
    >>> b.show("2023-10-05")  # doctest: +SKIP
    """
    if not isinstance(occupancy, xr.Dataset) or "occupancy" not in occupancy:
        raise InputError(
            "occupancy: expected the Dataset from toolkit.estimate_occupancy, found "
            f"{type(occupancy).__name__}"
        )
    if not isinstance(strips, xr.Dataset) or "x_sample" not in strips.coords:
        raise InputError(
            "strips: expected the Dataset from toolkit.track_strips (with x_sample/y_sample), "
            f"found {type(strips).__name__}"
        )
    if occupancy.sizes.get("track") != strips.sizes.get("track"):
        raise InputError(
            f"occupancy has {occupancy.sizes.get('track')} tracks but strips have "
            f"{strips.sizes.get('track')}; estimate the occupancy from these strips"
        )
    if occupancy.sizes.get("time", 0) == 0:
        raise InputError("occupancy: no dates to browse; the cube has no scenes")
    return SceneBrowser(cube, occupancy, strips, tracks=tracks, counts=counts, synthetic=synthetic)
