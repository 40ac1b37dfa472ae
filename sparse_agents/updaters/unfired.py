"""Unfired growth (Yildirim et al. 2024): drop smallest ``|w|``, grow at random among the
positions never active so far; once none are left, at random among the rest."""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_agents.updaters.base import check_inputs, drop_smallest_magnitude, growable, topk


def unfired_update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
                   generator: torch.Generator, allowed: Tensor | None = None,
                   ever_active: Tensor | None = None, **_: object) -> Tensor:
    """New mask: ``n_drop`` smallest-magnitude active weights replaced by random positions
    outside ``ever_active`` (the ITOP record; ``None``: the current mask), falling back to
    any growable position when too few were never active."""
    check_inputs(weight, mask, grad, n_drop, needs_grad=False, allowed=allowed)
    kept = drop_smallest_magnitude(weight, mask, n_drop, generator)
    free = growable(kept, allowed)
    fired = mask if ever_active is None else ever_active | mask
    zeros = torch.zeros(weight.shape, device=weight.device)
    grown = topk(zeros, n_drop, generator, candidates=free & ~fired)
    short = n_drop - int(grown.sum())
    if short > 0:
        grown |= topk(zeros, short, generator, candidates=free & ~grown)
    return kept | grown
