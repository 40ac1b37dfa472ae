"""Which of a model's layers ran last in its forward pass (the output layer), recorded by
forward hooks, since registration order need not be forward order."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class ForwardOrder:
    """Forward hooks on ``modules`` recording when each one last ran."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self._count = 0
        self._last: dict[int, int] = {}
        self._handles = [m.register_forward_hook(self._hook(i))
                         for i, m in enumerate(self.modules)]

    def _hook(self, index: int):
        def hook(module, args, output) -> None:
            self._count += 1
            self._last[index] = self._count

        return hook

    def last(self) -> nn.Module | None:
        """The module that ran most recently (``None``: no forward seen yet)."""
        if not self._last:
            return None
        return self.modules[max(self._last, key=self._last.__getitem__)]

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
