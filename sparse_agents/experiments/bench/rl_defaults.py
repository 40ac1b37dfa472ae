"""The RL-defaults sweep of docs/rl_benchmarks.md: sparse PPO on CartPole-v1 under several
topology update schedules and seeds, scored by the final and the last-10% evaluation return
(as Graesser et al. score). Each config is named ``sparse-train`` options, read once into a
typed run (:class:`~sparse_agents.experiments.rl_run.RLRun`); each (config, seed) is a study
job (:class:`~sparse_agents.study.rl_runs.RLRunJob`, folder ``OUT/<config>-s<seed>/``) on
the study runner."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from sparse_agents.cli.train_agent import build_parser as train_parser
from sparse_agents.cli.train_agent import run_of
from sparse_agents.experiments.rl import last_fraction_score
from sparse_agents.intervals import mean_std
from sparse_agents.study.rl_runs import RLRunJob, refuse_stale
from sparse_agents.study.runner import BACKENDS, pending, run_study

#: keep the first layer of the policy and value MLPs dense (config D)
DENSE_INPUT = r"dense_layers=['mlp_extractor\\.policy_net\\.0','mlp_extractor\\.value_net\\.0']"

#: the input layers masked too: the on-policy default before 2026-11-29
MASKED_INPUT = ["--hp", "dense_input=False"]
#: SB3's initial values inside the masks: the default before 2026-11-30 (sparse_init)
KEEP_INIT = ["--hp", "sparse_init=None"]
FAN_AVG = ["--hp", "sparse_init='fan_avg'"]

#: name -> sparse-train arguments (on top of --timesteps, --eval-freq, --seed, --out);
#: the configs of the sweeps made before sparse_init pin ``sparse_init=None``
CONFIGS: dict[str, list[str]] = {
    "dense": ["--updater", "dense"],
    "static": ["--updater", "static", *KEEP_INIT],
    "defaults": [],  # the sparse policies' own defaults (SRigL 90% ERK, RL schedule)
    "A": ["--delta-t", "100", "--drop-fraction", "0.3", "--t-end-fraction", "0.75",
          *MASKED_INPUT, *KEEP_INIT],
    "B": ["--delta-t", "250", "--drop-fraction", "0.3", "--t-end-fraction", "0.75",
          *MASKED_INPUT, *KEEP_INIT],
    "C": ["--delta-t", "1000", "--drop-fraction", "0.1", "--t-end-fraction", "0.8",
          *MASKED_INPUT, *KEEP_INIT],
    "D": ["--delta-t", "250", "--drop-fraction", "0.3", "--t-end-fraction", "0.75",
          "--hp", DENSE_INPUT, *KEEP_INIT],
    # the input layers masked, or named dense (what dense_input=None chooses here)
    "masked-input": [*MASKED_INPUT, *KEEP_INIT],
    "static-masked-input": ["--updater", "static", *MASKED_INPUT, *KEEP_INIT],
    "dense-input": ["--hp", DENSE_INPUT, *KEEP_INIT],
    # wider networks (SB3's default is 64x64), input layers masked
    "w128": ["--hp", "net_arch=[128,128]", *MASKED_INPUT, *KEEP_INIT],
    "w256": ["--hp", "net_arch=[256,256]", *MASKED_INPUT, *KEEP_INIT],
    "static-w128": ["--updater", "static", "--hp", "net_arch=[128,128]", *MASKED_INPUT,
                    *KEEP_INIT],
    "dense-w128": ["--updater", "dense", "--hp", "net_arch=[128,128]"],
    # the initial weights rescaled to the units' real fans (sparse_init="fan_avg", the
    # on-policy default since 2026-11-30), the input layers as dense_input=None chooses or masked
    "fan-avg": FAN_AVG,
    "masked-input-fan-avg": [*MASKED_INPUT, *FAN_AVG],
    "static-masked-input-fan-avg": ["--updater", "static", *MASKED_INPUT, *FAN_AVG],
    # the optimizer at twice PPO's learning rate (lr_scale; docs/rl_benchmarks.md, "Why
    # sparse PPO lags on HalfCheetah"), the rest as the defaults of 2026-11-30 written out
    "lr-scale-2": ["--hp", "lr_scale=2", *FAN_AVG],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparse-bench-rl-defaults", description=__doc__.split("\n\n")[0],
        epilog="Each run writes OUT/<config>-s<seed>/; re-running resumes: finished runs "
               "(with a summary.json) are skipped, and refused when made with other "
               "settings (options in effect, defaults included). The table goes to stdout and "
               "OUT/summary.md. Configs: " + ", ".join(
                   f"{k} ({' '.join(v) or 'no options'})" for k, v in CONFIGS.items()))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=["defaults"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--timesteps", type=int, default=100_000)
    p.add_argument("--eval-freq", type=int, default=None,
                   help="timesteps between evaluations (default timesteps/10)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once")
    p.add_argument("--backend", choices=BACKENDS, default="process")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    p.add_argument("--dry-run", action="store_true",
                   help="train nothing, write nothing: check the finished runs and say which "
                        "runs a resumed sweep would train")
    p.add_argument("--report-only", action="store_true", help="only tabulate finished runs")
    return p


def make_jobs(configs: list[str], seeds: list[int], timesteps: int,
              eval_freq: int | None) -> list[RLRunJob]:
    """One job per (seed, config), in that order: config ``name``'s options with
    ``--timesteps``, ``--seed`` and ``--eval-freq``, in folder ``<name>-s<seed>``."""
    extra = [] if eval_freq is None else ["--eval-freq", str(eval_freq)]
    jobs = []
    for seed in seeds:
        for name in configs:
            run = run_of(train_parser().parse_args(
                ["--timesteps", str(timesteps), "--seed", str(seed), *extra, *CONFIGS[name]]))
            jobs.append(RLRunJob(run, f"{name}-s{seed}", task=f"{run.algo}-{run.env}",
                                 method=name))
    return jobs


def score(folder: Path) -> dict[str, float]:
    """Final evaluation return, the mean of the last 10% of the evaluations
    (:func:`~sparse_agents.experiments.rl.last_fraction_score`), the final density and the
    nonzero parameters (NaN for runs from before they were recorded) of one run."""
    rows = [(int(r["timesteps"]), float(r["mean"]), float(r["std"]))
            for r in csv.DictReader(open(folder / "evaluations.csv"))]
    summary = json.loads((folder / "summary.json").read_text())
    return {"final": rows[-1][1], "last10": last_fraction_score(rows),
            "density": float(summary["density"]),
            "nonzero": float(summary.get("nonzero_params", math.nan))}


def table(out: Path, configs: list[str], seeds: list[int]) -> str:
    """Markdown: per config, the final returns per seed, their mean +- std, the last-10%
    mean +- std, and seed 0's density and nonzero parameters."""
    lines = ["| config | final per seed | final mean ± std | last 10% mean ± std | density "
             "| nonzero params |", "|---|---|---|---|---|---|"]
    for name in configs:
        runs = [score(out / f"{name}-s{s}") for s in seeds
                if (out / f"{name}-s{s}" / "summary.json").exists()]
        if not runs:
            continue
        finals, lasts = [r["final"] for r in runs], [r["last10"] for r in runs]
        lines.append(f"| {name} | {', '.join(f'{x:.0f}' for x in finals)} | "
                     f"{_mean_std(finals)} | {_mean_std(lasts)} | {runs[0]['density']:.3f} | "
                     f"{_count(runs[0]['nonzero'])} |")
    return "\n".join(lines) + "\n"


def _count(n: float) -> str:
    return "not recorded" if math.isnan(n) else f"{n:.0f}"


def _mean_std(values: list[float]) -> str:
    """``mean ± std`` over seeds, the std a sample std (÷ n − 1; nan for one seed)."""
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        jobs = make_jobs(args.configs, args.seeds, args.timesteps, args.eval_freq)
        todo = pending(jobs, out)
        refuse_stale([j for j in jobs if j not in todo], out,
                     "A config whose options change needs a new name; or choose another --out.")
        if args.dry_run:
            print(f"{len(jobs) - len(todo)} of {len(jobs)} runs finished under {out} (skipped), "
                  f"{len(todo)} to train" + (": " + ", ".join(j.job_id for j in todo)
                                             if todo else ""))
            return 0
        records = run_study(jobs, out, workers=args.workers, backend=args.backend,
                            ray_address=args.ray_address)
        failed = [j.job_id for j, r in zip(jobs, records, strict=True)
                  if r is None or r["status"] != "ok"]
        if failed:
            print(f"{len(failed)} run(s) failed (failed.json in their folders; re-running "
                  f"retries them): {', '.join(failed)}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    text = table(out, args.configs, args.seeds)
    (out / "summary.md").write_text(text)
    print(text, end="")
    return 0
