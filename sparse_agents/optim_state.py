"""What happens to an optimizer's per-weight state when a weight leaves or joins a mask.

Moment-like state (momentum, Adam moments, RMSprop averages, ...) goes to 0, so a
grown weight starts like a fresh one; step-size-like state goes back to the value the
optimizer initialises it with (Rprop's ``step_size`` is the learning rate, Adagrad's
``sum`` its ``initial_accumulator_value``), since 0 would freeze a grown weight. The
table per optimizer is in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: (optimizer class, state key) -> initial value of that state, from the param group
INITIAL_STATE: dict[tuple[type, str], Callable[[dict], float]] = {
    (torch.optim.Rprop, "step_size"): lambda group: float(group["lr"]),
    (torch.optim.Adagrad, "sum"): lambda group: float(group["initial_accumulator_value"]),
}

#: optimizers that, fed masked gradients, keep zero weights and zero state at zero
MASK_PRESERVING = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)


def _group_of(optimizer: torch.optim.Optimizer, param: Tensor) -> dict:
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    raise KeyError("parameter not trained by this optimizer")


def reset_value(optimizer: torch.optim.Optimizer, param: Tensor, key: str) -> float:
    """The value state ``key`` of ``param`` takes at an inactive (or newly grown) entry."""
    for (cls, name), initial in INITIAL_STATE.items():
        if name == key and isinstance(optimizer, cls):
            return initial(_group_of(optimizer, param))
    return 0.0


def weight_shaped_state(optimizer: torch.optim.Optimizer, param: Tensor
                        ) -> dict[str, Tensor]:
    """The optimizer's state tensors of ``param`` that have the weight's shape."""
    state = optimizer.state.get(param, {})
    return {k: v for k, v in state.items()
            if torch.is_tensor(v) and v.shape == param.shape}


@torch.no_grad()
def reset_state(optimizer: torch.optim.Optimizer | None, param: Tensor, keep: Tensor) -> None:
    """Reset the state of ``param`` at the entries outside ``keep`` (bool or 0/1 float of
    the weight's shape) to each state's reset value."""
    if optimizer is None:
        return
    for key, value in weight_shaped_state(optimizer, param).items():
        fill = reset_value(optimizer, param, key)
        if fill == 0.0:
            value.mul_(keep.to(value.dtype))
        else:
            value.masked_fill_(~keep.to(torch.bool), fill)


#: optimizers with a first moment (momentum) and how to read its coefficient
def first_moment_rule(optimizer: torch.optim.Optimizer, param: Tensor) -> tuple[float, float]:
    """``(decay, scale)`` of the optimizer's first moment of ``param``'s gradient,
    ``m <- decay * m + scale * g``: SGD ``(momentum, 1 - dampening)``, Adam-style
    ``(beta1, 1 - beta1)``. ``ValueError`` for an optimizer that keeps none."""
    group = _group_of(optimizer, param)
    if isinstance(optimizer, torch.optim.SGD) and float(group.get("momentum", 0.0)) > 0:
        return float(group["momentum"]), 1.0 - float(group.get("dampening", 0.0))
    betas = group.get("betas")
    if betas is not None:
        return float(betas[0]), 1.0 - float(betas[0])
    raise ValueError(
        f"optimizer {type(optimizer).__name__} keeps no first moment: updater 'momentum' "
        "grows where it is largest; use SGD with momentum > 0 or an Adam-style optimizer "
        "(Adam, AdamW, NAdam, RAdam, Adamax)")
