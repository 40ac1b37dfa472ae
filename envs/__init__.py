"""Gymnasium task streams for continual reinforcement learning (registered on import).

``import envs`` registers one gymnasium id per stream under the ``sparse_agents/``
namespace (guarded by ``if id not in gymnasium.registry``); the keyword ``task_id``
selects the task::

    import gymnasium, envs
    env = gymnasium.make("sparse_agents/CartPole-physics-v0", task_id=2)
    stream = envs.get_stream("cartpole-physics")
    stream.n_tasks, stream.describe(2), stream.make(2, one_hot=True)

Every environment puts ``info["task_id"]``; :class:`TaskOneHot` appends a one-hot
task id to the observation. Besides the classic-control physics streams: MinAtar
(``minatar-games``), permuted-observation plasticity streams (``minatar-permuted``,
``cartpole-permuted``) and Continual World on Meta-World v3 (``metaworld-cw10``,
``metaworld-cw3``; ``stream.metric == "success"``), their packages imported only when an
environment is built. See ``docs/envs.md``.
"""

from envs import (
    classic,  # registers the classic-control streams
    metaworld,  # registers the Meta-World streams (metaworld imported lazily)
    minatar,  # registers the MinAtar and permuted streams (minatar: lazily)
)
from envs.classic import AcrobotTask, CartPoleTask, PendulumTask
from envs.metaworld import MetaWorldTask
from envs.minatar import MinAtarTask, PermutedCartPole
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
    "MetaWorldTask",
    "MinAtarTask",
    "PendulumTask",
    "PermutedCartPole",
    "TaskOneHot",
    "TaskStream",
    "classic",
    "get_stream",
    "list_streams",
    "make_task_env",
    "metaworld",
    "minatar",
    "register_stream",
]
