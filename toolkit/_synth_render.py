"""Rendering of synthetic scenes of the synthetic yard (GeoTIFF + usable-data mask + truth).

Private module of :mod:`toolkit.synth`. A scene is evaluated as a function of
the world (UTM) coordinates of its pixel centres, with analytic anti-aliasing
(exact box-filter coverage of edges in track-local along/across coordinates),
so any grid, pixel size or CRS renders the same world. Per grid, the static
geometry (track-local coordinates of pixels within 12 m of a track, storage
lattice, textures) is computed once and reused by every scene on that grid.

Physical model, kept simple: ground reflectance by material and season (snow,
vegetation), shadows of the warehouse, railcars and container stacks from the
sun's elevation and azimuth, illumination and colour balance, a Gaussian PSF,
the georeferencing error (content shift), light haze, fractal clouds and their
shadows, sensor noise, quantisation and occasional nodata wedges. Everything
here is synthetic.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import Transformer
from scipy import ndimage, special

from toolkit._sun import sun_position
from toolkit._synth_layout import SITE_CRS, Layout
from toolkit._synth_traffic import BLOCK_OFFSET_M, BLOCK_PITCH_M, SLOT_PITCH_M, Slot, Vehicle

__all__ = [
    "GridSpec",
    "SceneSpec",
    "make_grid",
    "render_scene",
    "sun_position",
    "CLEAR",
    "CLOUD",
    "SHADOW",
    "HAZE",
    "NODATA",
]

CLEAR, CLOUD, SHADOW, HAZE, NODATA = 0, 1, 2, 3, 255
TRACK_BAND_M = 12.0
SAMPLE_STEP_M = 0.5  # centreline sampling for visibility truth
SLEEPER_PITCH_M = 0.6  # concrete sleepers (ties): 0.26 m wide, 2.6 m long
SLEEPER_WIDTH_M = 0.26
_DRAWN_KINDS = ("box", "tank", "ore", "flat", "locomotive")
_HEIGHT_M = {"box": 4.2, "tank": 4.0, "ore": 3.4, "flat": 1.3, "locomotive": 4.4}
_TARP_LOAD_HEIGHT_M = 3.2

# Reflectances (red, green, blue, near-infrared).
_SOIL = np.array([0.21, 0.18, 0.14, 0.27])
_GRASS_GREEN = np.array([0.05, 0.10, 0.04, 0.42])
_GRASS_DRY = np.array([0.20, 0.18, 0.11, 0.30])
_SNOW = np.array([0.84, 0.86, 0.90, 0.78])
_BALLAST = np.array([0.25, 0.24, 0.22, 0.27])
_DN8_LUT = (1 + np.rint(254 * (np.arange(4096) / 4095.0) ** 0.8)).astype(np.uint8)
_SLEEPER = np.array([0.36, 0.35, 0.33, 0.37])
_RAIL = np.array([0.36, 0.36, 0.37, 0.36])
_ASPHALT = np.array([0.10, 0.10, 0.11, 0.12])
_CONCRETE = np.array([0.31, 0.30, 0.28, 0.32])
_ROOF = np.array([0.30, 0.33, 0.36, 0.33])
_MARKING = np.array([0.70, 0.70, 0.66, 0.66])
_CLOUD = np.array([0.78, 0.79, 0.82, 0.74])
_HAZE = np.array([0.50, 0.55, 0.66, 0.40])
_PALETTE = {
    "box": np.array(
        [
            [0.25, 0.13, 0.08, 0.26],
            [0.20, 0.11, 0.08, 0.22],
            [0.33, 0.20, 0.12, 0.33],
            [0.20, 0.21, 0.18, 0.22],
        ]
    ),
    "tank": np.array(
        [
            [0.05, 0.05, 0.06, 0.06],
            [0.07, 0.07, 0.07, 0.08],
            [0.04, 0.05, 0.05, 0.05],
            [0.30, 0.30, 0.31, 0.31],
        ]
    ),
    "ore": np.array(
        [
            [0.26, 0.19, 0.14, 0.27],
            [0.22, 0.20, 0.17, 0.23],
            [0.30, 0.18, 0.12, 0.31],
            [0.20, 0.20, 0.20, 0.21],
        ]
    ),
    "flat": np.array(
        [
            [0.22, 0.17, 0.12, 0.26],
            [0.19, 0.16, 0.13, 0.22],
            [0.25, 0.20, 0.14, 0.28],
            [0.18, 0.17, 0.16, 0.20],
        ]
    ),
    "locomotive": np.array(
        [
            [0.10, 0.20, 0.14, 0.18],
            [0.12, 0.14, 0.24, 0.18],
            [0.28, 0.26, 0.12, 0.28],
            [0.10, 0.20, 0.14, 0.18],
        ]
    ),
}
_TARPS = np.array([[0.10, 0.27, 0.13, 0.30], [0.08, 0.17, 0.40, 0.22], [0.34, 0.35, 0.35, 0.34]])
_ORE_LOAD = np.array([[0.10, 0.09, 0.08, 0.10], [0.05, 0.05, 0.05, 0.05], [0.27, 0.14, 0.09, 0.28]])
_ORE_RIM = np.array([0.33, 0.26, 0.20, 0.34])
_CRATES = np.array([0.42, 0.34, 0.24, 0.45])
_CONTAINERS = np.array(
    [
        [0.45, 0.11, 0.09, 0.45],
        [0.10, 0.20, 0.45, 0.25],
        [0.12, 0.32, 0.18, 0.33],
        [0.40, 0.41, 0.42, 0.42],
        [0.70, 0.70, 0.68, 0.68],
        [0.55, 0.30, 0.08, 0.52],
    ]
)
_TRUCKS = np.array(
    [
        [0.70, 0.70, 0.68, 0.66],
        [0.45, 0.10, 0.09, 0.44],
        [0.12, 0.20, 0.40, 0.24],
        [0.30, 0.31, 0.30, 0.31],
    ]
)


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class GridSpec:
    """A raster grid: CRS, affine transform (north-up), size and ground pixel size."""

    crs: str
    transform: tuple[float, ...]  # affine coefficients a, b, c, d, e, f
    width: int
    height: int
    pixel_m: float  # ground sampling distance in metres

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform[:6])


def make_grid(
    layout: Layout, pixel_m: float, *, crs: str = SITE_CRS, offset_px: tuple[float, float] = (0, 0)
) -> GridSpec:
    """A north-up grid covering the yard (plus margin) in ``crs`` at ``pixel_m`` on the ground."""
    xmin, ymin, xmax, ymax = layout.bounds
    if crs == SITE_CRS:
        res = pixel_m
        bx0, by0, bx1, by1 = xmin, ymin, xmax, ymax
    else:
        tr = Transformer.from_crs(SITE_CRS, crs, always_xy=True)
        xs = np.concatenate([np.linspace(xmin, xmax, 21), np.full(21, xmax)])
        ys = np.concatenate([np.full(21, ymin), np.linspace(ymin, ymax, 21)])
        xs = np.concatenate([xs, np.linspace(xmin, xmax, 21), np.full(21, xmin)])
        ys = np.concatenate([ys, np.full(21, ymax), np.linspace(ymin, ymax, 21)])
        gx, gy = tr.transform(xs, ys)
        bx0, by0, bx1, by1 = gx.min(), gy.min(), gx.max(), gy.max()
        # metres of ground per CRS unit near the yard (Web Mercator stretches by 1/cos(lat))
        cx, cy = tr.transform((xmin + xmax) / 2, (ymin + ymax) / 2)
        cx1, _ = tr.transform((xmin + xmax) / 2 + 100.0, (ymin + ymax) / 2)
        cx2, cy2 = tr.transform((xmin + xmax) / 2, (ymin + ymax) / 2 + 100.0)
        scale = math.hypot(cx1 - cx, 0.0) / 100.0
        scale = 0.5 * (scale + math.hypot(cx2 - cx, cy2 - cy) / 100.0)
        res = pixel_m * scale
    x0 = math.floor(bx0 / res) * res + offset_px[0] * res
    y1 = math.ceil(by1 / res) * res + offset_px[1] * res
    width = int(math.ceil((bx1 - x0) / res)) + 1
    height = int(math.ceil((y1 - by0) / res)) + 1
    t = Affine(res, 0.0, x0, 0.0, -res, y1)
    return GridSpec(crs=crs, transform=tuple(t)[:6], width=width, height=height, pixel_m=pixel_m)


def _box(x: np.ndarray, half: float | np.ndarray, px: float) -> np.ndarray:
    """Share of a pixel of size ``px`` centred at ``x`` covered by ``[-half, half]``."""
    lo = np.maximum(x - px / 2, -half)
    hi = np.minimum(x + px / 2, half)
    return np.clip(hi - lo, 0.0, None) / px


def _interval(x: np.ndarray, a, b, px: float) -> np.ndarray:
    """Share of a pixel of size ``px`` centred at ``x`` covered by ``[a, b]``."""
    lo = np.maximum(x - px / 2, a)
    hi = np.minimum(x + px / 2, b)
    return np.clip(hi - lo, 0.0, None) / px


def _periodic(x: np.ndarray, pitch: float, width: float, px: float) -> np.ndarray:
    """Share of a pixel of size ``px`` at ``x`` covered by boxes ``[k pitch, k pitch + width]``."""

    def cumulative(t):
        return np.floor(t / pitch) * width + np.clip(np.mod(t, pitch), 0.0, width)

    return (cumulative(x + px / 2) - cumulative(x - px / 2)) / px


def _fractal(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Periodic power-law noise, zero mean and unit standard deviation (float32)."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    spec = np.fft.rfft2(white) / f ** (beta / 2)
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=shape)
    out = (out - out.mean()) / (out.std() + 1e-12)
    return out.astype(np.float32)


class _Lattice:
    """A noise texture fixed in the yard's local frame, sampled bilinearly."""

    def __init__(self, layout: Layout, spacing: float, beta: float, rng: np.random.Generator):
        xmin, ymin, xmax, ymax = layout.bounds
        corners = np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]])
        u, v = layout.to_local(corners[:, 0], corners[:, 1])
        self.u0, self.v0 = u.min() - 60.0, v.min() - 60.0
        nu = int((u.max() + 60.0 - self.u0) / spacing) + 2
        nv = int((v.max() + 60.0 - self.v0) / spacing) + 2
        self.spacing = spacing
        self.values = _fractal((nv, nu), beta, rng)

    def sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        fu = np.clip((u - self.u0) / self.spacing, 0, self.values.shape[1] - 1.001)
        fv = np.clip((v - self.v0) / self.spacing, 0, self.values.shape[0] - 1.001)
        iu = fu.astype(np.int64)
        iv = fv.astype(np.int64)
        wu = (fu - iu).astype(np.float32)
        wv = (fv - iv).astype(np.float32)
        a = self.values
        top = a[iv, iu] * (1 - wu) + a[iv, iu + 1] * wu
        bot = a[iv + 1, iu] * (1 - wu) + a[iv + 1, iu + 1] * wu
        return top * (1 - wv) + bot * wv


@dataclass
class _TrackTable:
    idx: np.ndarray  # flat pixel indices
    s: np.ndarray  # along-track metres
    d: np.ndarray  # signed across-track metres (left of the direction of travel > 0)
    tx: np.ndarray  # unit tangent (east, north)
    ty: np.ndarray
    samples_px: np.ndarray  # (m, 2) fractional col/row of centreline samples every 0.5 m


@dataclass
class _AreaTable:
    idx: np.ndarray
    au: np.ndarray  # metres from the area's u0 / v0 corner
    av: np.ndarray


class _Static:
    """Everything about one grid that does not change from scene to scene."""

    def __init__(self, layout: Layout, grid: GridSpec, site_seed: int):
        self.layout = layout
        self.grid = grid
        px = grid.pixel_m
        self.px = px
        h, w = grid.height, grid.width
        self.shape = (h, w)
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        gx, gy = grid.affine * (cols.ravel(), rows.ravel())
        if grid.crs != SITE_CRS:
            tr = Transformer.from_crs(grid.crs, SITE_CRS, always_xy=True)
            gx, gy = tr.transform(gx, gy)
        x = np.asarray(gx)
        y = np.asarray(gy)
        u, v = layout.to_local(x, y)
        self.u = u.astype(np.float32)
        self.v = v.astype(np.float32)
        # textures: fixed in the world, the same on every grid of the site
        trng = np.random.default_rng(np.random.SeedSequence([int(site_seed), 31]))
        fine = _Lattice(layout, 0.5, 1.2, trng)
        coarse = _Lattice(layout, 4.0, 3.2, trng)
        patch = _Lattice(layout, 2.0, 2.4, trng)
        self.tex_fine = fine.sample(u, v)
        self.vegfrac = np.clip(0.55 + 0.45 * coarse.sample(u, v), 0.0, 1.0).astype(np.float32)
        self.tex_patch = patch.sample(u, v)
        self._to_grid = None if grid.crs == SITE_CRS else Transformer.from_crs(SITE_CRS, grid.crs)
        self._world_xy = (x, y)
        self._tracks()
        self._static_covers()
        self._areas()

    # world -> fractional pixel coordinates of this grid
    def world_to_px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.grid.crs != SITE_CRS:
            tr = Transformer.from_crs(SITE_CRS, self.grid.crs, always_xy=True)
            x, y = tr.transform(x, y)
        col, row = ~self.grid.affine * (np.asarray(x), np.asarray(y))
        return np.asarray(col), np.asarray(row)

    def shift_px(self, sx: float, sy: float) -> tuple[float, float]:
        """Pixel offset (col, row) of a content shift of (sx, sy) metres east/north."""
        xmin, ymin, xmax, ymax = self.layout.bounds
        cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
        c0, r0 = self.world_to_px(np.array([cx]), np.array([cy]))
        c1, r1 = self.world_to_px(np.array([cx + sx]), np.array([cy + sy]))
        return float(c1[0] - c0[0]), float(r1[0] - r0[0])

    def _tracks(self) -> None:
        x, y = self._world_xy
        self.tracks: dict[str, _TrackTable] = {}
        band = TRACK_BAND_M
        for track in self.layout.tracks:
            lu, lv = self.layout.to_local(track.xy[:, 0], track.xy[:, 1])
            sel = (
                (self.u > lu.min() - band)
                & (self.u < lu.max() + band)
                & (self.v > lv.min() - band)
                & (self.v < lv.max() + band)
            )
            cand = np.flatnonzero(sel)
            px_, py_ = x[cand], y[cand]
            best = np.full(cand.size, np.inf)
            s = np.zeros(cand.size)
            d = np.zeros(cand.size)
            tx = np.zeros(cand.size)
            ty = np.zeros(cand.size)
            cum = track.cum_m
            for k in range(len(track.xy) - 1):
                ax, ay = track.xy[k]
                bx, by = track.xy[k + 1]
                ex, ey = bx - ax, by - ay
                seg = math.hypot(ex, ey)
                ex, ey = ex / seg, ey / seg
                rx, ry = px_ - ax, py_ - ay
                along = rx * ex + ry * ey
                t = np.clip(along, 0.0, seg)
                across = ex * ry - ey * rx
                dist = np.hypot(along - t, across)
                better = dist < best
                best = np.where(better, dist, best)
                s = np.where(better, cum[k] + along, s)
                d = np.where(better, across, d)
                tx = np.where(better, ex, tx)
                ty = np.where(better, ey, ty)
            # the first/last segments extend the centreline so that s runs past the ends
            keep = best < band
            ss = np.arange(0.0, track.length_m + 1e-9, SAMPLE_STEP_M)
            pts = track.point_at(ss)
            col, row = self.world_to_px(pts[:, 0], pts[:, 1])
            self.tracks[track.track_id] = _TrackTable(
                idx=cand[keep].astype(np.int64),
                s=s[keep],
                d=d[keep],
                tx=tx[keep],
                ty=ty[keep],
                samples_px=np.stack([col, row], axis=-1),
            )

    def _static_covers(self) -> None:
        n = self.u.size
        px = self.px
        self.ballast = np.zeros(n, np.float32)
        self.rails = np.zeros(n, np.float32)
        self.sleepers = np.zeros(n, np.float32)
        for track, tab in zip(self.layout.tracks, self.tracks.values(), strict=True):
            inside = _interval(tab.s, 0.0, track.length_m, px)
            bal = _box(tab.d, 2.3, px) * np.clip(
                _interval(tab.s, -3.0, track.length_m + 3, px), 0, 1
            )
            rail = (_box(np.abs(tab.d) - 0.752, 0.036, px) * 2).clip(0, 1) * inside
            self.ballast[tab.idx] = np.maximum(self.ballast[tab.idx], bal)
            self.rails[tab.idx] = np.maximum(self.rails[tab.idx], rail)
            sleeper = _periodic(tab.s, SLEEPER_PITCH_M, SLEEPER_WIDTH_M, px)
            sleeper = sleeper * _box(tab.d, 1.3, px) * inside
            self.sleepers[tab.idx] = np.maximum(self.sleepers[tab.idx], sleeper)
        lay = self.layout
        road = lay.road
        rc = 0.5 * (road.v0 + road.v1)
        self.road = _box(self.v - rc, 0.5 * (road.v1 - road.v0), px).astype(np.float32)
        self.road_idx = np.flatnonzero(self.road > 0)
        dash = (np.mod(self.u, 12.0) < 6.0).astype(np.float32)
        self.marking = (_box(self.v - rc, 0.08, px) * dash).astype(np.float32)
        wh = lay.warehouse
        self.building = (
            _interval(self.u, wh.u0, wh.u1, px) * _interval(self.v, wh.v0, wh.v1, px)
        ).astype(np.float32)
        self.ridge_side = np.sign(self.v - 0.5 * (wh.v0 + wh.v1)).astype(np.float32)
        self.apron = np.zeros(n, np.float32)
        for area in lay.areas:
            cov = _interval(self.u, area.u0 - 3, area.u1 + 3, px) * _interval(
                self.v, area.v0 - 3, area.v1 + 3, px
            )
            self.apron = np.maximum(self.apron, cov.astype(np.float32))
        # warehouse shadow candidates: up to 40 m around the building
        sel = (
            (self.u > wh.u0 - 40)
            & (self.u < wh.u1 + 40)
            & (self.v > wh.v0 - 40)
            & (self.v < wh.v1 + 40)
        )
        self.building_idx = np.flatnonzero(sel)

    def _areas(self) -> None:
        self.areas: dict[str, _AreaTable] = {}
        for area in self.layout.areas:
            sel = (
                (self.u >= area.u0) & (self.u < area.u1) & (self.v >= area.v0) & (self.v < area.v1)
            )
            idx = np.flatnonzero(sel)
            self.areas[area.name] = _AreaTable(
                idx=idx, au=self.u[idx] - area.u0, av=self.v[idx] - area.v0
            )


_STATIC_CACHE: dict[tuple, _Static] = {}


def _static(layout: Layout, grid: GridSpec, site_seed: int) -> _Static:
    key = (layout.name, layout.theta_deg, grid, int(site_seed))
    if key not in _STATIC_CACHE:
        if len(_STATIC_CACHE) >= 4:
            _STATIC_CACHE.pop(next(iter(_STATIC_CACHE)))
        _STATIC_CACHE[key] = _Static(layout, grid, site_seed)
    return _STATIC_CACHE[key]


# --------------------------------------------------------------------------- scenes


@dataclass
class SceneSpec:
    """Everything a worker needs to render one scene (picklable)."""

    index: int
    time: _dt.datetime
    stem: str
    grid: GridSpec
    seed: int  # child seed of this scene
    site_seed: int
    layout_name: str
    rotation_deg: float | None
    vehicles: dict[str, list[tuple[float, float, Vehicle]]]
    slots: list[Slot]
    activity: float  # storage level 0-1 (slots with threshold below it are occupied)
    cloud_kind: str  # "none", "partial", "heavy", "full", "haze"
    nodata_wedge: bool
    snow_allowed: bool
    misregistration_px: float
    out_tif: str
    out_mask: str


def _season(t: _dt.datetime, rng: np.random.Generator, snow_allowed: bool) -> tuple[bool, float]:
    p_snow = {12: 0.6, 1: 0.8, 2: 0.65, 3: 0.3, 11: 0.25, 4: 0.04}.get(t.month, 0.0)
    snow = bool(snow_allowed and rng.random() < p_snow)
    doy = t.timetuple().tm_yday
    green = float(np.clip(0.5 + 0.7 * math.cos(2 * math.pi * (doy - 200) / 365.0), 0.0, 1.0))
    return snow, green


def _lerp(img: np.ndarray, colour: np.ndarray, cov: np.ndarray) -> None:
    for c in range(img.shape[0]):
        img[c] += (float(colour[c]) - img[c]) * cov


def _car_colours(veh: list[Vehicle], nb: int, snow: bool) -> tuple[np.ndarray, ...]:
    kinds = np.array([_DRAWN_KINDS.index(v.kind) for v in veh], dtype=np.int64)
    base = np.array([_PALETTE[v.kind][v.colour % 4][:nb] * v.shade for v in veh])
    tarp = np.array([v.tarp for v in veh])
    tarp_col = np.array([_TARPS[v.tarp_colour % 3][:nb] for v in veh])
    load = np.array([v.load for v in veh])
    snowf = np.array([v.snow if snow else 0.0 for v in veh])
    height = np.array(
        [_TARP_LOAD_HEIGHT_M if v.tarp else _HEIGHT_M[v.kind] for v in veh], dtype=float
    )
    half_w = np.array([v.width_m / 2 for v in veh])
    return kinds, base, tarp, tarp_col, load, snowf, height, half_w


def _draw_track(
    img: np.ndarray,
    shade: np.ndarray,
    tab: _TrackTable,
    vehicles: list[tuple[float, float, Vehicle]],
    px: float,
    sun_d: tuple[float, float],
    snow: bool,
    *,
    bodies: bool,
) -> None:
    """Railcar shadows into ``shade``, or (``bodies=True``) bodies over ``img``, in place."""
    if not vehicles:
        return
    nb = img.shape[0]
    starts = np.array([e[0] for e in vehicles])
    ends = np.array([e[1] for e in vehicles])
    veh = [e[2] for e in vehicles]
    kinds, base, tarp, tarp_col, load, snowf, height, half_w = _car_colours(veh, nb, snow)
    bs = starts + 0.5  # car bodies are about 1 m shorter than over couplers
    be = ends - 0.5
    n = len(veh)
    s, d = tab.s, tab.d

    if bodies:
        # the sun's side of the track (opposite to the shadows): tank highlights face it
        across = float(np.median(-tab.ty * sun_d[0] + tab.tx * sun_d[1])) if tab.s.size else 0.0
        sun_side = -1.0 if across > 0 else 1.0
        _draw_bodies(
            img, tab, bs, be, kinds, base, tarp, tarp_col, load, snowf, half_w, px, snow, sun_side
        )
        return
    # --- shadows: ground points p with p - tau * D inside a car body, tau in [0, 1]
    dx, dy = sun_d
    ds = tab.tx * dx + tab.ty * dy
    dd = -tab.ty * dx + tab.tx * dy
    hmax = float(height.max())
    scale = hmax / 4.0
    ds = ds * scale
    dd = dd * scale
    hw = float(half_w.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.where(np.abs(dd) < 1e-6, 1e-6, dd)
        t_a = (d - hw) / safe
        t_b = (d + hw) / safe
    t0 = np.clip(np.minimum(t_a, t_b), 0.0, 1.0)
    t1 = np.clip(np.maximum(t_a, t_b), 0.0, 1.0)
    cand = (t1 > t0) & (np.abs(d) > hw - px)
    ci = np.flatnonzero(cand)
    if ci.size:
        lo = s[ci] - np.maximum(t1[ci] * ds[ci], t0[ci] * ds[ci])
        hi = s[ci] - np.minimum(t1[ci] * ds[ci], t0[ci] * ds[ci])
        k = np.searchsorted(be, lo, side="left")
        kk = np.minimum(k, n - 1)
        hit = (k < n) & (bs[kk] <= hi)
        # lower cars (flat cars) cast shorter shadows
        hit &= t0[ci] <= height[kk] / hmax
        sh = hit.astype(np.float32)
        shade[tab.idx[ci]] = np.maximum(shade[tab.idx[ci]], sh)


def _draw_bodies(
    img, tab, bs, be, kinds, base, tarp, tarp_col, load, snowf, half_w, px, snow, sun_side
):
    """Railcar bodies with exact box-filter coverage (two neighbours for coupler gaps)."""
    nb = img.shape[0]
    n = bs.size
    s, d = tab.s, tab.d
    j = np.clip(np.searchsorted(bs, s, side="right") - 1, 0, n - 1)
    jn = np.minimum(j + 1, n - 1)
    along = _interval(s, bs[j], be[j], px)
    along_n = np.where(jn != j, _interval(s, bs[jn], be[jn], px), 0.0)
    cov = np.clip(along + along_n, 0.0, 1.0) * _box(d, half_w[j], px)
    sel = np.flatnonzero(cov > 0.002)
    if sel.size == 0:
        return
    j = np.where(along_n[sel] > along[sel], jn[sel], j[sel])
    s_, d_, cov_ = s[sel], d[sel], cov[sel].astype(np.float32)
    hw_ = half_w[j]
    dn = np.clip(d_ / hw_, -1.0, 1.0)
    rel = s_ - bs[j]
    kind = kinds[j]
    col = base[j].T.copy()  # (nb, m)
    across_shade = 0.9 + 0.1 * (1 - dn**2)

    # box: ribbed rusty roof
    rib = 1.0 + 0.10 * max(0.0, 1.0 - px / 1.2) * np.cos(2 * np.pi * rel / 1.2)
    m_box = kind == 0
    col[:, m_box] *= (rib * across_shade)[m_box]
    # tank: dark cylinder with a bright specular line along its axis
    m_tank = kind == 1
    if m_tank.any():
        wid = 0.10 + px / (2.0 * hw_)
        spec = 0.45 * (0.10 / wid) * np.exp(-(((dn - 0.25 * sun_side) / wid) ** 2))
        cyl = 0.55 + 0.45 * np.sqrt(1.0 - dn**2)
        col[:, m_tank] = col[:, m_tank] * cyl[m_tank] + spec[m_tank]
    # ore/gondola: open top, lighter rim, sometimes loaded
    m_ore = kind == 2
    if m_ore.any():
        inner = _box(d_, hw_ - 0.25, px) * _interval(s_, bs[j] + 0.25, be[j] - 0.25, px)
        inner = np.clip(inner / np.maximum(cov_, 1e-3), 0.0, 1.0)
        fill = _ORE_LOAD[load[j]][:, :nb].T * (0.8 + 0.3 * (1 - dn**2))
        rim = _ORE_RIM[:nb, None] * np.ones_like(dn)
        ore_col = rim * (1 - inner) + fill * inner
        col[:, m_ore] = ore_col[:, m_ore]
    # flat: wooden deck, tarp-covered crates or bare crates
    m_flat = kind == 3
    if m_flat.any():
        lc = _box(d_, hw_ - 0.2, px) * _interval(s_, bs[j] + 0.8, be[j] - 0.8, px)
        lc = np.clip(lc / np.maximum(cov_, 1e-3), 0.0, 1.0)
        wrinkle = 0.88 + 0.12 * np.sin(2 * np.pi * rel / 2.3 + 3.0 * dn) * max(0.0, 1 - px / 2.3)
        ridge = 0.8 + 0.25 * (1 - np.abs(dn))
        tarp_c = tarp_col[j].T * wrinkle * ridge
        crate_c = _CRATES[:nb, None] * (0.9 + 0.1 * np.cos(2 * np.pi * rel / 2.0))
        load_c = np.where(tarp[j], tarp_c, np.where(load[j] == 1, crate_c, col))
        has_load = (tarp[j] | (load[j] == 1)).astype(float)
        flat_col = col * (1 - lc * has_load) + load_c * lc * has_load
        col[:, m_flat] = flat_col[:, m_flat]
    # locomotive: long hood, lighter cab roof, radiator grilles
    m_loco = kind == 4
    if m_loco.any():
        cab = (rel < 3.5).astype(float)
        grille = (np.abs(np.mod(rel, 4.0) - 2.0) < 0.5) & (np.abs(dn) < 0.5)
        fac = (1 + 0.6 * cab) * np.where(grille, 0.6, 1.0) * across_shade
        col[:, m_loco] *= fac[m_loco]
    # snow on roofs and tarps (not inside tanks' specular line)
    if snow:
        sf = snowf[j] * np.where(kind == 1, 0.5, 1.0)
        sf = sf * np.clip(0.8 + 0.2 * np.cos(2 * np.pi * rel / 3.1), 0, 1)
        col += (_SNOW[:nb, None] - col) * sf
    idx = tab.idx[sel]
    for c in range(nb):
        img[c, idx] += (col[c].astype(np.float32) - img[c, idx]) * cov_


@dataclass
class _AreaState:
    area: object
    occupied: list[Slot]
    lut: np.ndarray  # (block, row, col) -> index into occupied, -1 when free
    pitch: np.ndarray  # per block: slot pitch and slot length along u
    size: np.ndarray

    def lookup(self, au: np.ndarray, av: np.ndarray):
        """Occupied slot index (or -1) and in-slot coordinates at area coordinates."""
        nblock = self.lut.shape[0]
        vb = av - BLOCK_OFFSET_M
        block = np.floor(vb / BLOCK_PITCH_M).astype(np.int64)
        ok = (block >= 0) & (block < nblock)
        bcl = np.clip(block, 0, nblock - 1)
        inb = vb - block * BLOCK_PITCH_M
        row = np.where(inb < 2.8, 0, 1)
        inrow = inb - row * 2.8
        ok &= (inb < 5.2) & (inrow >= 0) & (inrow < 2.4)
        uu = au - BLOCK_OFFSET_M
        col = np.floor(uu / self.pitch[bcl]).astype(np.int64)
        inc = uu - col * self.pitch[bcl]
        ok &= (col >= 0) & (col < self.lut.shape[2]) & (inc < self.size[bcl])
        k = np.where(ok, self.lut[bcl, row, np.clip(col, 0, self.lut.shape[2] - 1)], -1)
        return k, inrow, inc, self.size[bcl]


def _storage_state(static: _Static, slots: list[Slot], activity: float) -> list[_AreaState]:
    """Which storage slots are occupied at this activity level, as lookup tables."""
    states = []
    for area in static.layout.areas:
        a_slots = [sl for sl in slots if sl.area_id == area.name]
        occupied = [sl for sl in a_slots if sl.threshold < activity]
        nblock = max((sl.block for sl in a_slots), default=0) + 1
        ncol = max((sl.col for sl in a_slots), default=0) + 1
        lut = np.full((nblock, 2, ncol + 1), -1, dtype=np.int64)
        for k, sl in enumerate(occupied):
            lut[sl.block, sl.row, sl.col] = k
        kinds = {sl.block: sl.kind for sl in a_slots}
        pitch = np.array([SLOT_PITCH_M[kinds.get(b, "c20")][1] for b in range(nblock)])
        size = np.array([SLOT_PITCH_M[kinds.get(b, "c20")][0] for b in range(nblock)])
        states.append(_AreaState(area, occupied, lut, pitch, size))
    return states


def _storage_shadows(
    shade: np.ndarray, static: _Static, states: list[_AreaState], sun_local: tuple[float, float]
) -> None:
    """Shadows of container stacks and cargo piles (march towards the sun)."""
    du, dv = sun_local
    for st in states:
        if not st.occupied:
            continue
        tab = static.areas[st.area.name]
        k, *_ = st.lookup(tab.au, tab.av)
        heights = np.array([sl.height * 2.6 if sl.kind != "tarp" else 1.6 for sl in st.occupied])
        shadow = np.zeros(tab.idx.size, bool)
        for hneed in np.arange(0.65, 7.81, 0.65):
            kk, *_ = st.lookup(tab.au - hneed / 4.0 * du, tab.av - hneed / 4.0 * dv)
            shadow |= (kk >= 0) & (heights[np.maximum(kk, 0)] >= hneed)
        shade[tab.idx] = np.maximum(shade[tab.idx], (shadow & (k < 0)).astype(np.float32))


def _draw_storage(
    img: np.ndarray, static: _Static, states: list[_AreaState], snow: bool
) -> dict[str, dict[str, float]]:
    """Container stacks and tarped cargo on the storage areas; returns area truth."""
    nb = img.shape[0]
    px = static.px
    truth = {}
    for st in states:
        area = st.area
        occ_list = st.occupied
        tab = static.areas[area.name]
        k, inrow, inc, sz = st.lookup(tab.au, tab.av)
        sel = np.flatnonzero(k >= 0)
        if sel.size:
            kk = k[sel]
            cov = (
                _interval(inrow[sel], 0.0, 2.4, px) * _interval(inc[sel], 0.0, sz[sel], px)
            ).astype(np.float32)
            cols = np.array([_CONTAINERS[sl.colour][:nb] for sl in occ_list])
            is_tarp = np.array([sl.kind == "tarp" for sl in occ_list])
            tcols = np.array([_TARPS[sl.colour % 3][:nb] for sl in occ_list])
            hfac = np.array([0.92 + 0.04 * sl.height for sl in occ_list])
            rib = 1.0 + 0.08 * max(0.0, 1 - px / 0.6) * np.cos(2 * np.pi * inc[sel] / 0.6)
            wr = 0.85 + 0.15 * np.sin(inc[sel] * 2.1 + inrow[sel] * 3.0)
            col = np.where(
                is_tarp[kk][None, :],
                tcols[kk].T * wr,
                cols[kk].T * hfac[kk] * rib,
            )
            if snow:
                col += (_SNOW[:nb, None] - col) * 0.7
            idx = tab.idx[sel]
            for c in range(nb):
                img[c, idx] += (col[c].astype(np.float32) - img[c, idx]) * cov
        teu = sum(2 if sl.kind == "c40" else 1 for sl in occ_list if sl.kind != "tarp")
        tarp_m2 = sum(sl.footprint_m2 for sl in occ_list if sl.kind == "tarp")
        covered = sum(sl.footprint_m2 for sl in occ_list)
        truth[area.name] = {
            "covered_m2": round(covered, 2),
            "covered_fraction": round(covered / area.area_m2, 4),
            "containers": int(teu),
            "tarp_m2": round(tarp_m2, 2),
        }
    return truth


def _psf_kernel(sigma: float, shift: float) -> np.ndarray:
    """1-D weights of a pixel-integrated Gaussian PSF that also moves content by ``shift`` px.

    For ``ndimage.correlate1d``: ``out[i] = sum_j w[j] * in[i + j - R]``, so the
    weight of ``in[i + k]`` is the PSF at ``-(k + shift)``; integrating over the
    pixel (erf differences) keeps the centroid at ``shift`` even for narrow PSFs.
    """
    radius = int(math.ceil(3.5 * sigma + abs(shift))) + 1
    k = np.arange(-radius, radius + 1, dtype=float)
    centre = k + shift
    root2 = math.sqrt(2.0) * sigma
    w = 0.5 * (special.erf((centre + 0.5) / root2) - special.erf((centre - 0.5) / root2))
    return (w / w.sum()).astype(np.float64)


def _draw_trucks(img: np.ndarray, static: _Static, rng: np.random.Generator) -> None:
    """A few lorries on the road (not part of any truth)."""
    nb = img.shape[0]
    road = static.layout.road
    rc = 0.5 * (road.v0 + road.v1)
    umin, umax = float(static.u.min()), float(static.u.max())
    for _ in range(int(rng.poisson(3.0))):
        uc = rng.uniform(umin, umax)
        lane = rc + rng.choice([-1.75, 1.75])
        length = rng.uniform(6.0, 12.0)
        ru, rv = static.u[static.road_idx], static.v[static.road_idx]
        sel = static.road_idx[(np.abs(ru - uc) < length) & (np.abs(rv - lane) < 3.0)]
        if sel.size == 0:
            continue
        cov = _interval(static.u[sel], uc - length / 2, uc + length / 2, static.px) * _box(
            static.v[sel] - lane, 1.25, static.px
        )
        colour = _TRUCKS[int(rng.integers(0, len(_TRUCKS)))][:nb]
        for c in range(nb):
            img[c, sel] += (colour[c] - img[c, sel]) * cov.astype(np.float32)


def _clouds(
    shape: tuple[int, int],
    kind: str,
    px: float,
    sun_xy: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """True cloud opacity and cloud-shadow strength (0-1) on the scene's pixel grid."""
    h, w = shape
    if kind == "none":
        z = np.zeros(shape, np.float32)
        return z, z
    if kind == "haze":  # a bank of thick haze: translucent, no shadow of its own
        field = _fractal((max(8, h // 16), max(8, w // 16)), 4.5, rng)
        q = float(np.quantile(field, 1.0 - rng.uniform(0.3, 0.6)))
        peak = rng.uniform(0.3, 0.45)
        op = np.clip((_upsample(field, (h, w)) - q) / 1.0, 0.0, 1.0) * peak
        return op.astype(np.float32), np.zeros(shape, np.float32)
    if kind == "full":
        up = _upsample(_fractal((max(8, h // 16), max(8, w // 16)), 3.0, rng), (h, w))
        op = np.clip(0.92 + 0.05 * up, 0.0, 1.0).astype(np.float32)
        return op, np.zeros(shape, np.float32)
    # cloud field on a periodic low-resolution grid of ~8 m cells
    cell = max(1, int(round(10.0 / px)))
    lh, lw = max(16, -(-h // cell) * 2), max(16, -(-w // cell) * 2)
    field = _fractal((lh, lw), 4.2, rng) + 0.05 * _fractal((lh, lw), 2.6, rng)
    cover = rng.uniform(0.08, 0.35) if kind == "partial" else rng.uniform(0.55, 0.85)
    window = field[: -(-h // cell) + 1, : -(-w // cell) + 1]
    q = float(np.quantile(window, 1.0 - cover))
    op_low = np.clip((field - q) / 0.7, 0.0, 1.0)
    # shadow: the cloud at height H seen displaced by H / tan(elev) away from the sun
    height_m = rng.uniform(400.0, 1200.0)
    ox, oy = sun_xy[0] * height_m / 4.0, sun_xy[1] * height_m / 4.0  # sun_xy is per 4 m height
    sh_low = ndimage.shift(op_low, (-oy / (cell * px), ox / (cell * px)), order=1, mode="wrap")
    ny, nx = -(-h // cell) + 1, -(-w // cell) + 1
    op = ndimage.zoom(op_low[:ny, :nx], cell, order=1)[:h, :w]
    sh = ndimage.zoom(sh_low[:ny, :nx], cell, order=1)[:h, :w]
    return np.clip(op, 0, 1).astype(np.float32), np.clip(sh, 0, 1).astype(np.float32)


def _upsample(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a small periodic field to exactly ``shape``."""
    zoom = (shape[0] / a.shape[0], shape[1] / a.shape[1])
    out = ndimage.zoom(a, zoom, order=1, grid_mode=True, mode="grid-wrap")
    return out[: shape[0], : shape[1]]


def _classes(op: np.ndarray, sh: np.ndarray) -> np.ndarray:
    cls = np.zeros(op.shape, np.uint8)
    cls[(sh * (1 - op) >= 0.3) & (op < 0.2)] = SHADOW
    cls[(op >= 0.2) & (op < 0.5)] = HAZE
    cls[op >= 0.5] = CLOUD
    return cls


def _wedge(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A nodata wedge cutting one corner of the scene (True = nodata)."""
    h, w = shape
    a = rng.uniform(0.12, 0.4) * w
    b = rng.uniform(0.2, 0.7) * h
    corner = int(rng.integers(0, 4))
    cols = np.arange(w)[None, :] + 0.5
    rows = np.arange(h)[:, None] + 0.5
    if corner in (1, 2):
        cols = w - cols
    if corner in (2, 3):
        rows = h - rows
    return cols / a + rows / b < 1.0


def render_scene(spec: SceneSpec) -> dict:
    """Render one scene, write its GeoTIFF and mask, return its truth records."""
    from toolkit._synth_layout import build_layout

    layout = build_layout(spec.layout_name, rotation_deg=spec.rotation_deg)
    static = _static(layout, spec.grid, spec.site_seed)
    rng = np.random.default_rng(spec.seed)
    px = static.px
    h, w = static.shape
    npix = h * w
    multispectral = px >= 2.0
    nb = 4 if multispectral else 3

    elev, az = sun_position(spec.time, layout.lat, layout.lon)
    elev_c = max(elev, 8.0)
    # displacement of a 4 m high roof's shadow, metres east/north
    reach = 4.0 / math.tan(math.radians(elev_c))
    sun_xy = (-reach * math.sin(math.radians(az)), -reach * math.cos(math.radians(az)))
    snow, green = _season(spec.time, rng, spec.snow_allowed)

    # ---- ground
    tf = static.tex_fine
    veg = _GRASS_DRY + (_GRASS_GREEN - _GRASS_DRY) * green
    img = np.empty((nb, npix), np.float32)
    for c in range(nb):
        img[c] = (_SOIL[c] + (veg[c] - _SOIL[c]) * static.vegfrac) * (1 + 0.10 * tf)
    snow_ground = None
    if snow:
        depth = rng.uniform(0.5, 1.0)
        snow_ground = np.clip(depth * 1.4 - 0.25 + 0.3 * static.tex_patch, 0.0, 1.0)
        _lerp(img, _SNOW, snow_ground)
    _lerp(img, _CONCRETE * (1 + 0.04 * rng.standard_normal()), static.apron)
    _lerp(img, _ASPHALT, static.road)
    _lerp(img, _MARKING, static.marking)
    for c in range(nb):
        img[c] += (float(_BALLAST[c]) * (1 + 0.15 * tf) - img[c]) * static.ballast
    _lerp(img, _SLEEPER, static.sleepers * 0.6)  # concrete sleepers half buried in ballast
    if snow:
        _lerp(img, _SNOW, static.ballast * snow_ground * 0.6)
        _lerp(img, _SNOW, static.apron * snow_ground * 0.5)
    _lerp(img, _RAIL, static.rails * 0.8)
    # warehouse roof: two pitches lit differently by the sun
    sun_v = layout.vector_to_local(-sun_xy[0], -sun_xy[1])[1]  # towards the sun, across
    pitch_light = 1.0 + 0.12 * np.sign(sun_v) * static.ridge_side
    roof = _SNOW if snow else _ROOF
    for c in range(nb):
        img[c] += (roof[c] * pitch_light - img[c]) * static.building

    # ---- shadows, then objects
    shade = np.zeros(npix, np.float32)
    wh = layout.warehouse
    bi = static.building_idx
    du, dv = layout.vector_to_local(*sun_xy)
    k_h = wh.height_m / 4.0
    uu, vv = static.u[bi], static.v[bi]
    hit = np.zeros(bi.size, bool)
    for frac in np.linspace(0.05, 1.0, 24):
        pu = uu - frac * k_h * du
        pv = vv - frac * k_h * dv
        hit |= (pu >= wh.u0) & (pu <= wh.u1) & (pv >= wh.v0) & (pv <= wh.v1)
    shade[bi] = np.maximum(shade[bi], hit & (static.building[bi] < 0.5))

    for track in layout.tracks:
        vehicles = spec.vehicles.get(track.track_id, [])
        tab = static.tracks[track.track_id]
        _draw_track(img, shade, tab, vehicles, px, sun_xy, snow, bodies=False)
    storage = _storage_state(static, spec.slots, spec.activity)
    _storage_shadows(shade, static, storage, (du, dv))
    # shadows fall on the ground; railcars, containers and lorries are drawn over them
    diffuse = rng.uniform(0.3, 0.45)
    img *= 1.0 - (1.0 - diffuse) * shade[None, :]
    for track in layout.tracks:
        vehicles = spec.vehicles.get(track.track_id, [])
        tab = static.tracks[track.track_id]
        _draw_track(img, shade, tab, vehicles, px, sun_xy, snow, bodies=True)
    area_truth = _draw_storage(img, static, storage, snow)
    _draw_trucks(img, static, rng)

    # ---- illumination and atmosphere
    irradiance = float(
        np.clip((math.sin(math.radians(elev_c)) / math.sin(math.radians(45))) ** 0.5, 0.5, 1.15)
    )
    gains = irradiance * rng.uniform(0.93, 1.07) * (1 + rng.normal(0.0, 0.03, nb))
    img *= gains[:, None].astype(np.float32)
    haze = rng.uniform(0.01, 0.12)
    img = img * (1 - haze) + (haze * _HAZE[:nb])[:, None].astype(np.float32)
    img = img.reshape(nb, h, w)

    # PSF and georeferencing error (the content is shifted by (sx, sy) metres)
    sigma = rng.uniform(0.45, 0.8)
    mis_m = spec.misregistration_px * px
    radius = mis_m * math.sqrt(rng.random())
    angle = rng.uniform(0.0, 2 * math.pi)
    sx, sy = radius * math.cos(angle), radius * math.sin(angle)
    dcol, drow = static.shift_px(sx, sy)
    k_row, k_col = _psf_kernel(sigma, drow), _psf_kernel(sigma, dcol)
    for c in range(nb):
        band = ndimage.correlate1d(img[c], k_row, axis=0, mode="nearest")
        img[c] = ndimage.correlate1d(band, k_col, axis=1, mode="nearest")

    # clouds and their shadows (in the image frame)
    op, sh = _clouds((h, w), spec.cloud_kind, px, sun_xy, rng)
    if spec.cloud_kind != "none":
        shadow_f = 1.0 - 0.6 * sh * (1.0 - op)
        tex = 1.0 + 0.06 * _upsample(_fractal((max(8, h // 8), max(8, w // 8)), 2.5, rng), (h, w))
        for c in range(nb):
            img[c] = img[c] * shadow_f * (1 - op) + op * _CLOUD[c] * irradiance * tex
    cls = _classes(op, sh)
    nodata = _wedge((h, w), rng) if spec.nodata_wedge else np.zeros((h, w), bool)
    cls_true = cls.copy()
    cls_true[nodata] = NODATA

    # sensor noise and quantisation
    noise_sd = rng.uniform(0.004, 0.008)
    img += rng.standard_normal(img.shape, dtype=np.float32) * noise_sd
    if multispectral:
        data = np.clip(np.rint(img * 10000.0), 1, 65535).astype(np.uint16)
        data = data[[2, 1, 0, 3]]  # blue, green, red, nir
        descriptions = ("blue", "green", "red", "nir")
    else:
        # 8-bit display encoding DN = 1 + 254 * (1.15 L)^0.8, through a 12-bit lookup table
        level = np.clip(img * (1.15 * 4095.0), 0.0, 4095.0)
        data = _DN8_LUT[np.rint(level, out=level).astype(np.uint16)]
        descriptions = ("red", "green", "blue")
    data[:, nodata] = 0

    # usable-data mask: like a PlanetScope UDM, from a blurred, noisier, offset opacity
    if spec.cloud_kind == "none":
        mask = np.zeros((h, w), np.uint8)
    else:
        off = rng.uniform(1.0, 3.0, 2) * rng.choice([-1, 1], 2)
        noisy = _upsample(_fractal((max(8, h // 6), max(8, w // 6)), 2.0, rng), (h, w))
        op_m = ndimage.gaussian_filter(op, 2.0) + 0.06 * noisy
        sh_m = ndimage.gaussian_filter(sh, 2.0) + 0.06 * noisy
        op_m = ndimage.shift(op_m, off, order=1, mode="nearest")
        sh_m = ndimage.shift(sh_m, off, order=1, mode="nearest")
        mask = _classes(np.clip(op_m, 0, 1), np.clip(sh_m, 0, 1))
    mask[nodata] = NODATA

    _write(spec, data, descriptions, mask)

    # ---- truth
    usable = cls_true == CLEAR
    track_rows = []
    car_rows = []
    for track in layout.tracks:
        tab = static.tracks[track.track_id]
        cols_px = tab.samples_px[:, 0] + dcol
        rows_px = tab.samples_px[:, 1] + drow
        ci = np.clip(np.floor(cols_px).astype(np.int64), 0, w - 1)
        ri = np.clip(np.floor(rows_px).astype(np.int64), 0, h - 1)
        inside = (cols_px >= 0) & (cols_px < w) & (rows_px >= 0) & (rows_px < h)
        vis = usable[ri, ci] & inside
        vehicles = spec.vehicles.get(track.track_id, [])
        counts = dict.fromkeys(_DRAWN_KINDS, 0)
        n_vis = 0
        tarped = 0
        occupied = 0.0
        for k, (a, b, veh) in enumerate(vehicles):
            centre = int(round(0.5 * (a + b) / SAMPLE_STEP_M))
            visible = bool(vis[min(centre, vis.size - 1)])
            counts[veh.kind] += 1
            occupied += b - a
            if veh.kind != "locomotive":
                n_vis += int(visible)
                tarped += int(veh.tarp)
            car_rows.append(
                {
                    "track_id": track.track_id,
                    "vehicle": k,
                    "kind": veh.kind,
                    "start_m": round(a, 3),
                    "end_m": round(b, 3),
                    "length_m": round(b - a, 3),
                    "tarp": bool(veh.tarp),
                    "visible": visible,
                }
            )
        track_rows.append(
            {
                "track_id": track.track_id,
                "railcars": sum(v for k, v in counts.items() if k != "locomotive"),
                "railcars_visible": n_vis,
                "locomotives": counts["locomotive"],
                "box": counts["box"],
                "tank": counts["tank"],
                "ore": counts["ore"],
                "flat": counts["flat"],
                "tarped": tarped,
                "occupied_m": round(occupied, 3),
                "visible_fraction": round(float(vis.mean()), 4),
            }
        )
    area_rows = []
    for area in layout.areas:
        tab = static.areas[area.name]
        flat_cls = cls_true.ravel()[tab.idx]
        row = {"area_id": area.name, **area_truth[area.name]}
        row["visible_fraction"] = (
            round(float((flat_cls == CLEAR).mean()), 4) if tab.idx.size else 0.0
        )
        area_rows.append(row)
    scene = {
        "cloud_fraction": round(float(((cls_true == CLOUD) | (cls_true == HAZE)).mean()), 4),
        "nodata_fraction": round(float(nodata.mean()), 4),
        "shift_x_m": round(sx, 3),
        "shift_y_m": round(sy, 3),
        "snow": snow,
        "sun_elevation_deg": round(elev, 2),
        "sun_azimuth_deg": round(az, 2),
    }
    return {
        "index": spec.index,
        "tracks": track_rows,
        "cars": car_rows,
        "areas": area_rows,
        "scene": scene,
    }


def _write(spec: SceneSpec, data: np.ndarray, descriptions, mask: np.ndarray) -> None:
    import rasterio

    grid = spec.grid
    stamp = spec.time.strftime("%Y:%m:%d %H:%M:%S")
    block = 256 if max(grid.width, grid.height) <= 4096 else 512
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": grid.affine,
        "nodata": 0,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "zlevel": 3,  # as small as level 6 on these noisy images, and faster
        "predictor": 2,
        "interleave": "pixel",
    }
    if data.shape[0] == 3:
        profile["photometric"] = "RGB"
    tags = {
        "TIFFTAG_DATETIME": stamp,
        "TIFFTAG_IMAGEDESCRIPTION": "SYNTHETIC scene of a synthetic rail yard (toolkit.synth)",
        "SYNTHETIC": "true",
    }
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(spec.out_tif, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(**tags)
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)
        mprof = dict(profile, count=1, dtype="uint8", nodata=255)
        mprof.pop("photometric", None)
        with rasterio.open(spec.out_mask, "w", **mprof) as dst:
            dst.write(mask[None])
            dst.update_tags(
                TIFFTAG_DATETIME=stamp,
                TIFFTAG_IMAGEDESCRIPTION="SYNTHETIC usable-data mask: 0 clear, 1 cloud, "
                "2 cloud shadow, 3 thick haze, 255 nodata",
                SYNTHETIC="true",
            )
            dst.set_band_description(1, "usable_data_mask")
