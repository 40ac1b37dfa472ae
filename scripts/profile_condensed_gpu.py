"""Launch one condensed (or dense) 3072->768 layer a few times, for a GPU profiler.

Run it under Nsight Compute to see what bounds the Triton ELL kernel:

    ncu --clock-control none -k regex:ell_kernel -s 2 -c 1 \\
        --metrics gpu__time_duration.sum,lts__t_bytes.sum.per_second,... \\
        python scripts/profile_condensed_gpu.py --batch 256

The kernel's tile is tuned first (its tuning launches come before the profiled ones
only with ``--tile``; without it, skip them with ncu's ``-s``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_condensed import SHAPES, masked_linear  # noqa: E402

from sparse_agents.condensed import CondensedLinear  # noqa: E402
from sparse_agents.condensed import kernels as K  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="vit_mlp_3072x768", choices=list(SHAPES))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--kernel", default="triton_ell", choices=["triton_ell", "dense", "masked"],
                   help="masked: the masked dense nn.Linear (the baseline)")
    p.add_argument("--tile", default=None, help="force a Triton tile, e.g. 2,64,8,1")
    p.add_argument("--launches", type=int, default=5)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    n_in, n_out = SHAPES[args.shape]
    lin = masked_linear(n_in, n_out, args.sparsity, "constant", 0).cuda()
    x = torch.randn(args.batch, n_in, device="cuda")
    if args.kernel == "masked":
        fn = lin
    elif args.kernel == "triton_ell" and args.tile:
        layer = CondensedLinear.from_linear(lin, kernel="dense").cuda()
        vt, it = layer._ell_t()
        fn = K.make_triton_ell(vt, it, layer.bias,
                               tile=tuple(int(v) for v in args.tile.split(",")))
    else:
        fn = CondensedLinear.from_linear(lin, kernel=args.kernel).cuda()
    with torch.inference_mode():
        for _ in range(args.launches):
            fn(x)
    torch.cuda.synchronize()
    print(K.triton_configs() or "no tuning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
