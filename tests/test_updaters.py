"""Pure updaters: SET, RigL, SRigL (DESIGN.md section 3)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_agents.updaters import rigl_update, set_update, srigl_update, static_update
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
@pytest.mark.parametrize("fn", [set_update, rigl_update])
def test_unstructured_keeps_count_and_drops_smallest(fn):
    w, mask, grad = random_layer()
    n_drop = 20
    new = fn(w, mask, grad, n_drop, gen())
    assert new.sum() == mask.sum()
    survivors = mask & new
    dropped = mask & ~new
    # Every dropped weight is no larger than every weight that stayed, unless it was
    # dropped and regrown (then it counts as kept).
    assert int(dropped.sum()) <= n_drop
    kept_by_magnitude = topk(w.abs(), int(mask.sum()) - n_drop, gen(), mask)
    assert (kept_by_magnitude <= new).all()
    assert (survivors | dropped).sum() == mask.sum()


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


def test_srigl_output_layer_never_ablated():
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
    which=st.sampled_from(["set", "rigl"]),
)
def test_property_unstructured_count(shape, density, frac, seed, which):
    n = max(1, round(density * shape[0] * shape[1]))
    mask = topk(torch.zeros(shape), n, gen(seed))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * mask
    grad = torch.randn(shape, generator=g)
    fn = set_update if which == "set" else rigl_update
    new = fn(w, mask, grad, int(n * frac), gen(seed))
    assert int(new.sum()) == n
