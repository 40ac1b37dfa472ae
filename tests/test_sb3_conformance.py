"""The Sparse* policies behave as SB3's own: sub-network save/load, loading state dicts,
SB3's warnings, and SB3's own test modules (tests/sb3_conformance.py)."""

import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import sb3_conformance
import torch as th
from stable_baselines3 import DQN, PPO, SAC, TD3

import sparse_agents.sb3  # noqa: F401  (registers the aliases)
from sparse_agents.sb3.mixin import MIN_FAN_IN, recommend_cpu


@pytest.mark.parametrize("algo,env,part", [
    (SAC, "Pendulum-v1", "actor"), (TD3, "Pendulum-v1", "actor"),
    (DQN, "CartPole-v1", "q_net")])
def test_subnetwork_saved_alone_loads_into_its_plain_class_with_the_same_outputs(
        tmp_path, algo, env, part):
    model = algo("SparseMlpPolicy", env, seed=0)
    net = getattr(model.policy, part)
    net.save(tmp_path / "net.pkl")
    loaded = type(net).load(tmp_path / "net.pkl")
    assert type(loaded) is type(net)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(8)]))
    with th.no_grad():
        if part == "q_net":
            outs = [n(obs) for n in (net, loaded)]
        else:
            outs = [n(obs, deterministic=True) if algo is SAC else n(obs) for n in (net, loaded)]
    assert th.equal(outs[0], outs[1])
    # ... and the sparse sub-network takes its own plain state back, keeping its masks
    masks = {k: v.clone() for k, v in model.policy.state_dict().items()
             if k.endswith("weight_mask")}
    net.load_state_dict(loaded.state_dict())
    after = model.policy.state_dict()
    assert all(th.equal(after[k], v) for k, v in masks.items())


def test_policy_state_dict_still_carries_masks():
    model = DQN("SparseMlpPolicy", "CartPole-v1", seed=0)
    keys = model.policy.state_dict()
    assert any(k.startswith("q_net.") and k.endswith("weight_mask") for k in keys)
    assert "sparse_state._extra_state" in keys


def test_state_dict_without_topology_state_loads_masked(tmp_path):
    model = PPO("SparseMlpPolicy", "CartPole-v1", n_steps=64, seed=0)
    state = {k: th.rand_like(v) if v.is_floating_point() else v
             for k, v in model.policy.state_dict().items()
             if k != "sparse_state._extra_state"}
    model.policy.load_state_dict(state, strict=False)
    for topo in model.policy.topologies.values():
        for layer in topo.layers:
            assert not (layer.weight * ~layer.mask.bool()).any(), layer.name
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(16)]))
    with th.no_grad():
        before = model.policy.predict_values(obs)
    model.save(tmp_path / "m.zip")
    reloaded = PPO.load(tmp_path / "m.zip")
    with th.no_grad():
        assert th.equal(reloaded.policy.predict_values(obs), before)


def test_set_parameters_with_dense_weights_applies_the_masks():
    model = DQN("SparseMlpPolicy", "CartPole-v1", seed=0)
    params = model.get_parameters()
    params["policy"] = {k: th.ones_like(v) if k.endswith(".weight") else v
                        for k, v in params["policy"].items()}
    model.set_parameters(params)
    for layer in model.policy.topology.layers:
        assert th.equal(layer.weight != 0, layer.mask.bool())
    target = model.policy.q_net_target.q_net[2]
    assert th.equal(target.weight != 0, target.weight_mask.bool())


def _thin_warnings(**kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kwargs.pop("algo")("SparseMlpPolicy", **kwargs)
    return [str(w.message) for w in caught if "too high for this network" in str(w.message)]


@pytest.mark.parametrize("algo,env", [(TD3, "Pendulum-v1"), (DQN, "CartPole-v1")])
def test_network_too_small_for_its_sparsity_warns_naming_layer_and_fan_in(algo, env):
    (msg,) = _thin_warnings(algo=algo, env=env, policy_kwargs=dict(net_arch=[16, 16]))
    assert "keeps 1.0 of 16 inputs per unit" in msg and "sparsity <= 0.8" in msg


@pytest.mark.parametrize("algo,env", [(PPO, "CartPole-v1"), (DQN, "CartPole-v1"),
                                      (SAC, "Pendulum-v1"), (TD3, "Pendulum-v1")])
def test_default_architectures_at_90_percent_do_not_warn(algo, env):
    assert _thin_warnings(algo=algo, env=env) == []
    assert MIN_FAN_IN == 2.0


def test_ppo_mlp_on_gpu_gets_sb3s_cpu_hint_and_cnn_does_not():
    mlp = PPO("SparseMlpPolicy", "CartPole-v1", n_steps=64)
    mlp.device = th.device("cuda")  # what SB3 checks; no GPU needed to check the hint
    with pytest.warns(UserWarning, match="primarily intended to run on the CPU"):
        recommend_cpu(mlp.policy, mlp)
    image = gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)
    from sparse_agents.sb3.policies import SparseActorCriticCnnPolicy

    cnn = SparseActorCriticCnnPolicy(image, gym.spaces.Discrete(2), lambda _: 3e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recommend_cpu(cnn, mlp)


def test_swap_policies_changes_only_quoted_policy_aliases():
    src = 'PPO("MlpPolicy", env); x = "CnnPolicy"; MlpPolicy; "MultiInputPolicy2"'
    assert sb3_conformance.swap_policies(src) == \
        'PPO("SparseMlpPolicy", env); x = "SparseCnnPolicy"; MlpPolicy; "MultiInputPolicy2"'


@pytest.mark.slow
@pytest.mark.skipif(not sb3_conformance.sdist_path().exists() and not os.environ.get("CI"),
                    reason="SB3's sdist is not fetched: python tests/sb3_conformance.py fetch")
def test_stable_baselines3_own_tests_pass_with_sparse_policies():
    counts, text = sb3_conformance.run()
    assert counts["failed"] == 0 and counts["error"] == 0, text[-6000:]
    assert counts["passed"] > 250, counts


def test_td3_shared_features_extractor_belongs_to_the_actors_topology():
    from stable_baselines3.common.envs import FakeImageEnv

    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=False)
    model = TD3("SparseCnnPolicy", env, buffer_size=100, policy_kwargs=dict(
        share_features_extractor=True, features_extractor_kwargs=dict(features_dim=8)))
    actor, critic = (model.policy.topologies[k] for k in ("actor", "critic"))
    names = {k: {x.module_name for x in t.layers} for k, t in
             (("actor", actor), ("critic", critic))}
    assert "actor.features_extractor.cnn.0" in names["actor"]
    assert not any("features_extractor" in n for n in names["critic"])
    assert actor.compute == "masked"  # the critic's optimizer steps those weights too
    model.learn(120)
