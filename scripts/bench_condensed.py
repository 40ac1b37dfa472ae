#!/usr/bin/env python
"""Side-by-side timing of dense, CSR and condensed linear layers (docs/condensed.md).

    python scripts/bench_condensed.py --out results/condensed           # full CPU run
    python scripts/bench_condensed.py --quick                           # a fast look
    python scripts/bench_condensed.py --probe --threads 2               # what bounds batch 1
    python scripts/bench_condensed.py --device cuda --out results/gpu   # on a GPU

Writes results.csv and results.md under ``--out`` (re-running overwrites them). The logic
lives in :mod:`sparse_agents.experiments.bench.condensed`; ``--help`` for every option.
"""

from sparse_agents.experiments.bench.condensed import main

if __name__ == "__main__":
    raise SystemExit(main())
