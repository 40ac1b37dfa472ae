"""Moved to :mod:`sparse_agents.task_masks` (the core); this path re-exports it."""

from sparse_agents.task_masks import (  # noqa: F401
    FREE,
    OWNER_BUFFER,
    STATE_MODULE,
    TaskMasks,
    density_report,
    task_densities,
)
