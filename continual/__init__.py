"""Continual learning with DST: Avalanche plugins and sparsity metrics, per-task masks,
offline streams.

``from continual import DSTPlugin, TaskMaskPlugin, sparsity_metrics`` imports Avalanche
(4-5 s) on first use only; :class:`TaskMasks`, the tensor streams and
:func:`run_experiment` need only torch.
"""

from __future__ import annotations

from importlib import import_module

__all__ = [
    "DSTPlugin",
    "SparsityPluginMetric",
    "TaskMaskPlugin",
    "TaskMasks",
    "flops_metrics",
    "load_stream",
    "make_benchmark",
    "permuted_digits",
    "rotated_digits",
    "run_experiment",
    "sparsity_metrics",
    "split_digits",
]

_LAZY = {
    "DSTPlugin": "sparse_agents.avalanche.plugins",
    "TaskMaskPlugin": "sparse_agents.avalanche.plugins",
    "SparsityPluginMetric": "sparse_agents.avalanche.metrics",
    "flops_metrics": "sparse_agents.avalanche.metrics",
    "sparsity_metrics": "sparse_agents.avalanche.metrics",
    "TaskMasks": "sparse_agents.task_masks",
    "load_stream": "continual.streams",
    "make_benchmark": "continual.streams",
    "permuted_digits": "continual.streams",
    "rotated_digits": "continual.streams",
    "split_digits": "continual.streams",
    "run_experiment": "continual.experiment",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'continual' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
