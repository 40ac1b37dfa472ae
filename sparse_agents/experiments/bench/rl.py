"""Benchmark sparse SB3 agents: dense vs every updater at 90% sparsity.

Behind ``scripts/bench_rl.py``: full training runs in a process pool (the code path of
``sparse-train``), and in-process timings of ``train()`` per optimizer step
(``--overhead``) and of the condensed policy's ``predict`` (``--rollout``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path

from sparse_agents.distributions import METHODS
from sparse_agents.experiments.bench.update_size import update_size_markdown, update_size_rows
from sparse_agents.experiments.hyperparams import SOURCES, SPARSE_SETTINGS
from sparse_agents.experiments.results import write_atomic
from sparse_agents.intervals import diff_ci, excludes_zero, mean_std
from sparse_agents.timing import sample_interleaved, time_interleaved
from sparse_agents.updaters import DENSE, REGISTRY, updater_names

DEFAULT_TASKS = ("ppo:CartPole-v1:50000", "ppo:Acrobot-v1:100000", "dqn:CartPole-v1:50000")
MUJOCO_TASK = "sac:HalfCheetah-v5:30000"

DESCRIPTION = """\
Benchmark sparse SB3 agents: dense vs static vs SET vs RigL vs SRigL at 90% sparsity.

Tasks (--tasks, algo:env:timesteps): PPO on CartPole-v1 and Acrobot-v1 and DQN on
CartPole-v1 with rl-baselines3-zoo hyperparameters
(sparse_agents.experiments.hyperparams.HYPERPARAMS), plus SAC on HalfCheetah-v5 when
mujoco is importable. Every (task, updater, seed) run trains in its own process (a pool
of --workers, one torch thread each) through the same code path as
scripts/train_agent.py and evaluates the deterministic policy (--eval-episodes
episodes) --evals times. The score is the papers' (Graesser et al.): the mean of the last
10% of the evaluations; the final evaluation is reported beside it. --hyperparams
graesser runs the paper's own configuration (network, optimizer, sparse schedule) instead
of the zoo's; --distributions erk uniform adds each sparse method under uniform density
(rows "<updater>-uniform").

Writes under --out: runs/<task>-<method>-s<seed>/ (model, evaluations.csv,
summary.json), results.csv (one row per run), summary.csv and summary.md (mean +- std
over seeds of the score and of the final return, training wall time without evaluation,
and its ratio to dense; forward FLOPs per observation of the trained policy and their
ratio to dense), contrasts.csv (each row's score minus dense's, and each DST row's
minus static's, with the 95% CI of the difference, Welch's t), curves.png.
Re-running retrains every run and overwrites; with --resume, re-running resumes:
finished runs are skipped, and a finished run whose recorded settings differ from the
sweep's (arguments, hyperparameters, sparse options in effect) stops it
before anything trains (--report only rebuilds the tables).
--overhead writes overhead[_<hyperparams>][_fused].csv/.md and --rollout rollout.md
(overwritten)."""

EPILOG = """\
examples:
  python scripts/bench_rl.py --out results/rl                       # full budget
  python scripts/bench_rl.py --quick --out /tmp/rl                  # smoke run
  python scripts/bench_rl.py --hyperparams graesser --tasks dqn:CartPole-v1:100000 \
      --evals 50 --resume --out results/rl_graesser      # Graesser et al.'s DQN CartPole
  python scripts/bench_rl.py --rollout --out results/rl             # condensed predict"""


def build_parser() -> argparse.ArgumentParser:
    updaters = updater_names(dense=True)
    p = argparse.ArgumentParser(prog="bench_rl.py", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/rl")
    p.add_argument("--tasks", nargs="+", default=None, help="algo:env:timesteps ...")
    p.add_argument("--updaters", nargs="+", default=list(updaters), choices=updaters)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    p.add_argument("--first-seed", type=int, default=0, metavar="S",
                   help="train only seeds S .. N-1 (a share of a sweep; --report without "
                        "it tabulates every finished seed)")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--distributions", nargs="+", default=["erk"], choices=METHODS,
                   help="layer densities of the sparse runs (rows <updater>-<distribution> "
                        "for all but erk)")
    p.add_argument("--hyperparams", choices=tuple(SOURCES), default="zoo",
                   help="hyperparameter table of every run (see sparse-train --help)")
    p.add_argument("--sparse-settings", choices=SPARSE_SETTINGS, default="table",
                   help="the sparse runs' schedule, init and sparse-only values: the "
                        "table's (a paper's sparse config) or the sparse policies' shipped "
                        "defaults over the table's dense configuration (defaults: the "
                        "issue's 'shipped defaults' measurement)")
    p.add_argument("--equal-params", type=int, default=None, metavar="W",
                   help="equal parameter count: dense at hidden width W, 2W, 4W, each "
                        "sparse method at 2W and 4W with dense W's nonzero weights "
                        "(rows <method>-w<width>; equal_params.png); with --hyperparams "
                        "minatar the CNN's units (channels W/8: 128 is the paper's network)")
    p.add_argument("--width-factors", type=int, nargs="+", default=[1, 2, 4], metavar="K",
                   help="--equal-params widths K*W (default 1 2 4; 1 is always run)")
    p.add_argument("--dense-factors", type=int, nargs="+", default=None, metavar="K",
                   help="--equal-params: the widths K*W of the dense rows (default: every "
                        "--width-factors; 1 is always run): e.g. 1 to compare the sparse "
                        "wide networks with dense W only")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--evals", type=int, default=5, help="evaluations per run")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    p.add_argument("--hp", action="append", default=[], help="KEY=VALUE for every run")
    p.add_argument("--sparse-hp", action="append", default=[], metavar="KEY=VALUE",
                   help="KEY=VALUE for the sparse runs only (e.g. sparse_init=None: the "
                        "Graesser runs from before sparse_init)")
    p.add_argument("--variant", action="append", nargs="+", default=[],
                   metavar="NAME KEY=VALUE",
                   help="a row per dynamic updater with these options on top of the "
                        "sweep's (row <updater>-NAME; repeatable), e.g. --variant dt250 "
                        "delta_t=250 drop_fraction=0.3: a schedule sweep in one report, "
                        "each row against dense and against static")
    p.add_argument("--fused-adam", action="store_true",
                   help="Adam(fused=True) in every run (dense included)")
    p.add_argument("--quick", action="store_true", help="1 seed, 5%% budgets (smoke run)")
    p.add_argument("--resume", action="store_true",
                   help="skip runs already done (re-running resumes); refuses finished "
                        "runs made with other settings")
    p.add_argument("--report", action="store_true",
                   help="rebuild the tables from the runs already under --out (no training)")
    p.add_argument("--overhead", action="store_true",
                   help="only time train() per optimizer step, in process, interleaved")
    p.add_argument("--rounds", type=int, default=11, help="--overhead rounds")
    p.add_argument("--steps", type=int, default=200, help="--overhead steps per round")
    p.add_argument("--rollout", action="store_true",
                   help="only time predict on the masked vs the condensed policy")
    return p


# --------------------------------------------------------------------------- runs
def run_one(job: dict) -> dict:
    """One training run in a worker process (returns its summary)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import contextlib
    import io

    from sparse_agents.cli.train_agent import build_parser as train_parser
    from sparse_agents.cli.train_agent import run

    out = Path(job["out"])
    done = out / "summary.json"
    if job.get("resume") and done.exists():
        summary = json.loads(done.read_text())
        summary["task"], summary["method"] = job["task"], job["method"]
        if "flops_forward" not in summary and (out / "model.zip").exists():
            summary.update(saved_flops(out / "model.zip", job["algo"]))  # older runs
            write_atomic(done, json.dumps(summary, indent=2))
        return summary
    argv = job_argv(job)
    args = train_parser().parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run(args)
    summary["task"], summary["method"] = job["task"], job["method"]
    summary.update(saved_flops(out / "model.zip", job["algo"]))
    write_atomic(done, json.dumps(summary, indent=2))
    return summary


def job_argv(job: dict) -> list[str]:
    """The ``sparse-train`` arguments of one job."""
    argv = ["--algo", job["algo"], "--env", job["env"], "--updater", job["updater"],
            "--sparsity", str(job["sparsity"]), "--timesteps", str(job["timesteps"]),
            "--seed", str(job["seed"]), "--distribution", job["distribution"],
            "--hyperparams", job["hyperparams"], "--out", job["out"], "--eval-freq",
            str(max(1, job["timesteps"] // job["evals"])), "--eval-episodes",
            str(job["eval_episodes"]), "--no-progress", "--no-plot", "--threads", "1"]
    for hp in job.get("hp", []):
        argv += ["--hp", hp]
    if job.get("fused_adam"):
        argv.append("--fused-adam")
    if job["updater"] != DENSE and job.get("sparse_settings", "table") != "table":
        argv += ["--sparse-settings", job["sparse_settings"]]
    return argv


RESUME_KEYS = ("algo", "env", "updater", "timesteps", "seed", "eval_freq", "eval_episodes",
               "fused_adam")
SPARSE_RESUME_KEYS = ("sparsity", "distribution", "sparse_settings")  # a dense run ignores them


def stored_settings_differ(job: dict) -> list[str]:
    """The settings (``key: stored != job``) in which the finished run in ``job["out"]``
    differs from ``job`` (:func:`~sparse_agents.experiments.bench.resume.settings_differ`);
    empty when there is no finished run or it matches."""
    from sparse_agents.experiments.bench.resume import settings_differ

    keys = RESUME_KEYS + (() if job["updater"] == DENSE else SPARSE_RESUME_KEYS)
    return settings_differ(Path(job["out"]), job_argv(job), keys)


def check_resumable(jobs: list[dict]) -> None:
    """Refuse to resume a sweep whose finished runs were made with other settings (the
    tables would mix them silently)."""
    from sparse_agents.experiments.bench.resume import refuse_stale

    refuse_stale({job["out"]: stored_settings_differ(job) for job in jobs if job.get("resume")},
                 "Move them away or choose another --out.")


def policy_flops(policy) -> tuple[float, float]:
    """(sparse, dense) forward FLOPs per observation of an SB3 policy: a sparse
    policy's ``sparse/flops_forward`` metrics, or one deterministic forward of a zero
    observation of a dense policy (counted fully)."""
    if hasattr(policy, "sparse_metrics"):
        metrics = policy.sparse_metrics()
        return float(metrics["flops_forward"]), float(metrics["flops_dense_forward"])
    import numpy as np

    from sparse_agents.flops import flops

    def zeros(space):
        sub = getattr(space, "spaces", None)
        if isinstance(sub, dict):
            return {k: zeros(v) for k, v in sub.items()}
        return np.zeros(space.shape, dtype=space.dtype)

    obs, _ = policy.obs_to_tensor(zeros(policy.observation_space))
    report = flops(policy, inputs=obs, forward=lambda p, x: p(x, deterministic=True))
    return float(report.sparse), float(report.dense)


def saved_flops(path: Path, algo: str) -> dict:
    """``flops_forward`` and ``flops_ratio`` (to dense) of the agent saved at ``path``."""
    import stable_baselines3 as sb3

    model = getattr(sb3, algo.upper()).load(path, device="cpu")
    sparse, dense = policy_flops(model.policy)
    return {"flops_forward": sparse, "flops_ratio": sparse / dense if dense else math.nan}


def method_name(updater: str, distribution: str) -> str:
    """A row's name: the updater, with the distribution unless it is ERK (or dense)."""
    return updater if updater == DENSE or distribution == "erk" else f"{updater}-{distribution}"


def width_method(name: str, width: int) -> str:
    """An ``--equal-params`` row's name: the method's, then its hidden width."""
    return f"{name}-w{width}"


def split_width(method: str) -> tuple[str, str]:
    """``width_method``'s inverse: (the method's name, the width as written)."""
    name, width = method.rsplit("-w", 1)
    return name, width


def methods(args) -> list[tuple[str, str]]:
    """(updater, distribution) of every row, dense once."""
    return list(dict.fromkeys((u, "erk" if u == DENSE else d)
                              for d in args.distributions for u in args.updaters))


def width_overrides(hyperparams: str, width: int) -> dict:
    """The policy options of hidden width ``width``: ``net_arch=[width, width]``, or for
    ``minatar`` the :class:`~sparse_agents.sb3.MinAtarCNN` with ``width`` units and
    ``width // 8`` channels (128: Young & Tian's 16 channels and 128 units)."""
    if hyperparams == "minatar":
        if width < 8:
            raise ValueError(f"--equal-params must be >= 8 with --hyperparams minatar (the "
                             f"CNN has width // 8 channels), got {width}")
        return {"features_extractor_kwargs": {"channels": width // 8, "features_dim": width}}
    return {"net_arch": [width, width]}


def width_hp(hyperparams: str, width: int) -> list[str]:
    """:func:`width_overrides` as ``--hp KEY=VALUE`` items."""
    return [f"{k}={v!r}" for k, v in width_overrides(hyperparams, width).items()]


def masked_weights(algo: str, env: str, width: int, hyperparams: str = "zoo") -> int:
    """Weights in the layers a sparse ``algo`` policy of hidden width ``width`` masks
    (what its sparsity is of), input layers included (the sparse rows of
    ``--equal-params`` mask them: ``dense_input=False``)."""
    from sparse_agents.experiments.rl import make_agent

    model, _ = make_agent(algo, env, "static", 0.5,
                          overrides=width_overrides(hyperparams, width),
                          hyperparams=hyperparams, sparse_options={"dense_input": False},
                          timesteps=10**6)  # any budget: only the shapes count
    return sum(int(m.numel()) for topo in model.policy.topologies.values()
               for m in topo.masks.values())


def equal_param_variants(args, algo: str, env: str) -> list[dict]:
    """``--equal-params W``: dense at widths k*W for each ``--width-factors`` k (each
    ``--dense-factors`` k when given); each sparse method at the widths above W with the
    nonzero weights of dense at W (``sparsity = 1 - n(W) / n(kW)``)."""
    base = args.equal_params
    if base < 1 or min(args.width_factors) < 1:
        raise ValueError(f"--equal-params and --width-factors must be >= 1, got "
                         f"{base} and {args.width_factors}")
    factors = sorted(set(args.width_factors) | {1})
    dense_factors = set(factors if args.dense_factors is None else args.dense_factors) | {1}
    if not dense_factors <= set(factors):
        raise ValueError(f"--dense-factors must be among --width-factors {factors}, got "
                         f"{args.dense_factors}")
    totals = {k: masked_weights(algo, env, k * base, args.hyperparams) for k in factors}
    budget = totals[1]
    out = []
    for k, total in totals.items():
        width = k * base
        hp = width_hp(args.hyperparams, width)
        if k in dense_factors:
            out.append(dict(updater=DENSE, distribution="erk", sparsity=0.0, extra_hp=hp,
                            method=width_method(DENSE, width), masked_total=total))
        if k == 1:
            continue
        for updater, distribution in methods(args):
            if updater != DENSE:
                out.append(dict(updater=updater, distribution=distribution,
                                extra_hp=[*hp, "dense_input=False"],
                                sparsity=round(1.0 - budget / total, 6), masked_total=total,
                                method=width_method(method_name(updater, distribution), width)))
    return out


def option_variants(specs: list[list[str]]) -> dict[str, list[str]]:
    """``--variant NAME KEY=VALUE ...`` as ``{NAME: [KEY=VALUE, ...]}`` (checked)."""
    out: dict[str, list[str]] = {}
    for name, *options in specs:
        if not options or any("=" not in o for o in options):
            raise ValueError(f"--variant expects NAME KEY=VALUE [KEY=VALUE ...], got "
                             f"{' '.join([name, *options])!r}")
        if "=" in name or "/" in name or name in out:
            raise ValueError(f"--variant NAME must be unique and hold no '=' or '/', got "
                             f"{name!r}")
        out[name] = options
    return out


def variants(args, algo: str, env: str) -> list[dict]:
    """The rows of one task: (updater, distribution, sparsity, extra --hp, method name);
    each ``--variant`` adds a row per dynamic updater."""
    if args.equal_params:
        if args.variant:
            raise ValueError("--variant does not combine with --equal-params (whose rows "
                             "are widths)")
        return equal_param_variants(args, algo, env)
    extra = option_variants(args.variant)
    rows = []
    for u, d in methods(args):
        row = dict(updater=u, distribution=d, sparsity=args.sparsity, extra_hp=[],
                   method=method_name(u, d))
        rows.append(row)
        if u != DENSE and REGISTRY[u].dynamic:  # static has no schedule to vary
            rows += [dict(row, extra_hp=options, method=f"{row['method']}-{name}")
                     for name, options in extra.items()]
    return rows


def make_jobs(args, tasks: list[str], root: Path) -> list[dict]:
    """One job per (task, seed, method), in that order."""
    if not 0 <= args.first_seed < args.seeds:
        raise ValueError(f"--first-seed must be in [0, {args.seeds - 1}] (below --seeds "
                         f"{args.seeds}), got {args.first_seed}")
    jobs = []
    for spec in tasks:
        algo, env, steps = spec.split(":")
        steps = max(1000, int(int(float(steps)) * args.scale))
        task = f"{algo}-{env}"
        rows = variants(args, algo, env)
        for seed in range(args.first_seed, args.seeds):
            for v in rows:
                jobs.append(dict(task=task, algo=algo, env=env, timesteps=steps, seed=seed,
                                 updater=v["updater"], distribution=v["distribution"],
                                 method=v["method"], sparsity=v["sparsity"],
                                 hyperparams=args.hyperparams,
                                 evals=args.evals, eval_episodes=args.eval_episodes,
                                 hp=[*args.hp,
                                     *(args.sparse_hp if v["updater"] != DENSE else []),
                                     *v["extra_hp"]],
                                 resume=args.resume,
                                 masked_total=v.get("masked_total"),
                                 fused_adam=args.fused_adam,
                                 sparse_settings=args.sparse_settings,
                                 out=str(root / "runs" / run_dir(task, v["method"], seed))))
    return jobs


def run_dir(task: str, method: str, seed: int) -> str:
    """A run's folder under ``runs/`` (``/`` of ``MinAtar/...`` ids becomes ``-``)."""
    from sparse_agents.experiments.rl import env_slug

    return f"{env_slug(task)}-{method}-s{seed}"


def run_jobs(jobs: list[dict], workers: int, start: float) -> list[dict]:
    """Every job in a pool of ``workers`` spawned processes; summaries in job order."""
    import multiprocessing as mp

    rows = []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, job): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            summary = fut.result()
            summary.update(seed=job["seed"], task=job["task"], method=job["method"],
                           masked_total=job.get("masked_total"))
            rows.append(summary)
            print(f"[{time.perf_counter() - start:6.0f}s] {job['task']} {job['method']:6s} "
                  f"s{job['seed']}: return {summary['final_mean']:7.1f}, "
                  f"train {summary['train_s']:.1f}s", flush=True)
    order = {(j["task"], j["method"], j["seed"]): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["task"], r["method"], r["seed"])])
    return rows


# --------------------------------------------------------------------------- timing
def _train_chunk(algo: str, env: str, updater: str, steps: int, fused_adam: bool,
                 hyperparams: str = "zoo", timesteps: int | None = None):
    """A warmed-up callable running about ``steps`` optimizer steps of ``train()`` on a
    filled buffer, its exact number of optimizer steps, and the agent."""
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    from sparse_agents.experiments.rl import make_agent

    over = {} if algo in ("ppo", "a2c") else {"learning_starts": 0}
    model, _ = make_agent(algo, env, updater, seed=0, overrides=over, fused_adam=fused_adam,
                          hyperparams=hyperparams, timesteps=timesteps)
    model.set_logger(configure(None, []))
    _, callback = model._setup_learn(10**7)
    if isinstance(model, OnPolicyAlgorithm):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        per_train = (getattr(model, "n_epochs", 1) or 1) * -(
            -model.n_steps * model.n_envs // (getattr(model, "batch_size", None)
                                              or model.n_steps * model.n_envs))
        reps = max(1, steps // per_train)

        def chunk():
            for _ in range(reps):
                model.train()
        n_steps = reps * per_train
    else:
        while model.replay_buffer.size() < 2 * model.batch_size:
            model.collect_rollouts(model.env, callback, model.train_freq,
                                   model.replay_buffer, model.action_noise, learning_starts=0)

        def chunk():
            model.train(gradient_steps=steps, batch_size=model.batch_size)
        n_steps = steps
    chunk()  # warm-up
    return chunk, n_steps, model


def overhead(tasks: list[str], updaters: list[str], rounds: int, steps: int,
             fused_adam: bool, hyperparams: str = "zoo") -> list[dict]:
    """Time ``train()`` per optimizer step in one process, the updaters interleaved
    (same filled buffer, medians of ``rounds``, the starting updater rotating); topology
    updates run (``t_end`` far away), so this is the cost before ``t_end``."""
    import statistics

    import torch

    torch.set_num_threads(1)
    out = []
    for spec in tasks:
        algo, env, budget = spec.split(":")
        chunks = {u: _train_chunk(algo, env, u, steps, fused_adam, hyperparams,
                                  int(float(budget))) for u in updaters}
        raw = sample_interleaved({u: c[0] for u, c in chunks.items()}, rounds=rounds,
                                 warmup=0, rotate=True)
        times = {u: [t / chunks[u][1] * 1e6 for t in s] for u, s in raw.items()}
        base = statistics.median(times["dense"]) if "dense" in times else math.nan
        base_min = min(times["dense"]) if "dense" in times else math.nan
        for updater in updaters:
            med, low = statistics.median(times[updater]), min(times[updater])
            out.append({"task": f"{algo}-{env}", "updater": updater, "us_per_step": med,
                        "vs_dense": med / base, "us_per_step_min": low,
                        "vs_dense_min": low / base_min, "fused_adam": fused_adam,
                        "hyperparams": hyperparams})
            print(f"{algo}-{env} {updater:6s} {med:8.1f} us/step  x{med / base:.3f} "
                  f"(min x{low / base_min:.3f})", flush=True)
    return out


#: (algo, env, updater, net_arch or None for the zoo/SB3 default) for ``--rollout``
ROLLOUT_CASES = (("ppo", "CartPole-v1", "srigl", None), ("ppo", "CartPole-v1", "set", None),
                 ("ppo", "CartPole-v1", "srigl", [256, 256]),
                 ("sac", "Pendulum-v1", "srigl", None), ("dqn", "CartPole-v1", "srigl", None))


def _rollout_row(case: tuple, rounds: int, calls: int, batches: tuple[int, ...]) -> dict:
    """One :data:`ROLLOUT_CASES` entry: dense/condensed speed-up per batch, refresh ms."""
    import numpy as np
    import torch

    from sparse_agents.condensed import condense
    from sparse_agents.experiments.rl import make_agent

    algo, env, updater, arch = case
    model, _ = make_agent(algo, env, updater, 0.9, "erk", 0,
                          overrides={"net_arch": arch} if arch else {})
    policy = model.policy
    policy.set_training_mode(False)
    fast = condense(policy, warn=False)
    first = next(m for m in policy.modules() if isinstance(m, torch.nn.Linear))
    row = {"policy": f"{algo.upper()} {env} {updater}, first layer {first.out_features} wide"}
    for batch in batches:
        obs = torch.as_tensor(
            np.array([policy.observation_space.sample() for _ in range(batch)])).float()
        with torch.no_grad():
            times = time_interleaved(
                {name: partial(net._predict, obs, deterministic=True)
                 for name, net in (("dense", policy), ("condensed", fast))},
                rounds=rounds, calls=calls, warmup=1)  # warm-up: the kernel choice
        row[f"batch {batch}"] = times["dense"] / times["condensed"]
    refresh = time_interleaved({"refresh": fast.refresh}, rounds=rounds * 4, warmup=0)
    row["refresh ms"] = refresh["refresh"] * 1e3
    return row


def rollout_speed(rounds: int, calls: int, batches: tuple[int, ...] = (1, 8, 64)) -> list[dict]:
    """Time the policy's deterministic ``_predict`` (what ``predict`` and rollout
    collection run) on the masked dense policy and on its condensed copy, side by side
    in one process (1 thread, median of ``rounds`` x ``calls`` calls), 90% ERK; and
    one ``refresh()`` of the copy."""
    import torch

    torch.set_num_threads(1)
    out = []
    for case in ROLLOUT_CASES:
        row = _rollout_row(case, rounds, calls, batches)
        print(" | ".join(f"{k}: {v:.2f}" if isinstance(v, float) else v
                         for k, v in row.items()), flush=True)
        out.append(row)
    return out


# --------------------------------------------------------------------------- report
def score(run: dict) -> float:
    """A run's score: the mean of its last 10% of evaluations (older runs: the final)."""
    return run["last10_mean"] if "last10_mean" in run else run["final_mean"]


def summarise(rows: list[dict], names: list[str], reference: str = DENSE) -> list[dict]:
    """Per (task, method): mean +- std over seeds, and the ratios to ``reference`` (the
    dense row; ``dense-w<W>`` with ``--equal-params W``)."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        dense = [r for r in rows if r["task"] == task and r["method"] == reference]
        dense_ret, _ = mean_std([score(r) for r in dense])
        dense_t, _ = mean_std([r["train_s"] for r in dense])
        for name in names:
            runs = [r for r in rows if r["task"] == task and r["method"] == name]
            if not runs:
                continue
            ret, ret_sd = mean_std([score(r) for r in runs])
            t, t_sd = mean_std([r["train_s"] for r in runs])
            density = mean_std([r["density"] for r in runs])[0]
            out.append({
                "task": task, "method": name, "seeds": len(runs),
                "score": ret, "score_std": ret_sd,
                "final_return": mean_std([r["final_mean"] for r in runs])[0],
                "best_return": mean_std([r["best_mean"] for r in runs])[0],
                # signed gap, as a fraction of |dense|: > 0 better, -0.1 = 10% worse
                "vs_dense": (ret - dense_ret) / abs(dense_ret) if dense and dense_ret
                else math.nan,
                "train_s": t, "train_s_std": t_sd,
                "time_vs_dense": t / dense_t if dense and dense_t else math.nan,
                "density": density,
                "nonzero": (density * runs[0]["masked_total"]
                            if runs[0].get("masked_total") else math.nan),
                "updates": mean_std([r["updates"] for r in runs])[0],
                "flops_forward": mean_std([r.get("flops_forward", math.nan)
                                            for r in runs])[0],
                "flops_ratio": mean_std([r.get("flops_ratio", math.nan) for r in runs])[0],
            })
    return out


def markdown(summary: list[dict], sparsity: float | None) -> str:
    """The summary table and its legend; ``sparsity`` ``None``: ``--equal-params`` rows."""
    lines = [
        "| task | method | score (mean ± std) | Δ vs dense | final eval | best eval | "
        "train time s | time vs dense | density | updates | FLOPs/obs (× dense) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        flops = s.get("flops_forward", math.nan)
        flops_cell = (f"{flops:,.0f} ({s['flops_ratio']:.3f})" if math.isfinite(flops)
                      else "–")
        lines.append(
            f"| {s['task']} | {s['method']} | {s['score']:.1f} ± {s['score_std']:.1f} | "
            f"{s['vs_dense']:+.0%} | {s['final_return']:.1f} | {s['best_return']:.1f} | "
            f"{s['train_s']:.1f} ± {s['train_s_std']:.1f} | {s['time_vs_dense']:.3f} | "
            f"{s['density']:.3f} | {s['updates']:.0f} | {flops_cell} |")
    lines.append("")
    at = ("the sparsity that leaves them the nonzero weights of dense at the base width "
          "(`density` column)" if sparsity is None else f"{sparsity:.0%} sparsity")
    lines.append(f"Sparse rows at {at} (ERK unless the row names another "
                 "distribution). `score`: mean of each run's last 10% of deterministic "
                 "evaluations (Graesser et al.), mean ± sample std over seeds (÷ n − 1); "
                 "`Δ vs dense`: (sparse − dense) / |dense| of those means (negative: "
                 "worse); `final eval`: the evaluation at the end, mean over seeds; `best eval`: "
                 "mean over seeds of each run's best evaluation; `train time`: "
                 "wall time of `learn()` minus evaluation; `FLOPs/obs`: forward FLOPs per "
                 "observation of the trained policy (`sparse_agents.flops`: active weights "
                 "only, ablated neurons folded; SAC/TD3: the actor), and its ratio to the "
                 "same policy dense.")
    return "\n".join(lines) + "\n"


def contrasts(rows: list[dict], jobs: list[dict], reference: str = DENSE) -> list[dict]:
    """Per task: every method's score minus ``reference``'s, and every dynamic updater's
    minus the fixed-mask one's (static) at the same distribution and sparsity (a
    ``--variant`` row too: static has no variants), with the
    half-width of the difference's 95% CI (Welch's t over seeds: runs of one seed share
    only the environment seeds, so the samples are not paired)."""
    kinds = {j["method"]: (j["updater"], j["distribution"], j["sparsity"]) for j in jobs}
    fixed = {(d, s): m for m, (u, d, s) in kinds.items()
             if u != DENSE and not REGISTRY[u].dynamic}
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        scores: dict[str, list[float]] = {}
        for r in rows:
            if r["task"] == task:
                scores.setdefault(r["method"], []).append(score(r))
        for method, (updater, distribution, sparsity) in kinds.items():
            baselines = [reference]
            if updater != DENSE and REGISTRY[updater].dynamic:
                baselines.append(fixed.get((distribution, sparsity)))
            for base in baselines:
                if base is None or base == method or not {method, base} <= scores.keys():
                    continue
                diff, half = diff_ci(scores[method], scores[base], paired=False)
                out.append({"task": task, "method": method, "baseline": base,
                            "seeds": f"{len(scores[method])}/{len(scores[base])}",
                            "diff": diff, "ci95": half,
                            "excludes_zero": excludes_zero(diff, half)})
    return out


CONTRAST_FIELDS = ["task", "method", "baseline", "seeds", "diff", "ci95", "excludes_zero"]


def contrast_markdown(table: list[dict]) -> str:
    """:func:`contrasts` as a markdown table and its legend."""
    lines = ["| task | method − baseline | seeds | Δ score | 95% CI | CI excludes 0 |",
             "|---|---|---|---|---|---|"]
    for c in table:
        ci = (f"[{c['diff'] - c['ci95']:+.1f}, {c['diff'] + c['ci95']:+.1f}]"
              if math.isfinite(c["ci95"]) else "–")
        lines.append(f"| {c['task']} | {c['method']} − {c['baseline']} | {c['seeds']} | "
                     f"{c['diff']:+.1f} | {ci} | {'yes' if c['excludes_zero'] else 'no'} |")
    lines.append("\nΔ score: difference of the mean scores; 95% CI: Welch's t interval of "
                 "that difference over seeds (`sparse_agents.intervals.diff_ci`; – with one "
                 "seed on a side).")
    return "\n".join(lines) + "\n"


def _curves(rows: list[dict], root: Path, task: str, method: str):
    """Evaluation curves of every seed of (task, method): timesteps and returns."""
    import numpy as np

    curves = []
    for r in rows:
        if r["task"] != task or r["method"] != method:
            continue
        path = root / "runs" / run_dir(task, method, r["seed"]) / "evaluations.csv"
        with open(path) as fh:
            curves.append([(float(a), float(b)) for a, b, _ in list(csv.reader(fh))[1:]])
    n = min(len(c) for c in curves)
    t = np.array([c[i][0] for c in curves for i in range(n)]).reshape(len(curves), n)
    y = np.array([c[i][1] for c in curves for i in range(n)]).reshape(len(curves), n)
    return t, y


def _task_figure(tasks: list[str], draw, out: Path, xlabel: str, ylabel: str) -> None:
    """One panel per task, ``draw(ax, task)`` filling it; saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        draw(ax, task)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot(rows: list[dict], out: Path, root: Path) -> None:
    """Evaluation curves, mean +- sample std (ddof=1) over seeds, per task and method
    (no band with one seed)."""
    import numpy as np

    def draw(ax, task: str) -> None:
        for method in dict.fromkeys(r["method"] for r in rows if r["task"] == task):
            t, y = _curves(rows, root, task, method)
            sd = y.std(0, ddof=1) if len(y) > 1 else np.zeros(y.shape[1])
            ax.plot(t.mean(0), y.mean(0), label=method)
            ax.fill_between(t.mean(0), y.mean(0) - sd, y.mean(0) + sd, alpha=0.15)
        ax.set_title(task, fontsize=10)

    _task_figure(list(dict.fromkeys(r["task"] for r in rows)), draw, out, "timesteps",
                 "eval return")


def dodge(index: int, count: int, step: float = 1.04) -> float:
    """Multiplicative x offset of series ``index`` of ``count`` on a log axis, centred on
    1, so that series at the same x (the same nonzero weights) stand side by side."""
    return step ** (index - (count - 1) / 2)


def log_xlim(xs: list[float], span: float = 4.0) -> tuple[float, float]:
    """Limits of a log x axis around ``xs`` covering at least a factor ``span``, with a
    margin, so that points at (almost) one x do not stretch a few units over the axis."""
    lo, hi = min(xs) / 1.25, max(xs) * 1.25
    if hi / lo < span:
        centre = math.sqrt(lo * hi)
        lo, hi = centre / math.sqrt(span), centre * math.sqrt(span)
    return lo, hi


def label_log_x(ax) -> None:
    """Labelled ticks at 1, 2 and 5 x 10^k on a log x axis, so that one within a factor 4
    (``log_xlim``'s least span) shows a value even where it holds no power of 10."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_equal_params(summary: list[dict], out: Path) -> None:
    """Score against nonzero weights per task: dense across widths, each sparse method
    across its widths (``--equal-params``); rows dodged by a few percent in x."""

    def draw(ax, task: str) -> None:
        rows = [s for s in summary if s["task"] == task and math.isfinite(s["nonzero"])]
        at = {s["method"]: s["nonzero"] * dodge(i, len(rows)) for i, s in enumerate(rows)}
        parts = {s["method"]: split_width(s["method"]) for s in rows}
        for family in dict.fromkeys(family for family, _ in parts.values()):
            pts = [s for s in rows if parts[s["method"]][0] == family]
            xs = [at[s["method"]] for s in pts]
            ax.errorbar(xs, [s["score"] for s in pts], yerr=[s["score_std"] for s in pts],
                        marker="o", capsize=3, label=family)
            for x, s in zip(xs, pts, strict=True):
                ax.annotate(parts[s["method"]][1], (x, s["score"]),
                            fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        if rows:
            ax.set_xlim(*log_xlim([s["nonzero"] for s in rows]))
        label_log_x(ax)
        ax.set_title(f"{task} (labels: hidden width)", fontsize=10)

    _task_figure(list(dict.fromkeys(s["task"] for s in summary)), draw, out,
                 "nonzero weights (methods dodged a few % apart)",
                 "score (last 10% of evaluations)")


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields or list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


RESULT_FIELDS = ["task", "algo", "env", "method", "updater", "distribution", "sparsity",
                 "seed", "timesteps", "last10_mean", "final_mean", "final_std", "best_mean",
                 "train_s", "eval_s", "wall_s",
                 "density", "updates", "itop", "flops_forward", "flops_ratio", "optimizer"]


def optimizer_note(rows: list[dict]) -> str:
    """What trained each method, from the runs' summaries (older runs did not record it:
    they predate fused Adam in sparse policies and ran SB3's single-tensor default
    unless ``--fused-adam``)."""
    by_method: dict[str, set] = {}
    for r in rows:
        by_method.setdefault(r["method"], set()).add(r.get("optimizer") or "not recorded")
    return "optimizers: " + "; ".join(f"{m} {', '.join(sorted(v))}"
                                      for m, v in by_method.items())


def write_report(args, rows: list[dict], jobs: list[dict], root: Path, start: float) -> str:
    """results.csv, summary.csv, summary.md and curves.png under ``root``; the markdown."""
    _write_csv(root / "results.csv", rows, RESULT_FIELDS)
    reference = width_method(DENSE, args.equal_params) if args.equal_params else DENSE
    summary = summarise(rows, list(dict.fromkeys(j["method"] for j in jobs)), reference)
    _write_csv(root / "summary.csv", summary)
    md = markdown(summary, None if args.equal_params else args.sparsity)
    table = contrasts(rows, jobs, reference)
    _write_csv(root / "contrasts.csv", table, CONTRAST_FIELDS)
    if table:
        md += "\nDifferences of the score:\n\n" + contrast_markdown(table)
    progress: dict[tuple[str, str], list[Path]] = {}
    for r in rows:
        progress.setdefault((r["task"], r["method"]), []).append(
            root / "runs" / run_dir(r["task"], r["method"], r["seed"]) / "progress.csv")
    md += update_size_markdown(update_size_rows(progress, reference))
    budgets = ", ".join(f"{j['task']} {j['timesteps']} steps" for j in
                        {j["task"]: j for j in jobs}.values())
    counts = {f"{r['task']} {r['method']}": r["seeds"] for r in summary}
    seeds = (f"{args.seeds} seeds" if set(counts.values()) <= {args.seeds} else
             "seeds per row: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    md += (f"\nBudgets: {budgets}; {seeds}; {args.workers} workers; "
           f"{optimizer_note(rows)}; "
           f"hyperparameters: {args.hyperparams}"
           + ("" if args.sparse_settings == "table" else
              "; sparse runs: the sparse policies' shipped defaults over the table's dense "
              "configuration (`--sparse-settings defaults`)")
           + ("" if args.report else f"; total wall {time.perf_counter() - start:.0f} s")
           + ".\n")
    (root / "summary.md").write_text(md)
    plot(rows, root / "curves.png", root)
    if args.equal_params:
        plot_equal_params(summary, root / "equal_params.png")
        md += ("\nEqual parameter count (`equal_params.png`):\n\n| task | method | nonzero "
               "weights | score |\n|---|---|---|---|\n" + "".join(
                   f"| {s['task']} | {s['method']} | {s['nonzero']:,.0f} | {s['score']:.1f} ± "
                   f"{s['score_std']:.1f} |\n" for s in summary))
        (root / "summary.md").write_text(md)
    return md


# --------------------------------------------------------------------------- modes
def main_rollout(args) -> int:
    """``--rollout``: rollout.md under ``--out``."""
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    rows = rollout_speed(rounds=5, calls=300)
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else r[k]
                                for k in keys) + " |" for r in rows]
    (root / "rollout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main_overhead(args) -> int:
    """``--overhead``: overhead[_<hyperparams>][_fused].csv and .md under ``--out``."""
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    rows = overhead(list(args.tasks or DEFAULT_TASKS), list(args.updaters), args.rounds,
                    args.steps, args.fused_adam, args.hyperparams)
    name = "overhead" + ("" if args.hyperparams == "zoo" else f"_{args.hyperparams}") + (
        "_fused" if args.fused_adam else "")
    _write_csv(root / f"{name}.csv", rows)
    lines = ["| task | updater | µs per optimizer step (median) | vs dense (median) | "
             "vs dense (best round) |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['updater']} | {r['us_per_step']:.0f} | "
              f"{r['vs_dense']:.3f} | {r['vs_dense_min']:.3f} |" for r in rows]
    (root / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def default_tasks() -> list[str]:
    """:data:`DEFAULT_TASKS`, plus :data:`MUJOCO_TASK` when mujoco is importable."""
    tasks = list(DEFAULT_TASKS)
    try:
        import mujoco  # noqa: F401

        tasks.append(MUJOCO_TASK)
    except ImportError:
        print("mujoco is not installed: no SAC MuJoCo task", flush=True)
    return tasks


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rollout:
        return main_rollout(args)
    if args.overhead:
        return main_overhead(args)
    tasks = list(args.tasks) if args.tasks else default_tasks()
    if args.quick:
        args.seeds, args.scale = 1, args.scale * 0.05
    if args.report:
        args.resume = True
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    jobs = make_jobs(args, tasks, root)
    if args.report:  # a sweep still under way: tabulate the finished runs
        missing = [j for j in jobs if not (Path(j["out"]) / "summary.json").exists()]
        if missing:
            print(f"--report: {len(missing)} of {len(jobs)} runs not finished, left out: "
                  + ", ".join(Path(j["out"]).name for j in missing), flush=True)
        jobs = [j for j in jobs if j not in missing]
        if not jobs:
            raise FileNotFoundError(f"--report: no finished run under {root / 'runs'}")
    print(f"{len(jobs)} runs on {args.workers} workers -> {root}", flush=True)
    start = time.perf_counter()
    check_resumable(jobs)
    rows = run_jobs(jobs, args.workers, start)
    print(write_report(args, rows, jobs, root, start), flush=True)
    return 0
