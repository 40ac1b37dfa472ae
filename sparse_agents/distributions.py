"""Layer-wise density allocation: ``shapes -> densities`` (uniform, ER, ERK).

Pure functions; no model needed. ER/ERK follow the RigL reference semantics
(``get_sparsities_erdos_renyi``): solve for a scale ``eps`` so that the total count
of kept weights equals the global target, and while some layer would get a density
above 1, move *every* layer attaining the maximum raw score to the dense set.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

METHODS = ("uniform", "er", "erk")


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Return ``sparsity`` as float, or raise ``ValueError`` unless it lies in [0, 1)."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be in [0, 1), got {sparsity!r}")
    return value


def check_power(power: float) -> float:
    """Return ``power`` (the ER/ERK exponent), or raise ``ValueError`` unless it is > 0."""
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    return power


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))


def raw_score(shape: Sequence[int], method: str, power: float = 1.0) -> float:
    """Unnormalised density score of one layer: ``(sum(dims) / prod(dims)) ** power``.

    ``er`` uses only the two matrix dims (out, in); ``erk`` uses every dim, so that
    conv kernels (out, in, kh, kw) count their spatial extent.
    """
    dims = [int(s) for s in shape]
    if method == "er":
        dims = dims[:2]
    return (sum(dims) / math.prod(dims)) ** power


def validate_inputs(shapes: Iterable[Sequence[int]], sparsity: float, method: str,
                    dense: Iterable[int], power: float) -> tuple[list[tuple[int, ...]], float,
                                                                 set[int]]:
    """Checked ``(shapes as int tuples, sparsity as float, dense index set)``.

    Raises ``ValueError`` naming the parameter and its allowed range.
    """
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    sparsity = check_sparsity(sparsity)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not shapes:
        raise ValueError("shapes must hold at least one weight shape, got none")
    for shape in shapes:
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"shapes must be weight shapes with >= 2 positive dims, got {shape}")
    check_power(power)
    dense_set = set(int(i) for i in dense)
    bad = [i for i in dense_set if not 0 <= i < len(shapes)]
    if bad:
        raise ValueError(f"dense holds layer indices in [0, {len(shapes)}), got {sorted(bad)}")
    return shapes, sparsity, dense_set


def over_budget_error(n_dense: int, target: float, sparsity: float) -> ValueError:
    """The error for dense layers holding more weights than the global budget."""
    return ValueError(
        f"dense layers hold {n_dense} weights, more than the global budget "
        f"{round(target)} at sparsity={sparsity}: lower sparsity or dense"
    )


def dense_fits_budget(sizes: Sequence[int], dense: Iterable[int], sparsity: float) -> bool:
    """Whether the layers ``dense``, kept whole, fit in the global budget of ``1 -
    sparsity`` of all ``sizes`` (the rule ER/ERK allocation and the SB3 policies'
    ``dense_input=None`` share)."""
    return sum(sizes[i] for i in set(dense)) <= (1.0 - sparsity) * sum(sizes)


def uniform_densities(sizes: Sequence[int], sparsity: float, dense: set[int],
                      renormalise: bool) -> list[float]:
    """Every layer at ``1 - sparsity``, the ``dense`` ones at 1.0.

    With ``renormalise``, the other layers share what the dense ones leave of the global
    target ``(1 - sparsity) * sum(sizes)`` (capped at density 1.0).
    """
    density = 1.0 - sparsity
    out = [1.0 if i in dense else density for i in range(len(sizes))]
    n_sparse = sum(n for i, n in enumerate(sizes) if i not in dense)
    if not (renormalise and dense) or n_sparse == 0:
        return out
    n_dense = sum(sizes) - n_sparse
    target = density * sum(sizes)
    d = (target - n_dense) / n_sparse
    if d <= 0:
        raise over_budget_error(n_dense, target, sparsity)
    return [1.0 if i in dense else min(d, 1.0) for i in range(len(sizes))]


def erk_scale(scores: Sequence[float], sizes: Sequence[int], target: float,
              dense: set[int]) -> float:
    """``eps`` with ``eps * sum_sparse(p_l * N_l) = target - sum_dense(N_l)``."""
    sparse_idx = [i for i in range(len(sizes)) if i not in dense]
    rhs = target - sum(sizes[i] for i in dense)
    return rhs / sum(scores[i] * sizes[i] for i in sparse_idx)


def erk_layers_to_densify(scores: Sequence[float], sizes: Sequence[int], target: float,
                          dense: set[int]) -> set[int]:
    """One iteration of the dense-set loop: the layers to move to the dense set now.

    Empty when no sparse layer would get a density ``eps * p_l`` above 1; otherwise
    *every* sparse layer attaining the maximum raw score (not just the first).
    """
    sparse_idx = [i for i in range(len(sizes)) if i not in dense]
    if not sparse_idx:
        return set()
    top = max(scores[i] for i in sparse_idx)
    if erk_scale(scores, sizes, target, dense) * top <= 1.0:
        return set()
    return {i for i in sparse_idx if math.isclose(scores[i], top, rel_tol=1e-12)}


def erk_dense_set(scores: Sequence[float], sizes: Sequence[int], target: float,
                  dense: set[int]) -> set[int]:
    """``dense`` grown until no sparse layer would get a density above 1."""
    dense = set(dense)
    while moved := erk_layers_to_densify(scores, sizes, target, dense):
        dense |= moved
    return dense


def erk_densities(scores: Sequence[float], sizes: Sequence[int], sparsity: float,
                  dense: set[int]) -> list[float]:
    """ER/ERK allocation: ``eps * p_l`` per sparse layer, 1.0 for the dense set, with the
    total kept count equal to ``(1 - sparsity) * sum(sizes)``.

    Raises ``ValueError`` when the explicitly ``dense`` layers exceed that budget.
    """
    target = (1.0 - sparsity) * sum(sizes)
    if not dense_fits_budget(sizes, dense, sparsity):
        raise over_budget_error(sum(sizes[i] for i in dense), target, sparsity)
    dense_all = erk_dense_set(scores, sizes, target, dense)
    if len(dense_all) == len(sizes):
        return [1.0] * len(sizes)
    eps = erk_scale(scores, sizes, target, dense_all)
    return [1.0 if i in dense_all else eps * scores[i] for i in range(len(sizes))]


def layer_densities(
    shapes: Iterable[Sequence[int]],
    sparsity: float,
    method: str = "erk",
    dense: Iterable[int] = (),
    power: float = 1.0,
    renormalise: bool = False,
) -> list[float]:
    """Density of each layer so that the global density is ``1 - sparsity``.

    Args:
        shapes: weight shapes in model order (``(out, in)`` or ``(out, in, *kernel)``).
        sparsity: global sparsity in [0, 1).
        method: ``"uniform"``, ``"er"`` or ``"erk"``.
        dense: indices of layers kept at density 1.0.
        power: exponent applied to the ER/ERK raw score (1.0 is standard ERK).
        renormalise: for ``uniform`` only: raise the other layers' density so the
            global count still hits the target despite the dense layers.

    Returns:
        One density in (0, 1] per layer.
    """
    shapes, sparsity, dense_set = validate_inputs(shapes, sparsity, method, dense, power)
    sizes = [_numel(s) for s in shapes]
    if method == "uniform":
        return uniform_densities(sizes, sparsity, dense_set, renormalise)
    scores = [raw_score(s, method, power) for s in shapes]
    return erk_densities(scores, sizes, sparsity, dense_set)


def kept_counts(shapes: Iterable[Sequence[int]], densities: Iterable[float]) -> list[int]:
    """Number of weights each layer keeps: ``round(density * numel)``, at least 1."""
    pairs = zip(shapes, densities, strict=True)
    return [max(1, min(_numel(s), round(d * _numel(s)))) for s, d in pairs]


def constant_fan_in_counts(shapes: Iterable[Sequence[int]], counts: Sequence[int],
                           fixed: Iterable[int] = ()) -> list[int]:
    """Round each layer's count to whole rows (``k * n_out``, ``1 <= k <= fan_in``) for
    constant fan-in updaters, keeping the total as close to ``sum(counts)`` as rows allow.

    ``k = round(count / n_out)`` first (so a 4->64 layer at density 0.48 gets fan-in 2,
    not the floor's 1); then, while the total is off, the one-row step that brings it
    closer is taken in the layer it moves least from its own count (relative to that
    count). The total ends within half a row of the target. Layers in ``fixed`` (e.g.
    dense ones) and layers the distribution left at full density (ERK's cap: a small head
    such as PPO's 64->1 value layer) keep their count: rounding never thins a dense layer.
    """
    shapes = [tuple(int(x) for x in s) for s in shapes]
    fixed = set(fixed) | {i for i, (s, c) in enumerate(zip(shapes, counts, strict=True))
                          if c >= _numel(s)}
    rows = [s[0] for s in shapes]
    fan = [_numel(s) // s[0] for s in shapes]
    k = [0 if i in fixed else min(fan[i], max(1, math.floor(c / rows[i] + 0.5)))
         for i, c in enumerate(counts)]
    target = sum(counts)

    def total() -> int:
        return sum(counts[i] if i in fixed else k[i] * rows[i] for i in range(len(k)))

    while True:
        gap = target - total()
        step = 1 if gap > 0 else -1
        moves = [i for i in range(len(k)) if i not in fixed and 1 <= k[i] + step <= fan[i]
                 and abs(gap - step * rows[i]) < abs(gap)]
        if not moves:
            return [counts[i] if i in fixed else k[i] * rows[i] for i in range(len(k))]
        best = min(moves, key=lambda i: (abs((k[i] + step) * rows[i] - counts[i]) / counts[i], i))
        k[best] += step
