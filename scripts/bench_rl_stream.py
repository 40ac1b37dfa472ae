#!/usr/bin/env python
"""Benchmark: per-task-mask sparse PPO vs dense PPO fine-tuned through a task stream.

    python scripts/bench_rl_stream.py --stream cartpole-physics --seeds 0 1 2 \\
        --steps-per-task 50000 --jobs 2 --resume --out runs/bench_rl_stream

Writes OUT/runs/<job id>.json (one study record per run), OUT/table.md and
OUT/results.json (re-running retrains and overwrites them; with --resume finished runs are
skipped). The logic lives in :mod:`sparse_agents.experiments.bench.rl_stream`.
"""

from sparse_agents.experiments.bench.rl_stream import main

if __name__ == "__main__":
    raise SystemExit(main())
