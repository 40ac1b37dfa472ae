"""SRigL (Lasby et al. 2024): constant fan-in RigL with neuron ablation.

One update of one layer, on the ``[n_out, fan_in]`` view:

1. ``K = budget // n_out`` (fan-in before ablation).
2. salient = top-``(n_active - n_drop)`` active entries by ``|w|`` united with the
   top-``n_drop`` of the rest by ``|grad|``; ``count[i]`` = salient entries of row i.
3. ablate row i when ``count[i] < max(1, int(gamma_sal * K))`` (never when
   ``allow_ablation`` is False, e.g. for the output layer); keep at least
   ``ceil(budget / fan_in)`` rows alive so the fan-in never exceeds the dense fan-in.
4. ``k = budget // n_alive``: the ablated rows' budget goes to the alive rows.
5. prune: ablated rows keep nothing; the alive rows' active entries keep the top
   ``n_active - n_drop`` by ``|w|`` over the layer (an ablated row's weights never use
   up this quota), then any alive row above ``k`` keeps its top-``k`` by ``|w|``.
6. grow: each alive row is filled up to exactly ``k`` by its largest-``|grad|``
   inactive entries.
7. Nothing is remembered: ablation is re-decided at every update.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sparse_agents.updaters.base import as_matrix, check_inputs, growable, row_topk, topk


def ablation_threshold(budget: int, n_out: int, gamma_sal: float) -> int:
    """Minimum salient count a row needs to stay alive: ``max(1, int(gamma_sal * K))``."""
    return max(1, int(gamma_sal * (budget // n_out)))


def min_alive_rows(budget: int, fan_in: int, n_out: int) -> int:
    """Fewest alive rows that keep the fan-in within the dense fan-in."""
    return min(n_out, max(1, math.ceil(budget / fan_in)))


def choose_alive(count: Tensor, budget: int, fan_in: int, gamma_sal: float,
                 allow_ablation: bool, generator: torch.Generator) -> Tensor:
    """Step 3: boolean per-row flag of the rows that stay alive.

    Never more rows than ``budget`` (each alive row needs fan-in >= 1), never fewer
    than ``ceil(budget / fan_in)`` (fan-in <= dense fan-in).
    """
    n_out = count.shape[0]
    if allow_ablation:
        alive = count >= ablation_threshold(budget, n_out, gamma_sal)
    else:
        alive = torch.ones(n_out, dtype=torch.bool, device=count.device)
    need = min_alive_rows(budget, fan_in, n_out)
    most = min(n_out, budget)
    n_alive = int(alive.sum())
    if n_alive < need:
        # Revive the most salient rows (seeded random order among equal counts).
        alive = topk(count.float(), need, generator)
    elif n_alive > most:
        alive = topk(count.float(), most, generator, candidates=alive)
    return alive


def srigl_update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
                 generator: torch.Generator, *, budget: int | None = None,
                 gamma_sal: float = 0.3, allow_ablation: bool = True,
                 allowed: Tensor | None = None, **_: object) -> Tensor:
    """New constant-fan-in mask; every alive row ends with fan-in ``budget // n_alive``.

    Args:
        budget: the layer's weight budget ``round(d * numel)``; defaults to the
            current active count.
        gamma_sal: ablation threshold as a fraction of ``K = budget // n_out``.
        allow_ablation: False never ablates a row (the output layer's default).
        allowed: optional bool mask of the entries growth may use (e.g. the free
            pool under per-task masks); a row short of allowed entries ends below k.
    """
    check_inputs(weight, mask, grad, n_drop, needs_grad=True, allowed=allowed)
    if not 0.0 <= gamma_sal <= 1.0:
        raise ValueError(f"gamma_sal must be in [0, 1], got {gamma_sal!r}")
    w = as_matrix(weight.detach()).abs()
    g = as_matrix(grad.detach()).abs()
    m = as_matrix(mask)
    n_out, fan_in = m.shape
    n_active = int(m.sum())
    budget = n_active if budget is None else int(budget)
    if not 1 <= budget <= m.numel():
        raise ValueError(f"budget must be in [1, {m.numel()}], got {budget}")

    # Step 2: salience, as RigL would decide it.
    kept = topk(w, n_active - n_drop, generator, candidates=m)
    free = growable(kept, None if allowed is None else as_matrix(allowed))
    salient = kept | topk(g, n_drop, generator, candidates=free)
    count = salient.sum(dim=1)

    # Steps 3-4: ablation and budget redistribution.
    alive = choose_alive(count, budget, fan_in, gamma_sal, allow_ablation, generator)
    k = min(fan_in, budget // int(alive.sum()))
    k_rows = torch.where(alive, k, 0)

    # Step 5: magnitude drop among the alive rows only (ablated rows keep nothing and
    # take no share of the quota), then surplus trimmed by magnitude per row.
    alive_active = m & alive.unsqueeze(1)
    survivors = topk(w, n_active - n_drop, generator, candidates=alive_active)
    pruned = row_topk(w, k_rows, generator, candidates=survivors)
    # Step 6: gradient-ordered growth up to exactly k.
    need = k_rows - pruned.sum(dim=1)
    grown = row_topk(g, need, generator,
                     candidates=growable(pruned, None if allowed is None else as_matrix(allowed))
                     & alive.unsqueeze(1))
    return (pruned | grown).reshape(mask.shape)


def constant_fan_in_mask(shape: torch.Size | tuple[int, ...], budget: int,
                         generator: torch.Generator, device=None,
                         free: Tensor | None = None) -> Tensor:
    """Random initial mask with every row at fan-in ``budget // n_out``, among ``free``
    entries (default: all; a row short of free entries gets what it has).

    When the budget is below one weight per row, ``budget`` random rows get fan-in 1.
    Drawn on the CPU, so one seed gives one mask on every device.
    """
    n_out = shape[0]
    fan_in = math.prod(shape[1:])
    free2 = None if free is None else free.detach().to("cpu", torch.bool).reshape(n_out, fan_in)
    k = budget // n_out
    if k >= 1:
        rows: Tensor | int = k
    else:
        rows = topk(torch.zeros(n_out), budget, generator,
                    candidates=None if free2 is None else free2.any(dim=1)).long()
    m = row_topk(torch.zeros(n_out, fan_in), rows, generator, candidates=free2)
    return m.reshape(shape).to(device)
