"""Gymnasium task streams for continual reinforcement learning (registered on import).

``import envs`` registers one gymnasium id per stream under the ``sparse_agents/``
namespace (guarded by ``if id not in gymnasium.registry``); the keyword ``task_id``
selects the task::

    import gymnasium, envs
    env = gymnasium.make("sparse_agents/CartPole-physics-v0", task_id=2)
    stream = envs.get_stream("cartpole-physics")
    stream.n_tasks, stream.describe(2), stream.make(2, one_hot=True)

Every environment puts ``info["task_id"]``; :class:`TaskOneHot` appends a one-hot
task id to the observation. See ``docs/envs.md``.
"""

from envs import classic  # registers the classic-control streams
from envs.classic import AcrobotTask, CartPoleTask, PendulumTask
from envs.streams import (
    NAMESPACE,
    TaskStream,
    get_stream,
    list_streams,
    make_task_env,
    register_stream,
)
from envs.wrappers import TaskOneHot

__all__ = [
    "NAMESPACE",
    "AcrobotTask",
    "CartPoleTask",
    "PendulumTask",
    "TaskOneHot",
    "TaskStream",
    "classic",
    "get_stream",
    "list_streams",
    "make_task_env",
    "register_stream",
]
