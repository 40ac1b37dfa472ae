"""sparse-agents: dynamic sparse training (SET, RigL, SRigL) for RL and continual learning.

This package is the framework-free core; ``sparse_agents.sb3`` and
``sparse_agents.avalanche`` adapt it to stable-baselines3 and Avalanche."""

from sparse_agents.condensed import condense
from sparse_agents.config import SparseConfig
from sparse_agents.distributions import layer_densities
from sparse_agents.flops import flops
from sparse_agents.schedules import UpdateSchedule
from sparse_agents.task_masks import TaskMasks
from sparse_agents.topology import SparseTopology
from sparse_agents.updaters import REGISTRY as UPDATER_REGISTRY

__all__ = ["UPDATER_REGISTRY", "SparseConfig", "SparseTopology", "TaskMasks", "UpdateSchedule",
           "condense", "flops", "layer_densities"]
__version__ = "0.1.0"
