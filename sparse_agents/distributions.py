"""Layer-wise density allocation: ``shapes -> densities`` (uniform, ER, ERK).

Pure functions; no model needed. ER/ERK follow the RigL reference semantics
(``get_sparsities_erdos_renyi``): solve for a scale ``eps`` so that the total count
of kept weights equals the global target, and while some layer would get a density
above 1, move *every* layer attaining the maximum raw score to the dense set.
"""

from __future__ import annotations

import math
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
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    sparsity = check_sparsity(sparsity)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not shapes:
        raise ValueError("shapes must hold at least one weight shape, got none")
    for shape in shapes:
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"shapes must be weight shapes with >= 2 positive dims, got {shape}")
    if not (power > 0):
        raise ValueError(f"power must be > 0, got {power!r}")
    dense_set = set(int(i) for i in dense)
    bad = [i for i in dense_set if not 0 <= i < len(shapes)]
    if bad:
        raise ValueError(f"dense holds layer indices in [0, {len(shapes)}), got {sorted(bad)}")

    density = 1.0 - sparsity
    sizes = [_numel(s) for s in shapes]
    total = sum(sizes)
    n_dense = sum(sizes[i] for i in dense_set)
    target = density * total

    if method == "uniform":
        out = [1.0 if i in dense_set else density for i in range(len(shapes))]
        if renormalise and dense_set:
            n_sparse = total - n_dense
            if n_sparse == 0:
                return out
            d = (target - n_dense) / n_sparse
            if d <= 0:
                raise ValueError(
                    f"dense layers hold {n_dense} weights, more than the global budget "
                    f"{round(target)} at sparsity={sparsity}: lower sparsity or dense"
                )
            d = min(d, 1.0)
            out = [1.0 if i in dense_set else d for i in range(len(shapes))]
        return out

    if n_dense > target:
        raise ValueError(
            f"dense layers hold {n_dense} weights, more than the global budget "
            f"{round(target)} at sparsity={sparsity}: lower sparsity or dense"
        )
    scores = [raw_score(s, method, power) for s in shapes]
    dense_now = set(dense_set)
    while True:
        sparse_idx = [i for i in range(len(shapes)) if i not in dense_now]
        if not sparse_idx:
            return [1.0] * len(shapes)
        rhs = target - sum(sizes[i] for i in dense_now)
        divisor = sum(scores[i] * sizes[i] for i in sparse_idx)
        eps = rhs / divisor
        top = max(scores[i] for i in sparse_idx)
        if eps * top > 1.0:
            # Every layer attaining the maximum score goes dense, not just the first.
            dense_now |= {i for i in sparse_idx if math.isclose(scores[i], top, rel_tol=1e-12)}
            continue
        return [1.0 if i in dense_now else eps * scores[i] for i in range(len(shapes))]


def kept_counts(shapes: Iterable[Sequence[int]], densities: Iterable[float]) -> list[int]:
    """Number of weights each layer keeps: ``round(density * numel)``, at least 1."""
    pairs = zip(shapes, densities, strict=True)
    return [max(1, min(_numel(s), round(d * _numel(s)))) for s, d in pairs]
