"""Continual-learning metrics from an accuracy matrix.

``R[i, j]`` is the accuracy on task ``j`` after training tasks ``0..i`` (NaN where not
evaluated, e.g. tasks not seen yet). With ``T`` trained tasks (rows):

* average accuracy: ``mean_j R[T-1, j]`` over the tasks seen (``j < T``);
* forgetting (Chaudhry et al. 2018): ``mean_{j<T-1} max_{i in [j, T-2]} R[i, j] - R[T-1, j]``;
* BWT (Lopez-Paz & Ranzato 2017): ``mean_{j<T-1} R[T-1, j] - R[j, j]``;
* FWT (Lopez-Paz & Ranzato 2017): ``mean_{1<=j<T} R[j-1, j] - b_j``, with ``b_j`` the
  accuracy on task ``j`` of the randomly initialised model (needs ``R[j-1, j]``, the
  accuracy on the next task before training it).

With one task, forgetting, BWT and FWT are 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy_matrix_from_avalanche",
    "average_accuracy",
    "bwt",
    "forgetting",
    "fwt",
    "summarize",
]

_ACC_KEY = re.compile(
    r"Top1_Acc_Exp/eval_phase/(?P<stream>[^/]+)/Task(?P<task>\d+)/Exp(?P<exp>\d+)$")


def _matrix(R) -> np.ndarray:
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < m.shape[0]:
        raise ValueError(f"accuracy matrix must be 2-D with rows <= columns (rows: trained "
                         f"tasks, columns: tasks), got shape {m.shape}")
    if np.isnan(np.diag(m)).any() or np.isnan(m[-1, : m.shape[0]]).any():
        raise ValueError("accuracy matrix needs R[i, i] and the last row over seen tasks")
    return m


def average_accuracy(R) -> float:
    """Mean accuracy over the seen tasks after the last trained task."""
    m = _matrix(R)
    return float(np.mean(m[-1, : m.shape[0]]))


def forgetting(R) -> float:
    """Average drop from each earlier task's best accuracy to its final accuracy."""
    m = _matrix(R)
    t = m.shape[0]
    if t < 2:
        return 0.0
    drops = [np.nanmax(m[j: t - 1, j]) - m[t - 1, j] for j in range(t - 1)]
    return float(np.mean(drops))


def bwt(R) -> float:
    """Backward transfer: final minus just-learned accuracy, averaged over earlier tasks."""
    m = _matrix(R)
    t = m.shape[0]
    if t < 2:
        return 0.0
    return float(np.mean([m[t - 1, j] - m[j, j] for j in range(t - 1)]))


def fwt(R, baseline) -> float:
    """Forward transfer: accuracy on each later task just before training it, minus a
    randomly initialised model's accuracy ``baseline[j]`` on it, averaged over tasks."""
    m = _matrix(R)
    b = np.asarray(baseline, dtype=float)
    t = m.shape[0]
    if b.ndim != 1 or len(b) < t:
        raise ValueError(f"baseline must be a vector with one accuracy per task (>= {t}), "
                         f"got shape {b.shape}")
    if t < 2:
        return 0.0
    gains = [m[j - 1, j] - b[j] for j in range(1, t)]
    if np.isnan(gains).any():
        raise ValueError("fwt needs R[j-1, j] (each task evaluated just before training it) "
                         "and a baseline accuracy for every task j >= 1")
    return float(np.mean(gains))


def summarize(R, baseline=None) -> dict[str, float]:
    """``{"avg_accuracy", "forgetting", "bwt"}`` of an accuracy matrix, plus ``"fwt"``
    when the random-initialisation ``baseline`` accuracies are given."""
    out = {"avg_accuracy": average_accuracy(R), "forgetting": forgetting(R), "bwt": bwt(R)}
    if baseline is not None:
        out["fwt"] = fwt(R, baseline)
    return out


def accuracy_matrix_from_avalanche(results: Sequence[Mapping[str, float]],
                                   n_tasks: int | None = None,
                                   stream: str = "test_stream") -> np.ndarray:
    """Accuracy matrix from Avalanche evaluation results.

    ``results[i]`` is the dict ``strategy.eval(...)`` returned after training experience
    ``i``; its ``Top1_Acc_Exp/eval_phase/<stream>/TaskXXX/ExpYYY`` entries (from
    ``accuracy_metrics(experience=True)``) fill row ``i`` (column = experience id).
    """
    rows = []
    width = 0 if n_tasks is None else int(n_tasks)
    for res in results:
        row: dict[int, float] = {}
        for key, value in res.items():
            hit = _ACC_KEY.match(key)
            if hit and hit["stream"] == stream:
                row[int(hit["exp"])] = float(value)
        rows.append(row)
        width = max([width, *[e + 1 for e in row]])
    m = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        for e, v in row.items():
            m[i, e] = v
    return m
