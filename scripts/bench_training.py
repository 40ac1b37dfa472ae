#!/usr/bin/env python
"""Benchmark the training step under each compute mode (dense, masked, condensed,
SparseProp) for single layers and SB3 agents (SAC, DQN MinAtar, PPO CartPole).

    python scripts/bench_training.py --out results/bench_training
    python scripts/bench_training.py --parts layers --sizes 1024 --batches 256 --quick

Each part is written atomically under ``--out`` and skipped when done (``--force``).
The logic lives in :mod:`sparse_agents.experiments.bench.training`.
"""

from sparse_agents.experiments.bench.training import main

if __name__ == "__main__":
    raise SystemExit(main())
