"""Position of the sun: where shadows fall in a scene."""

from __future__ import annotations

import datetime as _dt
import math

__all__ = ["sun_position"]


def sun_position(t: _dt.datetime, lat: float, lon: float) -> tuple[float, float]:
    """Solar elevation and azimuth (degrees; azimuth clockwise from north) at UTC ``t``.

    The low-precision formulas of the Astronomical Almanac (about 0.01 degrees
    between 1950 and 2050), enough for shadows.
    """
    n = (t - _dt.datetime(2000, 1, 1, 12)).total_seconds() / 86400.0
    mean_lon = math.radians((280.460 + 0.9856474 * n) % 360)
    anomaly = math.radians((357.528 + 0.9856003 * n) % 360)
    ecl_lon = (
        mean_lon
        + math.radians(1.915) * math.sin(anomaly)
        + math.radians(0.020) * math.sin(2 * anomaly)
    )
    obliquity = math.radians(23.439 - 0.0000004 * n)
    ra = math.atan2(math.cos(obliquity) * math.sin(ecl_lon), math.cos(ecl_lon))
    dec = math.asin(math.sin(obliquity) * math.sin(ecl_lon))
    gmst_h = (18.697374558 + 24.06570982441908 * n) % 24
    hour_angle = math.radians(gmst_h * 15 + lon) - ra
    phi = math.radians(lat)
    elev = math.asin(
        math.sin(phi) * math.sin(dec) + math.cos(phi) * math.cos(dec) * math.cos(hour_angle)
    )
    az = math.atan2(
        -math.cos(dec) * math.sin(hour_angle),
        math.sin(dec) * math.cos(phi) - math.cos(dec) * math.sin(phi) * math.cos(hour_angle),
    )
    return math.degrees(elev), math.degrees(az) % 360.0
