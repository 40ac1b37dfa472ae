"""Benchmark: continual RL baselines through a task stream, with Continual World's metrics.

Behind ``scripts/bench_rl_stream.py``: every (method, seed) is a study job (workload
``rlstream:<stream>``, :func:`sparse_agents.study.workloads.run_rl_stream`) that trains one
agent through the stream; the study runner runs them (``--jobs`` processes, or a Ray
cluster) and resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from sparse_agents.distributions import METHODS as DISTRIBUTIONS
from sparse_agents.experiments.rl_stream import checkpointed_tasks
from sparse_agents.intervals import mean_std
from sparse_agents.study.job import Job
from sparse_agents.study.runner import BACKENDS, run_study
from sparse_agents.updaters import DENSE, updater_names

#: method -> (label, whether it is sparse, its train_stream settings; ``{updater}`` is
#: ``--updater``)
METHODS: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "masks": ("{updater} {sparsity:.0%}, per-task masks", True, {"task_masks": True}),
    "masks-static": ("static {sparsity:.0%}, per-task masks (no DST in a task)", True,
                     {"task_masks": True, "updater": "static"}),
    "packnet": ("PackNet-style {sparsity:.0%} per task (train free, prune, retrain)", True,
                {"task_masks": True, "updater": "static", "packnet": True}),
    "dense": ("dense, fine-tuned", False, {"task_masks": False}),
    "sparse-ft": ("{updater} {sparsity:.0%}, fine-tuned (no masks)", True,
                  {"task_masks": False}),
    "static-ft": ("static {sparsity:.0%}, fine-tuned (no masks)", True,
                  {"task_masks": False, "updater": "static"}),
    "l2": ("dense, fine-tuned with L2", False, {"task_masks": False, "regularizer": "l2"}),
    "ewc": ("dense, fine-tuned with EWC", False, {"task_masks": False, "regularizer": "ewc"}),
    "reset": ("dense, new agent per task (from scratch)", False,
              {"task_masks": False, "reset_per_task": True}),
    "reset-sparse": ("{updater} {sparsity:.0%}, new agent per task (from scratch)", True,
                     {"task_masks": False, "reset_per_task": True}),
}
#: the from-scratch reference of forward transfer and plasticity
REFERENCE = "reset"
#: the baselines every method's differences are tested against (where they ran): dense
#: fine-tuning, training from scratch with a dense or a sparse network (a sparse
#: fine-tuned agent's plasticity is its own architecture's from scratch, not dense's),
#: and PackNet (Continual World's best method)
BASELINES = ("dense", REFERENCE, "reset-sparse", "packnet")

DESCRIPTION = """\
Benchmark: continual-RL methods through a task stream (sparse_agents.experiments.
rl_stream.train_stream), with Continual World's metrics.

For every method and seed, trains one agent through the stream, evaluates it on every
task so far after each task (the stream's metric: return, or success rate for
Meta-World), and writes that run's record to OUT/runs/<job id>.json (the study harness's
store). Writes OUT/table.md and OUT/results.json:
  average performance  mean over tasks of the final metric (CW's "average performance")
  forgetting           mean over earlier tasks of best minus final value
  forward transfer     (with the reset method and --curve-evals) per task, the area under
                       the training curve against the from-scratch agent's, averaged over
                       tasks: (AUC - AUC_ref) / (1 - AUC_ref) for success rates, divided
                       by |AUC_ref| for returns (CW's definition)
  plasticity           (with reset) each task's value right after training it over the
                       from-scratch agent's, mean over the last half of the stream; and
                       the task from which its mean over seeds, averaged over every 4
                       consecutive tasks, stays below 0.9 (where plasticity is lost)
  dormant              the dormant-neuron fraction after the last task
Differences of average performance and plasticity to dense fine-tuning, reset,
reset-sparse and packnet (those that ran) come with their 95% CIs, Holm-corrected per
baseline (sparse_agents.experiments.evidence), when rliable is installed; OUT/plasticity.png
draws the per-task plasticity and the dormant fraction. Re-running retrains every
run and overwrites; with --resume, finished runs are skipped and a run that was stopped
goes on after its last finished task (its checkpoint: OUT/checkpoints/<job id>).
Methods (--methods):
""" + "\n".join(f"  {name:<13}{label.format(updater='UPDATER', sparsity=0.9)}"
                for name, (label, _, _) in METHODS.items())

EPILOG = """\
examples:
  python scripts/bench_rl_stream.py --stream cartpole-physics --seeds 0 1 2 \\
      --steps-per-task 50000 --jobs 2 --resume --out runs/bench_rl_stream
  python scripts/bench_rl_stream.py --stream metaworld-cw10 --algo sac --one-hot \\
      --steps-per-task 1000000 --methods masks dense ewc reset --curve-evals 10 \\
      --seeds 0 1 2 3 4 --jobs 16 --resume --out results/cw10     # a bigger machine"""


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
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                   help="the methods to run (default: masks dense)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps-per-task", type=int, default=50_000)
    p.add_argument("--n-tasks", type=int, default=None, help="the first n tasks only")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--curve-evals", type=int, default=0,
                   help="evaluations of each task while it trains (forward transfer)")
    p.add_argument("--net-arch", type=int, nargs="+", default=None,
                   help="hidden sizes of every method's networks (default: the stream's)")
    p.add_argument("--dense-input", action="store_true",
                   help="sparse methods keep the first layer of each MLP dense")
    p.add_argument("--one-hot", action="store_true",
                   help="append the one-hot task id to observations (Continual World)")
    p.add_argument("--per-task-heads", action="store_true",
                   help="per-task masks: dense output heads, one per task")
    p.add_argument("--keep-buffer", action="store_true",
                   help="off-policy: keep the replay buffer across tasks")
    p.add_argument("--reg-coef", type=float, default=1.0, help="the l2/ewc penalty's weight")
    p.add_argument("--algo-kwargs", type=json.loads, default=None,
                   help='JSON dict over the stream\'s hyperparameters, e.g. \'{"n_envs": 4}\'')
    p.add_argument("--sparse-finetune", action="store_true",
                   help="also run sparse-ft (the sparse agent without task masks)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes")
    p.add_argument("--backend", choices=BACKENDS, default="process",
                   help="where the runs train: local processes or a Ray cluster")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    p.add_argument("--resume", action="store_true", help="skip the runs already done")
    p.add_argument("--report", action="store_true",
                   help="train nothing: tabulate the runs already finished under --out")
    p.add_argument("--out", default="runs/bench_rl_stream")
    return p


def methods_of(args) -> list[str]:
    """The methods to run, in the table's order."""
    chosen = list(args.methods or ["masks", "dense"])
    if args.sparse_finetune and "sparse-ft" not in chosen:
        chosen.append("sparse-ft")
    return [m for m in METHODS if m in chosen]


def make_jobs(args, methods: list[str]) -> list[tuple[str, Job]]:
    """One (method, study job) per (seed, method)."""
    common: dict[str, Any] = dict(algo=args.algo, steps_per_task=args.steps_per_task,
                                  eval_episodes=args.eval_episodes,
                                  dense_input=args.dense_input)
    optional = dict(n_tasks=args.n_tasks, curve_evals=args.curve_evals or None,
                    one_hot=args.one_hot or None, per_task_heads=args.per_task_heads or None,
                    keep_buffer=args.keep_buffer or None, algo_kwargs=args.algo_kwargs,
                    net_arch=list(args.net_arch) if args.net_arch else None)
    common.update({k: v for k, v in optional.items() if v is not None})
    workload = f"rlstream:{args.stream}"
    jobs = []
    for seed in args.seeds:
        for method in methods:
            _, sparse, settings = METHODS[method]
            settings = dict(settings)
            if "regularizer" in settings:
                settings["reg_coef"] = args.reg_coef
            if not sparse:
                job = Job(workload, "none", 0.0, DENSE, seed, {**common, **settings})
            else:
                updater = settings.pop("updater", args.updater)
                job = Job(workload, args.distribution, args.sparsity, updater, seed,
                          {**common, **settings})
                job.sparse_config()  # ValueError naming a bad option
            jobs.append((method, job))
    return jobs


def run_summary(method: str, job: Job, record: dict) -> dict:
    """A finished run's row: method, seed, the matrix, final values, forgetting, curves'
    areas, dormant fractions."""
    metrics = record["metrics"]
    n = sum(k.startswith("final_return_task") for k in metrics)
    final = [metrics[f"final_return_task{j}"] for j in range(n)]
    summary = {"method": method, "seed": job.seed, "final_returns": final,
               "task_forgetting": metrics.get("task_forgetting", []),
               "forgetting": metrics["forgetting"], "bwt": metrics["bwt"],
               "return_matrix": metrics.get("return_matrix"),
               "curve_auc": metrics.get("curve_auc"),
               "dormant_fraction": metrics.get("dormant_fraction"),
               "stream_metric": metrics.get("stream_metric", "return"),
               "wall_seconds": record.get("wall_time")}
    print(f"{method} seed {job.seed}: final {np.round(final, 2).tolist()} forgetting "
          f"{summary['forgetting']:.2f}", flush=True)
    return summary


def _fmt(values: list[float], digits: int = 1) -> str:
    """``mean ± std`` over seeds, the std a sample std (÷ n − 1; nan for one seed)."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _diagonal(run: dict) -> list[float]:
    """Each task's value right after it trained (the matrix's diagonal)."""
    m = run["return_matrix"]
    return [float(m[j][j]) for j in range(len(m))]


def forward_transfer(auc: list[float], reference: list[float], success: bool) -> float:
    """Continual World's forward transfer, averaged over tasks: per task
    ``(AUC - AUC_ref) / (1 - AUC_ref)`` for success rates (NaN where the reference
    reached 1), ``(AUC - AUC_ref) / |AUC_ref|`` for returns."""
    out = []
    for a, r in zip(auc, reference, strict=True):
        scale = (1.0 - r) if success else abs(r)
        out.append((a - r) / scale if scale > 0 else math.nan)
    return float(np.nanmean(out)) if any(np.isfinite(out)) else math.nan


def task_plasticity(diagonal: list[float], reference: list[float]) -> list[float]:
    """Per task: its value right after training over the from-scratch agent's (NaN
    where the reference is 0)."""
    return [d / r if r else math.nan for d, r in zip(diagonal, reference, strict=True)]


def plasticity(diagonal: list[float], reference: list[float]) -> float:
    """:func:`task_plasticity`, mean over the second half of the stream."""
    ratios = task_plasticity(diagonal, reference)[len(diagonal) // 2:]
    return float(np.nanmean(ratios)) if any(np.isfinite(ratios)) else math.nan


#: :func:`plasticity_lost_at`: the share of from-scratch learning a method must keep
#: (the issue's 0.9), over windows of this many consecutive tasks
PLASTICITY_KEPT, PLASTICITY_WINDOW = 0.9, 4


def plasticity_lost_at(ratios: list[list[float]], kept: float = PLASTICITY_KEPT,
                       window: int = PLASTICITY_WINDOW) -> int | None:
    """The stream length at which a method loses its plasticity: the first task from
    which the mean over seeds of :func:`task_plasticity`, averaged over every window of
    ``window`` consecutive tasks, stays below ``kept`` to the stream's end; ``None``
    where the last window keeps it (or the stream is shorter than a window)."""
    mean = np.nanmean(np.asarray(ratios, dtype=float), axis=0)
    windows = [float(np.mean(mean[k:k + window])) for k in range(len(mean) - window + 1)]
    lost = None
    for k in range(len(windows) - 1, -1, -1):
        if not windows[k] < kept:
            break
        lost = k
    return lost


def derived(runs: list[dict]) -> None:
    """Add each run's average performance and, where the reference method ran with the
    same seed, its forward transfer and plasticity (in place)."""
    ref = {r["seed"]: r for r in runs if r["method"] == REFERENCE}
    for r in runs:
        r["average"] = float(np.mean(r["final_returns"]))
        base = ref.get(r["seed"])
        success = r["stream_metric"] == "success"
        auc, ref_auc = r.get("curve_auc"), (base or {}).get("curve_auc")
        r["forward_transfer"] = (
            forward_transfer(auc, ref_auc, success)
            if base is not None and auc and ref_auc and np.all(np.isfinite(auc))
            and np.all(np.isfinite(ref_auc)) else math.nan)
        r["plasticity"] = (plasticity(_diagonal(r), _diagonal(base)) if base is not None
                           else math.nan)
        r["task_plasticity"] = (task_plasticity(_diagonal(r), _diagonal(base))
                                if base is not None else None)
        dormant = r.get("dormant_fraction") or [math.nan]
        r["dormant_last"] = float(dormant[-1])


def table(runs: list[dict], names: dict[str, str]) -> str:
    """Markdown table: per method, final value per task, average performance,
    forgetting, forward transfer, plasticity, the task from which it stays below
    :data:`PLASTICITY_KEPT` (:func:`plasticity_lost_at`), dormant fraction."""
    n = len(runs[0]["final_returns"])
    digits = 2 if runs[0]["stream_metric"] == "success" else 1
    head = (["method"] + [f"task {j}" for j in range(n)]
            + ["average", "forgetting", "forward transfer", "plasticity",
               f"plasticity < {PLASTICITY_KEPT} from task", "dormant"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, label in names.items():
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        finals = np.array([r["final_returns"] for r in rs])
        cells = [label] + [_fmt(finals[:, j], digits) for j in range(n)]
        cells += [_fmt([r["average"] for r in rs], digits),
                  _fmt([r["forgetting"] for r in rs], digits),
                  _fmt([r["forward_transfer"] for r in rs], 2),
                  _fmt([r["plasticity"] for r in rs], 2)]
        ratios = [r["task_plasticity"] for r in rs if r.get("task_plasticity")]
        lost = plasticity_lost_at(ratios) if ratios else None
        short = not ratios or len(ratios[0]) < PLASTICITY_WINDOW  # no reset, or no window
        cells += ["n/a" if short else "never" if lost is None else str(lost),
                  _fmt([r["dormant_last"] for r in rs], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: the per-run values whose differences between methods the report tests
CONTRASTED = {"average": "Average performance",
              "plasticity": "Plasticity (value right after training over reset's)"}


def contrasts(runs: list[dict]) -> str:
    """Each method's average performance and plasticity minus each baseline's
    (:data:`BASELINES`), with the 95% CI of the difference (rliable's bootstrap;
    Holm-corrected over the contrasts against one baseline); empty without rliable."""
    try:
        from sparse_agents.experiments.evidence import difference, holm
    except ImportError:  # the evidence extra is not installed
        return ""

    def values(method: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["method"] == method and math.isfinite(r[key])]

    out = ""
    for key, title in CONTRASTED.items():
        lines = []
        for i, base in enumerate(BASELINES):
            b = values(base, key)
            if len(b) < 2:
                continue
            tests = {}
            for method in dict.fromkeys(r["method"] for r in runs):
                a = values(method, key)  # an earlier baseline: its reverse is tested
                if method != base and method not in BASELINES[:i] and len(a) >= 2:
                    tests[method] = difference(a, b)
            for method, interval in holm(tests).items():
                lines.append(f"| {method} − {base} | {interval.fmt(2)} | {interval.p:.3f} "
                             f"| {'yes' if interval.holds else 'no'} |")
        if lines:
            out += (f"\n\n{title}, differences (95% CI, Holm-adjusted p over the contrasts "
                    "against one baseline):\n\n| contrast | difference [95% CI] | p (Holm) "
                    "| holds (Holm p < 0.05, CI excludes 0) |\n|---|---|---|---|\n"
                    + "\n".join(lines))
    return out


def plot_stream(runs: list[dict], names: dict[str, str], path: Path) -> None:
    """``path`` (PNG): per method, mean over seeds of each task's value right after
    training relative to the from-scratch agent's (where reset ran), and the dormant
    fraction after each task, against the task index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = {r["seed"]: _diagonal(r) for r in runs if r["method"] == REFERENCE}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, label in names.items():
        rs = [r for r in runs if r["method"] == method]
        ratios = [task_plasticity(_diagonal(r), ref[r["seed"]])
                  for r in rs if r["seed"] in ref]
        if ratios:
            left.plot(np.nanmean(ratios, axis=0), marker=".", label=label)
        dormant = [r["dormant_fraction"] for r in rs if r.get("dormant_fraction")]
        if dormant:
            right.plot(np.mean(dormant, axis=0), marker=".", label=label)
    left.axhline(1.0, color="grey", lw=0.8, ls="--")
    left.set(xlabel="task", ylabel="value after training / reset's",
             title="plasticity (mean over seeds)")
    right.set(xlabel="task", ylabel="dormant fraction (ReDo, tau 0.025)",
              title="dormant neurons after each task")
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(args, runs: list[dict], methods: list[str], start: float) -> str:
    """The table on the terminal and in OUT/table.md, the runs in OUT/results.json, the
    plasticity and dormant curves in OUT/plasticity.png."""
    import envs

    names = {m: METHODS[m][0].format(updater=args.updater, sparsity=args.sparsity)
             for m in methods}
    derived(runs)
    text = table(runs, names) + contrasts(runs)
    stream = envs.get_stream(args.stream)
    what = "success rate" if runs[0]["stream_metric"] == "success" else "deterministic return"
    header = (f"{args.stream} ({args.n_tasks or stream.n_tasks} tasks), {args.algo.upper()}, "
              f"{args.steps_per_task} steps per task, seeds {args.seeds}, mean ± sample std "
              f"over seeds of the final {what} ({args.eval_episodes} episodes) on every "
              f"task; forgetting = mean over earlier tasks of best minus final value; "
              f"forward transfer and plasticity against the from-scratch agent (reset) of "
              f"the same seed; dormant: fraction of dormant neurons after the last task")
    print(header)
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(header + "\n\n" + text + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs},
                                                 indent=2))
    plot_stream(runs, names, out / "plasticity.png")
    return text


def run(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; every run's summary."""
    args = build_parser().parse_args(argv)
    methods = methods_of(args)
    jobs = make_jobs(args, methods)
    out = Path(args.out)
    start = time.perf_counter()
    if args.report:  # a sweep under way: the finished runs only
        pairs = [(pair, pair[1].read_record(out)) for pair in jobs]
        done = [(pair, r) for pair, r in pairs if r is not None and r["status"] == "ok"]
        print(f"--report: {len(done)} of {len(jobs)} runs finished", flush=True)
        for (method, job), record in pairs:
            held = checkpointed_tasks(job.scratch(out))
            if (record is None or record["status"] != "ok") and held:
                print(f"  {method} seed {job.seed}: {held} task(s) checkpointed", flush=True)
        if not done:
            raise FileNotFoundError(f"--report: no finished run under {out / 'runs'}")
        jobs = [pair for pair, _ in done]
        runs = [run_summary(method, job, record) for (method, job), record in done]
        report(args, runs, methods, start)
        return runs
    if not args.resume:  # retrain: neither records nor checkpoints of earlier runs count
        for _, job in jobs:
            job.clear_record(out)
            job.clear_scratch(out)
    records = run_study([job for _, job in jobs], out, workers=args.jobs,
                        backend=args.backend, ray_address=args.ray_address)
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
