"""The RL benchmark's sweep (``scripts/bench_rl.py`` without ``--overhead``/``--rollout``):
its grid (task x seed x row: method, ``--variant``, ``--equal-params`` width) expands into
typed study jobs (:class:`~sparse_agents.study.rl_runs.RLRunJob`, one folder
``runs/<task>-<method>-s<seed>/`` each) that the study runner trains in a process pool or on
Ray; ``--resume`` skips the finished ones and refuses those made with other settings."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sparse_agents.experiments.bench.rl_report import run_dir, width_method, write_report
from sparse_agents.experiments.rl_run import RLRun, parse_overrides, policy_flops
from sparse_agents.study.rl_runs import RLRunJob, refuse_stale
from sparse_agents.study.runner import pending, run_study
from sparse_agents.updaters import DENSE, REGISTRY

__all__ = ["DEFAULT_TASKS", "MUJOCO_TASK", "default_tasks", "finished", "make_jobs",
           "main_sweep", "methods", "sparsities", "sparsity_method", "variants"]

DEFAULT_TASKS = ("ppo:CartPole-v1:50000", "ppo:Acrobot-v1:100000", "dqn:CartPole-v1:50000")
MUJOCO_TASK = "sac:HalfCheetah-v5:30000"


def default_tasks() -> list[str]:
    """:data:`DEFAULT_TASKS`, plus :data:`MUJOCO_TASK` when mujoco is importable."""
    tasks = list(DEFAULT_TASKS)
    try:
        import mujoco  # noqa: F401

        tasks.append(MUJOCO_TASK)
    except ImportError:
        print("mujoco is not installed: no SAC MuJoCo task", flush=True)
    return tasks


def method_name(updater: str, distribution: str) -> str:
    """A row's name: the updater, with the distribution unless it is ERK (or dense)."""
    return updater if updater == DENSE or distribution == "erk" else f"{updater}-{distribution}"


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
        hp = width_overrides(args.hyperparams, width)
        if k in dense_factors:
            out.append(dict(updater=DENSE, distribution="erk", sparsity=0.0, extra=hp,
                            method=width_method(DENSE, width), masked_total=total))
        if k == 1:
            continue
        for updater, distribution in methods(args):
            if updater != DENSE:
                out.append(dict(updater=updater, distribution=distribution,
                                extra={**hp, "dense_input": False},
                                sparsity=round(1.0 - budget / total, 6), masked_total=total,
                                method=width_method(method_name(updater, distribution), width)))
    return out


def option_variants(specs: list[list[str]]) -> dict[str, dict[str, Any]]:
    """``--variant NAME KEY=VALUE ...`` as ``{NAME: {KEY: VALUE, ...}}`` (checked)."""
    out: dict[str, dict[str, Any]] = {}
    for name, *options in specs:
        if not options or any("=" not in o for o in options):
            raise ValueError(f"--variant expects NAME KEY=VALUE [KEY=VALUE ...], got "
                             f"{' '.join([name, *options])!r}")
        if "=" in name or "/" in name or name in out:
            raise ValueError(f"--variant NAME must be unique and hold no '=' or '/', got "
                             f"{name!r}")
        out[name] = parse_overrides(options)
    return out


def sparsities(args) -> list[float]:
    """The sparse rows' sparsities: ``--sparsities``, else ``--sparsity``."""
    values = list(dict.fromkeys(getattr(args, "sparsities", None) or [args.sparsity]))
    for value in values:
        if not 0.0 < value < 1.0:
            raise ValueError(f"--sparsities must be in (0, 1), got {value}")
    return values


def sparsity_method(name: str, sparsity: float) -> str:
    """A ``--sparsities`` row's name: the method's, then the sparsity in percent."""
    return f"{name}-s{sparsity * 100:g}"


def _rows_at(args, extra_options: dict, width_hp: dict) -> list[dict]:
    several = len(sparsities(args)) > 1
    rows = []
    for u, d in methods(args):
        levels = [0.0] if u == DENSE else sparsities(args)
        for sparsity in levels:
            name = method_name(u, d)
            if several and u != DENSE:
                name = sparsity_method(name, sparsity)
            row = dict(updater=u, distribution=d,
                       sparsity=args.sparsity if u == DENSE else sparsity,
                       extra=dict(width_hp), method=name)
            rows.append(row)
            if u != DENSE and REGISTRY[u].dynamic:  # static has no schedule to vary
                rows += [dict(row, extra={**width_hp, **options},
                              method=f"{row['method']}-{vname}")
                         for vname, options in extra_options.items()]
    return rows


def variants(args, algo: str, env: str) -> list[dict]:
    """The rows of one task: (updater, distribution, sparsity, extra overrides, method
    name); each ``--variant`` adds a row per dynamic updater, each of ``--sparsities``
    a row per sparse method (``<method>-s<percent>``), each of ``--widths`` all of them
    at that hidden width (``<method>-w<width>``, dense included)."""
    widths = getattr(args, "widths", None)
    if args.equal_params:
        if args.variant or widths:
            raise ValueError("--variant and --widths do not combine with --equal-params "
                             "(whose rows are widths)")
        return equal_param_variants(args, algo, env)
    extra = option_variants(args.variant)
    if not widths:
        return _rows_at(args, extra, {})
    if min(widths) < 1 or len(set(widths)) != len(widths):
        raise ValueError(f"--widths must be distinct and >= 1, got {widths}")
    return [dict(row, method=width_method(row["method"], width))
            for width in widths
            for row in _rows_at(args, extra, width_overrides(args.hyperparams, width))]


def make_jobs(args, tasks: list[str]) -> list[RLRunJob]:
    """One job per (task, seed, row), in that order; every run's settings checked."""
    if not 0 <= args.first_seed < args.seeds:
        raise ValueError(f"--first-seed must be in [0, {args.seeds - 1}] (below --seeds "
                         f"{args.seeds}), got {args.first_seed}")
    common, sparse_only = parse_overrides(args.hp), parse_overrides(args.sparse_hp)
    jobs = []
    for spec in tasks:
        algo, env, steps = spec.split(":")
        steps = max(1000, int(int(float(steps)) * args.scale))
        task = f"{algo}-{env}"
        rows = variants(args, algo, env)
        for seed in range(args.first_seed, args.seeds):
            for v in rows:
                sparse = v["updater"] != DENSE
                run = RLRun(algo=algo, env=env, updater=v["updater"], sparsity=v["sparsity"],
                            distribution=v["distribution"], seed=seed, timesteps=steps,
                            hyperparams=args.hyperparams,
                            sparse_settings=args.sparse_settings if sparse else "table",
                            overrides={**common, **(sparse_only if sparse else {}),
                                       **v["extra"]},
                            eval_freq=max(1, steps // args.evals),
                            eval_episodes=args.eval_episodes,
                            window_evals=args.window_evals, fused_adam=args.fused_adam)
                jobs.append(RLRunJob(run, f"runs/{run_dir(task, v['method'], seed)}",
                                     task=task, method=v["method"],
                                     masked_total=v.get("masked_total")))
    return jobs


def backfill_flops(job: RLRunJob, root: Path, summary: dict) -> dict:
    """A finished run's summary with its forward FLOPs (older runs did not record them:
    computed from the saved model when there is one, and written back)."""
    model_zip = job.path(root) / "model.zip"
    if "flops_forward" in summary or not model_zip.exists():
        return summary
    import stable_baselines3 as sb3

    model = getattr(sb3, job.run.algo.upper()).load(model_zip, device="cpu")
    sparse, dense = policy_flops(model.policy)
    summary = {**summary, "flops_forward": sparse,
               "flops_ratio": sparse / dense if dense else math.nan}
    job.write_record(root, {"status": "ok", "metrics": summary})
    return summary


def finished(jobs: list[RLRunJob], root: Path) -> list[RLRunJob]:
    """The jobs whose run is done under ``root``."""
    left = {j.job_id for j in pending(jobs, root)}
    return [j for j in jobs if j.job_id not in left]


def main_sweep(args) -> int:
    """Train the sweep's runs not finished yet (all of them without ``--resume``), then
    write the report; ``--report`` only tabulates, ``--dry-run`` only says what a resumed
    sweep would train."""
    tasks = list(args.tasks) if args.tasks else default_tasks()
    if args.quick:
        args.seeds, args.scale = 1, args.scale * 0.05
    if args.report or args.dry_run:
        args.resume = True
    root = Path(args.out)
    jobs = make_jobs(args, tasks)
    done = finished(jobs, root)
    if args.dry_run:
        refuse_stale(done, root, "Move them away or choose another --out.")
        todo = [j for j in jobs if j not in done]
        print(f"{len(done)} of {len(jobs)} runs finished under {root} (skipped on resume), "
              f"{len(todo)} to train" + (": " + ", ".join(j.job_id for j in todo)
                                         if todo else ""), flush=True)
        return 0
    if args.report:  # a sweep still under way: tabulate the finished runs
        missing = [j for j in jobs if j not in done]
        if missing:
            print(f"--report: {len(missing)} of {len(jobs)} runs not finished, left out: "
                  + ", ".join(j.job_id for j in missing), flush=True)
        jobs = done
        if not jobs:
            raise FileNotFoundError(f"--report: no finished run under {root / 'runs'}")
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.resume:
        refuse_stale(done, root, "Move them away or choose another --out.")
    else:  # retrain every run and overwrite
        for job in jobs:
            job.clear_record(root)
    if args.report:
        records = [job.read_record(root) for job in jobs]
    else:
        print(f"{len(jobs)} runs on {args.workers} workers -> {root}", flush=True)
        records = run_study(jobs, root, workers=args.workers, backend=args.backend,
                            ray_address=args.ray_address)
    failed = {str(j.path(root)): ((r or {}).get("error") or "no record").strip()
              for j, r in zip(jobs, records, strict=True) if r is None or r["status"] != "ok"}
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed (the others are kept; --resume "
                           "retries them):\n" + "\n".join(
                               f"  {path}: {error.splitlines()[-1]}"
                               for path, error in failed.items()))
    rows = []
    for job, record in zip(jobs, records, strict=True):
        summary = backfill_flops(job, root, record["metrics"])
        rows.append({**summary, "seed": job.seed, "task": job.task, "method": job.method,
                     "masked_total": job.masked_total})
    print(write_report(args, rows, jobs, root, start), flush=True)
    return 0
