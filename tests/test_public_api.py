"""The public API of DESIGN.md section 6b, called exactly as written there (a contract)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparse_agents as sa


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 4))


def test_layer_densities_signature():
    shapes = [(64, 16), (64, 64), (4, 64)]
    dens = sa.layer_densities(shapes, 0.9, method="erk", dense=(), power=1.0)
    assert isinstance(dens, list) and len(dens) == 3 and all(isinstance(d, float) for d in dens)
    kept = sum(d * a * b for d, (a, b) in zip(dens, shapes, strict=True))
    assert abs(kept - 0.1 * sum(a * b for a, b in shapes)) <= len(shapes)
    assert sa.layer_densities(shapes, 0.9, method="uniform", dense=(0,))[0] == 1.0
    with pytest.raises(ValueError, match="sparsity"):
        sa.layer_densities(shapes, 1.0)


def test_sparse_topology_contract_and_condense():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    topo = sa.SparseTopology(model, opt, sparsity=0.9, updater="srigl", distribution="erk",
                             delta_t=3, t_end=None, drop_fraction=0.3, schedule="cosine",
                             gamma_sal=0.3, dense_layers=(), seed=0)
    assert set(topo.masks) == {"0.weight", "2.weight", "4.weight"}
    assert all(m.dtype == torch.bool for m in topo.masks.values())
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    for _ in range(7):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert topo.step == 7
    assert topo.metrics()["updates"] == 2  # steps 3 and 6: hooks attached by the constructor
    nn.functional.cross_entropy(model(x), y).backward()
    topo.update()
    metrics = topo.metrics()
    assert {"density", "itop", "updates"} <= set(metrics) and metrics["density"] <= 0.1 + 1e-6
    state = topo.state_dict()
    other = sa.SparseTopology(_mlp(), None, sparsity=0.9, updater="srigl", seed=0)
    other.load_state_dict(state)
    assert other.step == topo.step
    fast = sa.condense(model)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-6)
    for bad, match in [(dict(sparsity=1.0), "sparsity"), (dict(updater="x"), "updater"),
                       (dict(distribution="x"), "distribution"), (dict(delta_t=0), "delta_t")]:
        with pytest.raises(ValueError, match=match):
            sa.SparseTopology(_mlp(), None, **bad)


def test_sb3_policy_contract():
    from stable_baselines3 import PPO

    from sparse_agents.sb3 import SparseActorCriticPolicy, SparseDQNPolicy  # noqa: F401

    model = PPO(SparseActorCriticPolicy, "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1,
                policy_kwargs=dict(sparsity=0.9, updater="srigl"), seed=0)
    model.learn(64)
    assert model.policy.topology.metrics()["density"] < 0.2


def test_continual_plugins_contract():
    from continual import DSTPlugin, TaskMaskPlugin

    dst = DSTPlugin(sparsity=0.9, updater="srigl", distribution="erk", delta_t=10)
    masks = TaskMaskPlugin(sparsity=0.9, updater="srigl", distribution="erk", transfer=True,
                           delta_t=10)
    assert dst.topology is None and masks is not None
    with pytest.raises(ValueError, match="sparsity"):
        TaskMaskPlugin(sparsity=1.5)
