"""``dense_input``: the layers that read the observation stay dense (issue 17: at 90%,
SRigL's constant fan-in leaves each unit of a 4->64 input layer 2 of CartPole's 4
features)."""

import gymnasium as gym
import pytest
from stable_baselines3 import DQN, PPO, SAC, TD3
from stable_baselines3.common.monitor import Monitor

from sparse_agents.sb3 import (
    MinAtarCNN,
    SparseActorCriticPolicy,
    SparseDQNPolicy,
    SparseSACPolicy,
    SparseTD3Policy,
    continue_sparse,
)
from sparse_agents.sb3.task_policy import TaskMaskActorCriticPolicy
from sparse_agents.topology import find_maskable

INPUTS = {
    "PPO": ["mlp_extractor.policy_net.0", "mlp_extractor.value_net.0"],
    "DQN": ["q_net.q_net.0"],
    "SAC": ["actor.latent_pi.0", "critic.qf0.0", "critic.qf1.0"],
    "TD3": ["actor.mu.0", "critic.qf0.0", "critic.qf1.0"],
}
MAKE = {
    "PPO": lambda **kw: PPO(SparseActorCriticPolicy, "CartPole-v1", n_steps=64,
                            policy_kwargs=kw),
    "DQN": lambda **kw: DQN(SparseDQNPolicy, "CartPole-v1", learning_starts=0,
                            policy_kwargs=kw),
    "SAC": lambda **kw: SAC(SparseSACPolicy, "Pendulum-v1", learning_starts=0,
                            policy_kwargs=kw),
    "TD3": lambda **kw: TD3(SparseTD3Policy, "Pendulum-v1", learning_starts=0,
                           policy_kwargs=kw),
}


def unmasked(policy) -> list[str]:
    """Trained maskable layers no topology masks (target networks left out)."""
    masked = {layer.module_name for t in policy.topologies.values() for layer in t.layers}
    return [n for n, _ in find_maskable(policy) if n not in masked and "_target" not in n]


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_dense_input_keeps_the_layers_reading_the_observation_dense(name):
    model = MAKE[name](dense_input=True)
    assert unmasked(model.policy) == INPUTS[name]
    # the global budget stays exact: the hidden layers pay for the dense input layers
    assert model.policy.sparse_metrics()["density"] == pytest.approx(0.1, abs=1e-3)
    assert unmasked(MAKE[name](dense_input=False).policy) == []


def test_dense_input_leaves_cnn_extractors_and_heads_sparse():
    from minatar.gym import register_envs

    register_envs()
    model = PPO(SparseActorCriticPolicy, Monitor(gym.make("MinAtar/Breakout-v1")),
                n_steps=64, policy_kwargs=dict(
        dense_input=True, features_extractor_class=MinAtarCNN, net_arch=[]))
    assert unmasked(model.policy) == []  # the conv reads the observation, and is not tiny
    heads_only = DQN(SparseDQNPolicy, "CartPole-v1", policy_kwargs=dict(
        dense_input=True, net_arch=[]))
    assert unmasked(heads_only.policy) == []  # q_net.q_net.0 is the head


def test_on_policy_agents_keep_input_layers_dense_by_default_off_policy_do_not():
    """Measured for PPO (docs/rl_benchmarks.md, "Input layers and the zoo's budget");
    DQN/SAC/TD3 keep Graesser et al.'s all-masked networks."""
    assert unmasked(MAKE["PPO"]().policy) == INPUTS["PPO"]
    for name in ("DQN", "SAC", "TD3"):
        assert unmasked(MAKE[name]().policy) == [], name


def test_by_default_input_layers_too_big_for_the_budget_stay_masked():
    """32x32 at 90%: the two 4->32 input layers (256 weights) exceed the 240 kept."""
    small = dict(net_arch=[32, 32])
    assert unmasked(MAKE["PPO"](**small).policy) == []
    assert MAKE["PPO"](**small).policy.sparse_metrics()["density"] == pytest.approx(0.1, abs=1e-3)
    with pytest.raises(ValueError, match="more than the global budget 240 at sparsity=0.9"):
        MAKE["PPO"](dense_input=True, **small)


def test_by_default_plain_uniform_keeps_every_layer_at_the_same_density():
    """Uniform does not let the other layers pay for dense ones (unless renormalised), so
    the default leaves the input layers masked there and the global count exact."""
    uniform = MAKE["PPO"](distribution="uniform")
    assert unmasked(uniform.policy) == []
    # (uniform's per-layer rounding to SRigL's whole rows: within 0.2%)
    assert uniform.policy.sparse_metrics()["density"] == pytest.approx(0.1, abs=2e-3)
    renormalised = MAKE["PPO"](distribution="uniform", topology_kwargs={"renormalise": True})
    assert unmasked(renormalised.policy) == INPUTS["PPO"]
    assert renormalised.policy.sparse_metrics()["density"] == pytest.approx(0.1, abs=2e-3)


def test_dense_input_must_be_true_false_or_none():
    with pytest.raises(ValueError, match="dense_input must be True, False or None"):
        MAKE["PPO"](dense_input="yes")


def test_per_task_masks_and_pruned_policies_keep_their_input_layers_masked():
    """A dense layer is shared by every task; pruned masks decide every layer."""
    model = PPO(TaskMaskActorCriticPolicy, "CartPole-v1", n_steps=64)  # default: False
    assert model.policy.sparse_options["dense_input"] is False
    assert unmasked(model.policy) == []
    dense = PPO("MlpPolicy", "CartPole-v1", n_steps=64)
    for given in ({}, {"dense_input": None}):
        pruned = continue_sparse(dense, masks="nonzero", **given)
        assert pruned.policy.sparse_options["dense_input"] is False
        assert unmasked(pruned.policy) == []
    asked = continue_sparse(dense, masks="nonzero", dense_input=True)
    assert unmasked(asked.policy) == INPUTS["PPO"]
