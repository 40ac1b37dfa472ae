"""Momentum growth (Dettmers & Zettlemoyer 2019, sparse momentum; Yildirim et al. 2024):
drop smallest ``|w|``, grow where the first moment of the dense gradient is largest."""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_agents.updaters.rigl import rigl_update


def momentum_update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
                    generator: torch.Generator, allowed: Tensor | None = None,
                    **_: object) -> Tensor:
    """RigL's rule with ``grad`` = the first moment (momentum) of the dense gradient, kept
    by the topology with the optimizer's own coefficient (``needs_momentum``)."""
    return rigl_update(weight, mask, grad, n_drop, generator, allowed=allowed)
