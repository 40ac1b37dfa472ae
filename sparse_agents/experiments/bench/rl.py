"""Benchmark sparse SB3 agents: dense vs every updater at 90% sparsity.

Behind ``scripts/bench_rl.py``, one module per mode: the sweep of full training runs
(:mod:`.rl_sweep`: typed study jobs on the study runner, process pool or Ray), its report
(:mod:`.rl_report`, also ``--report``), and in-process timings of ``train()`` per optimizer
step (``--overhead``) and of the condensed policy's ``predict`` (``--rollout``)
(:mod:`.rl_timing`). This module is the command line.
"""

from __future__ import annotations

import argparse

from sparse_agents.distributions import METHODS
from sparse_agents.experiments.bench.rl_sweep import main_sweep
from sparse_agents.experiments.bench.rl_timing import main_overhead, main_rollout
from sparse_agents.experiments.hyperparams import SOURCES, SPARSE_SETTINGS
from sparse_agents.study.runner import BACKENDS
from sparse_agents.updaters import updater_names

DESCRIPTION = """\
Benchmark sparse SB3 agents: dense vs static vs SET vs RigL vs SRigL at 90% sparsity.

Tasks (--tasks, algo:env:timesteps): PPO on CartPole-v1 and Acrobot-v1 and DQN on
CartPole-v1 with rl-baselines3-zoo hyperparameters
(sparse_agents.experiments.hyperparams.HYPERPARAMS), plus SAC on HalfCheetah-v5 when
mujoco is importable. Every (task, updater, seed) run is a study job (typed, named by its
folder) that trains in its own process (--workers at a time, one torch thread each; or
on a Ray cluster, --backend ray) through the same code path as scripts/train_agent.py
(sparse_agents.experiments.rl_run.RLRun) and evaluates the deterministic policy (--eval-episodes
episodes) --evals times. The score is the papers' (Graesser et al.): the mean of the last
10% of the evaluations; the final evaluation is reported beside it. --hyperparams
graesser runs the paper's own configuration (network, optimizer, sparse schedule) instead
of the zoo's; --distributions erk uniform adds each sparse method under uniform density
(rows "<updater>-uniform").

Writes under --out: runs/<task>-<method>-s<seed>/ (model, evaluations.csv,
summary.json; failed.json for a run that raised), study.json (the sweep's jobs),
results.csv (one row per run), summary.csv and summary.md (mean +- std over seeds
of the score and of the final return, training wall time without evaluation, and its
ratio to dense; forward FLOPs per observation of the trained policy and their ratio to
dense), contrasts.csv (each row's score minus dense's, and each DST row's
minus static's, with the 95% CI of the difference, Welch's t), curves.png.
Re-running retrains every run and overwrites; with --resume, re-running resumes:
finished runs are skipped, and a finished run whose recorded settings differ from the
sweep's (arguments, hyperparameters, sparse options in effect) stops it
before anything trains (--report only rebuilds the tables; --dry-run only counts the
finished runs a resume would skip and names the ones it would train).
--overhead writes overhead[_<hyperparams>][_fused].csv/.md and --rollout rollout.md
(overwritten)."""

EPILOG = """\
examples:
  python scripts/bench_rl.py --out results/rl                       # full budget
  python scripts/bench_rl.py --quick --out /tmp/rl                  # smoke run
  python scripts/bench_rl.py --hyperparams graesser --tasks dqn:CartPole-v1:100000 \
      --evals 50 --resume --out results/rl_graesser      # Graesser et al.'s DQN CartPole
  python scripts/bench_rl.py --dry-run --out results/rl            # what --resume skips
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
    p.add_argument("--sparsities", type=float, nargs="+", default=None, metavar="S",
                   help="a row per sparse method at each sparsity (rows "
                        "<method>-s<percent>; overrides --sparsity): a sparsity curve")
    p.add_argument("--widths", type=int, nargs="+", default=None, metavar="W",
                   help="every row at each hidden width W (rows <method>-w<W>, dense "
                        "included; with --hyperparams minatar the CNN's units, channels "
                        "W/8): width scaling at a fixed sparsity, against dense of the same "
                        "width")
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
    p.add_argument("--backend", choices=BACKENDS, default="process",
                   help="where the runs train: local processes or a Ray cluster (the "
                        "driver writes each summary.json; models and curves stay where "
                        "their worker ran unless --out is on a shared file system)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    p.add_argument("--evals", type=int, default=5, help="evaluations per run")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--window-evals", type=int, default=0, metavar="K",
                   help="K more evaluations spread over the last 10%% of each run (the "
                        "protocol's score window needs >= 5: docs/protocol.md)")
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
    p.add_argument("--dry-run", action="store_true",
                   help="train nothing, write nothing: check the finished runs as --resume "
                        "does and say which runs a resumed sweep would train")
    p.add_argument("--report", action="store_true",
                   help="rebuild the tables from the runs already under --out (no training)")
    p.add_argument("--overhead", action="store_true",
                   help="only time train() per optimizer step, in process, interleaved")
    p.add_argument("--rounds", type=int, default=11, help="--overhead rounds")
    p.add_argument("--steps", type=int, default=200, help="--overhead steps per round")
    p.add_argument("--rollout", action="store_true",
                   help="only time predict on the masked vs the condensed policy")
    return p




def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rollout:
        return main_rollout(args)
    if args.overhead:
        return main_overhead(args)
    return main_sweep(args)
