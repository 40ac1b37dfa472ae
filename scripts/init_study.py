"""ERK vs uniform (and updater, sparsity, seed) study; see ``sparse_agents.study``.

    python scripts/init_study.py --workloads digits --sparsities 0.5 0.9 0.98 \
        --updaters srigl rigl --seeds 3 --out results/study
"""

import sys

from sparse_agents.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
