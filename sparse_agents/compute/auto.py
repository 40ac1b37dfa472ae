"""``compute="auto"``'s rule: which training batches of a layer the condensed kernels
compute, from the layer's size, its density and the batch size (measured with
``scripts/bench_training.py --parts layers``; docs/training.md, "When auto runs the
kernels"). A fixed rule, so that what a run computes never depends on a timing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["AUTO_LARGE_BATCH", "AUTO_MAX_DENSITY", "AUTO_MIN_WEIGHTS",
           "AUTO_MIN_WEIGHTS_LARGE_BATCH", "AUTO_SMALL_LAYER", "AutoKernels", "auto_kernels"]

#: the kernels compute a layer of at most this density ...
AUTO_MAX_DENSITY = 0.2
#: ... from this many weights at any batch size ...
AUTO_MIN_WEIGHTS = 1 << 17
#: ... and from this many at batches of ``AUTO_LARGE_BATCH`` samples or more
AUTO_MIN_WEIGHTS_LARGE_BATCH = 1 << 16
AUTO_LARGE_BATCH = 128
#: at those batch sizes also layers below this many weights (any density) whenever
#: another layer of the same topology runs on the kernels: the network then stays on
#: the transposed layout and on one thread pool (measured faster on SAC)
AUTO_SMALL_LAYER = 1 << 15


def auto_kernels(weights: int, active: int, batch: int) -> bool:
    """Whether the kernels compute a training batch of ``batch`` samples for a layer of
    ``weights`` weights, ``active`` of them active, on its own."""
    if active > AUTO_MAX_DENSITY * weights:
        return False
    return weights >= AUTO_MIN_WEIGHTS or (weights >= AUTO_MIN_WEIGHTS_LARGE_BATCH
                                          and batch >= AUTO_LARGE_BATCH)


@dataclass(frozen=True)
class AutoKernels:
    """The rule for one layer of a topology: ``(weights, active)`` of the layer and of
    the topology's other layers; called with a batch size."""

    weights: int
    active: int
    others: Sequence[tuple[int, int]] = ()

    def __call__(self, batch: int) -> bool:
        if auto_kernels(self.weights, self.active, batch):
            return True
        return (batch >= AUTO_LARGE_BATCH and self.weights < AUTO_SMALL_LAYER
                and any(auto_kernels(w, a, batch) for w, a in self.others))
