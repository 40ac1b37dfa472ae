"""Command line of the study harness (``scripts/init_study.py``): grid flags or a grid
file -> :func:`run_study` -> :func:`write_report`."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from rich.console import Console

from sparse_agents.distributions import METHODS
from sparse_agents.study.grid import expand_grid, load_grid_file
from sparse_agents.study.report import write_report
from sparse_agents.study.runner import BACKENDS, run_study
from sparse_agents.updaters import updater_names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparse-study",
        description="ERK vs uniform (and updater, sparsity, seed) on CL streams and RL tasks.",
        epilog="Re-running with the same --out resumes: finished runs are skipped (each run's "
               "result is written atomically), failed ones are retried.")
    p.add_argument("--config", type=Path, help="YAML/TOML grid file (CLI flags override it)")
    p.add_argument("--workloads", nargs="+",
                   help="digits | cl:<stream>[:<tasks>] (e.g. cl:split-digits, "
                        "cl:permuted-digits:10) | rl:<env id> | rlstream:<stream> "
                        "(e.g. rlstream:cartpole-physics)")
    p.add_argument("--distributions", nargs="+", choices=METHODS)
    p.add_argument("--sparsities", nargs="+", type=float)
    p.add_argument("--updaters", nargs="+", choices=updater_names(dense=True))
    p.add_argument("--seeds", type=int, nargs="+",
                   help="one number n (seeds 0..n-1) or an explicit list of seeds")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="settings shared by all jobs, e.g. epochs=2 task_masks=true "
                        "timesteps=30000")
    p.add_argument("--out", type=Path, default=Path("results/study"))
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--backend", choices=BACKENDS, default="process")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    p.add_argument("--no-retry-failed", action="store_true",
                   help="a re-run skips failed jobs too")
    p.add_argument("--report-only", action="store_true", help="only rebuild tables and plots")
    p.add_argument("--metric", default="metric",
                   help="result to report (default: each workload's primary metric; e.g. "
                        "auc_return, forgetting); another metric goes to OUT/report-METRIC")
    p.add_argument("--quiet", action="store_true")
    return p


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def spec_from_args(args: argparse.Namespace) -> dict:
    """The grid spec: the config file, then CLI flags on top."""
    spec = load_grid_file(args.config) if args.config else {}
    for key in ("workloads", "distributions", "sparsities", "updaters"):
        value = getattr(args, key)
        if value:
            spec[key] = value
    if args.seeds:
        spec["seeds"] = args.seeds[0] if len(args.seeds) == 1 else args.seeds
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        spec[key] = _value(value)
    return spec


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*QP solver.*")
    args = build_parser().parse_args(argv)
    console = Console(quiet=args.quiet)
    if not args.report_only:
        jobs = expand_grid(spec_from_args(args))
        console.print(f"{len(jobs)} jobs -> {args.out} ({args.backend}, {args.workers} workers)")
        records = run_study(jobs, args.out, workers=args.workers, backend=args.backend,
                            ray_address=args.ray_address, retry_failed=not args.no_retry_failed,
                            show_progress=not args.quiet)
        n_failed = sum(r is None or r["status"] != "ok" for r in records)
        if n_failed:
            console.print(f"[yellow]{n_failed} job(s) failed; see {args.out}/summary.md")
    written = write_report(args.out, args.metric)
    console.print(written["summary"].read_text())
    console.print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
