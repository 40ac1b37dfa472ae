"""Layer-wise density allocation: uniform, ER, ERK (``shapes -> densities``)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_agents import layer_densities
from sparse_agents.distributions import (
    constant_fan_in_counts,
    erk_layers_to_densify,
    kept_counts,
    raw_score,
)


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


def test_erk_tied_layers_all_go_dense():
    # Two identical tiny layers attain the max score together: both go dense, and
    # the big layer gets exactly the rest of the budget.
    shapes = [(4, 4), (4, 4), (512, 512)]
    dens = layer_densities(shapes, 0.5, "erk")
    assert dens[:2] == [1.0, 1.0]
    assert dens[2] == pytest.approx((0.5 * (32 + 512 * 512) - 32) / (512 * 512))


def test_erk_moves_every_tied_layer_in_one_iteration():
    # Moving one layer with eps * p_l > 1 to the dense set only raises eps, so the
    # final allocation is the same whether tied layers move together or one by one;
    # the difference is the iterations, so they are checked step by step.
    # Three 4x4 layers tie at the maximum score 0.5; the 8x8 (score 0.25) goes dense
    # only in the next iteration.
    shapes = [(4, 4), (4, 4), (4, 4), (8, 8), (512, 512)]
    sizes = [_numel(s) for s in shapes]
    scores = [raw_score(s, "erk") for s in shapes]
    target = 0.5 * sum(sizes)
    dense, moves = set(), []
    while moved := erk_layers_to_densify(scores, sizes, target, dense):
        moves.append(moved)
        dense |= moved
    assert moves == [{0, 1, 2}, {3}]
    dens = layer_densities(shapes, 0.5, "erk")
    assert dens[:4] == [1.0] * 4
    assert dens[4] == pytest.approx((target - 3 * 16 - 64) / (512 * 512))


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


# --------------------------------------------------------------- constant fan-in rounding
def test_constant_fan_in_counts_round_to_nearest_rows_and_keep_the_total():
    # SB3's CartPole actor-critic (two 4-64-64 MLPs and their heads) at ERK 90%
    shapes = [(64, 4), (64, 64), (2, 64), (64, 4), (64, 64), (1, 64)]
    counts = kept_counts(shapes, layer_densities(shapes, 0.9, "erk"))
    out = constant_fan_in_counts(shapes, counts)
    fan = [c // s[0] for c, s in zip(out, shapes, strict=True)]
    assert all(c % s[0] == 0 for c, s in zip(out, shapes, strict=True))
    assert fan[0] == fan[3] == 2  # 4->64 at density 0.48: fan-in 2, not the floor's 1
    assert {fan[1], fan[4]} == {3, 4}  # 64x64 at 0.056 (3.6 per row): both rounded up would
    assert out[5] == 64                # overshoot by a row, and the dense value head keeps
    assert abs(sum(out) - sum(counts)) <= 1  # its 64: the total ends within half a row (2)


def test_constant_fan_in_counts_leave_fixed_layers_alone():
    shapes = [(8, 8), (4, 8)]
    assert constant_fan_in_counts(shapes, [20, 32], fixed={1}) == [24, 32]


def test_constant_fan_in_rounding_never_thins_a_layer_erk_keeps_dense():
    # Graesser's PPO HalfCheetah nets (17-64-64, 6 actions, a 64->1 value head) at ERK 90%:
    # the value head is dense under ERK, and the input layers' rounding up (2.6 -> 3 per
    # row) must be paid by the sparse layers, not by 10 of the value head's 64 weights
    shapes = [(64, 17), (64, 64), (6, 64), (64, 17), (64, 64), (1, 64)]
    counts = kept_counts(shapes, layer_densities(shapes, 0.9, "erk"))
    assert counts[5] == 64
    out = constant_fan_in_counts(shapes, counts)
    assert out[5] == 64
    assert abs(sum(out) - sum(counts)) <= 3  # within half of the smallest sparse row (6)


@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=5),
    sparsity=st.floats(0.0, 0.98),
)
def test_property_constant_fan_in_counts(shapes, sparsity):
    counts = kept_counts(shapes, layer_densities(shapes, sparsity, "erk"))
    out = constant_fan_in_counts(shapes, counts)
    for c, n, (rows, fan) in zip(out, counts, shapes, strict=True):
        assert c % rows == 0 and 1 <= c // rows <= fan
        assert c == n or n < rows * fan  # a layer the distribution keeps dense stays dense
    # no single one-row step of a sparse layer would bring the total closer to the target
    gap = sum(counts) - sum(out)
    for c, n, (rows, fan) in zip(out, counts, shapes, strict=True):
        if n == rows * fan:
            continue
        k = c // rows
        if gap > 0 and k < fan:
            assert abs(gap - rows) >= abs(gap)
        if gap < 0 and k > 1:
            assert abs(gap + rows) >= abs(gap)
