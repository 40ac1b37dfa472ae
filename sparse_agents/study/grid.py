"""Grid expansion: a spec of axes (workload x distribution x sparsity x updater x seed) and
shared settings -> a list of :class:`Job`, validated and deduplicated by job id."""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from sparse_agents.distributions import check_sparsity
from sparse_agents.study.job import Job
from sparse_agents.study.workloads import check_workload
from sparse_agents.updaters import DENSE, check_updaters

__all__ = ["AXES", "Job", "expand_grid", "jobs_by_id", "load_grid_file"]

#: Grid axes and their defaults (the seed's question: ERK vs uniform across sparsities).
AXES = {
    "workload": ["digits"],
    "distribution": ["erk", "uniform"],
    "sparsity": [0.5, 0.8, 0.9, 0.95, 0.98],
    "updater": ["srigl"],
    "seed": [0, 1, 2],
}
#: each axis may also be spelt in the plural (``workloads: [...]``)
PLURALS = {"workload": "workloads", "distribution": "distributions",
           "sparsity": "sparsities", "updater": "updaters", "seed": "seeds"}


def _as_list(value) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _axis(spec: Mapping, name: str):
    return spec.get(name, spec.get(PLURALS[name], AXES[name]))


def _seeds(value) -> list[int]:
    """A count ``n`` (seeds ``0..n-1``) or a list of seeds."""
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of seeds, got {value}")
        value = list(range(value))
    return [int(s) for s in _as_list(value)]


def grid_axes(spec: Mapping) -> dict[str, list]:
    """The axes of ``spec`` (defaults from ``AXES``), sparsities as floats, updaters and
    workloads checked (distributions are checked by each job's config)."""
    seeds = _seeds(_axis(spec, "seed"))
    axes = {
        "workload": _as_list(_axis(spec, "workload")),
        "distribution": _as_list(_axis(spec, "distribution")),
        "sparsity": [check_sparsity(s) for s in _as_list(_axis(spec, "sparsity"))],
        "updater": _as_list(_axis(spec, "updater")),
        "seed": seeds,
    }
    check_updaters(axes["updater"], dense=True)
    for w in axes["workload"]:
        check_workload(w)
    return axes


def expand_grid(spec: Mapping) -> list[Job]:
    """Cartesian product of the axes in ``spec`` (missing axes take ``AXES`` defaults).

    ``seed`` may be an int ``n`` (seeds ``0..n-1``) or a list. Every key that is not an
    axis is a setting shared by all jobs (e.g. ``epochs``, ``timesteps``, ``task_masks``).
    A dense baseline (``updater="dense"``) is one job per workload and seed: its
    distribution and sparsity are recorded as ``"none"`` and 0. Every sparse job's
    topology options (axes and settings) are checked here, by its
    :meth:`Job.sparse_config`, before anything runs.
    """
    axes = grid_axes(spec)
    axis_keys = set(PLURALS) | set(PLURALS.values())
    settings = {k: v for k, v in spec.items() if k not in axis_keys}
    jobs: dict[str, Job] = {}
    for w, d, s, u, seed in itertools.product(*axes.values()):
        if u == DENSE:
            job = Job(w, "none", 0.0, DENSE, seed, settings)
        else:
            job = Job(w, d, s, u, seed, settings)
            job.sparse_config()  # ValueError naming a bad option
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
