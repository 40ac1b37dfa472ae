"""One study run (:class:`Job`) and its stable id; shared by the grid and the workloads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparse_agents.config import SparseConfig
from sparse_agents.updaters import DENSE


@dataclass(frozen=True)
class Job:
    """One run: a point of the grid plus the settings shared by the whole study.

    Its topology options travel as one :class:`SparseConfig` (:meth:`sparse_config`),
    derived from the fields, so the id (a hash of the fields) does not depend on how
    the config spells them.
    """

    workload: str
    distribution: str
    sparsity: float
    updater: str
    seed: int
    settings: Mapping = field(default_factory=dict)

    def config(self) -> dict:
        """Canonical JSON-able configuration (what the id is derived from)."""
        return {
            "workload": self.workload, "distribution": self.distribution,
            "sparsity": float(self.sparsity), "updater": self.updater, "seed": int(self.seed),
            "settings": dict(sorted(self.settings.items())),
        }

    def sparse_config(self, **defaults: Any) -> SparseConfig | None:
        """The job's topology options as one config (``None`` for a dense job): the
        axes (sparsity, updater, distribution, seed) and every setting that is an
        option, over the workload's own ``defaults``."""
        if self.updater == DENSE:
            return None
        return SparseConfig.from_dict({
            **defaults, **SparseConfig.pick(self.settings), "sparsity": self.sparsity,
            "updater": self.updater, "distribution": self.distribution, "seed": self.seed})

    @property
    def job_id(self) -> str:
        """Readable and stable: the same configuration always gets the same id."""
        digest = hashlib.sha1(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()
        safe = self.workload.replace(":", "-").replace("/", "-")
        return (f"{safe}__{self.distribution}__{self.updater}__s{self.sparsity:g}"
                f"__seed{self.seed}__{digest[:8]}")
