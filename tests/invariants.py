"""The one invariant checker of the tests (invariants 1 and 2 of docs/architecture.md)."""

from __future__ import annotations

from sparse_agents.optim_state import reset_value, weight_shaped_state
from sparse_agents.updaters.base import as_matrix


def check_topology(topo, optimizer=None, *, room: dict | None = None) -> None:
    """After an optimizer step or a topology update, for every masked layer of ``topo``:

    1. weights outside the mask (and outside frozen entries) are exactly 0, and their
       optimizer state is at its reset value, 0 for moments (``optimizer``: default the
       hooked one);
    2. the layer keeps exactly its budget or, for a constant fan-in updater, every
       alive row has fan-in exactly ``k = budget // alive rows`` (a row may end lower
       only where ``room[name]``, its growable entries per row, runs out), and a layer
       SRigL may not ablate keeps ``min(rows, budget)`` rows alive.
    """
    optimizer = optimizer if optimizer is not None else topo.optimizer
    for layer in topo.layers:
        w, mask = layer.weight.detach(), layer.mask
        zero = ~mask if layer.frozen is None else ~mask & ~layer.frozen
        assert bool((w[zero] == 0).all()), f"{layer.name}: masked-out weight not 0"
        state = weight_shaped_state(optimizer, layer.weight) if optimizer is not None else {}
        for key, value in state.items():
            fill = reset_value(optimizer, layer.weight, key)  # 0, or a step size's initial
            assert bool((value[~mask] == fill).all()), f"{layer.name}: stale state {key}"
        if not topo.spec.constant_fan_in:
            assert int(mask.sum()) == layer.budget, f"{layer.name}: budget drifted"
            continue
        fan = as_matrix(mask).sum(1)
        alive = fan > 0
        if not bool(alive.any()):
            continue
        if room is None:
            k = layer.budget // int(alive.sum())
            assert bool((fan[alive] == k).all()), f"{layer.name}: fan-in not constant"
            if not layer.allow_ablation:
                want = min(mask.shape[0], layer.budget)
                assert int(alive.sum()) == want, f"{layer.name}: output layer ablated"
        else:
            k = int(fan[alive].max())
            short = fan[alive] == room[layer.name][alive]
            assert bool(((fan[alive] == k) | short).all()), f"{layer.name}: fan-in not k"
