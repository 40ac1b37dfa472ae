#!/usr/bin/env python
"""Benchmark the cost of SparseTopology (hook overhead, one update per updater).

    python scripts/bench_topology.py            # full run (~1 min)
    python scripts/bench_topology.py --quick    # fewer repeats

With ``--out``, writes bench_topology.csv and .md there (re-running overwrites them). The
logic lives in :mod:`sparse_agents.experiments.bench.topology`.
"""

from sparse_agents.experiments.bench.topology import main

if __name__ == "__main__":
    raise SystemExit(main())
