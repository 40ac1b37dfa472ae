#!/usr/bin/env python
"""Launch one condensed (or dense) layer a few times for a GPU profiler, or time every
Triton ELL tile against dense and CSR.

    ncu --clock-control none -k regex:ell_kernel -s 2 -c 1 \\
        --metrics gpu__time_duration.sum,lts__t_bytes.sum.per_second,... \\
        python scripts/profile_condensed_gpu.py --batch 256 --tile 2,64,8,1

    python scripts/profile_condensed_gpu.py --sweep --batch 256   # every tile, timed

Writes no files. The logic lives in :mod:`sparse_agents.experiments.bench.profile_gpu`.
"""

from sparse_agents.experiments.bench.profile_gpu import main

if __name__ == "__main__":
    raise SystemExit(main())
