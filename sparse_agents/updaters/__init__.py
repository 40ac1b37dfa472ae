"""Topology updaters: pure functions ``(weight, mask, grad, n_drop, generator) -> mask``."""

from sparse_agents.updaters.base import Updater
from sparse_agents.updaters.rigl import rigl_update
from sparse_agents.updaters.set import set_update
from sparse_agents.updaters.srigl import srigl_update
from sparse_agents.updaters.static import static_update

UPDATERS: dict[str, Updater] = {
    "static": static_update,
    "set": set_update,
    "rigl": rigl_update,
    "srigl": srigl_update,
}

__all__ = ["UPDATERS", "Updater", "rigl_update", "set_update", "srigl_update", "static_update"]
