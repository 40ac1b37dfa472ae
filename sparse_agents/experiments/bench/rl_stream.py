"""Benchmark: per-task-mask sparse PPO vs dense PPO fine-tuned through a task stream.

Behind ``scripts/bench_rl_stream.py``: every (method, seed) trains one agent through the
stream with :func:`sparse_agents.experiments.rl_stream.train_stream`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from sparse_agents.distributions import METHODS as DISTRIBUTIONS
from sparse_agents.intervals import mean_std
from sparse_agents.updaters import updater_names

METHODS = {
    "masks": "{updater} {sparsity:.0%}, per-task masks",
    "dense": "dense, fine-tuned",
    "sparse-ft": "{updater} {sparsity:.0%}, fine-tuned (no masks)",
}

DESCRIPTION = """\
Benchmark: per-task-mask sparse PPO vs dense PPO fine-tuned through a task stream.

For every method and seed, trains one agent through the stream
(sparse_agents.experiments.rl_stream.train_stream), evaluates it on every task so far
after each task, and writes that run's outputs under OUT/<method>/seed<k>/. Prints (and
writes to OUT/table.md and OUT/results.json) the final return on every task and the
forgetting, mean +- std over seeds. Re-running retrains every run and overwrites these
files. Methods:
  masks      SRigL (--updater) at --sparsity per task, per-task masks
  dense      SB3's dense MlpPolicy, fine-tuned through the stream
  sparse-ft  (--sparse-finetune) the same sparse agent without task masks"""

EPILOG = """\
example:
  python scripts/bench_rl_stream.py --stream cartpole-physics --seeds 0 1 2 \\
      --steps-per-task 50000 --jobs 2 --out runs/bench_rl_stream"""


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
    p.add_argument("--out", default="runs/bench_rl_stream")
    return p


def run_job(job: dict) -> dict:
    """One (method, seed) run, in this or a worker process; its summary."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from sparse_agents.experiments.rl_stream import train_stream

    torch.set_num_threads(1)
    method, seed = job["method"], job["seed"]
    kwargs = dict(job["common"])
    if method == "dense":
        kwargs.update(updater="dense", task_masks=False)
    else:
        kwargs.update(updater=job["updater"], task_masks=method == "masks")
    start = time.perf_counter()
    result = train_stream(job["stream"], seed=seed, **kwargs)
    result.save(Path(job["out"]) / method / f"seed{seed}")
    summary = result.summary()
    summary["wall_seconds"] = time.perf_counter() - start
    print(f"{method} seed {seed}: final {np.round(summary['final_returns'], 1).tolist()} "
          f"forgetting {summary['forgetting']:.1f} ({summary['wall_seconds']:.0f} s)",
          flush=True)
    return {"method": method, "seed": seed, **summary}


def make_jobs(args, methods: list[str]) -> list[dict]:
    """One job per (seed, method)."""
    common = dict(algo=args.algo, sparsity=args.sparsity, distribution=args.distribution,
                  steps_per_task=args.steps_per_task, eval_episodes=args.eval_episodes,
                  dense_input=args.dense_input)
    if args.net_arch:
        common["policy_kwargs"] = {"net_arch": list(args.net_arch)}
    return [dict(method=m, seed=s, stream=args.stream, updater=args.updater, common=common,
                 out=args.out) for s in args.seeds for m in methods]


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
    start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(run_job, jobs))
    else:
        runs = [run_job(job) for job in jobs]
    report(args, runs, methods, start)
    return runs


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0
