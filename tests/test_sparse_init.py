"""sparse_init: the initial weights rescaled to the fans each unit really has."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import mlp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparse_agents as sa
from sparse_agents.sparse_init import sparse_init_scale


@settings(max_examples=30, deadline=None)
@given(out=st.integers(1, 12), inp=st.integers(1, 12), kernel=st.sampled_from([(), (3,), (2, 3)]),
       density=st.floats(0.05, 1.0), seed=st.integers(0, 10**6))
def test_scale_is_the_ratio_of_dense_to_real_fans_entry_by_entry(out, inp, kernel, density, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((out, inp, *kernel), generator=g) < density
    receptive = math.prod(kernel)
    m = mask.reshape(out, inp, -1)
    fan_in, fan_out = m.sum(dim=(1, 2)), m.sum(dim=(0, 2))
    scale_in, scale_avg = sparse_init_scale(mask, "fan_in"), sparse_init_scale(mask, "fan_avg")
    assert scale_in.shape == mask.shape and bool((scale_avg[~mask] == 0).all())
    for idx in mask.nonzero().tolist()[:20]:
        o, i = idx[0], idx[1]
        assert float(scale_in[tuple(idx)]) == pytest.approx(
            math.sqrt(inp * receptive / int(fan_in[o])))
        assert float(scale_avg[tuple(idx)]) == pytest.approx(
            math.sqrt((inp + out) * receptive / int(fan_in[o] + fan_out[i])))
    full = torch.ones_like(mask)
    assert torch.equal(sparse_init_scale(full, "fan_avg"), full.float())


def test_fan_in_rule_keeps_each_units_output_variance_of_the_dense_layer():
    torch.manual_seed(0)
    dense = nn.Linear(512, 256, bias=False)
    sparse = nn.Linear(512, 256, bias=False)
    sparse.load_state_dict(dense.state_dict())
    sa.SparseTopology(sparse, None, sparsity=0.95, updater="static", distribution="uniform",
                      sparse_init="fan_in")
    x = torch.randn(4096, 512)
    with torch.no_grad():
        ratio = float(sparse(x).var() / dense(x).var())
    assert 0.85 < ratio < 1.15, ratio  # masked without rescaling: ~0.05


def test_sparse_init_applies_to_drawn_masks_only_and_none_keeps_the_masked_values():
    base = mlp(0)
    plain, scaled, given = mlp(0), mlp(0), mlp(0)
    topo = sa.SparseTopology(plain, None, sparsity=0.9, updater="rigl", seed=3)
    sa.SparseTopology(scaled, None, sparsity=0.9, updater="rigl", seed=3, sparse_init="fan_avg")
    sa.SparseTopology(given, None, sparse_init="fan_avg",
                      masks={k: v.clone() for k, v in topo.masks.items()})
    for layer in topo.layers:
        name, mask = layer.name, layer.mask
        w0 = base.get_parameter(name).detach()
        assert torch.equal(plain.get_parameter(name), w0 * mask)
        assert torch.equal(given.get_parameter(name), w0 * mask)
        expected = w0 * sparse_init_scale(mask, "fan_avg")
        torch.testing.assert_close(scaled.get_parameter(name).detach(), expected)
        assert not torch.equal(expected, w0 * mask)


def test_sparse_init_rejects_an_unknown_rule_naming_it():
    with pytest.raises(ValueError, match=r"sparse_init must be None or one of \('fan_in', "
                                         r"'fan_avg'\), got 'glorot'"):
        sa.SparseTopology(mlp(0), None, sparse_init="glorot")
    with pytest.raises(ValueError, match=r"rule must be one of .*, got None"):
        sparse_init_scale(torch.ones(2, 3, dtype=torch.bool), None)


def test_sparse_dqn_targets_start_equal_to_the_rescaled_online_network():
    from stable_baselines3 import DQN

    from sparse_agents.sb3 import SparseDQNPolicy

    model = DQN(SparseDQNPolicy, "CartPole-v1", seed=0, learning_starts=0, policy_kwargs=dict(
        net_arch=[64, 64], sparsity=0.9, updater="rigl", sparse_init="fan_avg"))
    online = dict(model.policy.q_net.named_parameters())
    for name, value in model.policy.q_net_target.named_parameters():
        assert torch.equal(value, online[name]), name
    layer = model.policy.q_net.q_net[2]
    kept = layer.weight.detach()[layer.weight_mask]
    assert float(kept.abs().mean()) > 0.2  # rescaled (~0.06 masked)


def test_graesser_configs_use_their_fixed_sparse_init():
    from sparse_agents.experiments.hyperparams import GRAESSER

    assert {k: v.get("sparse_init") for k, v in GRAESSER.items()} == {
        k: "fan_avg" for k in GRAESSER}


def test_per_task_mask_policy_refuses_sparse_init():
    from stable_baselines3 import PPO

    from sparse_agents.sb3.task_policy import TaskMaskActorCriticPolicy

    with pytest.raises(ValueError, match="sparse_init must be None with per-task masks"):
        PPO(TaskMaskActorCriticPolicy, "CartPole-v1",
            policy_kwargs=dict(sparse_init="fan_in", n_tasks=2))
