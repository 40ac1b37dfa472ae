"""Task streams: sequences of related gymnasium tasks with equal spaces.

A :class:`TaskStream` names one registered gymnasium id (``sparse_agents/...``) whose
``task_id`` keyword selects the task; the stream knows each task's parameters and
description. ``get_stream(name)`` returns a stream by name.

>>> import envs
>>> stream = envs.get_stream("cartpole-physics")
>>> stream.n_tasks, stream.describe(1)
>>> env = stream.make(1)                     # == gymnasium.make(stream.env_id, task_id=1)
>>> env = stream.make(1, one_hot=True)       # observation + one-hot task id
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium

__all__ = ["NAMESPACE", "TaskStream", "get_stream", "list_streams", "make_task_env",
           "register_stream"]

#: gymnasium namespace of every environment this package registers
NAMESPACE = "sparse_agents"

_STREAMS: dict[str, TaskStream] = {}


@dataclass(frozen=True)
class TaskStream:
    """A sequence of related tasks sharing observation and action spaces.

    Args:
        name: the stream's name (``get_stream(name)``).
        env_id: the registered gymnasium id; ``gymnasium.make(env_id, task_id=t)``.
        entry_point: ``"module:Class"`` of the environment; it takes the task
            parameters and ``task_id`` as keyword arguments.
        tasks: one dict of environment parameters per task.
        summary: a one-line description of the stream.
        max_episode_steps: time limit of every task.
        reward_threshold: the base environment's "solved" return (informative).
        defaults: the parameters every task starts from (``describe`` marks changes).
        metric: what to report per task: ``"return"`` (episode return) or
            ``"success"`` (success rate from ``info["is_success"]`` at episode end).
    """

    name: str
    env_id: str
    entry_point: str
    tasks: tuple[Mapping[str, Any], ...]
    summary: str
    max_episode_steps: int
    reward_threshold: float | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    metric: str = "return"

    @property
    def n_tasks(self) -> int:
        """Number of tasks in the stream."""
        return len(self.tasks)

    @property
    def descriptions(self) -> list[str]:
        """One human-readable description per task."""
        return [self.describe(t) for t in range(self.n_tasks)]

    def check_task(self, task_id: int) -> int:
        """``task_id`` as an int; ``KeyError`` naming the range if it is not a task."""
        if isinstance(task_id, bool) or not isinstance(task_id, int) or not (
                0 <= task_id < self.n_tasks):
            raise KeyError(
                f"task_id must be an integer in [0, {self.n_tasks - 1}] for stream "
                f"{self.name!r} ({self.n_tasks} tasks), got {task_id!r}")
        return int(task_id)

    def params(self, task_id: int) -> dict[str, Any]:
        """The environment parameters of task ``task_id`` (defaults filled in)."""
        return {**self.defaults, **self.tasks[self.check_task(task_id)]}

    def describe(self, task_id: int) -> str:
        """A description of task ``task_id``: its parameters, changed ones marked."""
        params = self.params(task_id)
        parts = []
        for key, value in params.items():
            mark = "" if self.defaults.get(key) == value else "*"
            parts.append(f"{key}={value:g}{mark}" if isinstance(value, float | int)
                         else f"{key}={value!r}{mark}")
        return f"task {task_id}: " + ", ".join(parts)

    def make(self, task_id: int, one_hot: bool = False, **kwargs: Any) -> gymnasium.Env:
        """``gymnasium.make(env_id, task_id=task_id, **kwargs)``; ``one_hot=True``
        appends the one-hot task id to the observation (:class:`TaskOneHot`).
        ``kwargs`` may override task parameters or pass ``render_mode`` etc."""
        task_id = self.check_task(task_id)
        env = gymnasium.make(self.env_id, task_id=task_id, **kwargs)
        if one_hot:
            from envs.wrappers import TaskOneHot

            env = TaskOneHot(env, task_id=task_id, n_tasks=self.n_tasks)
        return env

    def __repr__(self) -> str:
        return f"TaskStream({self.name!r}, env_id={self.env_id!r}, n_tasks={self.n_tasks})"


def register_stream(stream: TaskStream) -> TaskStream:
    """Add ``stream`` to the known streams and register its gymnasium id (once)."""
    if stream.name in _STREAMS and _STREAMS[stream.name] != stream:
        raise ValueError(f"stream name {stream.name!r} is already taken")
    _STREAMS[stream.name] = stream
    if stream.env_id not in gymnasium.registry:
        gymnasium.register(
            id=stream.env_id,
            entry_point=make_task_env,
            kwargs={"stream": stream.name},
            max_episode_steps=stream.max_episode_steps,
            reward_threshold=stream.reward_threshold,
        )
    return stream


def list_streams() -> list[str]:
    """Names of the known streams."""
    return sorted(_STREAMS)


def get_stream(name: str) -> TaskStream:
    """The stream called ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in _STREAMS:
        raise ValueError(f"stream must be one of {list_streams()}, got {name!r}")
    return _STREAMS[name]


def make_task_env(stream: str, task_id: int = 0, **overrides: Any) -> gymnasium.Env:
    """Gymnasium entry point of every stream id: task ``task_id`` of ``stream``, with
    ``overrides`` replacing task parameters (``render_mode`` passes through)."""
    spec = get_stream(stream)
    params = spec.params(task_id)
    params.update(overrides)
    module, _, cls = spec.entry_point.partition(":")
    env_class = getattr(importlib.import_module(module), cls)
    return env_class(task_id=task_id, **params)


# gymnasium reads ``metadata`` of a function entry point for its render modes
make_task_env.metadata = {"render_modes": ["human", "rgb_array"]}  # type: ignore[attr-defined]
