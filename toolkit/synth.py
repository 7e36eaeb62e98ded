"""Deterministic simulator of a Tumangang-like rail yard (synthetic sample data).

Everything this module produces is SYNTHETIC: a made-up yard whose railcar
counts follow the published facts about the Tumangang rail facility.
"""

from __future__ import annotations

from toolkit._synth_history import five_year_history

__all__ = ["five_year_history"]
