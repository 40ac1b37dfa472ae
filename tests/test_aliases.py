"""Policy aliases: ``Algo("SparseMlpPolicy", env)`` works as ``Algo("MlpPolicy", env)`` for
PPO, A2C, DQN, SAC, TD3 and the sb3-contrib algorithms whose policies fit (QR-DQN, TQC,
TRPO, MaskablePPO, RecurrentPPO, CrossQ), and saved models load with their masks."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

import sparse_agents.sb3 as sb3
from sparse_agents.sb3 import SparsePolicyMixin, register_aliases, sparse_aliases

try:
    import sb3_contrib
except ImportError:  # pragma: no cover - optional dependency
    sb3_contrib = None

needs_contrib = pytest.mark.skipif(sb3_contrib is None, reason="sb3-contrib not installed")
TINY = dict(net_arch=[32, 32], sparsity=0.9, delta_t=3, seed=0)


def _contrib(name: str):
    return getattr(sb3_contrib, name) if sb3_contrib is not None else None


def _masked_env():
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    return InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3)


# name: (algorithm, alias, environment, algorithm kwargs, extra policy kwargs)
OFF = dict(learning_starts=50, buffer_size=500, batch_size=32)
CASES = {
    "PPO": (PPO, "SparseMlpPolicy", "CartPole-v1", dict(n_steps=64, batch_size=32, n_epochs=2), {}),
    "A2C": (A2C, "SparseMlpPolicy", "CartPole-v1", dict(n_steps=8), {}),
    "DQN": (DQN, "SparseMlpPolicy", "CartPole-v1", dict(OFF, target_update_interval=20), {}),
    "SAC": (SAC, "SparseMlpPolicy", "Pendulum-v1", OFF, {}),
    "TD3": (TD3, "SparseMlpPolicy", "Pendulum-v1", OFF, {}),
    "QRDQN": ("QRDQN", "SparseMlpPolicy", "CartPole-v1", dict(OFF, target_update_interval=20),
              dict(n_quantiles=5)),
    "TQC": ("TQC", "SparseMlpPolicy", "Pendulum-v1", OFF, dict(n_quantiles=5)),
    "CrossQ": ("CrossQ", "SparseMlpPolicy", "Pendulum-v1", OFF, {}),
    # TRPO: t_end given (t_end=None counts one critic epoch, see sparse_agents.sb3.aliases)
    "TRPO": ("TRPO", "SparseMlpPolicy", "CartPole-v1", dict(n_steps=64, batch_size=32),
             dict(t_end=30)),
    "MaskablePPO": ("MaskablePPO", "SparseMlpPolicy", _masked_env,
                    dict(n_steps=64, batch_size=32, n_epochs=2), {}),
    "RecurrentPPO": ("RecurrentPPO", "SparseMlpLstmPolicy", "CartPole-v1",
                     dict(n_steps=32, batch_size=32, n_epochs=2), dict(lstm_hidden_size=8)),
}
CONTRIB = [k for k, v in CASES.items() if isinstance(v[0], str)]
STEPS = {"PPO": 192, "A2C": 96, "TRPO": 128, "MaskablePPO": 128, "RecurrentPPO": 96}


def _params():
    for name in CASES:
        marks = [needs_contrib] if name in CONTRIB else []
        yield pytest.param(name, marks=marks, id=name)


def _algo(name: str):
    algo = CASES[name][0]
    return _contrib(algo) if isinstance(algo, str) else algo


def _masked_layers(policy) -> list:
    return [layer for topo in policy.topologies.values() for layer in topo.layers]


def _density(policy) -> float:
    layers = _masked_layers(policy)
    return sum(int(x.mask.sum()) for x in layers) / sum(x.mask.numel() for x in layers)


# ---------------------------------------------------------------------------- registry
def test_aliases_map_to_the_sparse_class_of_each_algorithms_plain_alias():
    algos = [PPO, A2C, DQN, SAC, TD3, DDPG]
    if sb3_contrib is not None:
        algos += [sb3_contrib.QRDQN, sb3_contrib.TQC, sb3_contrib.TRPO,
                  sb3_contrib.MaskablePPO, sb3_contrib.RecurrentPPO, sb3_contrib.CrossQ]
    for algo in algos:
        aliases = algo.policy_aliases
        plain = [k for k in aliases if not k.startswith("Sparse")]
        assert plain, algo
        for key in plain:
            sparse = aliases["Sparse" + key]
            base = aliases[key]
            assert not issubclass(base, SparsePolicyMixin), (algo, key)
            assert issubclass(sparse, SparsePolicyMixin) and issubclass(sparse, base), (algo, key)
            # module-level name: SB3's cloudpickle stores the class by reference
            module = importlib.import_module(sparse.__module__)
            assert getattr(module, sparse.__qualname__) is sparse
    assert PPO.policy_aliases["SparseMlpPolicy"] is sb3.SparseActorCriticPolicy
    assert A2C.policy_aliases["SparseCnnPolicy"] is sb3.SparseActorCriticCnnPolicy
    assert DQN.policy_aliases["SparseMultiInputPolicy"] is sb3.SparseDQNMultiInputPolicy
    assert SAC.policy_aliases["SparseMlpPolicy"] is sb3.SparseSACPolicy
    assert TD3.policy_aliases["SparseCnnPolicy"] is sb3.SparseTD3CnnPolicy
    assert DDPG.policy_aliases["SparseMlpPolicy"] is sb3.SparseTD3Policy


def test_registration_is_idempotent_and_keeps_the_plain_aliases():
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.dqn.policies import DQNPolicy

    before = {algo: (id(algo.policy_aliases), dict(algo.policy_aliases)) for algo in
              (PPO, A2C, DQN, SAC, TD3, DDPG)}
    first = register_aliases()
    second = register_aliases()
    assert first == second
    assert first["PPO"] == sparse_aliases(PPO)
    for algo, (ident, aliases) in before.items():
        assert id(algo.policy_aliases) == ident
        assert algo.policy_aliases == aliases
    assert PPO.policy_aliases["MlpPolicy"] is ActorCriticPolicy
    assert DQN.policy_aliases["MlpPolicy"] is DQNPolicy
    with pytest.raises(ValueError, match="algorithm class"):
        register_aliases(PPO, "PPO")


def test_unknown_algorithms_get_no_aliases():
    class MyAlgo(PPO):
        policy_aliases = {"MlpPolicy": torch.nn.Module}  # no sparse class for it

    assert register_aliases(MyAlgo) == {"MyAlgo": {}}
    assert MyAlgo.policy_aliases == {"MlpPolicy": torch.nn.Module}


@needs_contrib
def test_ars_is_not_given_aliases():
    assert not any(k.startswith("Sparse") for k in sb3_contrib.ARS.policy_aliases)
    assert "ARS" in sb3.aliases.UNSUPPORTED


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", list(_params()))
def test_alias_learn_save_load_round_trip(name, tmp_path):
    _, alias, env, kwargs, extra = CASES[name]
    algo = _algo(name)
    env = env() if callable(env) else env
    model = algo(alias, env, policy_kwargs=dict(TINY, **extra), seed=0, **kwargs)
    policy = model.policy
    assert isinstance(policy, SparsePolicyMixin)
    assert type(policy) is algo.policy_aliases[alias]
    model.learn(STEPS.get(name, 150))

    # sparse: ~10% of the masked weights, none outside the masks, the topology updated
    assert 0.07 <= _density(policy) <= 0.105, _density(policy)
    assert 0.07 <= policy.sparse_metrics()["density"] <= 0.105
    for layer in _masked_layers(policy):
        assert not layer.weight.detach()[~layer.mask].any(), (name, layer.module_name)
    assert all(topo.n_updates > 0 for topo in policy.topologies.values()), name

    path = tmp_path / name
    model.save(path)
    loaded = algo.load(path, env=env if name == "MaskablePPO" else None)
    assert type(loaded.policy) is type(policy)
    state, other = policy.state_dict(), loaded.policy.state_dict()
    masks = [k for k in state if k.endswith("weight_mask")]
    assert masks and all(torch.equal(state[k], other[k]) for k in masks)
    assert [t.step for t in loaded.policy.topologies.values()] == \
        [t.step for t in policy.topologies.values()]

    obs = np.stack([model.observation_space.sample() for _ in range(6)])
    kw = {}
    if name == "MaskablePPO":
        kw = dict(action_masks=np.ones((6, model.action_space.n), dtype=bool))
    a, _ = model.predict(obs, deterministic=True, **kw)
    b, _ = loaded.predict(obs, deterministic=True, **kw)
    np.testing.assert_array_equal(a, b)


@needs_contrib
def test_recurrent_topology_follows_the_final_optimizer():
    model = sb3_contrib.RecurrentPPO("SparseMlpLstmPolicy", "CartPole-v1",
                                     policy_kwargs=dict(TINY, lstm_hidden_size=8))
    assert model.policy.topology.optimizer is model.policy.optimizer


@needs_contrib
def test_trpo_line_search_keeps_weights_outside_masks_at_zero():
    from sparse_agents.sb3.aliases import SparseTRPOPolicy

    model = sb3_contrib.TRPO("SparseMlpPolicy", "CartPole-v1", n_steps=64, batch_size=64,
                             policy_kwargs=dict(TINY, updater="set", t_end=1000), seed=1)
    assert type(model.policy) is SparseTRPOPolicy
    before = {x.module_name: x.mask.clone() for x in _masked_layers(model.policy)}
    model.learn(128)
    for layer in _masked_layers(model.policy):
        assert not layer.weight.detach()[~layer.mask].any(), layer.module_name
    # SET (no gradient needed) moves the actor's layers too
    assert not torch.equal(before["action_net"], model.policy.topology.masks["action_net.weight"])


@pytest.mark.parametrize("alias", ["SparseMlpPolicy", "SparseCnnPolicy"])
def test_dict_observations_get_sb3s_multi_input_hint(alias):
    """SB3 answers "MlpPolicy" on a Dict space with a ValueError naming
    MultiInputPolicy; the sparse aliases answer the same way (issue 35, item 3)."""
    from stable_baselines3.common.envs import BitFlippingEnv

    with pytest.raises(ValueError, match="You must use `SparseMultiInputPolicy`.*" + alias):
        PPO(alias, BitFlippingEnv(n_bits=4), n_steps=8)
    model = PPO("SparseMultiInputPolicy", BitFlippingEnv(n_bits=4), n_steps=8, batch_size=8)
    model.learn(8)
