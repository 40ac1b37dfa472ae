"""``lr_scale``: a sparse policy's optimizers step at ``lr_scale`` times the learning rate
the algorithm sets. SB3 writes its schedule's value into every param group before each
``train()`` (``BaseAlgorithm._update_learning_rate``), so a policy cannot change the
learning rate through its optimizer's ``lr``: the scale is applied around each step."""

from __future__ import annotations

import math

import torch


def check_lr_scale(scale: object) -> float:
    """``scale`` as a float; ``ValueError`` unless it is a finite number > 0."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"lr_scale must be a finite number > 0, got {scale!r}")
    return float(scale)


def scale_learning_rate(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """Make every ``optimizer.step()`` use ``scale`` x each group's ``lr``. Between steps
    the groups hold the unscaled value (the one the algorithm set and logs)."""
    if scale == 1.0:
        return
    unscaled: list = []

    def before(opt, args, kwargs) -> None:
        unscaled[:] = [group["lr"] for group in opt.param_groups]
        for group in opt.param_groups:
            group["lr"] = group["lr"] * scale

    def after(opt, args, kwargs) -> None:
        for group, lr in zip(opt.param_groups, unscaled, strict=True):
            group["lr"] = lr

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
