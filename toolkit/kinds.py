"""Railcar kinds: box, tank, ore/gondola, flat and locomotive, from the track strips.

Every car that :func:`toolkit.estimate_occupancy` finds (occupied runs split
into cars as for the counts) is described by a few physical measurements made
in the strip, relative to the empty-track appearance at the same place, and a
small multinomial logistic model turns them into probabilities of the five
kinds. The measurements (see :data:`FEATURES`):

- ``brightness``: log of the body's brightness relative to the ballast
  (tank cars are dark or light grey, box cars rusty, ...);
- ``red_share``, ``blue_share``: log colour ratios of the body against the
  ballast's colour (rust is red, tarps green or blue, tanks neutral);
- ``edge_contrast``: brightness of the body's long edges against its middle
  (a cylinder darkens towards its sides, a gondola's rim is lighter than its
  interior, a flat roof is even);
- ``centre_contrast``, ``peak``: the across-track profile's centre against its
  shoulders and its brightest column against the median (the specular line
  along a tank's axis);
- ``texture``: along-track roughness after removing the slow trend (roof ribs,
  tarp wrinkles, crates, radiator grilles);
- ``end_contrast``: the brighter end of the car against its middle (a
  locomotive's cab roof);
- ``length_m``: segment length (locomotives 18-20 m, ore cars 13-14 m);
- ``shadow``: log brightness of the darker strip margin beside the car
  against the ballast; tall cars cast longer shadows than a 1.3 m flat car
  when the sun is low.

The default models were fitted on synthetic scenes from
:func:`toolkit.simulate_site` (seeds 300-305), one at 0.5 m pixels and one at
1 m, where a 3.3 m car spans three samples across and the roof's detail is
blurred: :func:`classify_railcars` takes the one fitted at the pixel size
nearer the strips'. Their accuracy on other seeds is asserted in
``tests/test_kinds.py``: of the detected cars that match a real car and are
given one of the five kinds, about 0.84 are right at 0.5 m and 0.73 at 1 m
(co-registered strips, as :func:`toolkit.count_railcars` reads a site and as
the models were fitted; 0.77 and 0.65 when both were read without it).
Both come back from :func:`synthetic_training_cars` and :func:`fit_kind_model`
(the tests refit them).
Refit on hand labels of a real site with :func:`fit_kind_model`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from toolkit.errors import InputError
from toolkit.occupancy import FREE, _car_segments, _doubt_dev, _share

__all__ = [
    "KINDS",
    "FEATURES",
    "KindModel",
    "classify_railcars",
    "kind_counts",
    "railcar_features",
    "fit_kind_model",
    "default_kind_model",
    "synthetic_training_cars",
]

#: The kinds told apart, in the order of the probability columns.
KINDS = ("box", "tank", "ore", "flat", "locomotive")
#: The measurements per car that the model uses (see the module docstring).
FEATURES = (
    "brightness",
    "red_share",
    "blue_share",
    "edge_contrast",
    "centre_contrast",
    "peak",
    "texture",
    "end_contrast",
    "rim_contrast",
    "length_m",
    "shadow",
)
UNKNOWN_KIND = "unknown"
#: Detections that look unlike any railcar (a truck on a crossing, haze, a
#: marking): most are false detections of the occupancy step.
OTHER_KIND = "other"
_CLASSES = (*KINDS, OTHER_KIND)


@dataclass(frozen=True, kw_only=True)
class KindModel:
    """A multinomial logistic model from car features to kinds.

    Attributes
    ----------
    kinds : tuple of str
        Class labels, in the order of ``coef`` rows.
    features : tuple of str
        Feature names, in the order of ``coef`` columns.
    mean, scale : numpy.ndarray
        Standardisation of the features (subtract, divide).
    coef : numpy.ndarray
        ``(kind, feature)`` weights on the standardised features.
    intercept : numpy.ndarray
        ``(kind,)``.
    source : str
        What it was fitted on.
    """

    kinds: tuple
    features: tuple
    mean: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    coef: np.ndarray = field(repr=False)
    intercept: np.ndarray = field(repr=False)
    source: str = ""

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Probabilities ``(car, kind)``; rows with a missing feature give NaN."""
        x = np.asarray(features[list(self.features)], dtype="float64")
        z = (x - self.mean) / self.scale
        logit = z @ self.coef.T + self.intercept
        logit -= np.nanmax(logit, axis=1, keepdims=True) if len(logit) else 0.0
        p = np.exp(logit)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def summary(self) -> str:
        lines = [
            f"Railcar kind model ({len(self.kinds)} kinds, {len(self.features)} features)",
            f"  fitted on: {self.source}",
            "  weights (standardised features):",
            "    " + " ".join(f"{k[:6]:>7}" for k in self.kinds),
        ]
        for j, f in enumerate(self.features):
            lines.append("    " + " ".join(f"{w:7.2f}" for w in self.coef[:, j]) + f"  {f}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return "<pre>" + self.summary() + "</pre>"


def railcar_features(
    strips: xr.Dataset,
    occupancy: xr.Dataset,
    *,
    car_length_m: float = 15.2,
    car_length_range_m: tuple[float, float] = (12.5, 19.5),
    body_half_width_m: float = 1.0,
    edge_m: tuple[float, float] = (1.25, 1.6),
    margin_m: float = 1.9,
) -> pd.DataFrame:
    """Physical measurements of every detected railcar, one row per car.

    Parameters
    ----------
    strips : xarray.Dataset
        From :func:`toolkit.track_strips`.
    occupancy : xarray.Dataset
        From :func:`toolkit.estimate_occupancy` on the same strips.
    car_length_m, car_length_range_m
        How occupied runs are split into cars (as :func:`toolkit.counts_from_occupancy`).
    body_half_width_m : float, default 1.0
        Half-width of the band across the centreline read as the car's roof;
        at least 1.5 across-track sample spacings (1.5 m in 1 m strips, whose
        samples lie 0.5 m off the centreline: the roof's centre is then the
        pair nearest it).
    edge_m : (float, float), default (1.25, 1.6)
        Distances from the centreline read as the body's long edges (car
        bodies are 3.2-3.4 m wide).
    margin_m : float, default 1.9
        Samples at least this far from the centreline are beside the car
        (where its shadow falls).

    Returns
    -------
    pandas.DataFrame
        Columns ``time``, ``track_id``, ``car`` (index along the track on that
        date), ``start_m``, ``end_m``, ``length_m`` (metres along the track),
        ``valid_fraction`` (share of the body's samples that are usable) and
        the :data:`FEATURES`.

    Examples
    --------
    >>> import toolkit
    >>> from toolkit.kinds import railcar_features
    >>> feats = railcar_features(strips, occ)  # doctest: +SKIP
    """
    _check_pair(strips, occupancy)
    step = float(strips.attrs["step_m"])
    lo_len, hi_len = car_length_range_m
    across = np.asarray(strips["across_m"].values, float)
    # strips sampled coarser than the roof's detail (1 m): the roof reaches the samples
    # 1.5 spacings out and its centre is the pair of samples nearest the centreline
    spacing = float(np.median(np.diff(across))) if across.size > 1 else 0.0
    body_half_width_m = max(body_half_width_m, 1.5 * spacing)
    body = np.abs(across) <= body_half_width_m + 1e-6
    centre = np.abs(across) <= max(0.3 * body_half_width_m, 0.5 * spacing) + 1e-6
    shoulder = body & ~centre
    edge = (np.abs(across) >= edge_m[0] - 1e-6) & (np.abs(across) <= edge_m[1] + 1e-6)
    sides = [(across <= -margin_m + 1e-6), (across >= margin_m - 1e-6)]
    band_names = [str(b).lower() for b in strips["band"].values]
    i_red = band_names.index("red") if "red" in band_names else 0
    i_blue = band_names.index("blue") if "blue" in band_names else min(2, len(band_names) - 1)

    value = np.asarray(strips["value"].values, dtype="float32")  # (T, K, A, C, B)
    valid = np.asarray((strips["valid"] & strips["on_track"]).values, bool)
    occ = np.asarray(occupancy["occupancy"].values)
    dev = np.asarray(occupancy["deviation"].values)
    share = _share(occupancy)
    ref = np.asarray(occupancy["reference"].values, dtype="float32")  # (K, A, C, B)
    ref = np.where(np.isfinite(ref) & (ref > 1e-4), ref, np.nan)
    gain = _scene_gain(value, valid, occ, ref, body)
    times = pd.DatetimeIndex(strips["time"].values)
    tracks = [str(t) for t in strips["track"].values]
    rows = []
    trim = max(int(round(0.5 / step)), 0)  # coupler gap and run-edge blur
    end_n = max(int(round(3.5 / step)), 1)
    smooth = max(int(round(3.0 / step)) | 1, 3)
    doubt = _doubt_dev(occupancy)  # the cars the count's estimate holds
    for t in range(value.shape[0]):
        for k in range(value.shape[1]):
            cars = _car_segments(
                occ[t, k],
                dev[t, k],
                step=step,
                doubt_dev=doubt,
                mean_len=car_length_m,
                lo_len=lo_len,
                hi_len=hi_len,
                share=None if share is None else share[t, k],
            )
            for c, (s0, s1, *_rest) in enumerate(cars):
                i0 = int(round(s0 / step)) + trim
                i1 = int(round(s1 / step)) - trim
                rec = {
                    "time": times[t],
                    "track_id": tracks[k],
                    "car": c,
                    "start_m": float(s0),
                    "end_m": float(s1),
                    "length_m": float(s1 - s0),
                }
                if i1 - i0 < 3:
                    rec["valid_fraction"] = 0.0
                    rows.append(rec)
                    continue
                ratio = value[t, k, i0:i1] / (ref[k, i0:i1] * gain[t])  # (L, C, B)
                ok = valid[t, k, i0:i1] & np.isfinite(ratio).all(axis=-1)
                ratio = np.where(ok[..., None], ratio, np.nan)
                rec["valid_fraction"] = float(ok[:, body].mean())
                rec.update(
                    _car_features(
                        ratio,
                        body=body,
                        centre=centre,
                        shoulder=shoulder,
                        edge=edge,
                        sides=sides,
                        i_red=i_red,
                        i_blue=i_blue,
                        end_n=end_n,
                        rim_n=max(int(round(1.0 / step)), 1),
                        smooth=smooth,
                    )
                )
                rows.append(rec)
    cols = ["time", "track_id", "car", "start_m", "end_m", "length_m", "valid_fraction"]
    df = pd.DataFrame(rows, columns=cols + [f for f in FEATURES if f != "length_m"])
    return df


def classify_railcars(
    strips: xr.Dataset,
    occupancy: xr.Dataset,
    *,
    model: KindModel | None = None,
    max_pixel_m: float = 1.0,
    min_valid_fraction: float = 0.6,
    car_length_m: float = 15.2,
    car_length_range_m: tuple[float, float] = (12.5, 19.5),
) -> pd.DataFrame:
    """The kind of every detected railcar: box, tank, ore/gondola, flat or locomotive.

    Parameters
    ----------
    strips : xarray.Dataset
        From :func:`toolkit.track_strips` (computed or lazy; it is computed here).
    occupancy : xarray.Dataset
        From :func:`toolkit.estimate_occupancy` on the same strips (same
        times, tracks and along-track samples).
    model : KindModel, optional
        Default :func:`default_kind_model` at the strips' pixel size (fitted on
        synthetic 0.5 m or 1 m scenes).
    max_pixel_m : float, default 1.0
        At pixel sizes (the strips' ``pixel_size_m``) coarser than this every car
        gets kind ``"unknown"``: a 3.3 m wide car spans fewer than four pixels
        and its roof profile, rim, specular line and texture are not resolved.
    min_valid_fraction : float, default 0.6
        Cars whose body is usable (not cloud, shadow mask or nodata) over a
        smaller share get kind ``"unknown"``.
    car_length_m, car_length_range_m
        How occupied runs are split into cars (as :func:`toolkit.counts_from_occupancy`).

    Returns
    -------
    pandas.DataFrame
        One row per detected car (the same cars as the counts: occupied runs
        split at coupler gaps and by length); unknown and masked parts of a
        track hold no cars. Columns ``time``, ``track_id``, ``car`` (index
        along the track on that date), ``start_m``, ``end_m``, ``length_m``
        (metres along the track), ``kind`` (one of :data:`KINDS` or
        ``"unknown"``), ``confidence`` (probability of that kind, NaN when
        unknown), ``p_box`` ... ``p_locomotive``, and the features.
        ``attrs`` record the method, the pixel size and the model. The runs
        of a scene the counts leave out (``scene_readable`` False in the
        occupancy: a lone snow scene) are listed too, for inspection;
        :func:`kind_counts` leaves them out.

    Raises
    ------
    InputError
        The strips and occupancy do not belong together (different times,
        tracks or along-track samples), or are not what the toolkit makes.

    Notes
    -----
    Physical measurements per car relative to the empty-track reference (see
    :mod:`toolkit.kinds`), standardised, then a multinomial logistic model.
    The default models were fitted on synthetic scenes from
    :func:`toolkit.simulate_site` at 0.5 m and at 1 m; on held-out synthetic
    seeds, of the detected cars that match a real car and are given one of the
    five kinds, they label about 0.84 (0.5 m) and 0.72 (1 m) of them correctly
    in co-registered strips (see
    ``tests/test_kinds.py`` for the asserted numbers; at 1 m tank cars are the
    hardest: 273 of 443 read right, 93 as flat cars, 36 as "other"). Their
    weights reflect the
    simulator's looks; for a real site, refit with :func:`fit_kind_model`
    from a few hundred hand-labelled cars. Cars in snow scenes and cars split
    at the wrong place (a run of mixed kinds) are the usual errors.

    Examples
    --------
    >>> import toolkit
    >>> from toolkit.kinds import classify_railcars, kind_counts
    >>> cube = toolkit.load_cube("data/sample/scenes")  # doctest: +SKIP
    >>> strips = toolkit.track_strips(cube, "data/sample/tracks.geojson")  # doctest: +SKIP
    >>> occ = toolkit.estimate_occupancy(strips)  # doctest: +SKIP
    >>> cars = classify_railcars(strips, occ)  # doctest: +SKIP
    >>> cars.groupby("kind").size()  # doctest: +SKIP
    >>> kind_counts(cars, occ)["railcars_tank"].sum("track")  # doctest: +SKIP
    """
    _check_pair(strips, occupancy)
    step = float(strips.attrs["step_m"])
    pixel = float(strips.attrs.get("pixel_size_m", step))
    model = model or default_kind_model(pixel)
    resolved = pixel <= max_pixel_m + 1e-9
    if resolved:
        df = railcar_features(
            strips,
            occupancy,
            car_length_m=car_length_m,
            car_length_range_m=car_length_range_m,
        )
    else:
        df = _cars_only(strips, occupancy, car_length_m, car_length_range_m)
        for f in FEATURES:
            if f not in df:
                df[f] = np.nan
    p = np.full((len(df), len(model.kinds)), np.nan)
    usable = np.zeros(len(df), bool)
    if resolved and len(df):
        x = df[list(model.features)].to_numpy(float)
        usable = np.isfinite(x).all(axis=1) & (
            df["valid_fraction"].to_numpy() >= min_valid_fraction
        )
        if usable.any():
            p[usable] = model.predict_proba(df.loc[usable])
    best = np.where(usable, np.nanargmax(np.where(usable[:, None], p, 0.0), axis=1), -1)
    kinds = np.array(list(model.kinds) + [UNKNOWN_KIND], dtype=object)
    df["kind"] = kinds[best]
    df["confidence"] = np.where(
        usable, np.nanmax(np.where(usable[:, None], p, 0.0), axis=1), np.nan
    )
    for i, kd in enumerate(model.kinds):
        df[f"p_{kd}"] = p[:, i]
    front = ["time", "track_id", "car", "start_m", "end_m", "length_m", "kind", "confidence"]
    front += [f"p_{kd}" for kd in model.kinds]
    rest = [c for c in df.columns if c not in front]
    df = df[front + rest].reset_index(drop=True)
    df.attrs.update(
        {
            "method": "physical strip features relative to the empty-track reference, "
            "multinomial logistic model",
            "model": model.source,
            "kinds": list(model.kinds),
            "pixel_size_m": pixel,
            "max_pixel_m": max_pixel_m,
            "resolved": bool(resolved),
            "min_valid_fraction": min_valid_fraction,
            "car_length_m": car_length_m,
            "car_length_range_m": list(car_length_range_m),
            "toolkit_version": _version(),
        }
    )
    return df


def kind_counts(cars: pd.DataFrame, occupancy: xr.Dataset) -> xr.Dataset:
    """Railcars per kind, track and date from :func:`classify_railcars`.

    Parameters
    ----------
    cars : pandas.DataFrame
        From :func:`classify_railcars`.
    occupancy : xarray.Dataset
        The occupancy the cars came from (for the dates, tracks and which
        parts of each track were visible).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, track)``: ``railcars_box``, ``railcars_tank``,
        ``railcars_ore``, ``railcars_flat``, ``railcars_locomotive`` and
        ``railcars_unknown`` (cars whose kind cannot be told: pixels too
        coarse, body mostly masked), and ``railcars`` (their sum), all counts
        of railcars on the visible part of the track; NaN where nothing of the
        track was visible or the scene was not counted (``scene_readable`` of
        the occupancy). ``railcars_other`` counts the detections the model
        reads as no railcar at all (a shadow, a vehicle, a glint): they are
        left out of ``railcars``, which can therefore be a few per cent under
        the count's :func:`toolkit.counts_from_occupancy` ``railcars`` (0.6-3 %
        on the synthetic Tumangang-like sites). attrs name the method and the
        pixel size.

    Examples
    --------
    >>> from toolkit.kinds import kind_counts
    >>> counts = kind_counts(cars, occ)  # doctest: +SKIP
    >>> counts.to_dataframe().head()  # doctest: +SKIP
    """
    need = {"time", "track_id", "kind"}
    if not isinstance(cars, pd.DataFrame) or not need <= set(cars.columns):
        raise InputError(
            f"cars must be the table from classify_railcars with columns {sorted(need)}; "
            f"got {type(cars).__name__}"
        )
    if not isinstance(occupancy, xr.Dataset) or "occupancy" not in occupancy:
        raise InputError("occupancy must be the Dataset from toolkit.estimate_occupancy")
    times = pd.DatetimeIndex(occupancy["time"].values)
    tracks = [str(t) for t in occupancy["track"].values]
    ti = times.get_indexer(pd.DatetimeIndex(cars["time"]))
    ki = pd.Index(tracks).get_indexer(cars["track_id"].astype(str))
    if len(cars) and ((ti < 0).any() or (ki < 0).any()):
        raise InputError(
            "cars hold dates or tracks that the occupancy does not; pass the occupancy "
            "the cars were classified from"
        )
    seen = np.asarray((occupancy["occupancy"] != -1).any("along").values)
    if "scene_readable" in occupancy:  # a lone snow scene is seen but not counted
        seen &= np.asarray(occupancy["scene_readable"].values, bool)[:, None]
    out = {}
    for kd in (*_CLASSES, UNKNOWN_KIND):
        m = (cars["kind"] == kd).to_numpy()
        n = np.zeros((len(times), len(tracks)))
        np.add.at(n, (ti[m], ki[m]), 1.0)
        out[f"railcars_{kd}"] = (("time", "track"), np.where(seen, n, np.nan))
    ds = xr.Dataset(out, coords={"time": occupancy["time"], "track": occupancy["track"]})
    ds["railcars"] = sum(ds[f"railcars_{kd}"] for kd in (*KINDS, UNKNOWN_KIND))
    for name in ds.data_vars:
        what = name.removeprefix("railcars").lstrip("_") or "all kinds"
        ds[name].attrs.update(
            {"long_name": f"railcars on the visible part of the track: {what}", "units": "1"}
        )
    ds.attrs.update({k: v for k, v in cars.attrs.items() if not isinstance(v, dict)})
    ds.attrs["count_method"] = "detected cars per kind (classify_railcars)"
    return ds


def fit_kind_model(
    features: pd.DataFrame,
    kinds,
    *,
    l2: float = 1e-2,
    iterations: int = 3000,
    source: str = "",
) -> KindModel:
    """Fit a :class:`KindModel` to labelled cars (e.g. an analyst's hand labels).

    Parameters
    ----------
    features : pandas.DataFrame
        From :func:`railcar_features` (rows with missing features are dropped).
    kinds : sequence of str
        The true kind of every row (one of :data:`KINDS`).
    l2 : float, default 0.01
        Ridge penalty on the weights (standardised features).
    iterations : int, default 3000
        Gradient-descent steps (the loss is convex; a few thousand converge).
    source : str
        Recorded in the model.

    Returns
    -------
    KindModel

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from toolkit.kinds import FEATURES, fit_kind_model
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(100, len(FEATURES))), columns=FEATURES)
    >>> y = np.where(X["brightness"] < 0, "tank", "box")
    >>> m = fit_kind_model(X, y, source="example")
    >>> float((m.predict_proba(X).argmax(1) == (y == "box") * 0 + (y == "tank") * 1).mean()) > 0.9
    True
    """
    x = np.asarray(features[list(FEATURES)], dtype="float64")
    y = np.asarray(kinds, dtype=object)
    if len(y) != len(x):
        raise InputError(f"{len(x)} feature rows but {len(y)} kinds")
    bad = sorted(set(y) - set(_CLASSES))
    if bad:
        raise InputError(f"unknown kinds {bad}; expected some of {list(_CLASSES)}")
    ok = np.isfinite(x).all(axis=1)
    x, y = x[ok], y[ok]
    if len(x) < len(FEATURES):
        raise InputError(f"only {len(x)} labelled cars with all features; need more")
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
    z = (x - mean) / scale
    onehot = (y[:, None] == np.array(_CLASSES)[None]).astype(float)
    w = np.zeros((len(_CLASSES), z.shape[1]))
    b = np.zeros(len(_CLASSES))
    lr = 0.5
    for _ in range(int(iterations)):
        logit = z @ w.T + b
        logit -= logit.max(axis=1, keepdims=True)
        p = np.exp(logit)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(z)
        w -= lr * (g.T @ z + l2 * w)
        b -= lr * g.sum(axis=0)
    return KindModel(
        kinds=_CLASSES,
        features=FEATURES,
        mean=mean,
        scale=scale,
        coef=w,
        intercept=b,
        source=source,
    )


def default_kind_model(pixel_size_m: float = 0.5) -> KindModel:
    """The model fitted on synthetic scenes at the pixel size nearer ``pixel_size_m``:
    0.5 m (up to 0.75 m) or 1 m (see the module docstring).

    Raises
    ------
    InputError
        ``pixel_size_m`` is not a positive number.

    Examples
    --------
    >>> from toolkit.kinds import default_kind_model
    >>> default_kind_model(1.0).source
    'synthetic toolkit.simulate_site scenes, 1 m, seeds 300-305'
    """
    try:
        pixel = float(pixel_size_m)
    except (TypeError, ValueError):
        pixel = float("nan")
    if not (np.isfinite(pixel) and pixel > 0) or isinstance(pixel_size_m, bool):
        raise InputError(
            f"pixel_size_m: expected a positive number of metres, got {pixel_size_m!r}"
        )
    m = _DEFAULT if pixel <= 0.75 else _DEFAULT_1M
    return KindModel(
        kinds=_CLASSES,
        features=FEATURES,
        mean=np.array(m["mean"]),
        scale=np.array(m["scale"]),
        coef=np.array(m["coef"]),
        intercept=np.array(m["intercept"]),
        source=m["source"],
    )


def synthetic_training_cars(
    root, *, resolution_m: float = 1.0, seeds=range(300, 306)
) -> tuple[pd.DataFrame, np.ndarray]:
    """The labelled cars a default model was fitted on: SYNTHETIC sites, made here.

    For each seed, two sites are simulated under ``root`` with
    :func:`toolkit.simulate_site`: the "random" history on every fifth
    acquisition of the seed's five-year schedule (12 scenes) and the
    "tumangang" history on its first 10 dates with locomotives. Their cars are
    detected as :func:`toolkit.count_railcars` detects them (co-registered
    strips, occupancy with the defaults) and measured with
    :func:`railcar_features`; each is labelled with the kind of
    the truth car it overlaps most, by at least half its length, else
    ``"other"``. ``fit_kind_model(features, kinds, l2=0.001)`` on seeds
    300-305 at 1 m gives the 1 m default model, at 0.5 m the 0.5 m one (to
    their four stored decimals).

    Returns
    -------
    (pandas.DataFrame, numpy.ndarray)
        The features of every detected car, and its kind.

    Examples
    --------
    >>> from toolkit.kinds import fit_kind_model, synthetic_training_cars
    >>> feats, kinds = synthetic_training_cars("data/kind_training")  # doctest: +SKIP
    >>> model = fit_kind_model(feats, kinds, l2=0.001, source="my refit")  # doctest: +SKIP
    """
    from pathlib import Path

    from toolkit.cube import load_cube
    from toolkit.occupancy import _site_strips, estimate_occupancy
    from toolkit.synth import five_year_history, simulate_site

    frames, labels = [], []
    for seed in seeds:
        history = five_year_history(seed=int(seed))
        for kind, dates in (
            ("random", list(history["time"])[::5][:12]),
            ("tumangang", list(history.loc[history["locomotives"] > 0, "time"])[:10]),
        ):
            site = simulate_site(
                Path(root) / f"{int(seed)}_{kind}",
                resolution_m=resolution_m,
                seed=int(seed),
                history=kind,
                dates=dates,
            )
            # co-registered, as count_railcars reads a site: fitted on strips read without it,
            # the models labelled 0.789 (0.5 m) and 0.693 (1 m) of the held-out seeds' cars
            # right in co-registered strips; refitted on co-registered strips, 0.841 and 0.718
            strips = _site_strips(load_cube(site.path / "scenes"), site.tracks_path).compute()
            feats = railcar_features(strips, estimate_occupancy(strips).compute())
            truth = pd.read_csv(site.path / "truth_cars.csv", dtype={"track_id": str})
            truth["time"] = pd.to_datetime(truth["time"])
            frames.append(feats)
            labels.append(_true_kinds(feats, truth))
    return pd.concat(frames, ignore_index=True), np.concatenate(labels)


def _true_kinds(cars: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """The kind of the truth car of the same scene and track that overlaps each car most,
    by at least half its length; ``"other"`` where none does."""
    groups = {key: g for key, g in truth.groupby(["time", "track_id"])}
    out = []
    for r in cars.itertuples():
        g = groups.get((r.time, r.track_id))
        kind = OTHER_KIND
        if g is not None:
            overlap = np.minimum(g["end_m"].values, r.end_m) - np.maximum(
                g["start_m"].values, r.start_m
            )
            i = int(np.argmax(overlap))
            if overlap[i] > 0.5 * r.length_m:
                kind = g["kind"].values[i]
        out.append(kind)
    return np.array(out, dtype=object)


# ----------------------------------------------------------------------------- helpers
def _car_features(
    ratio, *, body, centre, shoulder, edge, sides, i_red, i_blue, end_n, rim_n, smooth
):
    """Features of one car from its ratio to the reference, ``(along, across, band)``."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        bright = ratio.mean(axis=-1)  # (L, C); masked samples are NaN in every band
        b_body = _mean(bright[:, body])
        col = np.array([_mean(bright[:, j]) for j in range(bright.shape[1])])
        colour = np.array([_mean(ratio[:, body, i]) for i in range(ratio.shape[-1])])
        grey = np.nanmean(colour)
        prof = np.array([_mean(r) for r in bright[:, body]])  # along profile
        ok = np.isfinite(prof)
        if ok.sum() >= 4:
            filled = np.where(ok, prof, np.nanmedian(prof))
            trend = ndimage.median_filter(filled, size=smooth, mode="nearest")
            texture = float(np.std((filled - trend)[ok]) / max(abs(np.nanmean(prof)), 1e-3))
            n = min(end_n, max(ok.sum() // 4, 1))
            mid = np.nanmedian(prof[n:-n]) if prof.size > 2 * n else np.nanmedian(prof)
            ends = max(_mean(prof[:n]), _mean(prof[-n:]))
            end_contrast = np.log(max(ends, 1e-3) / max(mid, 1e-3))
            r = max(rim_n, 1)
            rim = 0.5 * (_mean(prof[:r]) + _mean(prof[-r:]))
            rim_contrast = np.log(max(rim, 1e-3) / max(mid, 1e-3))
        else:
            texture = end_contrast = rim_contrast = np.nan
        body_cols = col[body]
        shadow = min(_mean(bright[:, s]) for s in sides) if any(s.any() for s in sides) else np.nan
        return {
            "brightness": np.log(max(b_body, 1e-3)),
            "red_share": np.log(max(colour[i_red], 1e-3) / max(grey, 1e-3)),
            "blue_share": np.log(max(colour[i_blue], 1e-3) / max(grey, 1e-3)),
            "edge_contrast": np.log(max(_mean(col[edge]), 1e-3) / max(b_body, 1e-3)),
            "centre_contrast": np.log(
                max(_mean(col[centre]), 1e-3) / max(_mean(col[shoulder]), 1e-3)
            ),
            "peak": np.log(max(np.nanmax(body_cols), 1e-3) / max(np.nanmedian(body_cols), 1e-3))
            if np.isfinite(body_cols).any()
            else np.nan,
            "texture": texture,
            "end_contrast": end_contrast,
            "rim_contrast": rim_contrast,
            "shadow": np.log(max(shadow, 1e-3)) if np.isfinite(shadow) else np.nan,
        }


def _mean(a) -> float:
    a = np.asarray(a, dtype="float64")
    ok = np.isfinite(a)
    return float(a[ok].mean()) if ok.any() else np.nan


def _scene_gain(value, valid, occ, ref, body) -> np.ndarray:
    """Per scene and band, the median ratio of free, usable body samples to the reference."""
    n_t, n_b = value.shape[0], value.shape[-1]
    gain = np.ones((n_t, n_b), dtype="float32")
    for t in range(n_t):
        use = valid[t][..., body] & (occ[t] == FREE)[..., None]
        if use.sum() < 50:
            continue
        r = value[t][..., body, :][use] / ref[..., body, :][use]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = np.nanmedian(r, axis=0)
        gain[t] = np.where(np.isfinite(g) & (g > 0), g, 1.0)
    return gain


def _cars_only(strips, occupancy, car_length_m, car_length_range_m) -> pd.DataFrame:
    step = float(strips.attrs["step_m"])
    occ = np.asarray(occupancy["occupancy"].values)
    dev = np.asarray(occupancy["deviation"].values)
    share = _share(occupancy)
    times = pd.DatetimeIndex(occupancy["time"].values)
    tracks = [str(t) for t in occupancy["track"].values]
    rows = []
    doubt = _doubt_dev(occupancy)  # the cars the count's estimate holds
    for t in range(occ.shape[0]):
        for k in range(occ.shape[1]):
            cars = _car_segments(
                occ[t, k],
                dev[t, k],
                step=step,
                doubt_dev=doubt,
                mean_len=car_length_m,
                lo_len=car_length_range_m[0],
                hi_len=car_length_range_m[1],
                share=None if share is None else share[t, k],
            )
            for c, (s0, s1, *_rest) in enumerate(cars):
                rows.append(
                    {
                        "time": times[t],
                        "track_id": tracks[k],
                        "car": c,
                        "start_m": float(s0),
                        "end_m": float(s1),
                        "length_m": float(s1 - s0),
                        "valid_fraction": np.nan,
                    }
                )
    cols = ["time", "track_id", "car", "start_m", "end_m", "length_m", "valid_fraction"]
    return pd.DataFrame(rows, columns=cols)


def _check_pair(strips, occupancy) -> None:
    if not isinstance(strips, xr.Dataset) or "value" not in strips or "valid" not in strips:
        raise InputError(
            "strips must be the Dataset from toolkit.track_strips (with value and valid); "
            f"got {type(strips).__name__}"
        )
    need = ("occupancy", "deviation", "reference")
    if not isinstance(occupancy, xr.Dataset) or any(v not in occupancy for v in need):
        raise InputError(
            "occupancy must be the Dataset from toolkit.estimate_occupancy "
            f"(with {', '.join(need)}); got {type(occupancy).__name__}"
        )
    if "step_m" not in strips.attrs:
        raise InputError("strips lack the step_m attribute; make them with toolkit.track_strips")
    for dim in ("time", "track", "along"):
        a, b = strips[dim].values, occupancy[dim].values
        if a.shape != b.shape or not np.array_equal(
            np.asarray(a).astype(str), np.asarray(b).astype(str)
        ):
            raise InputError(
                f"strips and occupancy differ in {dim!r} ({a.size} vs {b.size} values); "
                "pass the occupancy estimated from these strips (toolkit.estimate_occupancy(strips))"
            )


def _version() -> str:
    from toolkit import __version__

    return __version__


# Fitted by fit_kind_model(l2=0.001) on synthetic_training_cars(resolution_m=0.5): seeds
# 300-305, "random" history (every fifth acquisition, 12 scenes each) and "tumangang"
# history (its first 10 dates with locomotives); 8418 detected cars labelled from the
# simulator's truth_cars.csv (cars overlapping no truth car by half their length as
# "other"). tests/test_kinds.py refits it.
_DEFAULT = {
    "source": "synthetic toolkit.simulate_site scenes, 0.5 m, seeds 300-305",
    "mean": [
        -0.3099,
        0.051,
        -0.0642,
        -0.004,
        0.0285,
        0.0795,
        0.0203,
        0.064,
        0.0806,
        14.8745,
        -0.485,
    ],
    "scale": [
        0.2726,
        0.1735,
        0.1581,
        0.1493,
        0.0768,
        0.0974,
        0.0164,
        0.0876,
        0.1371,
        2.2612,
        0.1822,
    ],
    "coef": [
        [
            -0.3264,
            0.5429,
            -0.4097,
            0.0933,
            0.8944,
            -1.2832,
            -0.0315,
            -0.7692,
            0.6968,
            0.5586,
            -0.2945,
        ],
        [
            -0.7526,
            0.4986,
            1.0051,
            -1.3389,
            2.5724,
            2.9891,
            0.0416,
            0.1547,
            -0.0613,
            0.0465,
            0.8096,
        ],
        [
            0.9426,
            1.9188,
            -0.0015,
            2.2537,
            -1.1383,
            -0.1274,
            0.1704,
            -0.0304,
            0.8387,
            -0.9134,
            -0.654,
        ],
        [
            -0.2062,
            -2.3868,
            -1.4833,
            -0.6334,
            0.636,
            -0.8922,
            -0.067,
            0.0729,
            -0.8049,
            0.2729,
            0.1698,
        ],
        [
            0.1261,
            -0.8918,
            -0.2234,
            -0.2543,
            -0.2654,
            -0.3026,
            0.2161,
            0.5667,
            -0.1045,
            0.4991,
            -0.3102,
        ],
        [
            0.2164,
            0.3183,
            1.1128,
            -0.1203,
            -2.699,
            -0.3837,
            -0.3296,
            0.0054,
            -0.5649,
            -0.4638,
            0.2793,
        ],
    ],
    "intercept": [1.9543, 0.5509, 0.0585, 0.6496, -2.6407, -0.5726],
}


# Fitted by fit_kind_model(l2=0.001) on synthetic_training_cars(resolution_m=1.0): seeds
# 300-305, "random" history (every fifth acquisition, 12 scenes each) and "tumangang"
# history (its first 10 dates with locomotives); 8690 detected cars labelled from
# truth_cars.csv as for _DEFAULT, the features read with the roof reaching the samples
# 1.5 m out. tests/test_kinds.py refits it.
_DEFAULT_1M = {
    "source": "synthetic toolkit.simulate_site scenes, 1 m, seeds 300-305",
    "mean": [
        -0.2795,
        0.0382,
        -0.0396,
        -0.0013,
        0.0004,
        0.1038,
        0.01,
        0.0851,
        0.0881,
        14.5769,
        -0.3995,
    ],
    "scale": [
        0.2149,
        0.1208,
        0.1115,
        0.0468,
        0.0941,
        0.0834,
        0.0076,
        0.1062,
        0.1427,
        2.7473,
        0.185,
    ],
    "coef": [
        [
            0.0942,
            0.7832,
            -0.7333,
            0.2321,
            0.2548,
            -0.0025,
            0.1217,
            -0.5792,
            0.4642,
            0.5068,
            -0.2733,
        ],
        [
            -1.5513,
            0.9579,
            1.8146,
            -1.3236,
            1.1472,
            1.7824,
            -0.0584,
            0.2503,
            0.0688,
            0.1177,
            1.0622,
        ],
        [
            0.4289,
            1.5951,
            -0.1855,
            0.6641,
            -1.1235,
            -0.7384,
            0.1483,
            0.322,
            0.4329,
            -0.7257,
            -0.6592,
        ],
        [
            -0.4636,
            -2.3776,
            -1.2177,
            -0.3718,
            0.5485,
            0.1164,
            0.0833,
            -0.0294,
            -0.7344,
            0.2757,
            0.7421,
        ],
        [
            0.2764,
            -0.9546,
            -0.0909,
            -0.0561,
            0.0748,
            -0.3415,
            -0.0798,
            0.3667,
            0.1674,
            0.5091,
            -0.262,
        ],
        [
            1.2154,
            -0.004,
            0.4128,
            0.8552,
            -0.9019,
            -0.8164,
            -0.2151,
            -0.3304,
            -0.3988,
            -0.6836,
            -0.6097,
        ],
    ],
    "intercept": [1.68, 0.3399, 0.6125, 0.3712, -3.1784, 0.1748],
}
