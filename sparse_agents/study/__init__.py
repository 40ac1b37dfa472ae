"""Study harness: grids of DST runs (distribution x sparsity x updater x seed x workload),
resumable and parallel (local process pool or Ray), aggregated into tables and plots; the
one runner of every sweep (the RL benchmarks' runs are :class:`RLRunJob`)."""

from sparse_agents.study.grid import expand_grid, load_grid_file
from sparse_agents.study.job import Job
from sparse_agents.study.report import aggregate, load_results, write_report
from sparse_agents.study.rl_runs import RLRunJob
from sparse_agents.study.runner import pending, run_study

__all__ = ["Job", "RLRunJob", "aggregate", "expand_grid", "load_grid_file", "load_results",
           "pending", "run_study", "write_report"]
