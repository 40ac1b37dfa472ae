"""Benchmark: per-task-mask sparse PPO vs dense PPO fine-tuned through a task stream.

Behind ``scripts/bench_rl_stream.py``: every (method, seed) is a study job (workload
``rlstream:<stream>``, :func:`sparse_agents.study.workloads.run_rl_stream`) that trains one
agent through the stream; the study runner runs them (``--jobs`` processes) and resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sparse_agents.distributions import METHODS as DISTRIBUTIONS
from sparse_agents.intervals import mean_std
from sparse_agents.study.job import Job
from sparse_agents.study.runner import run_study
from sparse_agents.updaters import DENSE, updater_names

METHODS = {
    "masks": "{updater} {sparsity:.0%}, per-task masks",
    "dense": "dense, fine-tuned",
    "sparse-ft": "{updater} {sparsity:.0%}, fine-tuned (no masks)",
}

DESCRIPTION = """\
Benchmark: per-task-mask sparse PPO vs dense PPO fine-tuned through a task stream.

For every method and seed, trains one agent through the stream
(sparse_agents.experiments.rl_stream.train_stream), evaluates it on every task so far
after each task, and writes that run's record (returns matrix, final returns,
forgetting) to OUT/runs/<job id>.json (the study harness's store). Prints (and writes to
OUT/table.md and OUT/results.json) the final return on every task and the forgetting,
mean +- std over seeds. Re-running retrains every run and overwrites these files; with
--resume, finished runs are skipped. Methods:
  masks      SRigL (--updater) at --sparsity per task, per-task masks
  dense      SB3's dense MlpPolicy, fine-tuned through the stream
  sparse-ft  (--sparse-finetune) the same sparse agent without task masks"""

EPILOG = """\
example:
  python scripts/bench_rl_stream.py --stream cartpole-physics --seeds 0 1 2 \\
      --steps-per-task 50000 --jobs 2 --resume --out runs/bench_rl_stream"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_rl_stream.py", description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stream", default="cartpole-physics")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--updater", default="srigl", choices=updater_names(),
                   help="updater of the sparse methods")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--distribution", default="erk", choices=DISTRIBUTIONS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps-per-task", type=int, default=50_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--net-arch", type=int, nargs="+", default=None,
                   help="hidden sizes of every method's networks (default: SB3's 64 64)")
    p.add_argument("--dense-input", action="store_true",
                   help="sparse methods keep the first layer of each MLP dense")
    p.add_argument("--sparse-finetune", action="store_true",
                   help="also run the sparse agent without task masks")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes")
    p.add_argument("--resume", action="store_true", help="skip the runs already done")
    p.add_argument("--out", default="runs/bench_rl_stream")
    return p


def make_jobs(args, methods: list[str]) -> list[tuple[str, Job]]:
    """One (method, study job) per (seed, method)."""
    common = dict(algo=args.algo, steps_per_task=args.steps_per_task,
                  eval_episodes=args.eval_episodes, dense_input=args.dense_input)
    if args.net_arch:
        common["net_arch"] = list(args.net_arch)
    workload = f"rlstream:{args.stream}"
    jobs = []
    for seed in args.seeds:
        for method in methods:
            if method == "dense":
                job = Job(workload, "none", 0.0, DENSE, seed, {**common, "task_masks": False})
            else:
                job = Job(workload, args.distribution, args.sparsity, args.updater, seed,
                          {**common, "task_masks": method == "masks"})
                job.sparse_config()  # ValueError naming a bad option
            jobs.append((method, job))
    return jobs


def run_summary(method: str, job: Job, record: dict) -> dict:
    """A finished run's row: method, seed, final return per task, forgetting."""
    metrics = record["metrics"]
    n = sum(k.startswith("final_return_task") for k in metrics)
    final = [metrics[f"final_return_task{j}"] for j in range(n)]
    summary = {"method": method, "seed": job.seed, "final_returns": final,
               "task_forgetting": metrics.get("task_forgetting", []),
               "forgetting": metrics["forgetting"], "bwt": metrics["bwt"],
               "return_matrix": metrics.get("return_matrix"),
               "wall_seconds": record.get("wall_time")}
    print(f"{method} seed {job.seed}: final {np.round(final, 1).tolist()} forgetting "
          f"{summary['forgetting']:.1f}", flush=True)
    return summary


def _fmt(values: list[float]) -> str:
    """``mean ± std`` over seeds, the std a sample std (÷ n − 1; nan for one seed)."""
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}"


def table(runs: list[dict], names: dict[str, str]) -> str:
    """Markdown table: per method, final return per task, average, forgetting."""
    n = len(runs[0]["final_returns"])
    head = ["method"] + [f"task {j}" for j in range(n)] + ["average", "forgetting",
                                                            "max task forgetting"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, label in names.items():
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        finals = np.array([r["final_returns"] for r in rs])
        cells = [label] + [_fmt(finals[:, j]) for j in range(n)]
        cells += [_fmt(finals.mean(axis=1)), _fmt([r["forgetting"] for r in rs]),
                  _fmt([max(r["task_forgetting"] or [0.0]) for r in rs])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args, runs: list[dict], methods: list[str], start: float) -> None:
    """The table on the terminal and in OUT/table.md, the runs in OUT/results.json."""
    import envs

    names = {m: METHODS[m].format(updater=args.updater, sparsity=args.sparsity)
             for m in methods}
    text = table(runs, names)
    stream = envs.get_stream(args.stream)
    header = (f"{args.stream} ({stream.n_tasks} tasks), {args.algo.upper()}, "
              f"{args.steps_per_task} steps per task, seeds {args.seeds}, mean ± std over "
              f"seeds of the final deterministic return ({args.eval_episodes} episodes) "
              f"on every task; forgetting = mean over earlier tasks of best minus final "
              f"return")
    print(header)
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(header + "\n\n" + text + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs},
                                                 indent=2))


def run(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; every run's summary."""
    args = build_parser().parse_args(argv)
    methods = ["masks", "dense"] + (["sparse-ft"] if args.sparse_finetune else [])
    jobs = make_jobs(args, methods)
    out = Path(args.out)
    start = time.perf_counter()
    if not args.resume:
        for _, job in jobs:
            job.clear_record(out)
    records = run_study([job for _, job in jobs], out, workers=args.jobs)
    failed = [job.job_id for (_, job), r in zip(jobs, records, strict=True)
              if r is None or r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed (see their records under "
                           f"{out / 'runs'}): {', '.join(failed)}")
    runs = [run_summary(method, job, record)
            for (method, job), record in zip(jobs, records, strict=True)]
    report(args, runs, methods, start)
    return runs


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0
