"""Condensed training: the training step of masked linear layers at the cost of their
active weights (DESIGN section 5b, docs/training.md)."""

from sparse_agents.compute.linear import (
    VALUES,
    CondensedLinearTraining,
    Structure,
    check_elementwise_optimizer,
    condensed_linear,
)
from sparse_agents.compute.optim import OptimizerBinding

__all__ = ["VALUES", "CondensedLinearTraining", "OptimizerBinding", "Structure",
           "check_elementwise_optimizer", "condensed_linear"]
