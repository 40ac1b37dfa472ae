"""Consolidation penalties for continual learning, as optimizer hooks: L2 to the weights
at the end of the last task, and EWC (Kirkpatrick et al., PNAS 2017) weighted by a
diagonal Fisher estimate.

The penalty ``coef / 2 * sum(F * (w - w*)**2)`` enters as its gradient
``coef * F * (w - w*)``, added to each parameter's ``.grad`` by a step pre-hook, so the
user's training loop (an SB3 algorithm's ``train()``) does not change. ``F`` is 1 for
L2. For EWC it is the empirical Fisher of the task just trained: the mean of the squared
training gradients over the task's optimizer steps, recorded before the penalty is
added. Online EWC sums the tasks' estimates (Schwarz et al. 2018 with gamma = 1).
See docs/continual_rl.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["REGULARIZERS", "Consolidation"]

#: the penalties :class:`Consolidation` applies
REGULARIZERS = ("l2", "ewc")


class Consolidation:
    """Pull every parameter the ``optimizers`` train towards its value at the last
    :meth:`consolidate` (no pull before the first one).

    Args:
        optimizers: the optimizers whose parameters are consolidated (SAC: actor and
            critic).
        kind: ``"l2"`` or ``"ewc"``.
        coef: the penalty's weight, > 0.
    """

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer], kind: str = "l2",
                 coef: float = 1.0) -> None:
        if kind not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {kind!r}")
        if isinstance(coef, bool) or not isinstance(coef, int | float) or not coef > 0:
            raise ValueError(f"reg_coef must be a number > 0, got {coef!r}")
        self.kind = kind
        self.coef = float(coef)
        self.optimizers = list(optimizers)
        self.params: list[Tensor] = list(dict.fromkeys(
            p for opt in self.optimizers for g in opt.param_groups for p in g["params"]))
        self.anchor: list[Tensor] | None = None
        self.fisher: list[Tensor] | None = None
        self._grad_sq = [torch.zeros_like(p) for p in self.params] if kind == "ewc" else []
        self._steps = 0
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._handles = [opt.register_step_pre_hook(self._pre_step) for opt in self.optimizers]

    @torch.no_grad()
    def _pre_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        own = [self._index[id(p)] for g in optimizer.param_groups for p in g["params"]
               if p.grad is not None]
        if self.kind == "ewc":
            for i in own:
                self._grad_sq[i].add_(self.params[i].grad.square())
            if optimizer is self.optimizers[0]:
                self._steps += 1
        if self.anchor is None:
            return
        for i in own:
            p = self.params[i]
            pull = p.detach() - self.anchor[i]
            if self.fisher is not None:
                pull.mul_(self.fisher[i])
            p.grad.add_(pull, alpha=self.coef)

    @torch.no_grad()
    def consolidate(self) -> None:
        """End of a task: the current weights become the anchor; EWC adds the task's
        Fisher estimate to the running sum and starts a new one."""
        self.anchor = [p.detach().clone() for p in self.params]
        if self.kind == "ewc":
            task = [g / max(1, self._steps) for g in self._grad_sq]
            self.fisher = task if self.fisher is None else [
                f + t for f, t in zip(self.fisher, task, strict=True)]
            for g in self._grad_sq:
                g.zero_()
            self._steps = 0

    def penalty(self) -> float:
        """The current value of ``coef / 2 * sum(F * (w - w*)**2)`` (0 before
        :meth:`consolidate`)."""
        if self.anchor is None:
            return 0.0
        total = 0.0
        for i, p in enumerate(self.params):
            d = (p.detach() - self.anchor[i]).square()
            if self.fisher is not None:
                d = d * self.fisher[i]
            total += float(d.sum())
        return 0.5 * self.coef * total

    def state_dict(self) -> dict[str, Any]:
        """Anchor, Fisher sums and the running estimate (a checkpoint between tasks)."""

        def copy(ts: list[Tensor] | None) -> list[Tensor] | None:
            return None if ts is None else [t.detach().clone() for t in ts]
        return {"kind": self.kind, "anchor": copy(self.anchor), "fisher": copy(self.fisher),
                "grad_sq": copy(self._grad_sq), "steps": self._steps}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a consolidation of the same kind over
        parameters of the same shapes."""
        if state["kind"] != self.kind:
            raise ValueError(f"state is of a {state['kind']!r} consolidation, this one is "
                             f"{self.kind!r}")
        shapes = [tuple(p.shape) for p in self.params]
        for key in ("anchor", "fisher", "grad_sq"):
            ts = state[key]
            if ts and [tuple(t.shape) for t in ts] != shapes:
                raise ValueError(f"state[{key!r}] does not match the parameters' shapes")

        def own(ts: list[Tensor] | None) -> list[Tensor] | None:
            # None: no anchor / Fisher yet; []: L2 keeps no gradient statistics
            return ts if not ts else [t.to(p.device).clone()
                                      for t, p in zip(ts, self.params, strict=True)]
        self.anchor, self.fisher = own(state["anchor"]), own(state["fisher"])
        self._grad_sq = own(state["grad_sq"])
        self._steps = int(state["steps"])

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
