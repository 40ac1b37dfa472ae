"""The 95% CI of a difference of means matches scipy's t tests (Welch and paired)."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sparse_agents.intervals import diff_ci

samples = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12)


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_welch_interval_is_scipys_welch_t_interval(xa, xb):
    xa, xb = np.array(xa), np.array(xb)
    diff, half = diff_ci(xa, xb, paired=False)
    assert diff == np.float64(xa.mean() - xb.mean())
    if np.ptp(xa) + np.ptp(xb) < 1e-2:
        return  # no spread: scipy's interval is undefined, ours is the point
    ci = stats.ttest_ind(xa, xb, equal_var=False).confidence_interval(0.95)
    assert math.isclose(diff - half, ci.low, rel_tol=1e-6, abs_tol=1e-6)
    assert math.isclose(diff + half, ci.high, rel_tol=1e-6, abs_tol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=2,
                max_size=12))
def test_paired_interval_is_scipys_paired_t_interval(pairs):
    xa, xb = np.array(pairs).T
    diff, half = diff_ci(xa, xb, paired=True)
    if np.ptp(xa - xb) < 1e-2:
        return
    ci = stats.ttest_rel(xa, xb).confidence_interval(0.95)
    assert math.isclose(diff - half, ci.low, rel_tol=1e-6, abs_tol=1e-6)
    assert math.isclose(diff + half, ci.high, rel_tol=1e-6, abs_tol=1e-6)


def test_one_value_on_a_side_has_no_interval():
    assert math.isnan(diff_ci([1.0], [2.0, 3.0], paired=False)[1])
    assert math.isnan(diff_ci([1.0], [2.0], paired=True)[1])
    assert diff_ci([1.0], [2.0, 3.0], paired=False)[0] == -1.5
