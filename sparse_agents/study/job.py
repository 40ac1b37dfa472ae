"""One study run (:class:`Job`) and its stable id; shared by the grid and the workloads.

The runner takes any :class:`StudyJob`: a grid point (:class:`Job`, its record in
``<out>/runs/<job id>.json``) or an RL benchmark run
(:class:`~sparse_agents.study.rl_runs.RLRunJob`, its files in its own folder)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sparse_agents.config import SparseConfig
from sparse_agents.study.store import read_result, result_path, write_json_atomic
from sparse_agents.updaters import DENSE


class StudyJob(Protocol):
    """What the runner needs of a job: a stable id, a seed, a JSON-able config and its
    record under a study's ``out`` (read, written atomically, cleared before a re-run)."""

    @property
    def job_id(self) -> str: ...

    @property
    def seed(self) -> int: ...

    def config(self) -> dict: ...

    def read_record(self, out: Path) -> dict | None: ...

    def write_record(self, out: Path, record: dict) -> None: ...

    def clear_record(self, out: Path) -> None: ...


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

    def read_record(self, out: Path) -> dict | None:
        """The stored record (``None``: none, or an unreadable one)."""
        return read_result(out, self.job_id)

    def scratch(self, out: Path) -> Path:
        """The job's own folder under ``out`` for what it keeps between attempts (a
        stream run's checkpoint); the runner removes it once the job's record is ok."""
        return Path(out) / "checkpoints" / self.job_id

    def clear_scratch(self, out: Path) -> None:
        """Remove the job's scratch folder (a retrain, or a job finished ok)."""
        shutil.rmtree(self.scratch(out), ignore_errors=True)

    def write_record(self, out: Path, record: dict) -> None:
        """Store ``record`` atomically."""
        write_json_atomic(result_path(out, self.job_id), record)

    def clear_record(self, out: Path) -> None:
        """Remove the stored record (a stale failure must not pass for a new run's)."""
        result_path(out, self.job_id).unlink(missing_ok=True)
