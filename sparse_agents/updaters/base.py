"""Shared prune/grow helpers on tensors.

All helpers take 2-D views ``[n_out, fan_in]`` (a conv weight is viewed as
``(out_channels, in_channels * prod(kernel))``) and non-negative scores (magnitudes),
and break ties by a seeded random order, never by position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor


class Updater(Protocol):
    """One topology update of one layer: returns the new boolean mask."""

    def __call__(
        self,
        weight: Tensor,
        mask: Tensor,
        grad: Tensor | None,
        n_drop: int,
        generator: torch.Generator,
        **options,
    ) -> Tensor: ...


def as_matrix(t: Tensor) -> Tensor:
    """View a weight-shaped tensor as ``[n_out, fan_in]``."""
    return t.reshape(t.shape[0], -1)


def tie_break_keys(scores: Tensor, generator: torch.Generator,
                   candidates: Tensor | None = None) -> Tensor:
    """Unique int64 sort keys ordering non-negative ``scores`` exactly, ties in seeded
    random order; non-candidates get key -1 (below every candidate).

    The float32 bit pattern of a non-negative float is monotonic in its value, so
    ``bits << 32 | random_rank`` orders by score first and breaks every tie by a
    random permutation, never by position.
    """
    values = scores.detach().float() + 0.0  # -0.0 -> +0.0
    if bool((values < 0).any()):
        raise ValueError("scores must be non-negative (magnitudes or counts)")
    perm = torch.randperm(values.numel(), generator=generator).to(values.device)
    keys = (values.view(torch.int32).to(torch.int64) << 32) | perm.reshape(values.shape)
    if candidates is not None:
        keys = keys.masked_fill(~candidates, -1)
    return keys


def row_topk(scores: Tensor, k: Tensor | int, generator: torch.Generator,
             candidates: Tensor | None = None) -> Tensor:
    """Boolean mask of the top-``k[i]`` candidate entries of each row of ``scores`` (2-D,
    non-negative), ties broken in seeded random order.

    ``k`` is an int or a per-row integer tensor; it is clipped to the number of
    candidates in the row, so non-candidates are never chosen.
    """
    n_rows, n_cols = scores.shape
    if candidates is not None:
        n_cand = candidates.sum(dim=1)
    else:
        n_cand = torch.full((n_rows,), n_cols, device=scores.device)
    k = torch.as_tensor(k, device=scores.device).expand(n_rows)
    k = torch.minimum(k, n_cand)
    out = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    k_max = int(k.max()) if n_rows else 0
    if k_max == 0:
        return out
    keys = tie_break_keys(scores, generator, candidates)
    top = torch.topk(keys, k_max, dim=1, sorted=True).indices
    take = torch.arange(k_max, device=scores.device).unsqueeze(0) < k.unsqueeze(1)
    out.scatter_(1, top, take)
    return out


def topk(scores: Tensor, k: int, generator: torch.Generator,
         candidates: Tensor | None = None) -> Tensor:
    """Boolean mask (shape of ``scores``) of the global top-``k`` candidate entries."""
    flat = scores.reshape(1, -1)
    cand = None if candidates is None else candidates.reshape(1, -1)
    return row_topk(flat, int(k), generator, cand).reshape(scores.shape)


def drop_smallest_magnitude(weight: Tensor, mask: Tensor, n_drop: int,
                            generator: torch.Generator) -> Tensor:
    """Mask after dropping the ``n_drop`` active entries of smallest ``|w|``."""
    n_keep = int(mask.sum()) - int(n_drop)
    return topk(weight.detach().abs(), n_keep, generator, candidates=mask)


def grow(scores: Tensor, kept: Tensor, n_grow: int, generator: torch.Generator,
         allowed: Tensor | None = None) -> Tensor:
    """Mask ``kept`` plus the ``n_grow`` entries outside it with the largest ``scores``.

    ``allowed`` (optional bool mask) restricts where growth may happen; if it holds
    fewer than ``n_grow`` free entries, fewer are grown.
    """
    return kept | topk(scores, n_grow, generator, candidates=growable(kept, allowed))


def growable(kept: Tensor, allowed: Tensor | None) -> Tensor:
    """Entries outside ``kept`` that ``allowed`` (``None``: all) permits to grow."""
    return ~kept if allowed is None else ~kept & allowed


def check_inputs(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
                 needs_grad: bool, allowed: Tensor | None = None) -> None:
    """Raise ``ValueError`` for mismatched shapes or an impossible ``n_drop``."""
    if mask.shape != weight.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor of the weight's shape {tuple(weight.shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    if needs_grad and grad is None:
        raise ValueError("grad is required by this updater (gradient-based growth), got None")
    if grad is not None and grad.shape != weight.shape:
        raise ValueError(f"grad must have the weight's shape {tuple(weight.shape)}, "
                         f"got {tuple(grad.shape)}")
    if allowed is not None and (allowed.shape != weight.shape or allowed.dtype != torch.bool):
        raise ValueError(f"allowed must be a bool tensor of the weight's shape "
                         f"{tuple(weight.shape)}, got {allowed.dtype} {tuple(allowed.shape)}")
    n_active = int(mask.sum())
    if not 0 <= n_drop <= n_active:
        raise ValueError(f"n_drop must be in [0, {n_active}] (active weights), got {n_drop}")


def prune_and_grow(grow_scores: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
    """Build an unstructured updater: magnitude drop, then grow by ``grow_scores``.

    ``grow_scores(weight, grad)`` returns the growth score of every entry.
    """

    def update(weight: Tensor, mask: Tensor, grad: Tensor | None, n_drop: int,
               generator: torch.Generator, allowed: Tensor | None = None,
               **_: object) -> Tensor:
        kept = drop_smallest_magnitude(weight, mask, n_drop, generator)
        return grow(grow_scores(weight, grad), kept, n_drop, generator, allowed)

    return update
