"""An optimizer stepping condensed layers' ``weight_values`` where it held ``weight``.

:class:`OptimizerBinding` swaps the parameter in the optimizer's param groups (same
position, so the optimizer's ``state_dict`` keeps its layout), moves any existing state
to the compact shape, and hooks the optimizer's ``state_dict`` / ``load_state_dict`` so
that state is written weight-shaped (zeros, or the optimizer's initial value, at
inactive entries) and read back compact: a checkpoint of either compute mode loads
under the other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_agents.compute.linear import CondensedLinearTraining, map_state, swap_param
from sparse_agents.optim_state import reset_value

__all__ = ["OptimizerBinding", "release"]


def _index(optimizer: torch.optim.Optimizer) -> dict[int, int]:
    """``id(param)`` -> its index in the optimizer's ``state_dict``."""
    out: dict[int, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            out.setdefault(id(p), len(out))
    return out


@torch.no_grad()
def release(optimizer: torch.optim.Optimizer, layer: CondensedLinearTraining,
            weight: Tensor) -> bool:
    """If ``optimizer`` steps ``layer.values`` (e.g. an optimizer built from
    ``model.parameters()`` while the layer trained condensed), make it step ``weight``
    instead, with weight-shaped state. Returns whether it did."""
    values = layer.values
    if not swap_param(optimizer, values, weight):
        return False
    state = optimizer.state.pop(values, None)
    if state:
        optimizer.state[weight] = map_state(
            state, values.shape,
            lambda k, v: layer.dense_state(v, reset_value(optimizer, weight, k)))
    return True


class OptimizerBinding:
    """The condensed layers an optimizer steps (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.layers: list[CondensedLinearTraining] = []
        self._handles = [
            optimizer.register_state_dict_post_hook(self._expand),
            optimizer.register_load_state_dict_pre_hook(self._compact),
        ]

    @torch.no_grad()
    def bind(self, layer: CondensedLinearTraining, weight: Tensor) -> None:
        """The optimizer steps ``layer.values`` in place of ``weight``."""
        opt = self.optimizer
        if not swap_param(opt, weight, layer.values):
            raise ValueError("the optimizer does not train this layer's weight")
        state = opt.state.pop(weight, None)
        if state:
            opt.state[layer.values] = map_state(state, weight.shape,
                                                 lambda k, v: layer.compact_state(v))
        self.layers.append(layer)

    def unbind(self, layer: CondensedLinearTraining, weight: Tensor) -> None:
        """The optimizer steps ``weight`` again, with weight-shaped state."""
        release(self.optimizer, layer, weight)
        self.layers.remove(layer)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _bound(self) -> dict[int, CondensedLinearTraining]:
        index = _index(self.optimizer)
        return {index[id(x.values)]: x for x in self.layers if id(x.values) in index}

    def _convert(self, state_dict: dict, dense: bool) -> dict:
        """``state_dict`` with the bound layers' state written weight-shaped (``dense``)
        or read back compact."""
        opt = self.optimizer
        state = dict(state_dict["state"])
        for i, layer in self._bound().items():
            if state.get(i):
                state[i] = (map_state(state[i], layer.values.shape, lambda k, v, x=layer:
                                       x.dense_state(v, reset_value(opt, x.values, k)))
                            if dense else
                            map_state(state[i], layer.module.weight.shape,
                                       lambda k, v, x=layer: x.compact_state(v)))
        return {**state_dict, "state": state}

    def _expand(self, optimizer, state_dict: dict) -> dict:
        return self._convert(state_dict, dense=True)

    def _compact(self, optimizer, state_dict: dict) -> dict:
        return self._convert(state_dict, dense=False)
