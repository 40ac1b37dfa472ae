"""Grid expansion and stable job ids."""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sparse_agents.distributions import METHODS, check_sparsity

#: Grid axes and their defaults (the seed's question: ERK vs uniform across sparsities).
AXES = {
    "workload": ["digits"],
    "distribution": ["erk", "uniform"],
    "sparsity": [0.5, 0.8, 0.9, 0.95, 0.98],
    "updater": ["srigl"],
    "seed": [0, 1, 2],
}
UPDATER_CHOICES = ("dense", "static", "set", "rigl", "srigl")


@dataclass(frozen=True)
class Job:
    """One run: a point of the grid plus the settings shared by the whole study."""

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

    @property
    def job_id(self) -> str:
        """Readable and stable: the same configuration always gets the same id."""
        digest = hashlib.sha1(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()
        safe = self.workload.replace(":", "-").replace("/", "-")
        return (f"{safe}__{self.distribution}__{self.updater}__s{self.sparsity:g}"
                f"__seed{self.seed}__{digest[:8]}")


def _as_list(value) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def expand_grid(spec: Mapping) -> list[Job]:
    """Cartesian product of the axes in ``spec`` (missing axes take ``AXES`` defaults).

    ``seed`` may be an int ``n`` (seeds ``0..n-1``) or a list. Every key that is not an
    axis is a setting shared by all jobs (e.g. ``epochs``, ``timesteps``, ``task_masks``).
    A dense baseline (``updater="dense"``) is one job per workload and seed: its
    distribution and sparsity are recorded as ``"none"`` and 0.
    """
    spec = dict(spec)
    seeds = spec.get("seed", spec.get("seeds", AXES["seed"]))
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of seeds, got {seeds}")
        seeds = list(range(seeds))
    axes = {
        "workload": _as_list(spec.get("workload", spec.get("workloads", AXES["workload"]))),
        "distribution": _as_list(spec.get("distribution",
                                          spec.get("distributions", AXES["distribution"]))),
        "sparsity": [check_sparsity(s) for s in _as_list(
            spec.get("sparsity", spec.get("sparsities", AXES["sparsity"])))],
        "updater": _as_list(spec.get("updater", spec.get("updaters", AXES["updater"]))),
        "seed": [int(s) for s in _as_list(seeds)],
    }
    for d in axes["distribution"]:
        if d not in METHODS:
            raise ValueError(f"distribution must be one of {METHODS}, got {d!r}")
    for u in axes["updater"]:
        if u not in UPDATER_CHOICES:
            raise ValueError(f"updater must be one of {UPDATER_CHOICES}, got {u!r}")
    from sparse_agents.study.workloads import check_workload

    for w in axes["workload"]:
        check_workload(w)
    axis_keys = {"workload", "workloads", "distribution", "distributions", "sparsity",
                 "sparsities", "updater", "updaters", "seed", "seeds"}
    settings = {k: v for k, v in spec.items() if k not in axis_keys}
    jobs: dict[str, Job] = {}
    for w, d, s, u, seed in itertools.product(*axes.values()):
        if u == "dense":
            job = Job(w, "none", 0.0, "dense", seed, settings)
        else:
            job = Job(w, d, s, u, seed, settings)
        jobs.setdefault(job.job_id, job)
    return list(jobs.values())


def load_grid_file(path: str | Path) -> dict:
    """Read a grid spec from YAML (``.yaml``/``.yml``) or TOML (``.toml``)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"grid file {path} does not exist")
    if path.suffix in (".yaml", ".yml"):
        spec = yaml.safe_load(path.read_text())
    elif path.suffix == ".toml":
        spec = tomllib.loads(path.read_text())
    else:
        raise ValueError(f"grid file must be .yaml, .yml or .toml, got {path.suffix!r}")
    if not isinstance(spec, dict):
        raise ValueError(f"grid file {path} must hold a mapping of axes to values")
    return spec


def jobs_by_id(jobs: Iterable[Job]) -> dict[str, Job]:
    """Index jobs by their id."""
    return {j.job_id: j for j in jobs}
