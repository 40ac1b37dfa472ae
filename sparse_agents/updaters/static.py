"""Static sparsity: the mask never changes (the sparse baseline)."""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_agents.updaters.base import check_inputs


def static_update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
                  generator: torch.Generator, **_: object) -> Tensor:
    """Return the mask unchanged (after the same input checks as every updater)."""
    check_inputs(weight, mask, grad, n_drop, needs_grad=False)
    return mask.clone()
