"""Layer-wise density allocation (DESIGN.md section 2)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_agents import layer_densities
from sparse_agents.distributions import kept_counts, raw_score


def _numel(s):
    return math.prod(s)


MLP = [(256, 784), (256, 256), (10, 256)]
CNN = [(16, 3, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (10, 1024)]


@pytest.mark.parametrize("method", ["uniform", "er", "erk"])
@pytest.mark.parametrize("shapes", [MLP, CNN])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_global_count_is_exact(method, shapes, sparsity):
    dens = layer_densities(shapes, sparsity, method)
    target = round((1 - sparsity) * sum(_numel(s) for s in shapes))
    kept = sum(kept_counts(shapes, dens))
    assert abs(kept - target) <= len(shapes)
    assert all(0 < d <= 1 for d in dens)


def test_erk_moves_small_layer_dense_and_balances_rest():
    shapes = [(8, 3), (1024, 1024), (1024, 1024)]
    dens = layer_densities(shapes, 0.9, "erk")
    assert dens[0] == 1.0
    assert dens[1] == pytest.approx(dens[2])
    target = 0.1 * sum(_numel(s) for s in shapes)
    assert sum(d * _numel(s) for d, s in zip(dens, shapes, strict=True)) == pytest.approx(target)


def test_erk_moves_every_tied_layer_in_one_iteration():
    # Two identical tiny layers attain the max score together: both go dense, and
    # the big layer gets exactly the rest of the budget.
    shapes = [(4, 4), (4, 4), (512, 512)]
    dens = layer_densities(shapes, 0.5, "erk")
    assert dens[:2] == [1.0, 1.0]
    assert dens[2] == pytest.approx((0.5 * (32 + 512 * 512) - 32) / (512 * 512))


def test_erk_solution_satisfies_the_equation():
    # eps * p_l for every sparse layer, with the same eps for all of them.
    dens = layer_densities(CNN, 0.95, "erk")
    eps = [d / raw_score(s, "erk") for d, s in zip(dens, CNN, strict=True) if d < 1]
    assert max(eps) == pytest.approx(min(eps))


def test_er_and_erk_differ_for_conv_kernels():
    er = layer_densities(CNN, 0.9, "er")
    erk = layer_densities(CNN, 0.9, "erk")
    assert er != pytest.approx(erk)
    # For Linear-only models ER and ERK agree.
    assert layer_densities(MLP, 0.9, "er") == pytest.approx(layer_densities(MLP, 0.9, "erk"))
    # ER ignores the kernel extent, so a conv layer's ER score is larger than its ERK one.
    assert raw_score(CNN[0], "er") > raw_score(CNN[0], "erk")


def test_power_scales_scores():
    flat = layer_densities(MLP, 0.9, "erk", power=1e-9)
    assert flat == pytest.approx([0.1, 0.1, 0.1], rel=1e-6)


def test_uniform_dense_and_renormalise():
    dens = layer_densities(MLP, 0.9, "uniform", dense=[2])
    assert dens == pytest.approx([0.1, 0.1, 1.0])
    ren = layer_densities(MLP, 0.9, "uniform", dense=[2], renormalise=True)
    assert ren[2] == 1.0 and ren[0] == ren[1] < 0.1
    total = sum(d * _numel(s) for d, s in zip(ren, MLP, strict=True))
    assert total == pytest.approx(0.1 * sum(_numel(s) for s in MLP))


def test_erk_respects_explicit_dense():
    dens = layer_densities(CNN, 0.9, "erk", dense=[0])
    assert dens[0] == 1.0
    kept = sum(kept_counts(CNN, dens))
    assert abs(kept - round(0.1 * sum(_numel(s) for s in CNN))) <= len(CNN)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_bad_sparsity(bad):
    with pytest.raises(ValueError, match=r"sparsity.*\[0, 1\)"):
        layer_densities(MLP, bad, "erk")


def test_bad_method_and_dense():
    with pytest.raises(ValueError, match="method"):
        layer_densities(MLP, 0.5, "magic")
    with pytest.raises(ValueError, match="dense"):
        layer_densities(MLP, 0.5, "erk", dense=[7])
    with pytest.raises(ValueError, match="budget"):
        layer_densities([(1000, 1000), (2, 2)], 0.99, "erk", dense=[0])


shape_st = st.one_of(
    st.tuples(st.integers(1, 300), st.integers(1, 300)),
    st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 5), st.integers(1, 5)),
)


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(shape_st, min_size=1, max_size=6),
    sparsity=st.floats(0.0, 0.995),
    method=st.sampled_from(["uniform", "er", "erk"]),
)
def test_property_global_count(shapes, sparsity, method):
    dens = layer_densities(shapes, sparsity, method)
    assert len(dens) == len(shapes)
    assert all(0 < d <= 1 + 1e-12 for d in dens)
    total = sum(_numel(s) for s in shapes)
    exact = sum(d * _numel(s) for d, s in zip(dens, shapes, strict=True))
    if method != "uniform" and all(d == 1.0 for d in dens):
        assert exact >= (1 - sparsity) * total  # everything dense: budget over-met
    else:
        assert exact == pytest.approx((1 - sparsity) * total, rel=1e-9, abs=1e-6)
