"""The updater registry: one entry per updater, with the traits the rest of the library
reads (``SparseTopology``, ``TaskMasks``, the SB3 and Avalanche options, every CLI).

Adding an updater is one new file in this folder plus one line in :data:`REGISTRY`
(see docs/architecture.md for a worked example).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from sparse_agents.updaters.base import Updater, topk
from sparse_agents.updaters.momentum import momentum_update
from sparse_agents.updaters.rigl import rigl_update
from sparse_agents.updaters.set import set_update
from sparse_agents.updaters.srigl import constant_fan_in_mask, srigl_update
from sparse_agents.updaters.static import static_update
from sparse_agents.updaters.unfired import unfired_update


@dataclass(frozen=True)
class UpdaterSpec:
    """An updater and the traits its callers need.

    Attributes:
        name: the name users pass (``updater="rigl"``).
        update: the pure function ``(weight, mask, grad, n_drop, generator, **opts)``.
        dynamic: False for an updater that never changes the mask (no scheduled updates).
        needs_grad: growth scores the dense gradient at the update step.
        constant_fan_in: initial and updated masks give every alive row the same fan-in.
        ablates: may remove whole neurons (rows), so the output layer is protected.
        needs_momentum: the score is the first moment of the dense gradient, kept by the
            topology with the optimizer's momentum coefficient (passed as ``grad``).
        summary: one line for ``--help`` texts and docs.
    """

    name: str
    update: Updater
    dynamic: bool = True
    needs_grad: bool = False
    constant_fan_in: bool = False
    ablates: bool = False
    needs_momentum: bool = False
    summary: str = ""


#: every updater, by name (insertion order is the order shown to users)
REGISTRY: dict[str, UpdaterSpec] = {spec.name: spec for spec in (
    UpdaterSpec("static", static_update, dynamic=False, summary="fixed random mask"),
    UpdaterSpec("set", set_update, summary="magnitude prune, random growth"),
    UpdaterSpec("unfired", unfired_update,
                summary="magnitude prune, random growth among never-active positions"),
    UpdaterSpec("rigl", rigl_update, needs_grad=True,
                summary="magnitude prune, dense-gradient growth"),
    UpdaterSpec("momentum", momentum_update, needs_grad=True, needs_momentum=True,
                summary="magnitude prune, growth by the dense gradient's first moment"),
    UpdaterSpec("srigl", srigl_update, needs_grad=True, constant_fan_in=True, ablates=True,
                summary="RigL with constant fan-in and neuron ablation"),
)}

#: the name of the dense baseline in runners and CLIs (not an updater: no topology)
DENSE = "dense"


def updater_names(dense: bool = False) -> tuple[str, ...]:
    """Registered updater names (with ``"dense"`` first when ``dense``): CLI choices."""
    names = tuple(REGISTRY)
    return (DENSE, *names) if dense else names


def get_updater(name: str, *, what: str = "updater", dense: bool = False) -> UpdaterSpec | None:
    """The spec of ``name``; ``ValueError`` naming ``what`` and the choices otherwise.

    With ``dense=True``, ``"dense"`` is accepted too and gives ``None``.
    """
    if dense and name == DENSE:
        return None
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"{what} must be one of {updater_names(dense)}, got {name!r}")
    return REGISTRY[name]


def check_updaters(names: Iterable[str], *, what: str = "updater",
                   dense: bool = False) -> list[str]:
    """Validate several names (e.g. a study grid's list); returns them as a list."""
    names = list(names)
    for name in names:
        get_updater(name, what=what, dense=dense)
    return names


def initial_mask(spec: UpdaterSpec, shape: torch.Size | tuple[int, ...], budget: int,
                 generator: torch.Generator, free: Tensor | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """Random initial mask of ``budget`` entries among ``free`` ones (default: all),
    with constant fan-in for a constant fan-in updater. Drawn on the CPU (one seed, one
    mask on every device), returned on ``device``."""
    if spec.constant_fan_in:
        return constant_fan_in_mask(shape, budget, generator, device, free)
    free_cpu = None if free is None else free.detach().to("cpu", torch.bool)
    return topk(torch.zeros(tuple(shape)), budget, generator, candidates=free_cpu).to(device)
