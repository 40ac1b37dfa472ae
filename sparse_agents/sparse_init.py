"""Sparse-aware initialisation: rescale a masked layer's initial weights to its real fans.

A dense initialisation sets each weight's variance from the layer's fans (e.g. Glorot:
``2 / (fan_in + fan_out)``, He: ``2 / fan_in``). Masking 90% of the weights leaves each
unit with a fraction of those connections, so its pre-activation variance shrinks with
the density and the signal fades layer by layer. Evci et al. (2022, "Gradient flow in
sparse neural networks") rescale every kept weight to the fans its units really have;
Graesser et al. (2022) train every sparse RL agent so (``init_masks.fixed_sparse_init``,
google-research/rigl ``rigl/rl``, Glorot's ``fan_avg`` rule). Here the layer keeps the
values its own initialisation drew, multiplied per entry by

- ``"fan_in"``: ``sqrt(F_in / fan_in[o])``;
- ``"fan_avg"``: ``sqrt((F_in + F_out) / (fan_in[o] + fan_out[i]))``;

where ``F_in``/``F_out`` are the dense fans (kernel size included), ``fan_in[o]`` the
entries of output unit ``o`` in the mask and ``fan_out[i]`` those of input unit ``i``.
A full mask leaves the weights unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: the rules :func:`sparse_init_scale` knows (``None``: keep the dense initialisation)
SPARSE_INITS = ("fan_in", "fan_avg")


def check_sparse_init(value: str | None) -> str | None:
    """``value`` if it is ``None`` or a rule of :data:`SPARSE_INITS`, else ``ValueError``."""
    if value is not None and value not in SPARSE_INITS:
        raise ValueError(f"sparse_init must be None or one of {SPARSE_INITS}, got {value!r}")
    return value


def sparse_init_scale(mask: Tensor, rule: str) -> Tensor:
    """Per-entry factor (shape of ``mask``, 0 outside it) taking a weight of the dense
    initialisation to the variance ``rule`` gives it under ``mask``."""
    if rule not in SPARSE_INITS:  # None is a choice of the callers, not a rule
        raise ValueError(f"rule must be one of {SPARSE_INITS}, got {rule!r}")
    m = mask.detach().reshape(mask.shape[0], mask.shape[1], -1).float()
    receptive = m.shape[2]
    fan_in = m.sum(dim=(1, 2)).unsqueeze(1)  # [out, 1]
    dense_in = float(m.shape[1] * receptive)
    if rule == "fan_in":
        ratio = dense_in / fan_in.clamp(min=1.0)
    else:
        fan_out = m.sum(dim=(0, 2)).unsqueeze(0)  # [1, in]
        ratio = (dense_in + m.shape[0] * receptive) / (fan_in + fan_out).clamp(min=1.0)
    scale = ratio.sqrt().unsqueeze(2) * m
    return scale.reshape(mask.shape)


@torch.no_grad()
def rescale_to_mask_(weight: Tensor, mask: Tensor, rule: str) -> None:
    """Multiply ``weight`` in place by :func:`sparse_init_scale` (zero outside ``mask``)."""
    weight.mul_(sparse_init_scale(mask, rule).to(weight.device, weight.dtype))
