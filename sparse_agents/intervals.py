"""Mean and spread over seeds, and confidence intervals of a difference of means
(Student / Welch t)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (÷ n − 1, ``ddof=1``) of ``values``: the ``mean ± std`` over
    seeds of every benchmark table. ``(nan, nan)`` when empty; the std is NaN for one
    value (a spread needs two)."""
    values = [float(v) for v in values]
    n = len(values)
    if not n:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def diff_ci(xa: ArrayLike, xb: ArrayLike, paired: bool) -> tuple[float, float]:
    """``mean(xa) - mean(xb)`` and the half-width of its 95% CI: a paired t interval
    on the per-seed differences, else Welch's (NaN when a side has one value)."""
    xa, xb = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
    diff = float(xa.mean() - xb.mean())
    if paired:
        if len(xa) < 2:
            return diff, math.nan
        d = xa - xb
        se = float(d.std(ddof=1)) / math.sqrt(len(d))
        return diff, float(stats.t.ppf(0.975, len(d) - 1) * se) if se > 0 else 0.0
    if len(xa) < 2 or len(xb) < 2:
        return diff, math.nan
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    return diff, float(stats.t.ppf(0.975, dof) * se)


def excludes_zero(diff: float, half: float) -> bool:
    """Whether the CI ``diff`` +- ``half`` of :func:`diff_ci` leaves out zero (never when
    there is no interval: NaN)."""
    return bool(math.isfinite(half) and abs(diff) > half)
