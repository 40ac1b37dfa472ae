"""sparse-agents: dynamic sparse training (SET, RigL, SRigL) for RL and continual learning."""

from sparse_agents.condensed import condense
from sparse_agents.distributions import layer_densities
from sparse_agents.schedules import UpdateSchedule
from sparse_agents.topology import SparseTopology

__all__ = ["SparseTopology", "UpdateSchedule", "condense", "layer_densities"]
__version__ = "0.1.0"
