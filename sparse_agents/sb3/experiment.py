"""Old import path (before the layering of 2026-11-29): the RL runners are
:mod:`sparse_agents.experiments.rl`, the hyperparameter table
:mod:`sparse_agents.experiments.hyperparams`."""

from sparse_agents.experiments.hyperparams import HYPERPARAMS, POLICY_KEYS  # noqa: F401
from sparse_agents.experiments.rl import (  # noqa: F401
    ALGOS,
    DEFAULT_ENV,
    evaluation_callback,
    make_agent,
    train_and_evaluate,
    write_curve_csv,
)
