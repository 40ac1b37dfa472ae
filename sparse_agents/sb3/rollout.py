"""Condensed rollout: ``predict`` and rollout collection through a condensed copy.

With ``policy_kwargs=dict(condensed_rollout=True)`` a sparse policy, when it is in
eval mode with gradients off (SB3's ``predict`` and ``collect_rollouts``), runs its
``forward``/``_predict`` on ``sparse_agents.condensed.condense(policy)``. The copy is
refreshed lazily: before use, if any parameter or buffer of the policy changed since
the last refresh (PyTorch version counters: topology updates, polyak updates,
``load_state_dict`` and single-tensor/foreach optimizer steps bump them) or one of the
policy's optimizers stepped (a step hook: fused Adam writes the weights without bumping
their version counters). gSDE policies are never redirected (the copy would not see
``reset_noise``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch import nn

from sparse_agents.condensed import condense

__all__ = ["CondensedRollout"]


class CondensedRollout:
    """The condensed copy of a policy, refreshed whenever the policy changed."""

    def __init__(self, policy: nn.Module,
                 optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        self._policy = weakref.ref(policy)
        self.copy: nn.Module | None = None
        self._stamp: tuple | None = None
        self.refreshes = 0
        self.available = not _uses_sde(policy)
        self._steps = 0
        for optimizer in optimizers:
            optimizer.register_step_post_hook(self._count_step)

    def _count_step(self, optimizer, args, kwargs) -> None:
        self._steps += 1

    def _version(self, policy: nn.Module) -> tuple:
        return (self._steps, *(t._version for t in policy.parameters()),
                *(t._version for t in policy.buffers()))

    def get(self) -> nn.Module | None:
        """The up-to-date condensed copy, or ``None`` (use the policy itself)."""
        policy = self._policy()
        if policy is None or not self.available:
            return None
        if self.copy is None:
            self.copy = condense(policy, warn=False)
            self._stamp = self._version(policy)
            return self.copy
        stamp = self._version(policy)
        if stamp != self._stamp:
            self.copy.refresh()
            self.refreshes += 1
            self._stamp = stamp
        return self.copy


def _uses_sde(policy: nn.Module) -> bool:
    actor = getattr(policy, "actor", None)
    return bool(getattr(policy, "use_sde", False) or getattr(actor, "use_sde", False))
