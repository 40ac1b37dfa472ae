"""The RL benchmark's timing modes (``scripts/bench_rl.py``): ``--overhead`` times
``train()`` per optimizer step in process, the updaters interleaved; ``--rollout`` times
the condensed policy's ``predict`` against the masked one."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from sparse_agents.experiments.bench.rl_report import write_csv
from sparse_agents.timing import sample_interleaved, time_interleaved

#: the tasks (algo:env:timesteps) timed when ``--tasks`` is not given
DEFAULT_TASKS = ("ppo:CartPole-v1:50000", "ppo:Acrobot-v1:100000", "dqn:CartPole-v1:50000")


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
    write_csv(root / f"{name}.csv", rows)
    lines = ["| task | updater | µs per optimizer step (median) | vs dense (median) | "
             "vs dense (best round) |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['updater']} | {r['us_per_step']:.0f} | "
              f"{r['vs_dense']:.3f} | {r['vs_dense_min']:.3f} |" for r in rows]
    (root / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


