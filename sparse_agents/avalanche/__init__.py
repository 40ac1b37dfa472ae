"""The Avalanche adapter: DST and per-task-mask plugins, and sparsity metrics for
``EvaluationPlugin`` (``from continual import ...`` re-exports them). Importing this
package imports Avalanche."""

from sparse_agents.avalanche.metrics import (
    SparsityPluginMetric,
    flops_metrics,
    sparsity_metrics,
)
from sparse_agents.avalanche.plugins import DSTPlugin, TaskMaskPlugin, head_layers

__all__ = ["DSTPlugin", "SparsityPluginMetric", "TaskMaskPlugin", "flops_metrics",
           "head_layers", "sparsity_metrics"]
