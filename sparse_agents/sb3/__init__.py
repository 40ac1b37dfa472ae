"""Sparse stable-baselines3 agents: change the policy class, nothing else.

>>> from stable_baselines3 import PPO
>>> from sparse_agents.sb3 import SparseActorCriticPolicy
>>> model = PPO(SparseActorCriticPolicy, "CartPole-v1",
...             policy_kwargs=dict(sparsity=0.9, updater="srigl", distribution="erk"))
>>> model.learn(20_000)                      # masks, updates, metrics under sparse/
>>> model.save("ppo_sparse"); PPO.load("ppo_sparse")   # masks and topology state return

``make_sparse(MyPolicy)`` sparsifies any SB3 policy class. See ``docs/rl.md``.
"""

from sparse_agents.sb3.callbacks import SparsityCallback
from sparse_agents.sb3.mixin import (
    SPARSE_DEFAULTS,
    SparsePolicyMixin,
    TopologyState,
    make_sparse,
    short_layer_names,
)
from sparse_agents.sb3.policies import (
    SparseActorCriticCnnPolicy,
    SparseActorCriticPolicy,
    SparseDQNCnnPolicy,
    SparseDQNMultiInputPolicy,
    SparseDQNPolicy,
    SparseMultiInputActorCriticPolicy,
    SparseSACCnnPolicy,
    SparseSACMultiInputPolicy,
    SparseSACPolicy,
    SparseTD3CnnPolicy,
    SparseTD3MultiInputPolicy,
    SparseTD3Policy,
)
from sparse_agents.sb3.rollout import CondensedRollout
from sparse_agents.sb3.schedule import planned_optimizer_steps

sparse_policy = make_sparse

__all__ = [
    "SPARSE_DEFAULTS",
    "CondensedRollout",
    "SparseActorCriticCnnPolicy",
    "SparseActorCriticPolicy",
    "SparseDQNCnnPolicy",
    "SparseDQNMultiInputPolicy",
    "SparseDQNPolicy",
    "SparseMultiInputActorCriticPolicy",
    "SparsePolicyMixin",
    "SparseSACCnnPolicy",
    "SparseSACMultiInputPolicy",
    "SparseSACPolicy",
    "SparseTD3CnnPolicy",
    "SparseTD3MultiInputPolicy",
    "SparseTD3Policy",
    "SparsityCallback",
    "TopologyState",
    "make_sparse",
    "planned_optimizer_steps",
    "short_layer_names",
    "sparse_policy",
]
