"""Geometry of the synthetic rail yards (tracks, road, warehouse, storage areas).

Private module of :mod:`toolkit.synth`. Each yard is described in a local frame
``(u, v)`` in metres (``u`` along the tracks, ``v`` across them), rotated by
``theta_deg`` counter-clockwise from east and placed in UTM zone 52N
(EPSG:32652). Everything here is synthetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyproj import Transformer

__all__ = ["Track", "Rect", "Layout", "build_layout", "SITE_CRS"]

SITE_CRS = "EPSG:32652"
MARGIN_M = 40.0


@dataclass(frozen=True, eq=False)
class Track:
    """A track centreline in UTM metres with its parking range (along-track metres)."""

    track_id: str
    xy: np.ndarray  # (n, 2) vertices, UTM east/north
    park: tuple[float, float]

    @property
    def cum_m(self) -> np.ndarray:
        seg = np.hypot(*np.diff(self.xy, axis=0).T)
        return np.concatenate([[0.0], np.cumsum(seg)])

    @property
    def length_m(self) -> float:
        return float(self.cum_m[-1])

    def point_at(self, s: np.ndarray) -> np.ndarray:
        """UTM coordinates of along-track distances ``s`` (metres from the first vertex)."""
        cum = self.cum_m
        s = np.clip(np.asarray(s, dtype=float), 0.0, cum[-1])
        x = np.interp(s, cum, self.xy[:, 0])
        y = np.interp(s, cum, self.xy[:, 1])
        return np.stack([x, y], axis=-1)


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in the yard's local frame (u along, v across)."""

    name: str
    u0: float
    u1: float
    v0: float
    v1: float
    height_m: float = 0.0

    @property
    def area_m2(self) -> float:
        return (self.u1 - self.u0) * (self.v1 - self.v0)

    def corners(self) -> np.ndarray:
        return np.array(
            [[self.u0, self.v0], [self.u1, self.v0], [self.u1, self.v1], [self.u0, self.v1]]
        )


@dataclass(frozen=True, eq=False)
class Layout:
    """A complete synthetic yard."""

    name: str
    lat: float
    lon: float
    theta_deg: float
    origin: tuple[float, float]  # UTM of local (0, 0)
    tracks: tuple[Track, ...]
    warehouse: Rect
    areas: tuple[Rect, ...]
    road: Rect
    bounds: tuple[float, float, float, float]  # UTM xmin, ymin, xmax, ymax (with margin)

    @property
    def crs(self) -> str:
        return SITE_CRS

    def to_world(self, u, v):
        t = math.radians(self.theta_deg)
        c, s = math.cos(t), math.sin(t)
        u = np.asarray(u, dtype=float)
        v = np.asarray(v, dtype=float)
        return self.origin[0] + u * c - v * s, self.origin[1] + u * s + v * c

    def to_local(self, x, y):
        t = math.radians(self.theta_deg)
        c, s = math.cos(t), math.sin(t)
        dx = np.asarray(x, dtype=float) - self.origin[0]
        dy = np.asarray(y, dtype=float) - self.origin[1]
        return dx * c + dy * s, -dx * s + dy * c

    def vector_to_local(self, dx: float, dy: float) -> tuple[float, float]:
        t = math.radians(self.theta_deg)
        c, s = math.cos(t), math.sin(t)
        return dx * c + dy * s, -dx * s + dy * c

    def rect_world(self, rect: Rect) -> np.ndarray:
        x, y = self.to_world(*rect.corners().T)
        return np.stack([x, y], axis=-1)


def _straight(u0: float, u1: float, v: float) -> np.ndarray:
    return np.array([[u0, v], [u1, v]], dtype=float)


def _turnout(u_switch: float, run_m: float, v_from: float, v_to: float, u_end: float) -> np.ndarray:
    """Centreline leaving a track at ``u_switch`` through an S-curve, then parallel.

    ``run_m`` may be negative (the turnout leaves towards decreasing ``u``).
    """
    x = np.linspace(0.0, 1.0, int(abs(run_m) // 2) + 1)
    u = u_switch + run_m * x
    v = v_from + (v_to - v_from) * (3 * x**2 - 2 * x**3)
    pts = np.stack([u, v], axis=-1)
    return np.vstack([pts, [[u_end, v_to]]])


def _arc_then_straight(
    u_joint: float, v: float, radius: float, angle_deg: float, u_end: float, bend: float
) -> np.ndarray:
    """Centreline starting on an arc that joins a straight part at ``u_joint``.

    The arc lies at ``u < u_joint`` (``bend=+1`` curves towards +v, ``-1`` towards -v);
    the first vertex is the far end of the arc.
    """
    phi = np.radians(np.linspace(angle_deg, 0.0, int(radius * math.radians(angle_deg) // 2) + 2))
    u = u_joint - radius * np.sin(phi)
    vv = v + bend * radius * (1 - np.cos(phi))
    return np.vstack([np.stack([u, vv], axis=-1), [[u_end, v]]])


def _straight_then_arc(
    u_joint: float, v: float, radius: float, angle_deg: float, u_start: float, bend: float
) -> np.ndarray:
    """Centreline running straight from ``u_start`` and ending on an arc beyond ``u_joint``."""
    phi = np.radians(np.linspace(0.0, angle_deg, int(radius * math.radians(angle_deg) // 2) + 2))
    u = u_joint + radius * np.sin(phi)
    vv = v + bend * radius * (1 - np.cos(phi))
    return np.vstack([[[u_start, v]], np.stack([u, vv], axis=-1)])


def _spec(name: str) -> dict:
    if name == "tumangang":
        spacing = [4.8, 5.2, 4.6, 5.3, 4.9, 5.1, 4.7, 5.4, 4.6]
        v = np.concatenate([[0.0], np.cumsum(spacing)])
        tracks = [
            ("01", _straight(0, 820, v[0]), (40.0, 800.0)),
            ("02", _straight(20, 800, v[1]), (30.0, 760.0)),
            ("03", _straight(45, 760, v[2]), (25.0, 700.0)),
            ("04", _straight(60, 740, v[3]), (20.0, 670.0)),
            ("05", _straight(90, 700, v[4]), (20.0, 590.0)),
            # track 07 leaves track 06 through a switch at u=110: keep 06 clear there
            ("06", _straight(60, 720, v[5]), (150.0, 650.0)),
            ("07", _turnout(110, 70, v[5], v[6], 640), (90.0, 520.0)),
            ("08", _straight(140, 680, v[7]), (20.0, 520.0)),
            ("09", _straight(170, 620, v[8]), (20.0, 430.0)),
            # track 10 starts on an arc (radius 300 m, 25 degrees) curving away from the yard
            ("10", _arc_then_straight(230, v[9], 300.0, 25.0, 660, +1.0), (30.0, 540.0)),
        ]
        return {
            "lat": 42.4195,
            "lon": 130.6010,
            "theta_deg": 17.0,
            "tracks": tracks,
            "warehouse": Rect("warehouse", 250, 370, -66, -36, 9.0),
            "areas": (
                Rect("warehouse_apron", 375, 545, -70, -30),
                Rect("container_yard", 560, 740, -70, -30),
            ),
            "road": Rect("road", -400, 1300, -23.5, -16.5),
        }
    if name == "second":
        v = np.arange(8) * 4.6
        tracks = [
            # track 01 ends on an arc (radius 220 m, 30 degrees) bending away from the yard
            ("01", _straight_then_arc(560, v[0], 220.0, 30.0, 0, -1.0), (30.0, 640.0)),
            ("02", _straight(15, 600, v[1]), (20.0, 570.0)),
            ("03", _straight(40, 580, v[2]), (20.0, 520.0)),
            ("04", _straight(30, 620, v[3]), (20.0, 450.0)),
            # track 05 leaves track 04 through a switch at u=500 and runs back parallel
            ("05", _turnout(500, -64, v[3], v[4], 90), (80.0, 400.0)),
            ("06", _straight(90, 560, v[5]), (20.0, 450.0)),
            ("07", _straight(120, 540, v[6]), (20.0, 400.0)),
            ("08", _straight(110, 520, v[7]), (20.0, 390.0)),
        ]
        return {
            "lat": 42.3480,
            "lon": 130.5210,
            "theta_deg": -31.0,
            "tracks": tracks,
            "warehouse": Rect("warehouse", 180, 280, 45, 72, 8.0),
            "areas": (
                Rect("warehouse_apron", 285, 430, 42, 80),
                Rect("container_yard", 60, 170, 42, 76),
            ),
            "road": Rect("road", -400, 1200, 90, 97),
        }
    raise KeyError(name)


def build_layout(name: str, *, rotation_deg: float | None = None) -> Layout:
    """Build the yard ``name`` ("tumangang" or "second"), optionally re-rotated."""
    spec = _spec(name)
    tracks_local = spec["tracks"]
    theta = float(spec["theta_deg"] if rotation_deg is None else rotation_deg)
    to_utm = Transformer.from_crs("EPSG:4326", SITE_CRS, always_xy=True)
    e0, n0 = to_utm.transform(spec["lon"], spec["lat"])
    origin = (round(e0, 1), round(n0, 1))
    tmp = Layout(
        name=name,
        lat=spec["lat"],
        lon=spec["lon"],
        theta_deg=theta,
        origin=origin,
        tracks=(),
        warehouse=spec["warehouse"],
        areas=spec["areas"],
        road=spec["road"],
        bounds=(0, 0, 0, 0),
    )
    tracks = []
    for tid, pts, park in tracks_local:
        x, y = tmp.to_world(pts[:, 0], pts[:, 1])
        tracks.append(Track(track_id=tid, xy=np.stack([x, y], axis=-1), park=park))
    pts_all = [t.xy for t in tracks]
    pts_all += [tmp.rect_world(r) for r in (spec["warehouse"], *spec["areas"])]
    allxy = np.vstack(pts_all)
    xmin, ymin = allxy.min(axis=0) - MARGIN_M
    xmax, ymax = allxy.max(axis=0) + MARGIN_M
    return Layout(
        name=name,
        lat=spec["lat"],
        lon=spec["lon"],
        theta_deg=theta,
        origin=origin,
        tracks=tuple(tracks),
        warehouse=spec["warehouse"],
        areas=spec["areas"],
        road=spec["road"],
        bounds=(float(xmin), float(ymin), float(xmax), float(ymax)),
    )
