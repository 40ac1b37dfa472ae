"""The environments sparse-RL papers use: MuJoCo, MinAtar (with the library's CNN) and
Atari with SB3's wrappers, trained sparse for a few hundred steps."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from invariants import check_topology
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack

from sparse_agents.sb3 import (
    MinAtarCNN,
    SparseActorCriticPolicy,
    SparseDQNCnnPolicy,
    SparseDQNPolicy,
    SparseSACPolicy,
)

minatar = pytest.importorskip("minatar")  # in the dev extra: present in CI


@pytest.fixture(scope="module", autouse=True)
def registered():
    from minatar.gym import register_envs

    register_envs()
    import ale_py

    gym.register_envs(ale_py)


def test_minatar_cnn_is_young_and_tians_network_and_trains_sparse():
    env = gym.make("MinAtar/Breakout-v1")
    model = DQN(SparseDQNPolicy, env, learning_starts=50, buffer_size=500, batch_size=16,
                train_freq=4, target_update_interval=50, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_class=MinAtarCNN, net_arch=[],
                                   sparsity=0.9, updater="rigl", delta_t=10))
    q = model.policy.q_net
    conv, linear = q.features_extractor.conv[0], q.features_extractor.linear[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (4, 16, (3, 3))
    assert (linear.in_features, linear.out_features) == (16 * 8 * 8, 128)
    model.learn(300)
    topo = model.policy.topology
    assert "q_net.features_extractor.conv.0.weight" in topo.masks  # the conv is sparse
    assert topo.n_updates > 0
    check_topology(topo)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.bool_
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))


def test_minatar_cnn_with_sparse_ppo():
    model = PPO(SparseActorCriticPolicy, "MinAtar/SpaceInvaders-v1", n_steps=64, batch_size=32,
                n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_class=MinAtarCNN, net_arch=[],
                                   sparsity=0.9, delta_t=2))
    model.learn(128)
    check_topology(model.policy.topology)
    assert any(name.endswith("conv.0.weight") for name in model.policy.topology.masks)


def test_minatar_cnn_refuses_flat_observations():
    with pytest.raises(ValueError, match="MinAtarCNN needs"):
        MinAtarCNN(gym.spaces.Box(0, 1, (4,)))


def test_sparse_cnn_dqn_on_atari_with_sb3_wrappers():
    env = VecFrameStack(make_atari_env("ALE/Breakout-v5", n_envs=1, seed=0), n_stack=4)
    model = DQN(SparseDQNCnnPolicy, env, learning_starts=32, buffer_size=200, batch_size=8,
                train_freq=4, seed=0, device="cpu",
                policy_kwargs=dict(sparsity=0.9, updater="rigl", delta_t=5))
    model.learn(120)
    topo = model.policy.topology
    assert topo.n_updates > 0 and any("cnn.0" in n for n in topo.masks)
    check_topology(topo)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_sparse_agents_train_on_mujoco_halfcheetah(algo):
    pytest.importorskip("mujoco")
    if algo == "ppo":
        model = PPO(SparseActorCriticPolicy, "HalfCheetah-v5", n_steps=64, batch_size=32,
                    n_epochs=1, seed=0, device="cpu",
                    policy_kwargs=dict(net_arch=[64, 64], sparsity=0.9, delta_t=2))
        model.learn(128)
    else:
        model = SAC(SparseSACPolicy, "HalfCheetah-v5", learning_starts=32, buffer_size=500,
                    batch_size=16, seed=0, device="cpu",
                    policy_kwargs=dict(net_arch=[64, 64], sparsity=0.9, delta_t=10))
        model.learn(100)
    for topo in model.policy.topologies.values():
        check_topology(topo)
        assert topo.n_updates > 0
    assert torch.isfinite(torch.as_tensor(model.predict(
        model.env.observation_space.sample(), deterministic=True)[0])).all()
