"""Old import path (before the layering of 2026-11-29): the per-task-mask policy is
:mod:`sparse_agents.sb3.task_policy`, the continual-RL runner
:mod:`sparse_agents.experiments.rl_stream`. Kept so that old code and saved models load."""

from sparse_agents.experiments.rl_stream import (  # noqa: F401
    ALGOS,
    DENSE_INPUT,
    StreamResult,
    default_hyperparameters,
    evaluate_tasks,
    train_stream,
)
from sparse_agents.sb3.task_policy import (  # noqa: F401
    TASK_MASK_DEFAULTS,
    TaskMaskActorCriticPolicy,
)
