"""The evidence suite (docs/protocol.md; ``scripts/evidence_suite.py``): every sweep that
carries a claim of docs/rl_benchmarks.md, as the ``scripts/bench_rl.py`` arguments that
train it, so that any session or machine continues a sweep where the last one stopped
(``--resume``: finished runs are skipped, and runs made with other settings refused).

Every sweep runs on the test seeds 0-9 (5 for the curves), evaluates 20 times over the
run plus 5 times in its last 10% (the protocol's score window) with 10 episodes, and uses
the shipped defaults (``--sparse-settings defaults``); the budgets are fixed here, before
the runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from sparse_agents.experiments.bench import rl as bench_rl

__all__ = ["SWEEPS", "Sweep", "main"]

#: the protocol's evaluation settings, shared by every sweep
EVALS = ["--evals", "20", "--window-evals", "5", "--eval-episodes", "10"]
METHODS = ("--updaters", "dense", "static", "set", "rigl", "srigl")
#: the papers' configurations with the sparse policies' shipped defaults
GRAESSER = ("--hyperparams", "graesser", "--sparse-settings", "defaults")
MINATAR = ("--hyperparams", "minatar", "--sparse-settings", "defaults")
#: the curves' rows: RigL and SRigL against dense
CURVE = ("--updaters", "dense", "rigl", "srigl")
SPARSITIES = ("--distributions", "erk", "uniform", "--sparsities", "0.5", "0.8", "0.9",
              "0.95", "0.99", "--seeds", "5")


@dataclass(frozen=True)
class Sweep:
    """One sweep: what it measures, its ``bench_rl.py`` arguments (without ``--out``,
    ``--workers``, ``--resume``) and its folder under ``results/evidence/``."""

    claim: str
    args: tuple[str, ...]
    folder: str

    def argv(self, root: str, workers: int) -> list[str]:
        return [*self.args, *EVALS, "--workers", str(workers), "--resume",
                "--out", f"{root}/{self.folder}"]


def _sweep(claim: str, folder: str, *args: str) -> Sweep:
    return Sweep(claim, tuple(args), folder)


SWEEPS: dict[str, Sweep] = {
    "ppo-hc-300k": _sweep(
        "matches dense / DST above static: PPO HalfCheetah-v5, Graesser's configuration, "
        "300k steps (30% of the paper's)", "ppo_hc_300k",
        *GRAESSER,
        "--tasks", "ppo:HalfCheetah-v5:300000", *METHODS, "--seeds", "10"),
    "sac-hc-100k": _sweep(
        "matches dense / DST above static: SAC HalfCheetah-v5 (256, 256), Graesser's "
        "configuration, 100k steps (10% of the paper's)", "sac_hc_100k",
        *GRAESSER,
        "--tasks", "sac:HalfCheetah-v5:100000", *METHODS, "--seeds", "10"),
    "dqn-cartpole-100k": _sweep(
        "matches dense / DST above static: DQN CartPole-v1, Graesser's configuration, 100k "
        "steps", "dqn_cartpole_100k",
        *GRAESSER,
        "--tasks", "dqn:CartPole-v1:100000", *METHODS, "--seeds", "10"),
    "minatar-breakout-100k": _sweep(
        "matches dense / DST above static: DQN MinAtar Breakout, Young & Tian's "
        "configuration, 100k steps", "minatar_breakout_100k",
        *MINATAR,
        "--tasks", "dqn:MinAtar/Breakout-v1:100000", *METHODS, "--seeds", "10"),
    "minatar-spaceinvaders-100k": _sweep(
        "matches dense / DST above static: DQN MinAtar SpaceInvaders, Young & Tian's "
        "configuration, 100k steps", "minatar_spaceinvaders_100k",
        *MINATAR,
        "--tasks", "dqn:MinAtar/SpaceInvaders-v1:100000", *METHODS, "--seeds", "10"),
    "sparsity-minatar-breakout": _sweep(
        "sparsity curve, ERK vs uniform: DQN MinAtar Breakout, 50-99%", "sparsity_minatar",
        *MINATAR,
        "--tasks", "dqn:MinAtar/Breakout-v1:100000", *CURVE, *SPARSITIES),
    "sparsity-ppo-hc": _sweep(
        "sparsity curve, ERK vs uniform: PPO HalfCheetah-v5, 300k steps, 50-99%",
        "sparsity_ppo_hc",
        *GRAESSER,
        "--tasks", "ppo:HalfCheetah-v5:300000", *CURVE, *SPARSITIES),
    "width-sac-hc": _sweep(
        "width scaling: SAC HalfCheetah-v5 at widths 256-2048, dense vs 90%/95% RigL and "
        "SRigL of the same width, 100k steps (CPU-seconds: run it alone, --workers 1)",
        "width_sac_hc",
        *GRAESSER,
        "--tasks", "sac:HalfCheetah-v5:100000", *CURVE,
        "--widths", "256", "512", "1024", "2048", "--sparsities", "0.9", "0.95",
        "--seeds", "5"),
    "width-minatar-breakout": _sweep(
        "width scaling: DQN MinAtar Breakout at 1x-8x MinAtarCNN width (128-1024 units), "
        "dense vs 90%/95% RigL and SRigL, 100k steps (CPU-seconds: run it alone)",
        "width_minatar",
        *MINATAR,
        "--tasks", "dqn:MinAtar/Breakout-v1:100000", *CURVE,
        "--widths", "128", "256", "512", "1024", "--sparsities", "0.9", "0.95",
        "--seeds", "5"),
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="evidence_suite.py", description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python scripts/evidence_suite.py --list\n"
               "  python scripts/evidence_suite.py ppo-hc-300k --workers 1\n"
               "  python scripts/evidence_suite.py --command width-sac-hc",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="*", metavar="SWEEP",
                   help=f"sweeps to train, in order: {', '.join(SWEEPS)}")
    p.add_argument("--list", action="store_true",
                   help="each sweep's claim and how many of its runs are finished")
    p.add_argument("--command", action="store_true",
                   help="print each named sweep's bench_rl.py command; train nothing")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--root", default="results/evidence")
    args = p.parse_args(argv)
    if args.list:
        for name, sweep in SWEEPS.items():
            print(f"{name}: {sweep.claim}", flush=True)
            bench_rl.main([*sweep.argv(args.root, args.workers), "--dry-run"])
        return 0
    if not args.sweeps:
        p.error("name a sweep (or --list)")
    unknown = [name for name in args.sweeps if name not in SWEEPS]
    if unknown:
        p.error(f"unknown sweep(s) {unknown}: the sweeps are {list(SWEEPS)}")
    for name in args.sweeps:
        argv_ = SWEEPS[name].argv(args.root, args.workers)
        if args.command:
            print("python scripts/bench_rl.py " + " ".join(argv_))
        else:
            bench_rl.main(argv_)
    return 0
