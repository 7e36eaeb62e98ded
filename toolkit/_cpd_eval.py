"""Scoring change points against human annotations (F1 with a margin, covering).

The metrics follow van den Burg & Williams (2020), "An Evaluation of Change
Point Detection Algorithms" (the Turing Change Point Dataset benchmark):
both treat position 0 as a change point of every segmentation, F1 counts a
prediction as a true positive if it lies within ``margin`` positions of an
annotation (each annotation matched at most once, per annotator), precision
is taken against the union of annotators and recall averaged over them;
covering is the length-weighted best Jaccard overlap of each annotated
segment with a predicted segment, averaged over annotators.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["f1_score", "covering", "load_annotated_series", "ANNOTATED_DIR"]

ANNOTATED_DIR = Path(__file__).resolve().parents[1] / "data" / "annotated_series"


def _true_positives(truth: Iterable[int], pred: Iterable[int], margin: int) -> set[int]:
    """Annotations matched by a distinct prediction within ``margin``."""
    pred = sorted(set(pred))
    used: set[int] = set()
    tp: set[int] = set()
    for t in sorted(set(truth)):
        close = [p for p in pred if abs(p - t) <= margin and p not in used]
        if close:
            best = min(close, key=lambda p: abs(p - t))
            used.add(best)
            tp.add(t)
    return tp


def f1_score(
    annotations: Mapping[str, Iterable[int]], predictions: Iterable[int], *, margin: int = 5
) -> float:
    """F1 of predicted change positions against several annotators."""
    pred = set(int(p) for p in predictions) | {0}
    users = {k: set(int(x) for x in v) | {0} for k, v in annotations.items()}
    union = set().union(*users.values())
    precision = len(_true_positives(union, pred, margin)) / len(pred)
    recall = float(
        np.mean([len(_true_positives(u, pred, margin)) / len(u) for u in users.values()])
    )
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _partition(cps: Iterable[int], n: int) -> list[set[int]]:
    b = sorted({0, n} | {int(c) for c in cps if 0 < int(c) < n})
    return [set(range(a, c)) for a, c in zip(b[:-1], b[1:], strict=True)]


def covering(annotations: Mapping[str, Iterable[int]], predictions: Iterable[int], n: int) -> float:
    """Segment covering of the predicted partition, averaged over annotators."""
    pp = _partition(predictions, n)
    scores = []
    for ann in annotations.values():
        total = 0.0
        for a in _partition(ann, n):
            total += len(a) * max(len(a & b) / len(a | b) for b in pp)
        scores.append(total / n)
    return float(np.mean(scores))


def load_annotated_series(directory: str | Path | None = None) -> dict[str, tuple]:
    """Real series with human change-point annotations (see the folder's README).

    Returns ``{name: (series, annotations)}`` where ``series`` is a pandas
    Series indexed by its time label and ``annotations`` maps annotator id to
    change positions.
    """
    d = Path(directory) if directory is not None else ANNOTATED_DIR
    ann = json.loads((d / "annotations.json").read_text())
    out = {}
    for name in sorted(ann):
        df = pd.read_csv(d / f"{name}.csv", dtype={"time": str})
        out[name] = (pd.Series(df["value"].to_numpy(float), index=df["time"]), ann[name])
    return out
