"""Train a (sparse) SB3 agent from the command line, rl-zoo style.

    sparse-train --timesteps 100000 --out runs/quickstart          # the README quickstart
    python scripts/train_agent.py --algo dqn --updater rigl --sparsity 0.9 --out runs/dqn

Writes to ``--out``: ``model.zip`` (load with ``PPO.load``), ``evaluations.csv``
(timesteps, mean, std of the deterministic evaluation return), ``learning_curve.png``,
``progress.csv`` (SB3's logger, ``sparse/`` metrics included), ``config.json`` and
``summary.json`` (final return, wall time, sparse metrics); ``vecnormalize.pkl`` when
observations are normalised.

Hyperparameters: the rl-baselines3-zoo values for the classic tasks below (``HYPERPARAMS``),
SB3's defaults elsewhere; ``--hp key=value`` overrides any (values are Python literals;
policy keywords such as ``net_arch`` and sparse options such as ``gamma_sal`` or
``dense_layers`` go to ``policy_kwargs``).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from sparse_agents.distributions import METHODS
from sparse_agents.experiments.hyperparams import SOURCES, SPARSE_SETTINGS, hyperparameters
from sparse_agents.experiments.results import write_atomic
from sparse_agents.experiments.rl import (
    ALGOS,
    DEFAULT_ENV,
    env_slug,
    evaluation_callback,
    last_fraction_score,
    make_agent,
    nonzero_params,
    optimizer_label,
)
from sparse_agents.updaters import DENSE, updater_names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparse-train", description=__doc__.split("\n\n")[0],
        epilog="Each run trains from scratch and overwrites the files in --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--algo", choices=ALGOS, default="ppo")
    p.add_argument("--env", default=None, help="Gymnasium id (default: CartPole-v1, "
                   "Pendulum-v1 for sac/td3)")
    p.add_argument("--updater", choices=updater_names(dense=True), default="srigl",
                   help="topology updater; 'dense' trains SB3's plain policy")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--distribution", choices=METHODS, default="erk")
    p.add_argument("--delta-t", type=int, default=None,
                   help="optimizer steps between topology updates (default: the sparse "
                   "policy's, see docs/rl.md)")
    p.add_argument("--drop-fraction", type=float, default=None,
                   help="fraction of active weights replaced per update (default: the "
                   "policy's)")
    p.add_argument("--t-end-fraction", type=float, default=None,
                   help="updates stop after this fraction of the optimizer steps "
                   "(default: the policy's)")
    p.add_argument("--condensed-rollout", action="store_true",
                   help="roll out with a condensed copy of the policy")
    p.add_argument("--fused-adam", action="store_true",
                   help="Adam(fused=True) (keeps SB3's other Adam defaults); on CPU it "
                   "avoids the slow sqrt of the exact-zero moments of masked weights")
    p.add_argument("--timesteps", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory "
                   "(default runs/<algo>-<env>-<updater>-s<seed>)")
    p.add_argument("--eval-freq", type=int, default=None,
                   help="timesteps between evaluations (default timesteps/10)")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--hyperparams", choices=tuple(SOURCES), default="zoo",
                   help="hyperparameter table: rl-baselines3-zoo's, or a paper's own "
                        "configuration with its sparse schedule (graesser: Graesser et al. "
                        "2022; dqn CartPole-v1, ppo and sac HalfCheetah-v5; minatar: Young "
                        "& Tian 2019's DQN on MinAtar/<Game>-v1)")
    p.add_argument("--sparse-settings", choices=SPARSE_SETTINGS, default="table",
                   help="a sparse run's schedule, init and sparse-only values: the table's "
                        "(table: a paper's sparse config) or the sparse policy's shipped "
                        "defaults over the table's dense configuration (defaults: what a "
                        "user who changes only the policy class gets)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter, e.g. --hp n_steps=64 --hp "
                   "net_arch=[64,64]")
    p.add_argument("--n-envs", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/tb")
    p.add_argument("--verbose", type=int, default=0, help="1: SB3's log tables on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip learning_curve.png")
    return p


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _literal(value.strip())
    return out


def recorded_hyperparams(algo: str, env_id: str, table: str, overrides: dict[str, Any],
                         sparse: bool = True) -> dict[str, str]:
    """The hyperparameters a run records in ``config.json``: the table's for the task and
    the run's kind (``sparse``: the table's sparse config; ``False`` for a dense run and for
    ``--sparse-settings defaults``) with the ``--hp`` overrides, as ``repr`` strings."""
    return {k: repr(v) for k, v in {**hyperparameters(algo, env_id, table, sparse),
                                    **overrides}.items()}


def plot_curve(rows: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t, mean, std = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(t, mean, marker="o", ms=3)
    ax.fill_between(t, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("timesteps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def env_of(args: argparse.Namespace) -> str:
    """The environment id a run trains on (``--env`` or the algorithm's default)."""
    return args.env or DEFAULT_ENV[args.algo]


def table_sparse(args: argparse.Namespace) -> bool:
    """Whether the run takes its table's sparse config (a sparse run with
    ``--sparse-settings table``)."""
    return args.updater != DENSE and args.sparse_settings == "table"


def build_agent(args: argparse.Namespace):
    """``(model, eval_env)`` of the run ``args`` describe (nothing trained or written)."""
    sparse_options: dict[str, Any] = {"condensed_rollout": args.condensed_rollout}
    for key in ("delta_t", "drop_fraction", "t_end_fraction"):
        if getattr(args, key) is not None:
            sparse_options[key] = getattr(args, key)
    return make_agent(args.algo, env_of(args), args.updater,
                      args.sparsity, args.distribution, args.seed, parse_overrides(args.hp),
                      sparse_options, args.n_envs, args.device, args.verbose,
                      args.fused_adam, args.hyperparams, args.timesteps, args.sparse_settings)


def options_in_effect(model) -> dict[str, str] | None:
    """A sparse policy's options in effect, defaults included, as ``repr`` strings (what
    ``config.json`` records as ``sparse_options``); ``None`` for a dense policy."""
    options = getattr(model.policy, "sparse_options", None)
    return None if options is None else {k: repr(v) for k, v in options.items()}


def initial_kept(model) -> dict[str, int] | None:
    """A freshly built sparse policy's kept weights per masked parameter (what
    ``config.json`` records as ``initial_kept``, so that a change in how the library
    allocates them shows when a sweep resumes); ``None`` for a dense policy."""
    topologies = getattr(model.policy, "topologies", None)
    if not topologies:
        return None
    return {f"{key}/{name}": int(mask.sum()) for key, topo in topologies.items()
            for name, mask in topo.masks.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate, save; returns the summary."""
    import torch
    from stable_baselines3.common.logger import configure

    if not 0.0 <= args.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if args.timesteps < 1:
        raise ValueError(f"--timesteps must be >= 1, got {args.timesteps}")
    torch.set_num_threads(max(1, args.threads))
    env_id = env_of(args)
    out = Path(args.out or f"runs/{args.algo}-{env_slug(env_id)}-{args.updater}-s{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    overrides = parse_overrides(args.hp)
    model, eval_env = build_agent(args)
    formats = ["csv"] + (["stdout"] if args.verbose else []) + \
        (["tensorboard"] if args.tensorboard else [])
    model.set_logger(configure(str(out), formats))
    label = (f"{args.algo.upper()} {env_id} "
             + ("dense" if args.updater == DENSE
                else f"{args.updater} {args.sparsity:.0%} {args.distribution}"))
    rows: list = []
    show = not args.no_progress

    def echo(row):
        if show:
            print(f"  eval @ {row[0]:>8d} steps: return {row[1]:8.1f} +- {row[2]:.1f}",
                  flush=True)

    every = args.eval_freq or max(1, args.timesteps // 10)
    callback = evaluation_callback(eval_env, every, args.eval_episodes, rows,
                                   out / "evaluations.csv", echo)
    config = dict(vars(args), env=env_id, out=str(out), hyperparams=recorded_hyperparams(
        args.algo, env_id, args.hyperparams, overrides, table_sparse(args)))
    options = options_in_effect(model)
    if options is not None:
        config["sparse_options"] = options
        config["initial_kept"] = initial_kept(model)
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    print(f"training {label} for {args.timesteps} timesteps -> {out}", flush=True)
    start = time.perf_counter()
    model.learn(args.timesteps, callback=callback, progress_bar=show)
    wall = time.perf_counter() - start
    model.save(out / "model.zip")
    env = model.get_env()
    if hasattr(env, "obs_rms"):
        env.save(str(out / "vecnormalize.pkl"))
    if rows and not args.no_plot:
        plot_curve(rows, out / "learning_curve.png", label)
    metrics = model.policy.sparse_metrics() if hasattr(model.policy, "sparse_metrics") else {}
    summary = {
        "algo": args.algo, "env": env_id, "updater": args.updater,
        "sparsity": 0.0 if args.updater == DENSE else args.sparsity,
        "distribution": args.distribution, "seed": args.seed, "timesteps": args.timesteps,
        "final_mean": rows[-1][1] if rows else math.nan,
        "final_std": rows[-1][2] if rows else math.nan,
        "best_mean": max(r[1] for r in rows) if rows else math.nan,
        "last10_mean": last_fraction_score(rows), "hyperparams": args.hyperparams,
        "wall_s": wall, "eval_s": callback.seconds, "train_s": wall - callback.seconds,
        "density": metrics.get("density", 1.0), "updates": metrics.get("updates", 0),
        "itop": metrics.get("itop", math.nan), "optimizer": optimizer_label(model.policy),
        "nonzero_params": nonzero_params(model.policy),
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))  # marks the run done
    print(f"done in {wall:.1f}s ({wall - callback.seconds:.1f}s training): final return "
          f"{summary['final_mean']:.1f} +- "
          f"{summary['final_std']:.1f}, density {summary['density']:.3f}, "
          f"{summary['updates']} topology updates; saved {out / 'model.zip'}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, args.threads)))
    try:
        run(args)
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
