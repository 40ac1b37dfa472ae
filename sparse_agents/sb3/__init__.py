"""Sparse stable-baselines3 agents: change the policy class, nothing else.

>>> from stable_baselines3 import PPO
>>> from sparse_agents.sb3 import SparseActorCriticPolicy
>>> model = PPO(SparseActorCriticPolicy, "CartPole-v1",
...             policy_kwargs=dict(sparsity=0.9, updater="srigl", distribution="erk"))
>>> model.learn(20_000)                      # masks, updates, metrics under sparse/
>>> model.save("ppo_sparse"); PPO.load("ppo_sparse")   # masks and topology state return
>>> PPO("SparseMlpPolicy", "CartPole-v1", policy_kwargs=dict(sparsity=0.9))  # same, by alias

``make_sparse(MyPolicy)`` sparsifies any SB3 policy class. See ``docs/rl.md``.
"""

from sparse_agents.sb3.aliases import register_aliases, sparse_aliases
from sparse_agents.sb3.callbacks import SparsityCallback
from sparse_agents.sb3.extractors import MinAtarCNN
from sparse_agents.sb3.mixin import (
    FAMILY_DEFAULTS,
    FUSED_BY_DEFAULT,
    SPARSE_DEFAULTS,
    SparsePolicyMixin,
    TopologyState,
    defaults_for,
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
from sparse_agents.sb3.pruned import continue_sparse
from sparse_agents.sb3.rollout import CondensedRollout
from sparse_agents.sb3.schedule import planned_optimizer_steps
from sparse_agents.sb3.task_offpolicy import (
    TaskExploration,
    TaskMaskDQNPolicy,
    TaskMaskSACPolicy,
    TaskTarget,
    start_task,
)
from sparse_agents.sb3.task_policy import TaskMaskActorCriticPolicy, TaskMaskPolicyMixin

sparse_policy = make_sparse

# "SparseMlpPolicy", "SparseCnnPolicy", "SparseMultiInputPolicy" in the policy_aliases of
# PPO, A2C, DQN, SAC, TD3, DDPG (and sb3-contrib's QRDQN, TQC, TRPO, MaskablePPO,
# RecurrentPPO when installed): see sparse_agents.sb3.aliases and docs/ecosystem.md
register_aliases()

__all__ = [
    "FAMILY_DEFAULTS",
    "FUSED_BY_DEFAULT",
    "SPARSE_DEFAULTS",
    "CondensedRollout",
    "MinAtarCNN",
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
    "TaskExploration",
    "TaskMaskActorCriticPolicy",
    "TaskMaskDQNPolicy",
    "TaskMaskPolicyMixin",
    "TaskMaskSACPolicy",
    "TaskTarget",
    "TopologyState",
    "continue_sparse",
    "defaults_for",
    "make_sparse",
    "planned_optimizer_steps",
    "register_aliases",
    "short_layer_names",
    "sparse_aliases",
    "sparse_policy",
    "start_task",
]
