"""Moved to :mod:`sparse_agents.avalanche.plugins` (the Avalanche adapter); this path
re-exports it."""

from sparse_agents.avalanche.plugins import DSTPlugin, TaskMaskPlugin, head_layers  # noqa: F401
