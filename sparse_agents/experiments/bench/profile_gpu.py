"""Launch one condensed (or dense) layer a few times for a GPU profiler, or time every
Triton ELL tile against dense and CSR (``--sweep``).

Behind ``scripts/profile_condensed_gpu.py``; the layers come from
:mod:`sparse_agents.experiments.bench.condensed`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from sparse_agents.condensed import CondensedLinear
from sparse_agents.condensed import kernels as K
from sparse_agents.experiments.bench.condensed import SHAPES, csr_baseline, masked_linear

DESCRIPTION = """\
Launch one condensed (or dense) 3072->768 layer a few times, for a GPU profiler; or,
with --sweep, time every Triton ELL tile against dense and CSR. Writes no files.

Without --tile the tile is tuned first, and its tuning launches come before the layer's
own: give --tile (the tuned choice is printed at the end) to profile a known tile from
the third launch."""

EPILOG = """\
examples:
  ncu --clock-control none -k regex:ell_kernel -s 2 -c 1 \\
      --metrics gpu__time_duration.sum,lts__t_bytes.sum.per_second,... \\
      python scripts/profile_condensed_gpu.py --batch 256 --tile 2,64,8,1
  python scripts/profile_condensed_gpu.py --sweep --batch 256   # every tile, timed"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="profile_condensed_gpu.py", description=DESCRIPTION,
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="vit_mlp_3072x768", choices=list(SHAPES))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--kernel", default="triton_ell", choices=["triton_ell", "dense", "masked"],
                   help="masked: the masked dense nn.Linear (the baseline)")
    p.add_argument("--tile", default=None, help="force a Triton tile, e.g. 2,64,8,1")
    p.add_argument("--launches", type=int, default=5)
    p.add_argument("--sweep", action="store_true",
                   help="time every tile of kernels.TRITON_TILES that fits the batch, "
                        "with dense and CSR, side by side (kernels.measure)")
    return p


def sweep(lin, x: torch.Tensor, args) -> None:
    """Every tile that fits the batch, dense and CSR, timed by ``kernels.measure``."""
    layer = CondensedLinear.from_linear(lin, kernel="dense").cuda()
    vt, it = layer._ell_t()
    fns = {"dense": lin, "csr": csr_baseline(lin)}
    fns.update({str(t): K.make_triton_ell(vt, it, layer.bias, tile=t)
                for t in K._triton_tiles(args.batch)})
    with torch.inference_mode():
        times = K.measure(fns, x, budget_s=2.0)
    print(f"{args.shape}, batch {args.batch}, {args.sparsity:.0%} sparse; tile = "
          "(rows, batch columns, unroll, warps)")
    for name, t in sorted(times.items(), key=lambda kv: kv[1]):
        print(f"  {name:18s} {t * 1e6:8.1f} us  vs dense x{times['dense'] / t:5.2f}  "
              f"vs csr x{times['csr'] / t:6.2f}")


def layer_to_profile(lin, args):
    """The masked layer, a Triton kernel of a forced tile, or a condensed layer."""
    if args.kernel == "masked":
        return lin
    if args.kernel == "triton_ell" and args.tile:
        layer = CondensedLinear.from_linear(lin, kernel="dense").cuda()
        vt, it = layer._ell_t()
        return K.make_triton_ell(vt, it, layer.bias,
                                 tile=tuple(int(v) for v in args.tile.split(",")))
    return CondensedLinear.from_linear(lin, kernel=args.kernel).cuda()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    n_in, n_out = SHAPES[args.shape]
    lin = masked_linear(n_in, n_out, args.sparsity, "constant", 0).cuda()
    x = torch.randn(args.batch, n_in, device="cuda")
    if args.sweep:
        sweep(lin, x, args)
        return 0
    fn = layer_to_profile(lin, args)
    with torch.inference_mode():
        for _ in range(args.launches):
            fn(x)
    torch.cuda.synchronize()
    print(K.triton_configs() or "no tuning")
    return 0
