"""Where a layer's weight mask lives: a ``weight_mask`` buffer (``SparseTopology``, or
``torch.nn.utils.prune``, which keeps the dense weight in ``weight_orig``) or a
``torch.nn.utils.parametrize`` parametrization of ``weight`` holding a ``mask``
(``torch.ao.pruning``). Masks are bool or 0/1 numbers; see ``docs/condensed.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sparse_agents.topology import MASK_BUFFER as MASK

__all__ = ["bias_of", "has_mask", "is_plain_linear", "mask_name", "mask_of", "weight_of"]


def is_plain_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` itself (parametrized or not), not a subclass of it."""
    return parametrize.type_before_parametrizations(module) is nn.Linear


def _mask_parametrization(module: nn.Module) -> tuple[int, Tensor] | None:
    """(position, mask) of the first parametrization of ``weight`` holding a ``mask``."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for i, p in enumerate(module.parametrizations.weight):
        mask = getattr(p, "mask", None)
        if isinstance(mask, Tensor):
            return i, mask
    return None


def mask_name(module: nn.Module) -> str | None:
    """The name of ``module``'s weight mask, relative to it (``None``: no mask)."""
    if getattr(module, MASK, None) is not None:
        return MASK
    found = _mask_parametrization(module)
    return None if found is None else f"parametrizations.weight.{found[0]}.mask"


def has_mask(module: nn.Module) -> bool:
    """Whether ``module`` carries a weight mask in one of the accepted forms."""
    return mask_name(module) is not None


def _raw_mask(module: nn.Module) -> object:
    mask = getattr(module, MASK, None)
    if mask is None:
        found = _mask_parametrization(module)
        mask = None if found is None else found[1]
    return mask


def mask_of(module: nn.Module) -> Tensor:
    """``module``'s weight mask as a bool tensor (all True when it has none).

    Raises ``ValueError`` when the mask does not have the weight's shape, or is not
    bool and holds a value other than 0 and 1."""
    mask, name = _raw_mask(module), mask_name(module)
    shape = tuple(module.weight.shape)
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=module.weight.device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != shape:
        raise ValueError(f"{name} must be a tensor with the weight's shape {shape}, got "
                         f"{tuple(getattr(mask, 'shape', ())) or type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"{name} must be a bool or 0/1 mask, got {mask.dtype}")
    bad = (mask != 0) & (mask != 1)
    if bool(bad.any()):
        raise ValueError(f"{name} must be a bool or 0/1 mask, found the value "
                         f"{mask[bad][0].item()!r}")
    return mask != 0


def weight_of(module: nn.Module) -> Tensor:
    """The weight to read at the mask's active entries (detached).

    ``torch.nn.utils.prune`` recomputes ``weight = weight_orig * weight_mask`` only in a
    forward pre-hook, so after an optimizer step ``weight`` is stale: read
    ``weight_orig``, which equals ``weight`` wherever the mask is 1."""
    orig = getattr(module, "weight_orig", None)
    return (orig if isinstance(orig, Tensor) else module.weight).detach()


def bias_of(module: nn.Module) -> Tensor | None:
    """The bias (detached, ``None`` if absent), up to date under ``torch.nn.utils.prune``."""
    orig, mask = getattr(module, "bias_orig", None), getattr(module, "bias_mask", None)
    if isinstance(orig, Tensor) and isinstance(mask, Tensor):
        return (orig * mask).detach()
    return None if module.bias is None else module.bias.detach()
