"""RigL (Evci et al. 2020): drop smallest ``|w|``, grow largest ``|dense grad|``."""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_agents.updaters.base import check_inputs, prune_and_grow


def _grad_scores(weight: Tensor, grad: Tensor | None) -> Tensor:
    return grad.detach().abs()


_update = prune_and_grow(_grad_scores)


def rigl_update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
                generator: torch.Generator, allowed: Tensor | None = None,
                **_: object) -> Tensor:
    """New mask: ``n_drop`` smallest-magnitude active weights replaced by the inactive
    positions with the largest dense-gradient magnitude (just-dropped ones eligible)."""
    check_inputs(weight, mask, grad, n_drop, needs_grad=True, allowed=allowed)
    return _update(weight, mask, grad, n_drop, generator, allowed)
