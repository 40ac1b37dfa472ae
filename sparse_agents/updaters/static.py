"""Static sparsity: the mask never changes (the sparse baseline)."""

from __future__ import annotations

import torch
from torch import Tensor


def static_update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
                  generator: torch.Generator, **_: object) -> Tensor:
    """Return the mask unchanged."""
    return mask.clone()
