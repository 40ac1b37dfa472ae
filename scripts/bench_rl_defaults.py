#!/usr/bin/env python
"""The RL-defaults sweep of docs/rl_benchmarks.md (sparse PPO on CartPole-v1, several update
schedules and seeds), resumable (``--dry-run``: what a re-run would train; ``--workers``):

    python scripts/bench_rl_defaults.py --timesteps 50000 --eval-freq 5000 \
        --configs dense A B C D --seeds 0 1 --out results/rl_defaults_50k
    python scripts/bench_rl_defaults.py --timesteps 100000 --configs defaults dense \
        --seeds 0 1 2 3 4 --out results/rl_defaults_100k
"""

from sparse_agents.experiments.bench.rl_defaults import main

if __name__ == "__main__":
    raise SystemExit(main())
