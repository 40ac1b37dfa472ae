"""Wrappers that make the task identity visible to an agent."""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["TaskInfo", "TaskOneHot"]


class TaskInfo:
    """Adds ``info["task_id"]`` to reset and step (mixed in before an env or wrapper
    class whose instances have a ``task_id``)."""

    task_id: int

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "task_id": self.task_id}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "task_id": self.task_id}


class TaskOneHot(TaskInfo, gymnasium.ObservationWrapper,
                 gymnasium.utils.RecordConstructorArgs):
    """Append a one-hot encoding of ``task_id`` (length ``n_tasks``) to a flat ``Box``
    observation. The observation space gets bounds ``[0, 1]`` for the new entries and
    keeps the original dtype; ``info["task_id"]`` is set on reset and step.

    Args:
        env: an environment with a 1-D ``Box`` observation space.
        task_id: the task, in ``[0, n_tasks)``.
        n_tasks: length of the one-hot vector (>= 1).
    """

    def __init__(self, env: gymnasium.Env, task_id: int, n_tasks: int) -> None:
        gymnasium.utils.RecordConstructorArgs.__init__(self, task_id=task_id, n_tasks=n_tasks)
        gymnasium.ObservationWrapper.__init__(self, env)
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
            raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
        if isinstance(task_id, bool) or not isinstance(task_id, int) or not (
                0 <= task_id < n_tasks):
            raise KeyError(f"task_id must be an integer in [0, {n_tasks - 1}], got {task_id!r}")
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError("TaskOneHot needs a 1-D Box observation space, got "
                             f"{space!r}")
        self.task_id = task_id
        self.n_tasks = n_tasks
        self._one_hot = np.zeros(n_tasks, dtype=space.dtype)
        self._one_hot[task_id] = 1
        self.observation_space = spaces.Box(
            low=np.concatenate([space.low, np.zeros(n_tasks, dtype=space.dtype)]),
            high=np.concatenate([space.high, np.ones(n_tasks, dtype=space.dtype)]),
            dtype=space.dtype,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(observation, dtype=self.observation_space.dtype),
                               self._one_hot])
