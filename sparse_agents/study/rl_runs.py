"""RL benchmark runs as study jobs: :class:`RLRunJob`, an
:class:`~sparse_agents.experiments.rl_run.RLRun` in its own folder of a sweep.

Its id is the folder's name (``<task>-<method>-s<seed>`` for ``scripts/bench_rl.py``,
``<config>-s<seed>`` for ``scripts/bench_rl_defaults.py``), the scheme the committed sweeps
under ``results/`` were made with, so a resumed sweep finds them. Its record is the folder's
``summary.json`` (written last and atomically by the training: it marks the run done), a
failure goes to ``failed.json``; whether a finished run was made with the sweep's settings
is :meth:`RLRunJob.differences`, checked before anything trains (:func:`refuse_stale`).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sparse_agents.experiments.rl_run import RLRun
from sparse_agents.study.store import write_json_atomic

__all__ = ["RLRunJob", "refuse_stale", "stale_runs"]

SUMMARY = "summary.json"
FAILED = "failed.json"


@dataclass(frozen=True)
class RLRunJob:
    """One training run of an RL sweep: ``run`` trains into ``<out>/<folder>``.

    ``task`` and ``method`` name the report's row, ``masked_total`` is the weights the
    sparse policy masks (equal-parameter rows); none of them changes what trains.
    """

    run: RLRun
    folder: str
    task: str = ""
    method: str = ""
    masked_total: int | None = None

    def __post_init__(self) -> None:
        name = PurePosixPath(self.folder).name
        if not name or name in (".", "..") or PurePosixPath(self.folder).is_absolute():
            raise ValueError(f"folder must be a relative path naming the run, got "
                             f"{self.folder!r}")

    @property
    def job_id(self) -> str:
        """The run folder's name: readable and, within a sweep, unique."""
        return PurePosixPath(self.folder).name

    @property
    def seed(self) -> int:
        return self.run.seed

    def path(self, out: str | Path) -> Path:
        """The run's folder under the sweep's ``out``."""
        return Path(out) / self.folder

    def config(self) -> dict:
        """JSON-able description (a sweep's ``study.json``)."""
        return {"folder": self.folder, "task": self.task, "method": self.method,
                **self.run.identity()}

    def read_record(self, out: Path) -> dict | None:
        """``ok`` with the summary as metrics when the folder holds ``summary.json``, the
        failure record when it holds ``failed.json``, else ``None``."""
        for name in (SUMMARY, FAILED):
            try:
                data = json.loads((self.path(out) / name).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if name == FAILED:
                return data
            return {"job_id": self.job_id, "config": self.config(), "status": "ok",
                    "error": None, "metrics": data}
        return None

    def write_record(self, out: Path, record: dict) -> None:
        """An ``ok`` record's metrics become ``summary.json``, a failure ``failed.json``."""
        folder = self.path(out)
        if record.get("status") == "ok":
            write_json_atomic(folder / SUMMARY, record["metrics"])
            (folder / FAILED).unlink(missing_ok=True)
        else:
            write_json_atomic(folder / FAILED, record)

    def clear_record(self, out: Path) -> None:
        """Forget the run (``summary.json`` and ``failed.json``): it trains again."""
        for name in (SUMMARY, FAILED):
            (self.path(out) / name).unlink(missing_ok=True)

    def run_in(self, out: Path) -> dict:
        """Train into the run's folder (quietly); the summary, with the row's task and
        method and the policy's forward FLOPs."""
        with contextlib.redirect_stdout(io.StringIO()):
            return self.run.train(self.path(out), plot=False, flops=True,
                                  extra={"task": self.task, "method": self.method})

    def differences(self, out: str | Path) -> list[str]:
        """How the finished run in the folder differs from ``run`` (empty: it matches, or
        nothing finished there)."""
        return self.run.differences(self.path(out))


def stale_runs(jobs: Sequence[RLRunJob], out: str | Path) -> dict[str, list[str]]:
    """``folder -> differences`` of every finished run made with other settings."""
    found = {str(job.path(out)): job.differences(out) for job in jobs}
    return {folder: diffs for folder, diffs in found.items() if diffs}


def refuse_stale(jobs: Sequence[RLRunJob], out: str | Path, hint: str) -> None:
    """Raise naming every finished run (folder -> differences) made with other settings,
    so a table never mixes two configurations."""
    stale = stale_runs(jobs, out)
    if stale:
        lines = "\n".join(f"  {folder}: {'; '.join(d)}" for folder, d in stale.items())
        raise ValueError(f"--resume: {len(stale)} finished run(s) were made with other "
                         f"settings (stored != this sweep):\n{lines}\n{hint}")
