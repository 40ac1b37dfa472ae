"""How many optimizer steps an SB3 ``learn()`` call will take, to place ``t_end``.

The rule (per optimizer, so per topology):

* on-policy (PPO, A2C, ...): a rollout collects ``n_steps * n_envs`` transitions and
  ``train()`` then takes ``n_epochs * ceil(n_steps * n_envs / batch_size)`` optimizer
  steps (A2C: no ``n_epochs``, one full batch: 1 step); ``learn(T)`` runs
  ``ceil(T / (n_steps * n_envs))`` rollouts;
* off-policy (DQN, SAC, TD3, ...) with ``train_freq`` in steps: a rollout collects
  ``train_freq * n_envs`` transitions; ``train()`` runs after every rollout that ends
  past ``learning_starts``, with ``gradient_steps`` optimizer steps (``-1``: as many as
  transitions collected). TD3's actor steps once every ``policy_delay`` critic steps.
  With ``train_freq`` in episodes the episode length is unknown: one optimizer step
  per transition after ``learning_starts`` is assumed;
* anything else: one optimizer step per timestep.

PPO's ``target_kl`` early stopping can end epochs early, so the count is an upper
bound there.
"""

from __future__ import annotations

import math

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFrequencyUnit

__all__ = ["planned_optimizer_steps"]


def planned_optimizer_steps(algo: BaseAlgorithm, total_timesteps: int, key: str = "policy") -> int:
    """Optimizer steps of the optimizer ``key`` (``"policy"``, ``"actor"``,
    ``"critic"``) that ``algo`` takes over its first ``total_timesteps`` timesteps."""
    total = max(int(total_timesteps), 0)
    n_envs = max(int(getattr(algo, "n_envs", 1) or 1), 1)
    if isinstance(algo, OnPolicyAlgorithm):
        per_rollout = int(algo.n_steps) * n_envs
        n_rollouts = math.ceil(total / per_rollout)
        batch_size = getattr(algo, "batch_size", None) or per_rollout
        # TRPO has no n_epochs: its critic takes n_critic_updates passes
        n_epochs = int(getattr(algo, "n_epochs", None) or getattr(algo, "n_critic_updates", 1)
                       or 1)
        return n_rollouts * n_epochs * math.ceil(per_rollout / int(batch_size))
    if isinstance(algo, OffPolicyAlgorithm):
        train_freq = algo.train_freq
        learning_starts = int(algo.learning_starts)
        gradient_steps = int(algo.gradient_steps)
        if getattr(train_freq, "unit", None) == TrainFrequencyUnit.STEP:
            per_rollout = int(train_freq.frequency) * n_envs
            n_rollouts = math.ceil(total / per_rollout)
            n_train = n_rollouts - min(n_rollouts, learning_starts // per_rollout)
            steps = n_train * (gradient_steps if gradient_steps >= 0 else per_rollout)
        else:
            steps = max(total - learning_starts, 0)
        if key == "actor" and hasattr(algo, "policy_delay"):
            steps //= max(int(algo.policy_delay), 1)
        return steps
    return total
