"""Dormant neurons (Sokar et al., ICML 2023, "The Dormant Neuron Phenomenon in Deep RL").

A hidden neuron's score is its mean absolute activation over a batch divided by the mean
of that over its layer; it is tau-dormant when the score is <= ``tau``.
:class:`DormantTracker` measures the activations where a layer reads them: a forward
pre-hook on each tracked layer records the mean absolute value of every input feature
over the batch, so the features are the post-activation outputs of the layer before,
whatever its activation function. Inputs that no parameter produced (observations,
anything computed without autograd) are not neurons and are left out: only forwards run
with gradients enabled are recorded, and a layer whose input once had no ``grad_fn`` there
is an input layer from then on (a SAC critic's first layer reads the buffer's actions in
its own loss, the actor's actions in the actor's). A neuron that k tracked layers read
counts k times; a layer after a frozen (``requires_grad=False``) one counts as an input
layer. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["DORMANT_TAU", "DormantTracker", "dormant_fraction", "neuron_scores"]

#: the threshold ``tau`` of the reported fraction (Sokar et al. use 0 to 0.1; 0.025 in
#: their analysis of DQN)
DORMANT_TAU = 0.025


def neuron_scores(mean_abs: torch.Tensor) -> torch.Tensor:
    """ReDo's scores of one layer's neurons from their mean absolute activations (all
    zero when every neuron is silent)."""
    mean_abs = mean_abs.float()
    total = mean_abs.mean()
    return mean_abs / total if total > 0 else torch.zeros_like(mean_abs)


def dormant_fraction(mean_abs: torch.Tensor, tau: float = DORMANT_TAU) -> float:
    """The fraction of one layer's neurons whose score is <= ``tau``."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    return float((neuron_scores(mean_abs) <= tau).float().mean())


def _feature_means(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean absolute value of every feature (along ``dim``) over the other dims."""
    x = x.detach()
    dims = [d for d in range(x.dim()) if d != dim % x.dim()]
    return x.abs().mean(dim=dims) if dims else x.abs()


class _Record:
    """The pre-hook of one tracked layer (a class, so that a pickled model keeps it)."""

    def __init__(self, tracker: DormantTracker, name: str, module: nn.Module) -> None:
        self.tracker, self.name = tracker, name  # a deep copy of the model copies both
        self.dim = -1 if isinstance(module, nn.Linear) else 1  # Linear: last; Conv: channels

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if args:
            self.tracker.observe(self.name, args[0], self.dim)


class DormantTracker:
    """Forward pre-hooks on ``modules`` recording their input features' mean absolute
    value, at most once per ``every`` calls of :meth:`tick` (one per optimizer step)."""

    def __init__(self, modules: Sequence[tuple[str, nn.Module]], every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self._names = [name for name, _ in modules]
        self._means: dict[str, torch.Tensor] = {}
        #: layers seen reading a tensor without ``grad_fn``: their inputs are not neurons
        self._inputs: set[str] = set()
        self._ticks = 0
        self._armed = dict.fromkeys(self._names, True)
        self._handles = [m.register_forward_pre_hook(_Record(self, name, m))
                         for name, m in modules]

    def observe(self, name: str, x: Any, dim: int = -1) -> None:
        """Record layer ``name``'s input ``x`` (features along ``dim``) if it is due and
        the forward runs with gradients."""
        if not torch.is_grad_enabled() or not isinstance(x, torch.Tensor) or x.dim() == 0:
            return
        if x.grad_fn is None:  # once read from outside autograd, an input layer for good
            self._inputs.add(name)
        if self._armed.get(name):
            self._armed[name] = False
            self._means[name] = _feature_means(x, dim)

    def tick(self) -> None:
        """One optimizer step: every ``every`` ticks the next forward of each layer is
        recorded again."""
        self._ticks += 1
        if self._ticks % self.every == 0:
            self._armed = dict.fromkeys(self._names, True)

    def metrics(self, tau: float = DORMANT_TAU) -> dict[str, float]:
        """``dormant/<layer>`` for every tracked layer whose recorded input is hidden
        neurons, and ``dormant_fraction`` over all of them (``nan`` before any forward
        with gradients)."""
        out: dict[str, float] = {}
        dormant = total = 0
        for name in self._names:
            means = self._means.get(name)
            if means is None or name in self._inputs:
                continue
            frac = dormant_fraction(means, tau)
            out[f"dormant/{name}"] = frac
            dormant += frac * means.numel()
            total += means.numel()
        out["dormant_fraction"] = dormant / total if total else float("nan")
        return out

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`metrics` and the recording schedule depend on (a checkpoint)."""
        return {"means": {k: v.clone() for k, v in self._means.items()},
                "inputs": sorted(self._inputs), "ticks": self._ticks,
                "armed": dict(self._armed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a tracker on the same layers."""
        unknown = (set(state["means"]) | set(state["armed"])) - set(self._names)
        if unknown:
            raise ValueError(f"state names layers this tracker does not track: "
                             f"{sorted(unknown)}")
        self._means = {k: v.clone() for k, v in state["means"].items()}
        self._inputs = set(state["inputs"])
        self._ticks = int(state["ticks"])
        self._armed = {**dict.fromkeys(self._names, True), **state["armed"]}

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
