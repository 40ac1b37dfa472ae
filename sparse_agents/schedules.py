"""Drop-fraction and update-step schedules for topology updates."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine")


def _is_int(value: object) -> bool:
    """An integer (``5`` or ``5.0``), not a bool."""
    return _is_number(value) and int(value) == value


def _is_number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, numbers.Real)
            and not math.isnan(value))


@dataclass(frozen=True)
class UpdateSchedule:
    """When topology updates happen and how much they drop.

    An update runs before optimizer step ``s`` (1-based) when ``s % delta_t == 0``
    and ``s < t_end`` (``t_end=None``: never stop). The drop fraction at step ``s`` is
    ``drop_fraction`` (constant) or ``drop_fraction/2 * (1 + cos(pi * s / t_end))``
    (cosine; with ``t_end=None`` there is no horizon and it stays constant).
    """

    delta_t: int = 100
    t_end: int | None = None
    drop_fraction: float = 0.3
    kind: str = "cosine"

    def __post_init__(self) -> None:
        if not _is_int(self.delta_t) or self.delta_t < 1:
            raise ValueError(f"delta_t must be an integer >= 1, got {self.delta_t!r}")
        if self.t_end is not None and (not _is_int(self.t_end) or self.t_end < 1):
            raise ValueError(f"t_end must be None or an integer >= 1, got {self.t_end!r}")
        if not _is_number(self.drop_fraction) or not 0.0 < float(self.drop_fraction) < 1.0:
            raise ValueError(f"drop_fraction must be in (0, 1), got {self.drop_fraction!r}")
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")

    def is_update_step(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) is preceded by a topology update."""
        if step < 1 or step % self.delta_t:
            return False
        return self.t_end is None or step < self.t_end

    def fraction(self, step: int) -> float:
        """Drop fraction at optimizer step ``step``."""
        if self.kind == "constant" or self.t_end is None:
            return float(self.drop_fraction)
        progress = min(max(step, 0), self.t_end) / self.t_end
        return float(self.drop_fraction) / 2.0 * (1.0 + math.cos(math.pi * progress))

    def n_updates(self, total_steps: int) -> int:
        """How many updates happen within optimizer steps ``1..total_steps``."""
        last = total_steps if self.t_end is None else min(total_steps, self.t_end - 1)
        return max(0, last // self.delta_t)
