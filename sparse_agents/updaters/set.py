"""SET (Mocanu et al. 2018): drop smallest ``|w|``, grow uniformly at random."""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_agents.updaters.base import check_inputs, prune_and_grow


def _random_scores(weight: Tensor, grad: Tensor | None) -> Tensor:
    # Equal scores everywhere: the seeded tie-break makes the choice uniformly random.
    return torch.zeros(weight.shape, device=weight.device)


_update = prune_and_grow(_random_scores)


def set_update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
               generator: torch.Generator, allowed: Tensor | None = None,
               **_: object) -> Tensor:
    """New mask: ``n_drop`` smallest-magnitude active weights replaced by random ones.

    Positions just dropped are eligible for regrowth; ``allowed`` restricts growth.
    """
    check_inputs(weight, mask, grad, n_drop, needs_grad=False, allowed=allowed)
    return _update(weight, mask, grad, n_drop, generator, allowed)
