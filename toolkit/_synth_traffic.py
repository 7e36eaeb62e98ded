"""Railcar traffic of the synthetic yard: consists arrive, stay for days to months, leave.

Private module of :mod:`toolkit.synth`. The event simulation places whole
consists on the tracks so that the freight-car count of the whole yard on each
acquisition equals a target exactly (the calibrated history), or packs the
tracks afresh on each date (the "dense", "random" and "empty" test histories).
It also decides the container stacks and tarped cargo on the storage areas.
Everything here is synthetic.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np

from toolkit._synth_layout import Layout

__all__ = [
    "KINDS",
    "KIND_LENGTH_M",
    "Vehicle",
    "Slot",
    "capacity",
    "simulate_traffic",
    "storage_slots",
]

KINDS = ("box", "tank", "ore", "flat", "locomotive")
# Over-coupler lengths (published_facts.md): box 15-17 m, tank 12-18 m, ore/gondola
# 13-14 m, flat 13-19 m, locomotive 18-20 m.
KIND_LENGTH_M = {
    "box": (15.0, 17.0),
    "tank": (12.0, 18.0),
    "ore": (13.0, 14.0),
    "flat": (13.0, 19.0),
    "locomotive": (18.0, 20.0),
}
CLEARANCE_M = 3.0  # free track kept between parked consists
MAX_CAR_M = 19.0
BLOCK_OFFSET_M = 4.0  # storage lattice: first block/column from the area edge
BLOCK_PITCH_M = 11.2  # two 2.4 m rows 0.4 m apart, then a 6 m aisle
SLOT_PITCH_M = {"c20": (6.1, 6.6), "c40": (12.2, 12.8), "tarp": (6.0, 7.4)}


@dataclass
class Vehicle:
    """One railcar or locomotive and its (synthetic) looks."""

    kind: str
    length_m: float
    width_m: float
    colour: int  # index into the palette of its kind
    tarp: bool = False  # flat car with a tarp-covered load
    tarp_colour: int = 0
    load: int = 0  # ore: 0 empty, 1 coal, 2 iron ore; flat: 1 crates without tarp
    shade: float = 1.0  # individual brightness (weathering)
    snow: float = 0.0  # share of the roof under snow when it snows


@dataclass
class Consist:
    track_id: str
    start_m: float
    cars: list[Vehicle]
    departure: float  # days since epoch

    @property
    def length_m(self) -> float:
        return float(sum(c.length_m for c in self.cars))

    @property
    def end_m(self) -> float:
        return self.start_m + self.length_m


@dataclass
class Slot:
    """A storage slot on an area: a container stack (20/40 ft) or a tarped cargo pile."""

    area_id: str
    kind: str  # "c20", "c40" or "tarp"
    u0: float
    u1: float
    v0: float
    v1: float
    threshold: float  # occupied when the activity level exceeds it
    height: int  # stack height in containers (tarp piles: 1)
    colour: int
    block: int  # lattice position: block of two rows, row in block, column
    row: int
    col: int

    @property
    def footprint_m2(self) -> float:
        return (self.u1 - self.u0) * (self.v1 - self.v0)


@dataclass
class _Yard:
    layout: Layout
    consists: list[Consist] = field(default_factory=list)

    def on_track(self, track_id: str) -> list[Consist]:
        return sorted((c for c in self.consists if c.track_id == track_id), key=lambda c: c.start_m)

    @property
    def count(self) -> int:
        return sum(len(c.cars) for c in self.consists)


def capacity(layout: Layout) -> int:
    """Freight cars the yard holds when every track is packed (any car lengths)."""
    return int(sum(_track_capacity(t.park) for t in layout.tracks))


def _track_capacity(park: tuple[float, float]) -> int:
    return int((park[1] - park[0]) // (MAX_CAR_M + 1.0))


def _days(t: _dt.datetime) -> float:
    return (t - _dt.datetime(2000, 1, 1)).total_seconds() / 86400.0


def _kind_weights(t: _dt.datetime) -> dict[str, float]:
    if t >= _dt.datetime(2023, 9, 1):  # after the summit: many tarped flat cars
        return {"flat": 0.38, "box": 0.24, "ore": 0.2, "tank": 0.18}
    if t >= _dt.datetime(2022, 10, 1):  # Russian cars after the resumption
        return {"box": 0.4, "tank": 0.3, "ore": 0.15, "flat": 0.15}
    return {"box": 0.35, "ore": 0.3, "tank": 0.2, "flat": 0.15}


def _new_vehicle(kind: str, rng: np.random.Generator, t: _dt.datetime, length: float) -> Vehicle:
    lo, hi = KIND_LENGTH_M[kind]
    length = float(np.clip(round(length, 1), lo, hi))
    tarp = False
    load = 0
    if kind == "flat":
        p_tarp = 0.85 if t >= _dt.datetime(2023, 9, 1) else 0.45
        tarp = bool(rng.random() < p_tarp)
        load = int(not tarp and rng.random() < 0.5)
    elif kind == "ore":
        load = int(rng.choice([0, 1, 2], p=[0.4, 0.3, 0.3]))
    return Vehicle(
        kind=kind,
        length_m=length,
        width_m=float(round(rng.uniform(3.2, 3.4), 2)),
        colour=int(rng.integers(0, 4)),
        tarp=tarp,
        tarp_colour=int(rng.integers(0, 3)),
        load=load,
        shade=float(rng.uniform(0.85, 1.15)),
        snow=float(rng.uniform(0.2, 0.8)),
    )


def _new_cars(n: int, t: _dt.datetime, rng: np.random.Generator) -> list[Vehicle]:
    """A consist of ``n`` freight cars: mostly one kind, often one car model."""
    weights = _kind_weights(t)
    kinds = list(weights)
    p = np.array([weights[k] for k in kinds])
    main = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    lo, hi = KIND_LENGTH_M[main]
    model_len = rng.uniform(lo, hi)
    cars = []
    for _ in range(n):
        kind = main if rng.random() < 0.75 else kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        if kind == main and rng.random() < 0.7:
            length = model_len
        else:
            length = rng.uniform(*KIND_LENGTH_M[kind])
        cars.append(_new_vehicle(kind, rng, t, length))
    return cars


def _free_gaps(yard: _Yard, track) -> list[tuple[float, float]]:
    """Free along-track intervals where a new consist may start/end (clearance included)."""
    a, b = track.park
    gaps = []
    cursor = a
    for c in yard.on_track(track.track_id):
        if c.start_m - CLEARANCE_M > cursor:
            gaps.append((cursor, c.start_m - CLEARANCE_M))
        cursor = max(cursor, c.end_m + CLEARANCE_M)
    if b > cursor:
        gaps.append((cursor, b))
    return gaps


def _place(yard: _Yard, length: float, rng: np.random.Generator) -> tuple[str, float] | None:
    """Choose a track and start for a consist of ``length`` metres, or None if none fits."""
    options = []
    for track in yard.layout.tracks:
        for g0, g1 in _free_gaps(yard, track):
            if g1 - g0 >= length:
                options.append((track.track_id, g0, g1))
    if not options:
        return None
    size = np.array([g1 - g0 - length for _, g0, g1 in options]) + 20.0
    k = int(rng.choice(len(options), p=size**0.5 / (size**0.5).sum()))
    tid, g0, g1 = options[k]
    slack = g1 - g0 - length
    # consists usually stop close to the end of the track or to the previous consist
    r = rng.random()
    if r < 0.45:
        offset = rng.uniform(0.0, min(slack, 25.0))
    elif r < 0.9:
        offset = slack - rng.uniform(0.0, min(slack, 25.0))
    else:
        offset = rng.uniform(0.0, slack)
    return tid, float(round(g0 + offset, 2))


def _add_consist(
    yard: _Yard, n: int, t: _dt.datetime, stay_days: float, rng: np.random.Generator
) -> int:
    """Park a consist of up to ``n`` cars; returns the number of cars parked."""
    while n > 0:
        cars = _new_cars(n, t, rng)
        spot = _place(yard, sum(c.length_m for c in cars), rng)
        if spot is not None:
            yard.consists.append(Consist(spot[0], spot[1], cars, _days(t) + stay_days))
            return n
        n = n // 2  # split the train when no track has room for all of it
    return 0


def _remove_cars(yard: _Yard, excess: int) -> None:
    """Let ``excess`` cars leave: the consists due to leave first go (or are shortened) first."""
    while excess > 0:
        c = min(yard.consists, key=lambda c: c.departure)
        if len(c.cars) <= excess:
            yard.consists.remove(c)
            excess -= len(c.cars)
        else:
            # some cars are taken away from the far end of the consist
            del c.cars[len(c.cars) - excess :]
            excess = 0


def _stay_days(t: _dt.datetime, rng: np.random.Generator) -> float:
    if t >= _dt.datetime(2023, 9, 1):
        return float(rng.uniform(15.0, 60.0))
    return float(np.clip(rng.lognormal(np.log(25.0), 0.8), 3.0, 150.0))


def _batch(t: _dt.datetime, rng: np.random.Generator) -> int:
    if t >= _dt.datetime(2023, 9, 15):
        return int(rng.integers(6, 19))
    return int(rng.integers(2, 11))


def _calibrated(yard: _Yard, times, targets, rng) -> list[list[Consist]]:
    states = []
    for t, target in zip(times, targets, strict=True):
        now = _days(t)
        yard.consists = [c for c in yard.consists if c.departure > now or len(c.cars) == 0]
        if yard.count > target:
            _remove_cars(yard, yard.count - target)
        guard = 0
        while yard.count < target:
            n = min(target - yard.count, _batch(t, rng))
            if _add_consist(yard, n, t, _stay_days(t, rng), rng) == 0:
                guard += 1
                if guard > 50:  # pragma: no cover - capacity is far above the targets
                    raise RuntimeError("synthetic yard is full")
        states.append([_copy(c) for c in yard.consists])
    return states


def _copy(c: Consist) -> Consist:
    return Consist(c.track_id, c.start_m, list(c.cars), c.departure)


def _packed(layout: Layout, t: _dt.datetime, target: int, rng) -> list[Consist]:
    """Pack ``target`` freight cars onto the tracks afresh (dense/random histories)."""
    caps = np.array([_track_capacity(tr.park) for tr in layout.tracks])
    per_track = np.zeros(len(caps), dtype=int)
    for _ in range(target):
        free = caps - per_track
        k = int(rng.choice(len(caps), p=free / free.sum()))
        per_track[k] += 1
    consists = []
    for tr, n in zip(layout.tracks, per_track, strict=True):
        if n == 0:
            continue
        sizes = []
        left = int(n)
        while left > 0:
            sizes.append(min(left, int(rng.integers(3, 16))))
            left -= sizes[-1]
        groups = [_new_cars(m, t, rng) for m in sizes]
        used = sum(c.length_m for g in groups for c in g)
        slack = (tr.park[1] - tr.park[0]) - used
        gaps = rng.dirichlet(np.ones(len(groups) + 1)) * slack
        pos = tr.park[0] + gaps[0]
        for g, gap in zip(groups, gaps[1:], strict=True):
            consists.append(Consist(tr.track_id, float(round(pos, 2)), g, 0.0))
            pos += sum(c.length_m for c in g) + gap
    return consists


def _add_locomotives(
    layout: Layout, consists: list[Consist], n: int, t: _dt.datetime, rng
) -> list[Consist]:
    """Couple ``n`` locomotives to a consist (or park them alone) for one acquisition."""
    out = [_copy(c) for c in consists]
    yard = _Yard(layout, out)
    for _ in range(n):
        loco = _new_vehicle("locomotive", rng, t, rng.uniform(18.0, 20.0))
        placed = False
        order = rng.permutation(len(out)) if out else []
        for k in order:
            c = out[int(k)]
            track = next(tr for tr in layout.tracks if tr.track_id == c.track_id)
            for g0, g1 in _free_gaps(yard, track):
                # a locomotive at the head of the consist: free room right after it
                if abs(g0 - (c.end_m + CLEARANCE_M)) < 1e-6 and g1 - g0 >= loco.length_m:
                    c.cars.append(loco)
                    placed = True
                    break
            if placed:
                break
        if not placed:
            spot = _place(yard, loco.length_m, rng)
            if spot is not None:
                out.append(Consist(spot[0], spot[1], [loco], 0.0))
    return out


def simulate_traffic(
    layout: Layout,
    times: list[_dt.datetime],
    targets: list[int],
    locomotives: list[int],
    *,
    persistent: bool,
    rng: np.random.Generator,
) -> list[dict[str, list[tuple[float, float, Vehicle]]]]:
    """Vehicles on every track for every acquisition.

    Returns, per acquisition, ``{track_id: [(start_m, end_m, vehicle), ...]}``
    sorted by ``start_m`` (over-coupler extents; coupled cars touch).
    """
    if persistent:
        states = _calibrated(_Yard(layout), times, targets, rng)
    else:
        states = [_packed(layout, t, n, rng) for t, n in zip(times, targets, strict=True)]
    scenes = []
    for t, consists, n_loco in zip(times, states, locomotives, strict=True):
        if n_loco:
            consists = _add_locomotives(layout, consists, int(n_loco), t, rng)
        per_track: dict[str, list[tuple[float, float, Vehicle]]] = {
            tr.track_id: [] for tr in layout.tracks
        }
        for c in consists:
            pos = c.start_m
            for car in c.cars:
                per_track[c.track_id].append((round(pos, 3), round(pos + car.length_m, 3), car))
                pos += car.length_m
        for v in per_track.values():
            v.sort(key=lambda e: e[0])
        scenes.append(per_track)
    return scenes


def storage_slots(layout: Layout, rng: np.random.Generator) -> list[Slot]:
    """Container and tarp slots on every storage area (a regular lattice, fixed per site).

    Blocks of two rows (2.4 m deep, 0.4 m apart) are separated by 6 m aisles; a
    block holds 20-ft (6.1 x 2.4 m) or 40-ft (12.2 x 2.4 m) container stacks, or
    tarped cargo piles (6.0 x 2.4 m).
    """
    slots = []
    pitch = SLOT_PITCH_M
    for area in layout.areas:
        if area.name == "warehouse_apron":
            pattern = ["tarp", "c20", "tarp", "c40"]
        else:
            pattern = ["c40", "c20", "c40", "c40"]
        v = area.v0 + BLOCK_OFFSET_M
        block = 0
        while v + 5.2 <= area.v1 - 2.0:
            kind = pattern[block % len(pattern)]
            size, step = pitch[kind]
            for row in range(2):
                r0 = v + row * 2.8
                u = area.u0 + BLOCK_OFFSET_M
                col = 0
                while u + size <= area.u1 - BLOCK_OFFSET_M:
                    slots.append(
                        Slot(
                            area_id=area.name,
                            kind=kind,
                            u0=u,
                            u1=u + size,
                            v0=r0,
                            v1=r0 + 2.4,
                            threshold=float(rng.random()),
                            height=1 if kind == "tarp" else int(rng.choice([1, 2, 3])),
                            colour=int(rng.integers(0, 6)),
                            block=block,
                            row=row,
                            col=col,
                        )
                    )
                    u += step
                    col += 1
            v += BLOCK_PITCH_M
            block += 1
    return slots
