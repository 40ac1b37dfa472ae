"""Pure updaters (one update of one layer): static, SET, unfired, RigL, SRigL."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_agents.updaters import (
    rigl_update,
    set_update,
    srigl_update,
    static_update,
    unfired_update,
)
from sparse_agents.updaters.base import row_topk, topk
from sparse_agents.updaters.srigl import constant_fan_in_mask


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_layer(n_out=16, fan_in=32, density=0.25, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, fan_in, generator=g)
    mask = topk(torch.zeros(n_out, fan_in), int(density * n_out * fan_in), gen(seed))
    w = w * mask
    grad = torch.randn(n_out, fan_in, generator=g)
    return w, mask, grad


# --------------------------------------------------------------- tie-breaking
def test_ties_broken_by_seeded_noise_not_position():
    scores = torch.zeros(1, 100)
    picks = [tuple(row_topk(scores, 5, gen(s)).nonzero()[:, 1].tolist()) for s in range(5)]
    assert len(set(picks)) > 1  # different seeds, different choices
    assert picks[0] != tuple(range(5))  # not the first positions
    again = tuple(row_topk(scores, 5, gen(0)).nonzero()[:, 1].tolist())
    assert again == picks[0]  # same seed, same choice


def test_topk_never_picks_non_candidates():
    scores = torch.arange(10.0).reshape(2, 5)
    cand = torch.zeros(2, 5, dtype=torch.bool)
    cand[0, 1] = True
    out = row_topk(scores, 3, gen(), cand)
    assert out.sum() == 1 and out[0, 1]


# --------------------------------------------------------------- SET / RigL
@pytest.mark.parametrize("fn", [set_update, unfired_update, rigl_update])
def test_unstructured_keeps_count_and_drops_smallest(fn):
    w, mask, grad = random_layer()
    n_drop = 20
    mags = w.abs()[mask]
    assert mags.unique().numel() == mags.numel()  # distinct: "the n_drop smallest" is exact
    cut = mags.sort().values[n_drop]  # smallest magnitude that must stay
    must_stay = mask & (w.abs() >= cut)
    must_go = mask & (w.abs() < cut)
    assert int(must_go.sum()) == n_drop
    new = fn(w, mask, grad, n_drop, gen())
    assert int(new.sum()) == int(mask.sum())
    # Exactly the n_drop smallest-|w| active entries are dropped: every larger one
    # survives, and only the smallest ones may be missing from the new mask.
    assert (must_stay <= new).all()
    assert ((mask & ~new) <= must_go).all()
    # Exactly n_drop entries are grown (a dropped entry may be regrown).
    assert int((new & ~must_stay).sum()) == n_drop
    # With growth barred from the active positions, no dropped entry can be regrown,
    # so the dropped set is observable: it is exactly the n_drop smallest.
    new = fn(w, mask, grad, n_drop, gen(), allowed=~mask)
    assert torch.equal(mask & ~new, must_go)
    assert int((new & ~mask).sum()) == n_drop


def test_unfired_never_regrows_an_ever_active_position_while_others_remain():
    w, mask, grad = random_layer(n_out=8, fan_in=16, density=0.25)
    g = torch.Generator().manual_seed(3)
    ever = mask | (torch.rand(mask.shape, generator=g) < 0.5)  # history beyond the mask
    n_never = int((~ever).sum())
    n_drop = 10
    assert n_never > n_drop
    for seed in range(5):
        new = unfired_update(w, mask, grad, n_drop, gen(seed), ever_active=ever)
        grown = new & ~mask
        assert int(new.sum()) == int(mask.sum())
        assert int(grown.sum()) == n_drop and not bool((grown & ever).any())


def test_unfired_falls_back_to_random_when_no_never_active_position_is_left():
    w, mask, grad = random_layer(n_out=8, fan_in=16, density=0.25)
    ever = mask.clone()
    never = ~ever
    never_idx = never.nonzero()[:3]
    ever[:] = True
    ever[never_idx[:, 0], never_idx[:, 1]] = False  # only 3 never-active positions
    cut = w.abs()[mask].sort().values[10]
    kept = mask & (w.abs() >= cut)  # what the magnitude drop of 10 keeps
    new = unfired_update(w, mask, grad, 10, gen(), ever_active=ever)
    grown = new & ~kept
    assert int(new.sum()) == int(mask.sum()) and bool((kept <= new).all())
    assert int(grown.sum()) == 10
    assert bool((~ever <= grown).all())  # the 3 never-active positions are taken first
    assert int((grown & ever).sum()) == 7  # the rest at random among the others


def test_rigl_grows_largest_gradients():
    w, mask, grad = random_layer()
    n_drop = 20
    new = rigl_update(w, mask, grad, n_drop, gen())
    kept = topk(w.abs(), int(mask.sum()) - n_drop, gen(), mask)
    grown = new & ~kept
    others = ~kept & ~new
    assert grown.sum() == n_drop
    assert grad.abs()[grown].min() >= grad.abs()[others].max()


def test_rigl_grow_respects_allowed():
    w, mask, grad = random_layer()
    allowed = torch.zeros_like(mask)
    allowed[:, :4] = True
    new = rigl_update(w, mask, grad, 10, gen(), allowed=allowed)
    kept = topk(w.abs(), int(mask.sum()) - 10, gen(), mask)
    assert ((new & ~kept) <= allowed).all()


def test_set_growth_is_random_over_seeds():
    w, mask, grad = random_layer()
    outs = {tuple(set_update(w, mask, None, 20, gen(s)).flatten().tolist()) for s in range(4)}
    assert len(outs) == 4


def test_static_is_identity():
    w, mask, grad = random_layer()
    assert torch.equal(static_update(w, mask, grad, 10, gen()), mask)


def test_bad_inputs():
    w, mask, grad = random_layer()
    with pytest.raises(ValueError, match="mask"):
        rigl_update(w, mask[:, :3], grad, 1, gen())
    with pytest.raises(ValueError, match="n_drop"):
        rigl_update(w, mask, grad, int(mask.sum()) + 1, gen())
    with pytest.raises(ValueError, match="grad"):
        rigl_update(w, mask, None, 1, gen())
    with pytest.raises(ValueError, match="gamma_sal"):
        srigl_update(w, mask, grad, 1, gen(), gamma_sal=1.5)


# --------------------------------------------------------------- SRigL
def fan_ins(mask):
    return mask.reshape(mask.shape[0], -1).sum(dim=1)


def srigl_layer(n_out=16, fan_in=32, density=0.25, seed=0):
    budget = round(density * n_out * fan_in)
    mask = constant_fan_in_mask((n_out, fan_in), budget, gen(seed))
    g = torch.Generator().manual_seed(seed + 1)
    w = torch.randn(n_out, fan_in, generator=g) * mask
    grad = torch.randn(n_out, fan_in, generator=g)
    return w, mask, grad, budget


def test_srigl_constant_fan_in_after_update():
    w, mask, grad, budget = srigl_layer()
    new = srigl_update(w, mask, grad, 30, gen(), budget=budget)
    f = fan_ins(new)
    alive = f > 0
    k = budget // int(alive.sum())
    assert (f[alive] == k).all()
    assert new.sum() == alive.sum() * k <= budget


def test_srigl_ablates_weak_rows_and_redistributes_budget():
    w, mask, grad, budget = srigl_layer(n_out=8, fan_in=64, density=0.25)
    K = budget // 8
    # Rows 0 and 1: tiny weights and tiny gradients -> no salient entries survive.
    w[:2] *= 1e-6
    grad[:2] *= 1e-6
    new = srigl_update(w, mask, grad, int(mask.sum()) // 4, gen(), budget=budget, gamma_sal=0.3)
    f = fan_ins(new)
    assert (f[:2] == 0).all()
    n_alive = int((f > 0).sum())
    assert n_alive == 6
    k = budget // n_alive
    assert k > K  # ablated rows' budget went to the alive ones
    assert (f[2:] == k).all()


def test_srigl_ablated_row_does_not_use_up_the_keep_quota():
    # Budget 12, fan-in 3 everywhere, gamma_sal 0.7 (threshold int(0.7 * 3) = 2), n_drop 3.
    # Row 0 has one large weight and two tiny ones: 1 salient entry, so it is ablated.
    # Its 9.0 is among the top-9 magnitudes, but an ablated row must not use up the
    # keep quota: the alive rows keep all 9 of their active weights (row 3's 0.5
    # included) and each grows its largest-|grad| inactive entry to reach k = 12 // 3.
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, :3] = True
    w = torch.zeros(4, 6)
    w[0, :3] = torch.tensor([9.0, 0.001, 0.002])
    w[1, :3] = torch.tensor([1.0, 2.0, 3.0])
    w[2, :3] = torch.tensor([1.5, 2.5, 3.5])
    w[3, :3] = torch.tensor([0.5, 4.0, 5.0])
    grad = torch.zeros(4, 6)
    grad[0, 3:] = 0.01
    for r in range(1, 4):
        grad[r, 3:] = torch.tensor([10.0, 20.0, 30.0]) + r
    new = srigl_update(w, mask, grad, 3, gen(), budget=12, gamma_sal=0.7)
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[1:, [0, 1, 2, 5]] = True
    assert torch.equal(new, expected)


def test_srigl_gamma_sal_is_honoured():
    w, mask, grad, budget = srigl_layer(n_out=8, fan_in=64, density=0.25)
    # Row 0 keeps a few strong weights: salient count ~ 3 of K=16.
    w[0] *= 1e-6
    grad[0] *= 1e-6
    idx = mask[0].nonzero()[:3, 0]
    w[0, idx] = 100.0
    n_drop = int(mask.sum()) // 4
    lenient = srigl_update(w, mask, grad, n_drop, gen(), budget=budget, gamma_sal=0.1)
    strict = srigl_update(w, mask, grad, n_drop, gen(), budget=budget, gamma_sal=0.5)
    assert fan_ins(lenient)[0] > 0  # 3 >= int(0.1*16)=1: alive
    assert fan_ins(strict)[0] == 0  # 3 < int(0.5*16)=8: ablated


def test_srigl_allow_ablation_false_never_ablates():
    w, mask, grad, budget = srigl_layer(n_out=8, fan_in=64, density=0.25)
    w[:3] *= 1e-6
    grad[:3] *= 1e-6
    new = srigl_update(w, mask, grad, int(mask.sum()) // 4, gen(), budget=budget,
                       allow_ablation=False)
    assert (fan_ins(new) == budget // 8).all()


def test_srigl_ablation_is_not_permanent():
    w, mask, grad, budget = srigl_layer(n_out=8, fan_in=64, density=0.25)
    w[0] *= 1e-6
    grad[0] *= 1e-6
    n_drop = int(mask.sum()) // 4
    m1 = srigl_update(w, mask, grad, n_drop, gen(), budget=budget)
    assert fan_ins(m1)[0] == 0
    w1 = w * m1
    grad2 = grad.clone()
    grad2[0] = 1e3  # the dead neuron's inputs now matter a lot
    m2 = srigl_update(w1, m1, grad2, int(m1.sum()) // 4, gen(1), budget=budget)
    assert fan_ins(m2)[0] > 0


def test_srigl_trims_surplus_by_magnitude():
    # A layer with uneven fan-in (e.g. loaded from RigL) is brought to constant fan-in:
    # each row keeps its largest-magnitude weights, not the first ones in sort order.
    n_out, fan_in = 4, 32
    mask = torch.zeros(n_out, fan_in, dtype=torch.bool)
    mask[0, :16] = True  # row 0 over budget
    mask[1:, :4] = True
    w = torch.zeros(n_out, fan_in)
    w[0, :16] = torch.linspace(0.1, 1.6, 16)  # largest at the end
    w[1:, :4] = 5.0
    grad = torch.zeros(n_out, fan_in)
    budget = int(mask.sum())  # 28 -> k = 7 with all alive
    new = srigl_update(w, mask, grad, 0, gen(), budget=budget, gamma_sal=0.0)
    assert fan_ins(new).tolist() == [7, 7, 7, 7]
    assert new[0, 9:16].all() and not new[0, :9].any()


def test_srigl_counts_zero_valued_active_weights():
    # A freshly grown weight is exactly zero but active: fan-in comes from the mask.
    w, mask, grad, budget = srigl_layer(n_out=8, fan_in=64, density=0.25)
    w = w.abs() + 1.0
    w = w * mask
    w[mask.nonzero()[0, 0], mask.nonzero()[0, 1]] = 0.0
    new = srigl_update(w, mask, grad, 0, gen(), budget=budget, gamma_sal=0.0)
    assert torch.equal(new, mask)


@settings(max_examples=40, deadline=None)
@given(
    n_out=st.integers(1, 40),
    fan_in=st.integers(1, 60),
    density=st.floats(0.02, 1.0),
    gamma=st.floats(0.0, 1.0),
    frac=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
    ablate=st.booleans(),
)
def test_property_srigl_fan_in(n_out, fan_in, density, gamma, frac, seed, ablate):
    budget = max(1, round(density * n_out * fan_in))
    mask = constant_fan_in_mask((n_out, fan_in), budget, gen(seed))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, fan_in, generator=g) * mask
    grad = torch.randn(n_out, fan_in, generator=g)
    for step in range(3):
        n_drop = int(int(mask.sum()) * frac)
        mask = srigl_update(w, mask, grad, n_drop, gen(seed + step), budget=budget,
                            gamma_sal=gamma, allow_ablation=ablate)
        f = fan_ins(mask)
        alive = f > 0
        n_alive = int(alive.sum())
        assert n_alive >= 1
        k = min(fan_in, budget // n_alive)
        assert (f[alive] == k).all()
        assert int(mask.sum()) == n_alive * k <= budget
        assert k <= fan_in
        if not ablate:
            assert n_alive == n_out or budget // n_out == 0
        w = torch.randn(n_out, fan_in, generator=g) * mask
        grad = torch.randn(n_out, fan_in, generator=g)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    density=st.floats(0.01, 1.0),
    frac=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
    which=st.sampled_from(["set", "unfired", "rigl"]),
)
def test_property_unstructured_count(shape, density, frac, seed, which):
    n = max(1, round(density * shape[0] * shape[1]))
    mask = topk(torch.zeros(shape), n, gen(seed))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * mask
    grad = torch.randn(shape, generator=g)
    fn = {"set": set_update, "unfired": unfired_update, "rigl": rigl_update}[which]
    new = fn(w, mask, grad, int(n * frac), gen(seed))
    assert int(new.sum()) == n
