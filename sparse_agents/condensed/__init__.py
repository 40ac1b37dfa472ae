"""Condensed inference copies of sparse models.

>>> from sparse_agents.condensed import condense
>>> fast = condense(model)      # outputs equal model(x); masks stay the truth
>>> ...train model...
>>> fast.refresh()              # re-gather values; indices only if a mask changed

See ``docs/condensed.md`` for masks accepted, layouts, kernels and measured speed-ups.
"""

from sparse_agents.condensed.convert import (
    ELEMENTWISE,
    CondenseReport,
    CondenseWarning,
    condense,
    condense_linear,
    refresh,
)
from sparse_agents.condensed.kernels import (
    KERNELS,
    NUMBA_AVAILABLE,
    clear_kernel_cache,
    kernel_choices,
)
from sparse_agents.condensed.layers import CondensedLinear, PaddedCondensedLinear, index_dtype

__all__ = [
    "ELEMENTWISE",
    "KERNELS",
    "NUMBA_AVAILABLE",
    "CondenseReport",
    "CondenseWarning",
    "CondensedLinear",
    "PaddedCondensedLinear",
    "clear_kernel_cache",
    "condense",
    "condense_linear",
    "index_dtype",
    "kernel_choices",
    "refresh",
]
