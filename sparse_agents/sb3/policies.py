"""Module-level sparse SB3 policy classes (SB3 pickles the policy class by reference).

Each is ``SparsePolicyMixin`` + the SB3 class; pass options through ``policy_kwargs``::

    PPO(SparseActorCriticPolicy, env, policy_kwargs=dict(sparsity=0.9, updater="srigl"))
"""

from __future__ import annotations

from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.dqn.policies import CnnPolicy as DQNCnnPolicy
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.dqn.policies import MultiInputPolicy as DQNMultiInputPolicy
from stable_baselines3.sac.policies import CnnPolicy as SACCnnPolicy
from stable_baselines3.sac.policies import MultiInputPolicy as SACMultiInputPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import CnnPolicy as TD3CnnPolicy
from stable_baselines3.td3.policies import MultiInputPolicy as TD3MultiInputPolicy
from stable_baselines3.td3.policies import TD3Policy

from sparse_agents.sb3.mixin import SparsePolicyMixin, register_sparse_class

__all__ = [
    "SparseActorCriticCnnPolicy",
    "SparseActorCriticPolicy",
    "SparseDQNCnnPolicy",
    "SparseDQNMultiInputPolicy",
    "SparseDQNPolicy",
    "SparseMultiInputActorCriticPolicy",
    "SparseSACCnnPolicy",
    "SparseSACMultiInputPolicy",
    "SparseSACPolicy",
    "SparseTD3CnnPolicy",
    "SparseTD3MultiInputPolicy",
    "SparseTD3Policy",
]


class SparseActorCriticPolicy(SparsePolicyMixin, ActorCriticPolicy):
    """Sparse ``MlpPolicy`` for PPO and A2C (one optimizer, one topology)."""


class SparseActorCriticCnnPolicy(SparsePolicyMixin, ActorCriticCnnPolicy):
    """Sparse ``CnnPolicy`` for PPO and A2C (NatureCNN convolutions masked too)."""


class SparseMultiInputActorCriticPolicy(SparsePolicyMixin, MultiInputActorCriticPolicy):
    """Sparse ``MultiInputPolicy`` for PPO and A2C (dict observations)."""


class SparseDQNPolicy(SparsePolicyMixin, DQNPolicy):
    """Sparse ``MlpPolicy`` for DQN: ``q_net`` is masked, ``q_net_target`` follows its
    masks (see :mod:`sparse_agents.sb3.mixin` for the target rule)."""


class SparseDQNCnnPolicy(SparsePolicyMixin, DQNCnnPolicy):
    """Sparse ``CnnPolicy`` for DQN."""


class SparseDQNMultiInputPolicy(SparsePolicyMixin, DQNMultiInputPolicy):
    """Sparse ``MultiInputPolicy`` for DQN."""


class SparseSACPolicy(SparsePolicyMixin, SACPolicy):
    """Sparse ``MlpPolicy`` for SAC: the actor and the critic each have their own
    optimizer and topology (``policy.topologies["actor"]``, ``["critic"]``);
    ``critic_target`` follows the critic's masks."""


class SparseSACCnnPolicy(SparsePolicyMixin, SACCnnPolicy):
    """Sparse ``CnnPolicy`` for SAC."""


class SparseSACMultiInputPolicy(SparsePolicyMixin, SACMultiInputPolicy):
    """Sparse ``MultiInputPolicy`` for SAC."""


class SparseTD3Policy(SparsePolicyMixin, TD3Policy):
    """Sparse ``MlpPolicy`` for TD3 (and DDPG): actor and critic topologies;
    ``actor_target`` and ``critic_target`` follow their masks."""


class SparseTD3CnnPolicy(SparsePolicyMixin, TD3CnnPolicy):
    """Sparse ``CnnPolicy`` for TD3."""


class SparseTD3MultiInputPolicy(SparsePolicyMixin, TD3MultiInputPolicy):
    """Sparse ``MultiInputPolicy`` for TD3."""


for _cls in (SparseActorCriticPolicy, SparseActorCriticCnnPolicy,
             SparseMultiInputActorCriticPolicy, SparseDQNPolicy, SparseDQNCnnPolicy,
             SparseDQNMultiInputPolicy, SparseSACPolicy, SparseSACCnnPolicy,
             SparseSACMultiInputPolicy, SparseTD3Policy, SparseTD3CnnPolicy,
             SparseTD3MultiInputPolicy):
    register_sparse_class(_cls.__mro__[2], _cls)
del _cls
