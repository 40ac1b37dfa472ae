"""Topology updaters: pure functions ``(weight, mask, grad, n_drop, generator) -> mask``,
and the registry of their traits (:mod:`sparse_agents.updaters.registry`)."""

from sparse_agents.updaters.base import Updater
from sparse_agents.updaters.momentum import momentum_update
from sparse_agents.updaters.registry import (
    DENSE,
    REGISTRY,
    UpdaterSpec,
    check_updaters,
    get_updater,
    initial_mask,
    updater_names,
)
from sparse_agents.updaters.rigl import rigl_update
from sparse_agents.updaters.set import set_update
from sparse_agents.updaters.srigl import srigl_update
from sparse_agents.updaters.static import static_update
from sparse_agents.updaters.unfired import unfired_update

#: name -> update function (kept for callers of the first API; traits: ``REGISTRY``)
UPDATERS: dict[str, Updater] = {name: spec.update for name, spec in REGISTRY.items()}

__all__ = ["DENSE", "REGISTRY", "UPDATERS", "Updater", "UpdaterSpec", "check_updaters",
           "get_updater", "initial_mask", "momentum_update", "rigl_update", "set_update",
           "srigl_update", "static_update", "unfired_update", "updater_names"]
